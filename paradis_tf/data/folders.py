"""A user's own images, one sub-directory per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paradis_tf.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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
        DatasetError: missing directory, no class folders, or no images.
    """
    import tensorflow as tf

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
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                img = tf.io.decode_image(tf.io.read_file(str(f)), channels=channels, expand_animations=False)
            except tf.errors.InvalidArgumentError as e:
                raise DatasetError(f"Cannot decode image {f}: {e.message}") from None
            img = tf.image.resize(img, image_size, antialias=True)
            images.append(np.clip(np.round(img.numpy()), 0, 255).astype(np.uint8))
            labels.append(idx)
    if not images:
        raise DatasetError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}/<class>/.")
    return np.stack(images), np.asarray(labels, np.int64), classes
