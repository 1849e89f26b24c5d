"""Super-resolution data: photographs, low-resolution pairs, training patches, PSNR and SSIM.

The photographs are the natural images that scikit-image ships in its
package (``skimage.data``: files installed with it, nothing downloaded),
split by image into training and validation sets (`TRAINING_IMAGES`,
`VALIDATION_IMAGES`), or a user's own folder of images (`load_image_dir`).

Conventions, as in the super-resolution literature:

* **Low resolution.** ``downscale``: bicubic with antialiasing,
  ``tf.image.resize(method="bicubic", antialias=True)``: Keys' cubic
  kernel (a = -0.5) widened by the scale factor, which is MATLAB's
  ``imresize`` (the DIV2K and Set5 convention); rounded to uint8, as a
  stored low-resolution image is. The high-resolution image is first
  cropped to a multiple of the scale (`modcrop`).
* **Channels.** 3 is RGB. 1 is the luma Y of ITU-R BT.601 in its studio
  range: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with RGB in [0, 1],
  so Y lies in 16..235 (MATLAB's ``rgb2ycbcr``); a grayscale photograph is
  taken as R = G = B. RGB from a grayscale image repeats it; alpha is
  dropped.
* **Quality.** `psnr` and `ssim` compare the Y channel (a 3-channel image
  is converted as above, a 1-channel image is taken as Y already) with
  ``scale`` pixels cropped from every border. PSNR is
  ``10 log10(255**2 / MSE)``; SSIM is Wang et al.'s (Gaussian window,
  sigma 1.5, K1 = 0.01, K2 = 0.03), through ``skimage.metrics``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from paradis_tf.data.folders import IMAGE_EXTENSIONS, _image_files
from paradis_tf.errors import DatasetError, InputError

# Natural photographs shipped inside the scikit-image package (skimage/data). Left out: `cat` (the same
# picture as `chelsea`), the synthetic images (checkerboard, binary_blobs, horse, logo, colorwheel,
# shepp_logan_phantom), `clock` (motion-blurred on purpose), the tiny ones (microaneurysms, lfw_subset) and
# those scikit-image downloads on first use.
SKIMAGE_IMAGES = (
    "astronaut", "camera", "chelsea", "coffee",
    "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina", "immunohistochemistry",
    "brick", "grass", "gravel", "moon", "coins", "page", "text",
)
# Held out: never in a training patch. Four photographs unlike one another (a portrait, fur, a still life,
# a grayscale street scene); the stereo pair motorcycle_left/right stays together on the training side.
VALIDATION_IMAGES = ("astronaut", "camera", "chelsea", "coffee")
TRAINING_IMAGES = tuple(n for n in SKIMAGE_IMAGES if n not in VALIDATION_IMAGES)
SPLITS = ("train", "validation")
# BT.601 luma from RGB in [0, 1], studio range (16..235).
Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
Y_OFFSET = 16.0
# SSIM's Gaussian window (sigma 1.5, truncated at 3.5 sigma) is 11 pixels wide.
SSIM_MIN_SIZE = 11


def _describe(image: np.ndarray) -> str:
    return f"{image.dtype} array of shape {image.shape}"


def to_y(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Luma (BT.601, 16..235) as float64 ``(H, W)`` of an RGB or 1-channel image.

    ``image``: uint8, or float in [0, 1] (clipped to it); ``(H, W, 3)`` is
    RGB, ``(H, W)`` or ``(H, W, 1)`` is taken as Y already (scaled to
    0..255 when float).
    """
    a = _pixels(image, name)
    if a.shape[-1] == 3:
        return Y_OFFSET + (a / 255.0) @ Y_WEIGHTS
    return a[..., 0]


