"""One entry point for the datasets the command line accepts."""

from __future__ import annotations

import numpy as np

from paradis_tf.errors import DatasetError

DATASETS = ("fashion_mnist",)


def load_source(dataset: str | None, data_dir: str | None, split: str, image_shape=None,
                limit: int | None = None, holdout: float = 0.1, seed: int = 0):
    """Raw uint8 images, labels and class names of a dataset split.

    Args:
        dataset: ``"fashion_mnist"``, or None when ``data_dir`` is given.
        data_dir: folder of class sub-folders; ``split`` ``"train"`` / ``"test"``
            are a seeded ``1 - holdout`` / ``holdout`` partition of it
            (``holdout=0``: every image in both).
        split: ``"train"`` or ``"test"``.
        image_shape: (H, W, C) images are loaded at (folders only).
        limit: keep the first ``limit`` samples.

    Returns:
        ``(images uint8 (N, H, W, C), labels int64 (N,), class names)``.
    """
    if dataset and data_dir:
        raise DatasetError(f"Give either a dataset ({dataset!r}) or an image folder ({data_dir!r}), not both.")
    if dataset:
        if dataset != "fashion_mnist":
            raise DatasetError(f"Unknown dataset {dataset!r}; known: {list(DATASETS)}, or an image folder.")
        from paradis_tf.data.fashion_mnist import LABELS, load_fashion_mnist

        x, y = load_fashion_mnist(split, limit=limit)
        return x, y, list(LABELS)
    if data_dir:
        if image_shape is None:
            raise DatasetError("Loading an image folder needs the model's input shape (H, W, C).")
        from paradis_tf.data.folders import load_image_folder

        x, y, classes = load_image_folder(data_dir, tuple(image_shape[:2]), channels=int(image_shape[2]))
        if holdout <= 0:
            return (x[:limit], y[:limit], classes) if limit is not None else (x, y, classes)
        order = np.random.default_rng(seed).permutation(len(x))
        n_test = max(1, int(round(holdout * len(x))))
        idx = order[:n_test] if split == "test" else order[n_test:]
        x, y = x[idx], y[idx]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return x, y, classes
    raise DatasetError("no images: give --dataset fashion_mnist or --data DIR (one sub-folder per class)")
