"""A user's own images: class folders, folders of images, single files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from paradis_tf.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_image(path: str | os.PathLike, image_size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """One image file, decoded and resized: uint8 ``(H, W, channels)``.

    Raises:
        DatasetError: the file cannot be read or decoded (names the file).
    """
    import tensorflow as tf

    if channels not in (1, 3):
        raise ValueError(f"Expected channels 1 or 3. Received channels={channels!r}.")
    try:
        img = tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError):
        # TensorFlow's message names graph internals (function_node, device, op), not the file.
        raise DatasetError(f"{path} could not be decoded as an image (expected {', '.join(IMAGE_EXTENSIONS)}); "
                           "replace or remove it") from None
    img = tf.image.resize(img, image_size, antialias=True)
    return np.clip(np.round(img.numpy()), 0, 255).astype(np.uint8)


def _image_files(directory: Path) -> list[Path]:
    return [f for f in sorted(directory.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]


def load_image_folder(directory: str | os.PathLike, image_size: tuple[int, int],
                      channels: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Loads ``directory/<class>/*.png|jpg|...`` into arrays.

    Args:
        directory: root directory; each sub-directory is a class (sorted).
        image_size: (height, width) every image is resized to.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        ``(images uint8 (N, H, W, channels), labels int64 (N,), class_names)``.

    Raises:
        DatasetError: missing directory, no class folders, no images, or an
            image that cannot be decoded.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"Image directory {root} does not exist; expected {root}/<class>/<image files>.")
    if channels not in (1, 3):
        raise ValueError(f"Expected channels 1 or 3. Received channels={channels!r}.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{root} holds no class sub-directories; expected {root}/<class>/<image files>.")
    images, labels = [], []
    for idx, name in enumerate(classes):
        for f in _image_files(root / name):
            images.append(read_image(f, image_size, channels))
            labels.append(idx)
    if not images:
        raise DatasetError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}/<class>/.")
    return np.stack(images), np.asarray(labels, np.int64), classes


def load_image_files(paths: Iterable[str | os.PathLike], image_size: tuple[int, int],
                     channels: int = 3) -> tuple[np.ndarray, list[str]]:
    """Images to run a model on: image files, folders of images, class folders.

    A folder contributes its image files and those of its sub-folders one
    level down (``DIR/*.png`` and ``DIR/<class>/*.png``), in sorted order.

    Returns:
        ``(images uint8 (N, H, W, channels), the file of each image)``.

    Raises:
        DatasetError: a path that does not exist, a folder without images,
            or an image that cannot be decoded.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = _image_files(path) + [f for d in sorted(path.iterdir()) if d.is_dir() for f in _image_files(d)]
            if not found:
                raise DatasetError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in it or in its "
                                   "sub-folders; give image files or a folder of them")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetError(f"{path} does not exist; give image files, a folder of images or a folder of class folders")
    if not files:
        raise DatasetError("no images given")
    return np.stack([read_image(f, image_size, channels) for f in files]), [str(f) for f in files]