def _pixels(image, name: str) -> np.ndarray:
    """float64 ``(H, W, C)`` in 0..255 of a uint8 or [0, 1] float image with 1 or 3 channels."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise InputError(f"{name}: expected one image of shape (H, W), (H, W, 1) (Y) or (H, W, 3) (RGB). "
                         f"Received {_describe(np.asarray(image))}.")
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0
    raise InputError(f"{name}: expected uint8 pixels or float pixels in [0, 1]. Received {_describe(a)}.")


def _compared_y(reference, test, scale: int, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 0:
        raise ValueError(f"Expected the border to crop, scale, to be an integer >= 0. Received scale={scale!r}.")
    ref, out = np.asarray(reference), np.asarray(test)
    if ref.shape != out.shape:
        raise InputError(f"Expected two images of the same shape. Received reference {ref.shape} and test {out.shape}.")
    ry, ty = to_y(ref, "reference"), to_y(out, "test")
    h, w = ry.shape
    if min(h, w) - 2 * scale < min_size:
        raise InputError(f"Expected images of at least {min_size + 2 * scale}x{min_size + 2 * scale} pixels "
                         f"({min_size} after cropping a border of scale={scale}). Received {h}x{w}.")
    if scale:
        ry, ty = ry[scale:-scale, scale:-scale], ty[scale:-scale, scale:-scale]
    return ry, ty


def psnr(reference, test, scale: int) -> float:
    """PSNR in dB of ``test`` against ``reference`` on the Y channel, ``scale`` pixels cropped from each border.

    Images are uint8 or float in [0, 1] (clipped), ``(H, W, 3)`` RGB or 1-channel Y, of the same shape.
    Identical images give ``inf``.
    """
    ry, ty = _compared_y(reference, test, scale, 1)
    mse = float(np.mean((ry - ty) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def ssim(reference, test, scale: int) -> float:
    """SSIM of ``test`` against ``reference`` on the Y channel, ``scale`` pixels cropped from each border
    (Wang et al. 2004: Gaussian window of sigma 1.5, data range 255). Same inputs as `psnr`."""
    from skimage.metrics import structural_similarity

    ry, ty = _compared_y(reference, test, scale, SSIM_MIN_SIZE)
    return float(structural_similarity(ry, ty, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def sr_image(image: np.ndarray, channels: int, name: str = "image") -> np.ndarray:
    """A photograph as uint8 ``(H, W, channels)``: RGB (3) or BT.601 Y (1), rounded.

    Accepts uint8 ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` RGB or
    ``(H, W, 4)`` RGBA (alpha dropped).

    Raises:
        InputError: another shape or dtype (names ``name``, what it is and
            what is expected).
    """
    if channels not in (1, 3):
        raise ValueError(f"Expected channels 1 (Y) or 3 (RGB). Received channels={channels!r}.")
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or a.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 image of shape (H, W), (H, W, 1), (H, W, 3) (RGB) or "
                         f"(H, W, 4) (RGBA). Received {_describe(np.asarray(image))}.")
    a = a[..., :3]
    if channels == 3:
        return np.ascontiguousarray(np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a)
    if a.shape[-1] == 1:
        return np.clip(np.round(Y_OFFSET + a * (Y_WEIGHTS.sum() / 255.0)), 0, 255).astype(np.uint8)
    return np.clip(np.round(to_y(a, name)), 0, 255).astype(np.uint8)[..., None]


def _read_skimage(name: str) -> np.ndarray:
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


def load_skimage_images(names: Iterable[str] = SKIMAGE_IMAGES, channels: int = 3) -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs by name, as uint8 ``(H, W, channels)`` (see `sr_image`).

    Raises:
        DatasetError: a name not in `SKIMAGE_IMAGES`.
    """
    out = {}
    for name in names:
        if name not in SKIMAGE_IMAGES:
            raise DatasetError(f"{name!r} is not one of the photographs used here; known: {', '.join(SKIMAGE_IMAGES)}.")
        out[name] = sr_image(_read_skimage(name), channels, name)
    return out


def _decode(path: Path, channels: int) -> np.ndarray:
    import tensorflow as tf

    try:
        img = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError):
        raise DatasetError(f"{path} could not be decoded as an image (expected {', '.join(IMAGE_EXTENSIONS)}); "
                           "replace or remove it") from None
    return sr_image(img, channels, str(path))


def load_image_dir(directory: str | os.PathLike, channels: int = 3) -> dict[str, np.ndarray]:
    """A user's photographs at their own size: ``DIR/*.png|jpg|...`` and ``DIR/<sub>/*...`` (sorted).

    Returns:
        ``{path relative to DIR: uint8 (H, W, channels)}``.

    Raises:
        DatasetError: a missing folder, one without images, or an image that
            cannot be decoded (names the file).
    """
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"Image folder {root} does not exist; expected {root}/<image files>.")
    files = _image_files(root) + [f for d in sorted(p for p in root.iterdir() if p.is_dir()) for f in _image_files(d)]
    if not files:
        raise DatasetError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in it or in its sub-folders.")
    return {str(f.relative_to(root)): _decode(f, channels) for f in files}


def load_sr_split(split: str, data_dir: str | os.PathLike | None = None, channels: int = 3,
                  holdout: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """The photographs of a split, uint8 ``(H, W, channels)`` by name.

    Args:
        split: ``"train"`` or ``"validation"``.
        data_dir: a folder of the user's images (`load_image_dir`), split by
            image: a seeded ``holdout`` fraction (at least one image) is the
            validation set. None: scikit-image's photographs,
            `TRAINING_IMAGES` / `VALIDATION_IMAGES`.
        channels: 3 (RGB) or 1 (Y).
        holdout: validation fraction of a folder.
        seed: the folder split's seed.
    """
    if split not in SPLITS:
        raise ValueError(f"Expected split one of {SPLITS}. Received split={split!r}.")
    if data_dir is None:
        return load_skimage_images(TRAINING_IMAGES if split == "train" else VALIDATION_IMAGES, channels)
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"Expected a validation fraction 0 < holdout < 1. Received holdout={holdout!r}.")
    images = load_image_dir(data_dir, channels)
    if len(images) < 2:
        raise DatasetError(f"{data_dir} holds {len(images)} image; a split by image needs at least 2 "
                           "(one to train on, one to validate on).")
    names = sorted(images)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(len(names) - 1, max(1, int(round(holdout * len(names)))))
    chosen = order[:n_val] if split == "validation" else order[n_val:]
    return {names[i]: images[names[i]] for i in sorted(chosen)}


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise ValueError(f"Expected an integer upscaling factor scale >= 2. Received scale={scale!r}.")
    return int(scale)


def _check_image(image, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] not in (1, 3) or a.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 image of shape (H, W, 1) (Y) or (H, W, 3) (RGB); convert it "
                         f"with sr_image(). Received {_describe(a)}.")
    return a


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """The image cropped (bottom, right) to a multiple of ``scale`` in both dimensions."""
    a = np.asarray(image)
    h, w = a.shape[0] - a.shape[0] % scale, a.shape[1] - a.shape[1] % scale
    return a[:h, :w]


def downscale(hr: np.ndarray, scale: int, name: str = "image") -> np.ndarray:
    """The low-resolution image of ``hr``: bicubic with antialiasing (``tf.image.resize``), rounded to uint8.

    ``hr``: uint8 ``(H, W, C)``, H and W multiples of ``scale`` (see `modcrop`).
    """
    import tensorflow as tf

    scale = _check_scale(scale)
    a = _check_image(hr, name)
    h, w = a.shape[:2]
    if h % scale or w % scale or h < scale or w < scale:
        raise InputError(f"{name}: expected height and width that are positive multiples of scale={scale} "
                         f"(crop with modcrop()). Received {h}x{w}.")
    lr = tf.image.resize(tf.cast(a, tf.float32), (h // scale, w // scale), method="bicubic", antialias=True)
    return np.clip(np.round(lr.numpy()), 0, 255).astype(np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int, name: str = "image") -> np.ndarray:
    """``lr`` upscaled by ``scale`` with bicubic interpolation (``tf.image.resize``, Keys a = -0.5), uint8:
    the baseline a super-resolution network is compared with."""
    import tensorflow as tf

    scale = _check_scale(scale)
    a = _check_image(lr, name)
    h, w = a.shape[:2]
    up = tf.image.resize(tf.cast(a, tf.float32), (h * scale, w * scale), method="bicubic", antialias=True)
    return np.clip(np.round(up.numpy()), 0, 255).astype(np.uint8)


def _named(images: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    if isinstance(images, Mapping):
        items = [(str(k), v) for k, v in images.items()]
    else:
        items = [(f"image {i}", v) for i, v in enumerate(images)]
    if not items:
        raise InputError("Expected at least one image. Received none.")
    return items


def sr_pairs(images: Mapping[str, np.ndarray] | Sequence[np.ndarray], scale: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (low resolution, high resolution)}``, uint8: each image cropped to a multiple of ``scale``
    (`modcrop`) and downscaled (`downscale`). A sequence of images is named ``"image <i>"``."""
    scale = _check_scale(scale)
    out = {}
    for name, img in _named(images):
        hr = modcrop(_check_image(img, name), scale)
        out[name] = (downscale(hr, scale, name), hr)
    return out


def make_sr_dataset(images: Mapping[str, np.ndarray] | Sequence[np.ndarray], scale: int, patch_size: int = 48,
                    batch_size: int = 16, training: bool = True, preprocessing: dict | None = None, seed: int = 0,
                    steps: int | None = None):
    """A `tf.data.Dataset` of ``(low-resolution, high-resolution)`` float patch batches.

    Low-resolution patches are ``(B, patch_size, patch_size, C)``,
    high-resolution ones ``(B, patch_size * scale, patch_size * scale, C)``,
    both ``raw * scale + offset`` of the model's ``preprocessing`` (default
    pixels in [0, 1]). Every image is cropped to a multiple of ``scale`` and
    downscaled whole (`sr_pairs`); patches are aligned crops of the two.

    Args:
        images: uint8 ``(H, W, C)`` photographs by name (or a sequence), all
            with the same C (1 or 3).
        scale: upscaling factor.
        patch_size: low-resolution patch side.
        batch_size: patches per batch.
        training: random patches: an image drawn uniformly, a position
            uniformly within it, one of the 8 flips and rotations by 90
            degrees (the same for both resolutions); new draws every pass
            over the dataset, the same ones for the same ``seed``; endless
            unless ``steps`` is given. False: every image cut into
            non-overlapping patches on a grid from its top-left corner, in
            order, once (a validation set for ``fit``).
        preprocessing: ``{"scale", "offset"}`` of the model.
        seed: the draws' seed.
        steps: batches per pass (training only; None: endless).

    Raises:
        InputError: an image with another channel count than the first, or
            smaller than ``patch_size * scale`` (names the image, its size
            and the minimum).
    """
    import tensorflow as tf

    scale = _check_scale(scale)
    if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ValueError(f"Expected a positive patch_size. Received patch_size={patch_size!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Expected a positive batch_size. Received batch_size={batch_size!r}.")
    if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"Expected steps >= 1 or None. Received steps={steps!r}.")
    named = _named(images)
    first_name, first = named[0]
    channels = _check_image(first, first_name).shape[-1]
    hr_min = patch_size * scale
    for name, img in named:
        a = _check_image(img, name)
        if a.shape[-1] != channels:
            raise InputError(f"{name}: expected {channels} channel(s) like {first_name}. Received shape {a.shape}.")
        if min(a.shape[:2]) < hr_min:
            raise InputError(f"{name}: expected at least {hr_min}x{hr_min} pixels (patch_size={patch_size} times "
                             f"scale={scale}). Received {a.shape[0]}x{a.shape[1]}.")
    pairs = list(sr_pairs(dict(named), scale).values())
    p, q = int(patch_size), int(patch_size) * scale
    prep = preprocessing or {"scale": 1.0 / 255.0, "offset": 0.0}
    mul, add = np.float32(prep["scale"]), np.float32(prep["offset"])
    spec = (tf.TensorSpec((None, p, p, channels), tf.float32), tf.TensorSpec((None, q, q, channels), tf.float32))

    if not training:
        lrs, hrs = [], []
        for lr, hr in pairs:
            for y in range(0, lr.shape[0] - p + 1, p):
                for x in range(0, lr.shape[1] - p + 1, p):
                    lrs.append(lr[y:y + p, x:x + p])
                    hrs.append(hr[y * scale:y * scale + q, x * scale:x * scale + q])
        lr_all = np.stack(lrs).astype(np.float32) * mul + add
        hr_all = np.stack(hrs).astype(np.float32) * mul + add
        return tf.data.Dataset.from_tensor_slices((lr_all, hr_all)).batch(int(batch_size))

    passes = [0]

    def batches():
        # One generator call per pass over the dataset: new draws each pass, fixed by (seed, pass).
        rng = np.random.default_rng([int(seed), passes[0]])
        passes[0] += 1
        count = 0
        while steps is None or count < steps:
            lr_b = np.empty((batch_size, p, p, channels), np.uint8)
            hr_b = np.empty((batch_size, q, q, channels), np.uint8)
            for b in range(batch_size):
                lr, hr = pairs[int(rng.integers(len(pairs)))]
                y, x = int(rng.integers(lr.shape[0] - p + 1)), int(rng.integers(lr.shape[1] - p + 1))
                lo, hi = lr[y:y + p, x:x + p], hr[y * scale:y * scale + q, x * scale:x * scale + q]
                flip = int(rng.integers(8))
                if flip & 1:
                    lo, hi = lo[:, ::-1], hi[:, ::-1]
                if flip & 2:
                    lo, hi = lo[::-1], hi[::-1]
                if flip & 4:
                    lo, hi = lo.transpose(1, 0, 2), hi.transpose(1, 0, 2)
                lr_b[b], hr_b[b] = lo, hi
            yield lr_b.astype(np.float32) * mul + add, hr_b.astype(np.float32) * mul + add
            count += 1

    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)


__all__ = ["SKIMAGE_IMAGES", "TRAINING_IMAGES", "VALIDATION_IMAGES", "bicubic_upscale", "downscale",
           "load_image_dir", "load_skimage_images", "load_sr_split", "make_sr_dataset", "modcrop", "psnr",
           "sr_image", "sr_pairs", "ssim", "to_y"]
