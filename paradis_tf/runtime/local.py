"""`LocalRunner`: a whole plan in one process (tests, qcheck, benchmarks)."""

from __future__ import annotations

import os

import numpy as np

from paradis_tf.bundle import Bundle, Plan, SegmentRef, load
from paradis_tf.errors import InputError
from paradis_tf.runtime.backends import DEFAULT_BACKEND
from paradis_tf.runtime.image import upscale_image
from paradis_tf.runtime.program import DeviceProgram, fuse
from paradis_tf.quant import QTensor
from paradis_tf.switches import Switch

__all__ = ["LocalRunner"]


class LocalRunner:
    """Runs every device of a plan in-process and fuses their outputs.

    The devices run through the same `DeviceProgram` as the mesh nodes; the
    feature maps that would cross devices are handed over in memory, with
    the same explicit requantization.

    Args:
        bundle_dir: bundle directory (or a loaded `Bundle`).
        switch: plan name (``"2x0.5"``, ``"seq-2"``) or `Switch`.
        backend: interpreter backend: ``litert`` (default), ``tflite_runtime``,
            ``tf`` or ``tflm``.
        precision: ``"int8"`` or ``"float"`` (needs ``convert --float``).
        num_threads: CPU threads per interpreter (TFLite backends).

    Example::

        runner = LocalRunner("bundle/", "2x0.5")
        logits = runner.predict(x)          # x: float32 (N, H, W, C), preprocessed

    A super-resolution bundle's plans output images: `predict` gives
    ``(N, H * scale, W * scale, C)`` for tiles of the bundle's input size,
    and `upscale` runs a whole photograph through them tile by tile.
    """

    def __init__(
        self,
        bundle_dir: "str | os.PathLike | Bundle",
        switch: "str | Switch",
        backend: str = DEFAULT_BACKEND,
        *,
        precision: str = "int8",
        num_threads: int | None = None,
    ) -> None:
        self.bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load(bundle_dir)
        self.plan: Plan = self.bundle.plan(switch)
        self.backend = backend
        self.precision = precision
        self.programs = [
            DeviceProgram(self.bundle, self.plan, k, backend, precision=precision, num_threads=num_threads)
            for k in range(len(self.plan.devices))
        ]
        self._order = self.plan.order()

    def __repr__(self) -> str:
        return f"LocalRunner({str(self.bundle.root)!r}, {self.plan.name!r}, backend={self.backend!r}, precision={self.precision!r})"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.bundle.model.input_shape)

    def _check(self, x) -> np.ndarray:
        expected = f"a float array of shape (N, {', '.join(map(str, self.input_shape))}), preprocessed (raw * {self.bundle.model.preprocessing.scale:g} + {self.bundle.model.preprocessing.offset:g})"
        if not isinstance(x, np.ndarray):
            raise InputError(f"predict() expects {expected}; received {type(x).__name__}.")
        if not np.issubdtype(x.dtype, np.floating):
            hint = " (raw images: use predict_raw)" if x.dtype == np.uint8 else ""
            raise InputError(f"predict() expects {expected}; received dtype {x.dtype}{hint}.")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] < 1:
            raise InputError(f"predict() expects {expected}; received shape {x.shape}.")
        if not np.all(np.isfinite(x)):
            raise InputError("predict() received NaN or infinite values.")
        return x.astype(np.float32, copy=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fused float outputs for preprocessed input `x`: logits (N, num_classes), or images
        (N, H * scale, W * scale, C) of a super-resolution plan.

        Raises:
            InputError: `x` is not a float array of shape (N,) + input_shape.
        """
        return fuse(self.plan, self.run(x))

    def predict_raw(self, raw: np.ndarray) -> np.ndarray:
        """`predict` on raw images (uint8), preprocessed as the manifest says."""
        raw = np.asarray(raw)
        if raw.dtype != np.uint8:
            raise InputError(f"predict_raw() expects uint8 images; received dtype {raw.dtype}.")
        return self.predict(self.bundle.model.preprocessing.apply(raw))

    def upscale(self, image: np.ndarray, *, margin: int | None = None, batch: int = 16) -> np.ndarray:
        """A uint8 photograph of any size (at least one tile) upscaled by this super-resolution plan, uint8
        (see `paradis_tf.runtime.image.upscale_image`).

        Raises:
            InputError: a classifier bundle, a channel count the bundle does
                not take, an image smaller than the bundle's tile.
        """
        return upscale_image(image, self.bundle.model, self.predict, margin=margin, batch=batch)

    def run(self, x: np.ndarray) -> dict[SegmentRef, QTensor]:
        """Runs every segment; returns the outputs the fusion consumes."""
        x = QTensor.from_float(self._check(x))
        store: dict[SegmentRef, QTensor] = {}
        for ref in self._order:
            prog = self.programs[ref.device]
            inputs = [x if inp.source is None else store[inp.source] for inp in prog.needs(ref.segment)]
            store[ref] = prog.run_segment(ref.segment, inputs)
        return {r: store[r] for r in self.plan.fusion.outputs}
