"""Fashion-MNIST from Debian's `dataset-fashion-mnist` IDX files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from paradis_tf.errors import DatasetError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "PARADIS_FASHION_MNIST_DIR"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path: Path):
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            return gzip.open(candidate, "rb") if candidate.suffix == ".gz" else open(candidate, "rb")
    raise DatasetError(
        f"Fashion-MNIST file {path.name}(.gz) not found in {path.parent}. Install it with "
        f"'apt-get install dataset-fashion-mnist' or point {ENV_VAR} / --data-dir at the IDX files."
    )


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) into a NumPy array."""
    with _open(Path(path)) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic {data[:4]!r}).")
    if data[2] != 0x08:
        raise DatasetError(f"{path}: only unsigned-byte IDX files are supported (type 0x{data[2]:02x}).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: expected {int(np.prod(dims))} values for shape {dims}, found {body.size}.")
    return body.reshape(dims)


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None,
                       limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads a Fashion-MNIST split.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: directory of the IDX files; default ``$PARADIS_FASHION_MNIST_DIR``
            or ``/usr/share/datasets/fashion-mnist``.
        limit: keep only the first ``limit`` samples.

    Returns:
        ``(images uint8 (N, 28, 28, 1), labels int64 (N,))``.

    Raises:
        DatasetError: missing directory or files (names the apt package).
    """
    if split not in _FILES:
        raise ValueError(f"Expected split 'train' or 'test'. Received split={split!r}.")
    directory = Path(data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR)
    if not directory.is_dir():
        raise DatasetError(
            f"Fashion-MNIST directory {directory} does not exist. Install the data with "
            f"'apt-get install dataset-fashion-mnist' or pass the directory of the IDX files."
        )
    img_name, lbl_name = _FILES[split]
    images = read_idx(directory / img_name)
    labels = read_idx(directory / lbl_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{directory}: images {images.shape} and labels {labels.shape} do not match.")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images[..., None].copy(), labels.astype(np.int64)
