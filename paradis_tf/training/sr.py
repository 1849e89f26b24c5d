"""Training and evaluation of a ParaDiS super-resolution network (`ParaDiSSRModel`, e.g. WDSR).

The recipe: random low/high-resolution patch pairs of the training
photographs with the 8 flips and rotations (`make_sr_dataset`), every
switch trained jointly with an L1 loss and in-place distillation from the
widest switch (`ParaDiSSRModel.compute_loss`), Adam with a cosine decay.
WDSR has no batch normalization, so nothing is calibrated after training.
The individually trained baseline of a switch is a one-switch model of the
same builder trained with the same recipe (`individual_model`).

`evaluate_sr` reports PSNR and SSIM on whole held-out photographs (Y
channel, ``scale`` pixels cropped from every border) for every switch and
for bicubic upsampling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from paradis_tf.data.sr import bicubic_upscale, make_sr_dataset, psnr, sr_pairs, ssim
from paradis_tf.errors import InputError
from paradis_tf.training.recipe import TrainConfig, make_optimizer

BICUBIC = "bicubic"


@dataclass(frozen=True)
class SRTrainConfig:
    """How a super-resolution network (or its individual baselines) is trained.

    An epoch is ``steps_per_epoch`` batches of random patches (an endless
    stream of draws, the same ones for the same ``seed``).

    Args:
        epochs: epochs of ``steps_per_epoch`` batches.
        steps_per_epoch: batches per epoch.
        batch_size: patch pairs per batch.
        patch_size: side of a low-resolution patch (the high-resolution one
            is ``scale`` times larger). None: the model's input size.
        learning_rate: peak learning rate (cosine decay to 0 after a linear
            warm-up of ``warmup_epochs``).
        warmup_epochs: warm-up length, may be fractional.
        optimizer: ``"adam"`` or ``"sgd"`` (Nesterov momentum).
        momentum: SGD momentum.
        seed: random seed (patches, flips).
    """

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 16
    patch_size: int | None = None
    learning_rate: float = 1e-3
    warmup_epochs: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self):
        if self.steps_per_epoch < 1:
            raise ValueError(f"Expected steps_per_epoch >= 1. Received steps_per_epoch={self.steps_per_epoch}.")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"Expected a positive patch_size, or None for the model's input size. "
                             f"Received patch_size={self.patch_size}.")
        self.recipe()  # the shared checks: epochs, batch size, learning rate, optimizer, momentum

    def recipe(self) -> TrainConfig:
        """The optimizer settings as a `TrainConfig` (`make_optimizer` takes it); no weight decay."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           warmup_epochs=self.warmup_epochs, optimizer=self.optimizer, momentum=self.momentum,
                           seed=self.seed)


def _patch_size(model, config: SRTrainConfig) -> int:
    if config.patch_size is not None:
        return int(config.patch_size)
    h, w = model.image_shape[:2]
    if h != w:
        raise InputError(f"The model's input is {h}x{w}, not square; give SRTrainConfig(patch_size=...) "
                         "(training patches are square).")
    return int(h)


