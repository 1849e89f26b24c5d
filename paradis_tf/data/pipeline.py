"""`tf.data` pipelines with the model's preprocessing and optional augmentation."""

from __future__ import annotations

import numpy as np

from paradis_tf.errors import InputError

DEFAULT_PREPROCESSING = {"scale": 1.0 / 255.0, "offset": 0.0}


def preprocess(images: np.ndarray, preprocessing: dict | None = None) -> np.ndarray:
    """Raw uint8 images to the float input of the model (``raw * scale + offset``)."""
    p = preprocessing or DEFAULT_PREPROCESSING
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputError(f"Expected raw uint8 images. Received dtype {images.dtype}.")
    return images.astype(np.float32) * np.float32(p["scale"]) + np.float32(p["offset"])


def make_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int = 128, training: bool = False,
                 augment: bool = False, preprocessing: dict | None = None, seed: int = 0,
                 drop_remainder: bool | None = None):
    """A batched `tf.data.Dataset` of preprocessed (images, labels).

    Args:
        images: uint8 (N, H, W, C).
        labels: int (N,) or None.
        batch_size: batch size.
        training: shuffle every epoch (and drop the last partial batch).
        augment: random horizontal flip and random translation by up to
            1/14 of the size (pad-and-crop), training only.
        preprocessing: ``{"scale", "offset"}`` of the model.
        seed: shuffle/augmentation seed.
    """
    import tensorflow as tf

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

    def aug(x):
        x = tf.image.random_flip_left_right(x)
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        return tf.image.random_crop(x, tf.concat([tf.shape(x)[:1], [h, w, images.shape[3]]], 0))

    ds = tf.data.Dataset.from_tensor_slices((images, labels) if labels is not None else images)
    if training:
        ds = ds.shuffle(min(len(images), 60000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    if labels is not None:
        if training and augment:
            ds = ds.map(lambda x, y: (aug(prep(x)), y), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(lambda x, y: (prep(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
