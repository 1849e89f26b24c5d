"""Datasets: Fashion-MNIST (Debian IDX files), a user's class folders, and super-resolution photographs (`sr`)."""

from paradis_tf.data.fashion_mnist import LABELS as FASHION_MNIST_LABELS
from paradis_tf.data.fashion_mnist import load_fashion_mnist, read_idx
from paradis_tf.data.folders import load_image_files, load_image_folder, read_image
from paradis_tf.data.pipeline import make_dataset, preprocess
from paradis_tf.data.sources import DATASETS, load_source, match_classes
from paradis_tf.data.sr import load_sr_split, make_sr_dataset, psnr, ssim

__all__ = ["load_fashion_mnist", "read_idx", "load_image_folder", "load_image_files", "read_image", "make_dataset",
           "preprocess", "FASHION_MNIST_LABELS", "DATASETS", "load_source", "match_classes", "load_sr_split",
           "make_sr_dataset", "psnr", "ssim"]
