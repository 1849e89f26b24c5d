"""What `paradis mesh infer --input` reads: images, folders of them, or .npy arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from paradis_tf.bundle import ModelInfo
from paradis_tf.errors import InputError


def _npy_images(path: Path, model: ModelInfo) -> np.ndarray:
    shape = tuple(model.input_shape)
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path} is not a readable .npy array ({e}); save images with numpy.save") from None
    if x.ndim == len(shape):
        x = x[None]
    if tuple(x.shape[1:]) != shape:
        raise InputError(f"{path}: expected images of shape (N, {', '.join(map(str, shape))}); found {x.shape}")
    if x.dtype == np.uint8:
        return model.preprocessing.apply(x)
    return x.astype(np.float32)


def load_inputs(paths: Sequence[str], model: ModelInfo) -> tuple[np.ndarray, list[str]]:
    """The model's float inputs for image files, image folders and .npy arrays, in the order given.

    Image files (PNG, JPEG, BMP, GIF, WebP) are decoded, resized to the
    model's input size with its channel count, and preprocessed as the
    manifest says; a folder gives its images and those of its class
    folders; a ``.npy`` array (N, H, W, C) is taken as raw images when
    uint8, as preprocessed inputs when float.

    Returns:
        ``(float32 inputs (N,) + input shape, a name for each input)``.
    """
    parts, names, images = [], [], []

    def flush_images() -> None:
        if images:
            from paradis_tf.data import load_image_files

            h, w, c = model.input_shape
            raw, files = load_image_files(images, (h, w), channels=c)
            parts.append(model.preprocessing.apply(raw))
            names.extend(files)
            images.clear()

    for text in paths:
        path = Path(text)
        if path.suffix.lower() == ".npy":
            flush_images()
            x = _npy_images(path, model)
            parts.append(x)
            names.extend(f"{path}[{n}]" for n in range(len(x)))
        else:
            images.append(path)
    flush_images()
    return np.concatenate(parts), names
