"""The training recipe shared by `paradis train`, the demo and the benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from paradis_tf.data.pipeline import TRANSLATIONS
from paradis_tf.errors import InputError


OPTIMIZERS = ("adam", "sgd")


def optimizer_name(optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0) -> str:
    """What `make_optimizer` builds, for tables: ``Adam``, ``AdamW`` or ``SGD (Nesterov 0.9)``."""
    if optimizer == "sgd":
        return f"SGD (Nesterov {momentum:g})"
    return "AdamW" if weight_decay else "Adam"


@dataclass(frozen=True)
class TrainConfig:
    """How a ParaDiS model (or a baseline) is trained.

    The defaults are the first recipe (Adam, kept for the runs recorded with
    it). The best measured one is ``TrainConfig(optimizer="sgd",
    learning_rate=0.1, weight_decay=5e-3, warmup_epochs=0.5, augment=True)``
    (docs/BENCHMARKS.md); `paradis train` uses its optimizer settings by
    default (augmentation with ``--augment``), and so does the demo.

    Args:
        epochs: passes over the training set.
        batch_size: batch size.
        learning_rate: peak learning rate (cosine decay to 0 after a
            linear warm-up of ``warmup_epochs``).
        warmup_epochs: warm-up length, may be fractional.
        weight_decay: decoupled weight decay of the convolution and
            classifier kernels: every step multiplies them by
            ``1 - lr_t * weight_decay`` (AdamW with Adam; with SGD the same
            step, about L2 of ``weight_decay * (1 - momentum)``). BN
            parameters, biases and logit scales are not decayed. 0: none.
        optimizer: ``"adam"`` (Adam, AdamW with weight decay) or ``"sgd"``
            (SGD with Nesterov momentum).
        momentum: SGD momentum (``optimizer="sgd"`` only).
        augment: random flip and translation.
        translate: ``"batch"`` (one random shift per batch, the recipe of
            every recorded run) or ``"image"`` (a shift per image); see
            `make_dataset`.
        erase: random-erasing probability per training image (0: off).
        calibration_steps: batches used to re-estimate BN statistics per
            switch after training.
        data_autotune: let tf.data's autotuner tune the training pipeline
            (`make_dataset`'s ``autotune``; off: it stalled training on 2
            cores, docs/notebook.md). The batches are the same either way.
        seed: random seed (weights, shuffling, augmentation).
    """

    epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    augment: bool = False
    translate: str = "batch"
    erase: float = 0.0
    calibration_steps: int = 20
    data_autotune: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"Expected epochs >= 1. Received epochs={self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1. Received batch_size={self.batch_size}.")
        if not self.learning_rate > 0:
            raise ValueError(f"Expected a strictly positive value. Received learning_rate={self.learning_rate}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"Expected weight_decay >= 0 (0: no decay). Received weight_decay={self.weight_decay}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Expected optimizer one of {', '.join(OPTIMIZERS)}. Received optimizer={self.optimizer!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Expected a momentum 0 <= momentum < 1. Received momentum={self.momentum}.")
        if self.translate not in TRANSLATIONS:
            raise ValueError(f"Expected translate one of {', '.join(TRANSLATIONS)}. Received translate={self.translate!r}.")
        if not 0.0 <= self.erase <= 1.0:
            raise ValueError(f"Expected an erasing probability 0 <= erase <= 1. Received erase={self.erase}.")


# Variables never decayed: switchable BN's per-switch gamma_i / beta_i, biases,
# the classifier's logit scales. Regular expressions searched in the variable's
# name, which is "gamma_0" for a Keras variable and "stem_bn/gamma_0:0" for the
# TensorFlow variable the optimizer sees on that backend.
NOT_DECAYED = [r"(^|/)(gamma|beta)_\d+(:\d+)?$", r"(^|/)(bias|log_scales)(:\d+)?$"]


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    import keras

    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate if warmup == 0 else 0.0,
        decay_steps=max(1, total - warmup),
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True,
                                         weight_decay=config.weight_decay or None)
    elif not config.weight_decay:
        return keras.optimizers.Adam(schedule)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NOT_DECAYED)
    return optimizer


def train(model, images: np.ndarray, labels: np.ndarray, config: TrainConfig = TrainConfig(),
          verbose: int | str = "auto", strategy=None) -> dict:
    """Trains every switch of ``model`` jointly, then calibrates BN per switch.

    Args:
        model: a `ParaDiSModel` (built under ``strategy.scope()`` if given).
        images: uint8 (N, H, W, C) training images.
        labels: int labels (N,).
        config: the recipe.
        verbose: Keras verbosity (progress bars).
        strategy: optional `tf.distribute` strategy; the model must have
            been created in its scope.

    Returns:
        ``{"history": dict, "train_seconds": float, "train_cpu_seconds": float}``:
        the wall time of compiling, fitting and calibrating, and the CPU time
        this process spent in them (all its threads). In a process with one
        TensorFlow thread, wall time well above the CPU time means the
        training waited: for its input pipeline, or for a throttled host.
    """
    import keras

    from paradis_tf.data import make_dataset

    if images.shape[1:] != model.image_shape:
        raise InputError(
            f"Training images have shape {images.shape[1:]}, the model expects {model.image_shape}; "
            "resize them or build the model for that shape."
        )
    keras.utils.set_random_seed(config.seed)
    ds = make_dataset(images, labels, config.batch_size, training=True, augment=config.augment,
                      preprocessing=model.preprocessing, seed=config.seed, erase=config.erase,
                      translate=config.translate, autotune=config.data_autotune)
    calib = make_dataset(images, None, config.batch_size, training=False, preprocessing=model.preprocessing)
    steps = len(images) // config.batch_size
    if steps < 1:
        raise InputError(f"Need at least batch_size={config.batch_size} images to train. Received {len(images)}.")
    start, cpu_start = time.perf_counter(), time.process_time()
    if strategy is not None:
        with strategy.scope():
            model.compile(optimizer=make_optimizer(config, steps))
    else:
        model.compile(optimizer=make_optimizer(config, steps))
    history = model.fit(ds, epochs=config.epochs, verbose=verbose, calibrate=False)
    model.calibrate(calib.shuffle(64, seed=config.seed), steps=config.calibration_steps)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "train_seconds": time.perf_counter() - start, "train_cpu_seconds": time.process_time() - cpu_start}


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> dict[str, float]:
    """Top-1 accuracy of every switch, ``{switch text: accuracy}``."""
    from paradis_tf.data import make_dataset

    ds = make_dataset(images, labels, batch_size, preprocessing=model.preprocessing)
    if getattr(model, "optimizer", None) is None:
        model.compile()
    result = model.evaluate(ds, verbose=0, return_dict=True)
    return {str(s): float(result[f"acc_{s}"]) for s in model.switches}


def device_accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> dict[str, list[float]]:
    """Top-1 of each device of every multi-device switch on its own, ``{switch text: [accuracy per device]}``.

    A device's prediction is its partial logits plus the fusion bias (what the fusion would output if the other
    devices sent zeros). It shows how a switch spreads its work: devices that each classify well (an ensemble)
    or one device that classifies and others that correct it.

    Raises:
        InputError: the model has sync layers, so its devices cannot run alone.
    """
    from paradis_tf.data import make_dataset

    if model.has_sync:
        raise InputError(f"The model has sync layers {model.body.sync_layer_names()}: its devices read each other's "
                         "channels there and cannot run alone; per-device accuracy needs a model without sync layers.")
    labels = np.asarray(labels)
    ds = make_dataset(images, None, batch_size, preprocessing=model.preprocessing)
    out = {}
    for s in model.switches:
        if len(s) == 1:
            continue
        out[str(s)] = [float(np.mean(np.argmax(m.predict(ds, verbose=0) + model.fusion_bias, axis=1) == labels))
                       for m in model.device_models(s)]
    return out
