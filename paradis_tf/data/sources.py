"""One entry point for the datasets the command line accepts."""

from __future__ import annotations

import re
from typing import Sequence

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


def _label_key(name: str) -> str:
    # Folder names cannot hold every label ("T-shirt/top"): compare letters and digits only.
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_classes(classes: Sequence[str], labels: np.ndarray, model_labels: Sequence[str] | None,
                  num_classes: int, source: str) -> np.ndarray:
    """The labels of a dataset, as indices of the model's classes.

    Classes named like the model's labels (letters and digits compared, case
    ignored) map to those labels, so a folder may hold a subset of them;
    otherwise the dataset must have exactly the model's number of classes
    (sorted folder names are classes 0, 1, ...).

    Args:
        classes: the dataset's class names (label ``i`` is ``classes[i]``).
        labels: int labels (N,) of the dataset.
        model_labels: the model's class names, or None.
        num_classes: how many classes the model predicts.
        source: how to name the dataset in errors (``--data DIR``).

    Raises:
        DatasetError: the classes neither match the model's labels by name
            nor in number (names both counts).
    """
    if model_labels:
        index = {_label_key(name): i for i, name in enumerate(model_labels)}
        if all(_label_key(c) in index for c in classes):
            return np.asarray([index[_label_key(c)] for c in classes], np.int64)[np.asarray(labels, np.int64)]
    if len(classes) == num_classes:
        return np.asarray(labels, np.int64)
    names = f" ({', '.join(model_labels[:4])}{', ...' if len(model_labels) > 4 else ''})" if model_labels else ""
    raise DatasetError(
        f"{source} has {len(classes)} classes ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''}) but the "
        f"model predicts {num_classes}{names}; its accuracy there would mean nothing (give one class folder per model "
        f"class, or folders named as the model's labels)")
