"""`tf.data` pipelines with the model's preprocessing and optional augmentation."""

from __future__ import annotations

import numpy as np

from paradis_tf.errors import InputError

DEFAULT_PREPROCESSING = {"scale": 1.0 / 255.0, "offset": 0.0}
TRANSLATIONS = ("batch", "image")


def preprocess(images: np.ndarray, preprocessing: dict | None = None) -> np.ndarray:
    """Raw uint8 images to the float input of the model (``raw * scale + offset``)."""
    p = preprocessing or DEFAULT_PREPROCESSING
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputError(f"Expected raw uint8 images. Received dtype {images.dtype}.")
    return images.astype(np.float32) * np.float32(p["scale"]) + np.float32(p["offset"])


def make_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int = 128, training: bool = False,
                 augment: bool = False, preprocessing: dict | None = None, seed: int = 0,
                 drop_remainder: bool | None = None, erase: float = 0.0, translate: str = "batch",
                 autotune: bool = False):
    """A batched `tf.data.Dataset` of preprocessed (images, labels).

    Args:
        images: uint8 (N, H, W, C).
        labels: int (N,) or None.
        batch_size: batch size.
        training: shuffle every epoch (and drop the last partial batch).
        augment: random horizontal flip (each image its own) and random
            translation by up to 1/14 of the size (reflect-pad and crop),
            training only.
        preprocessing: ``{"scale", "offset"}`` of the model.
        seed: shuffle/augmentation seed. With the same TensorFlow global
            seed (`train` sets it from ``TrainConfig.seed``), the same seed
            gives the same batches: images, flips, shifts and erasures (new
            ones every epoch), whatever order the parallel map runs in.
        erase: random erasing (Zhong et al. 2020), training only: each
            image, with this probability, gets one rectangle (2-40% of its
            area, aspect ratio 0.3-3.3) replaced by uniform noise over the
            input range.
        translate: ``"batch"``: one random shift for the whole batch (every
            recorded benchmark run trained so; over the epochs each image
            still meets every shift); ``"image"``: each image its own shift.
        autotune: let tf.data's autotuner size the map parallelism and
            the prefetch buffer at run time (``tf.data.Options().autotune``).
            Off by default: on this kit's 2-core machine it stalled training
            (a process pinned to one core sat idle, waiting for batches, for
            32 % of an epoch's wall time on a quarter-width model and 12 % on
            the full one, its CPU time unchanged; tools/bench_data_autotune.py,
            docs/notebook.md, "Where a training step's time goes").
            Without it the map and prefetch run with TensorFlow's fixed
            defaults for ``AUTOTUNE``; the pipeline's work is a few
            vectorized ops per batch, which needs no tuning. Either way the
            same batches come out.
    """
    import tensorflow as tf

    if not 0.0 <= float(erase) <= 1.0:
        raise ValueError(f"Expected an erasing probability 0 <= erase <= 1. Received erase={erase!r}.")
    if translate not in TRANSLATIONS:
        raise ValueError(f"Expected translate one of {', '.join(TRANSLATIONS)} (a shift per batch or per image). "
                         f"Received translate={translate!r}.")

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(f"Expected uint8 images of shape (N, H, W, C). Received {images.dtype} {images.shape}.")
    if labels is not None and len(labels) != len(images):
        raise InputError(f"Expected one label per image. Received {len(labels)} labels for {len(images)} images.")
    p = preprocessing or DEFAULT_PREPROCESSING
    scale, offset = float(p["scale"]), float(p["offset"])
    h, w = images.shape[1:3]
    pad = max(1, h // 14)

    def prep(x):
        return tf.cast(x, tf.float32) * scale + offset

    def aug(x, seeds):
        x = tf.image.stateless_random_flip_left_right(x, seeds[0])
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        if translate == "batch":
            return tf.image.stateless_random_crop(x, tf.concat([tf.shape(x)[:1], [h, w, images.shape[3]]], 0),
                                                  seeds[1])
        b = tf.shape(x)[0]
        oy = tf.random.stateless_uniform([b], seeds[1], 0, 2 * pad + 1, dtype=tf.int32)
        ox = tf.random.stateless_uniform([b], seeds[2], 0, 2 * pad + 1, dtype=tf.int32)
        x = tf.gather(x, oy[:, None] + tf.range(h)[None, :], axis=1, batch_dims=1)
        return tf.gather(x, ox[:, None] + tf.range(w)[None, :], axis=2, batch_dims=1)

    def erasing(x, seed):
        return random_erasing(x, float(erase), (offset, 255.0 * scale + offset), seed=seed)

    ds = tf.data.Dataset.from_tensor_slices((images, labels) if labels is not None else images)
    if training:
        ds = ds.shuffle(min(len(images), 60000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    if labels is not None:
        if training and (augment or erase):
            def train_map(batch, seed):
                # Stateless random ops on a seed drawn per batch from the pipeline's own seeded stream
                # (new draws every epoch): the augmentation is a function of `seed`, whatever order the
                # parallel map runs its calls in.
                x, y = batch
                seeds = tf.random.experimental.stateless_split(seed, num=4)
                x = prep(x)
                x = aug(x, seeds) if augment else x
                return (erasing(x, seeds[3]) if erase else x), y

            draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip(ds, draws).map(train_map, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(lambda x, y: (prep(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if not autotune:
        options = tf.data.Options()
        options.autotune.enabled = False
        ds = ds.with_options(options)
    return ds


def random_erasing(x, probability: float, value_range: tuple[float, float],
                   area: tuple[float, float] = (0.02, 0.4), aspect: tuple[float, float] = (0.3, 1 / 0.3), *,
                   seed):
    """Random erasing of a batch (B, H, W, C): per image, with ``probability``,
    one rectangle of ``area`` fraction and ``aspect`` ratio range filled with
    uniform noise in ``value_range``; the rest of the image is untouched.
    ``seed`` (shape [2] ints) determines every draw (stateless random ops)."""
    import math

    import tensorflow as tf

    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    target = tf.random.stateless_uniform([b], s[0], area[0], area[1]) * hf * wf
    ratio = tf.exp(tf.random.stateless_uniform([b], s[1], math.log(aspect[0]), math.log(aspect[1])))
    eh = tf.clip_by_value(tf.round(tf.sqrt(target * ratio)), 1.0, hf)
    ew = tf.clip_by_value(tf.round(tf.sqrt(target / ratio)), 1.0, wf)
    y0 = tf.floor(tf.random.stateless_uniform([b], s[2]) * (hf - eh + 1.0))
    x0 = tf.floor(tf.random.stateless_uniform([b], s[3]) * (wf - ew + 1.0))
    on = tf.random.stateless_uniform([b], s[4]) < probability
    ys = tf.cast(tf.range(h), tf.float32)[None, :, None]
    xs = tf.cast(tf.range(w), tf.float32)[None, None, :]
    col = lambda v: v[:, None, None]  # noqa: E731
    mask = ((ys >= col(y0)) & (ys < col(y0 + eh)) & (xs >= col(x0)) & (xs < col(x0 + ew))) & col(on)
    noise = tf.random.stateless_uniform(shape, s[5], value_range[0], value_range[1], dtype=x.dtype)
    return tf.where(mask[..., None], noise, x)