def _check_channels(model, images: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> None:
    items = images.items() if isinstance(images, Mapping) else ((f"image {i}", a) for i, a in enumerate(images))
    for name, a in items:
        shape = np.shape(a)
        if len(shape) != 3 or shape[-1] != model.channels:
            kind = "Y" if model.channels == 1 else "RGB"
            raise InputError(f"{name}: the model takes {model.channels}-channel ({kind}) images of shape "
                             f"(H, W, {model.channels}). Received shape {shape}; load the photographs with "
                             f"channels={model.channels}.")


def train_sr(model, images: Mapping[str, np.ndarray] | Sequence[np.ndarray],
             config: SRTrainConfig = SRTrainConfig(), verbose: int | str = "auto") -> dict:
    """Trains every switch of a super-resolution ``model`` jointly on patches of ``images``.

    Args:
        model: a `ParaDiSSRModel`.
        images: uint8 ``(H, W, C)`` training photographs (C the model's
            channels), each at least ``patch_size * scale`` pixels on a side.
        config: the recipe.
        verbose: Keras verbosity.

    Returns:
        ``{"history": {"loss": [per epoch]}, "train_seconds": float,
        "train_cpu_seconds": float, "steps": int}``: wall and process CPU
        time of compiling and fitting.
    """
    import keras

    _check_channels(model, images)
    keras.utils.set_random_seed(config.seed)
    ds = make_sr_dataset(images, model.scale, patch_size=_patch_size(model, config), batch_size=config.batch_size,
                         training=True, preprocessing=model.preprocessing, seed=config.seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.compile(optimizer=make_optimizer(config.recipe(), config.steps_per_epoch))
    # The patches are endless random draws: an epoch is steps_per_epoch batches of them.
    history = model.fit(ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, shuffle=False,
                        verbose=verbose, calibrate=False)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "train_seconds": time.perf_counter() - start, "train_cpu_seconds": time.process_time() - cpu_start,
            "steps": config.epochs * config.steps_per_epoch}


def upscale_image(model, switch, lr: np.ndarray) -> np.ndarray:
    """One switch's high-resolution image of a uint8 low-resolution image ``(H, W, C)``, as uint8 (rounded).

    The whole image runs at once (the switch model is fully convolutional).
    """
    a = np.asarray(lr)
    _check_channels(model, {"low-resolution image": a})
    if a.dtype != np.uint8:
        raise InputError(f"Expected a uint8 low-resolution image. Received dtype {a.dtype}.")
    prep = model.preprocessing
    x = a[None].astype(np.float32) * np.float32(prep["scale"]) + np.float32(prep["offset"])
    out = np.asarray(model.switch_model(switch)(x, training=False))[0]
    raw = (out - prep["offset"]) / prep["scale"]
    return np.clip(np.round(raw), 0, 255).astype(np.uint8)


def evaluate_sr(model, images: Mapping[str, np.ndarray] | Sequence[np.ndarray],
                switches: Iterable | None = None, bicubic: bool = True) -> dict[str, dict]:
    """PSNR and SSIM of every switch (and of bicubic upsampling) on whole photographs.

    Each photograph is cropped to a multiple of the scale and downscaled
    (`sr_pairs`); the switch upscales the whole low-resolution image
    (`upscale_image`, rounded to uint8) and is compared with the original on
    the Y channel with ``scale`` pixels cropped from every border
    (`psnr`, `ssim`).

    Args:
        model: a `ParaDiSSRModel`.
        images: uint8 ``(H, W, C)`` held-out photographs by name.
        switches: the switches to evaluate (default: all).
        bicubic: also evaluate bicubic upsampling (`bicubic_upscale`).

    Returns:
        ``{"bicubic" | switch text: {"psnr": mean dB, "ssim": mean,
        "images": {name: {"psnr", "ssim"}}}}``, bicubic first.
    """
    _check_channels(model, images)
    pairs = sr_pairs(images, model.scale)
    names = [BICUBIC] if bicubic else []
    names += [str(model._switch(s)) for s in (model.switches if switches is None else switches)]
    out = {}
    for name in names:
        per_image = {}
        for image, (lr, hr) in pairs.items():
            sr = bicubic_upscale(lr, model.scale) if name == BICUBIC else upscale_image(model, name, lr)
            per_image[image] = {"psnr": psnr(hr, sr, model.scale), "ssim": ssim(hr, sr, model.scale)}
        out[name] = {"psnr": float(np.mean([v["psnr"] for v in per_image.values()])),
                     "ssim": float(np.mean([v["ssim"] for v in per_image.values()])),
                     "images": per_image}
    return out


__all__ = ["BICUBIC", "SRTrainConfig", "evaluate_sr", "train_sr", "upscale_image"]
