"""Quantization check: Keras float against the bundle's int8 partitions.

Classifiers (`qcheck`), per plan: top-1 of the Keras float model, top-1 of
the fused int8 partitions (`LocalRunner`, ``litert``) and, for the plans
chosen for microcontrollers, through the real TFLM kernels (``tflm``); how
often int8 and float agree on the top-1 class, and the largest logit error.

Super-resolution bundles (`sr_qcheck`), per plan: PSNR and SSIM on the Y
channel (border cropped by the scale) of the float network, of the int8
partitions run tile by tile, and of bicubic upsampling, on photographs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from paradis_tf.bundle import Bundle, Plan, load
from paradis_tf.convert.tflite import ConversionError, native_stderr_quiet
from paradis_tf.runtime.image import upscale

__all__ = ["BackendCheck", "ImageBackendCheck", "PlanCheck", "SRPlanCheck", "float_reference", "qcheck", "sr_qcheck"]


@dataclass(frozen=True)
class BackendCheck:
    backend: str
    top1: float | None
    agreement: float  # argmax(int8) == argmax(float)
    max_abs_logit_error: float
    drop_points: float | None  # (float top-1 - int8 top-1) * 100


@dataclass(frozen=True)
class PlanCheck:
    plan: str
    kind: str
    samples: int
    float_top1: float | None
    int8: tuple[BackendCheck, ...] = field(default_factory=tuple)

    def worst_drop(self) -> float | None:
        drops = [b.drop_points for b in self.int8 if b.drop_points is not None]
        return max(drops) if drops else None

    def accuracy_record(self, dataset: str | None = None) -> dict:
        """The manifest's ``accuracy`` entry of this plan (see docs/BUNDLE.md)."""
        acc = {"samples": self.samples, "dataset": dataset, "float": self.float_top1}
        for b in self.int8:
            acc["int8" if b.backend == "litert" else f"int8_{b.backend}"] = b.top1
            acc["agreement" if b.backend == "litert" else f"agreement_{b.backend}"] = b.agreement
        return acc

    def as_dict(self) -> dict:
        d = asdict(self)
        d["int8"] = [asdict(b) for b in self.int8]
        return d


def _predict_keras(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch, verbose=0), dtype=np.float32)


def float_reference(model: Any, plan: Plan, x: np.ndarray) -> np.ndarray:
    """Keras float logits of what `plan` was converted from."""
    if plan.kind == "sequential":
        h = x
        for piece in model.sequential_models(len(plan.devices)):
            h = _predict_keras(piece, h)
        return h
    known = {str(s): s for s in model.switches}
    if plan.name not in known:
        raise ConversionError(f"plan {plan.name} is not a switch of the model (it has {list(known)}); wrong --model?")
    return _predict_keras(model.switch_model(known[plan.name]), x)


def _top1(logits: np.ndarray, y: np.ndarray | None) -> float | None:
    return None if y is None else float((logits.argmax(1) == y).mean())


def qcheck(
    bundle: "Bundle | str | os.PathLike",
    model: Any,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    plans: Iterable[str] | None = None,
    backends: Sequence[str] = ("litert",),
    tflm_plans: Iterable[str] | None = None,
    num_threads: int | None = None,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> list[PlanCheck]:
    """Compares Keras float logits with the fused int8 partitions.

    Args:
        bundle: the bundle (or its directory).
        model: the ParaDiS model the bundle was converted from.
        x: preprocessed float images (N,) + input shape.
        y: integer labels, or None (then only agreement and errors).
        plans: plans to check (default: all).
        backends: int8 backends run for every plan.
        tflm_plans: plans also run through ``tflm`` (default: none).
        progress: called with the number of samples just processed.

    Returns:
        One `PlanCheck` per plan, in bundle order.
    """
    from paradis_tf.runtime import LocalRunner

    bundle = bundle if isinstance(bundle, Bundle) else load(bundle)
    _require_task(bundle, model, False, "qcheck() (top-1 of a classifier; sr_qcheck() measures PSNR and SSIM)")
    names = list(bundle.plans) if plans is None else [bundle.plan(p).name for p in plans]
    tflm = set() if tflm_plans is None else {bundle.plan(p).name for p in tflm_plans}
    progress = progress or (lambda n: None)
    out = []
    for name in names:
        plan = bundle.plan(name)
        ref = float_reference(model, plan, x)
        progress(len(x))
        checks = []
        for backend in list(backends) + (["tflm"] if name in tflm and "tflm" not in backends else []):
            runner = LocalRunner(bundle, plan, backend, num_threads=num_threads)
            parts = []
            for i in range(0, len(x), batch):
                with native_stderr_quiet():  # between the progress reports
                    parts.append(runner.predict(x[i : i + batch]))
                progress(len(x[i : i + batch]))
            got = np.concatenate(parts)
            top1 = _top1(got, y)
            ftop1 = _top1(ref, y)
            checks.append(
                BackendCheck(
                    backend=backend,
                    top1=top1,
                    agreement=float((got.argmax(1) == ref.argmax(1)).mean()),
                    max_abs_logit_error=float(np.abs(got - ref).max()),
                    drop_points=None if top1 is None else round((ftop1 - top1) * 100, 4),
                )
            )
        out.append(PlanCheck(name, plan.kind, len(x), _top1(ref, y), tuple(checks)))
    return out


# --------------------------------------------------------------------------
# Super-resolution bundles: PSNR and SSIM instead of top-1


@dataclass(frozen=True)
class ImageBackendCheck:
    """One backend's int8 images of one plan, averaged over the photographs."""

    backend: str
    psnr: float  # dB, Y channel, border of `scale` pixels cropped
    ssim: float
    drop_db: float  # float PSNR - int8 PSNR
    psnr_vs_float: float  # the int8 image against the float network's (Y, cropped): how close int8 stays
    max_abs_pixel_error: float  # largest |int8 - float| over all pixels and channels, in levels 0..255 (clipped, unrounded)


@dataclass(frozen=True)
class SRPlanCheck:
    """Quality of one super-resolution plan: the Keras float network and the bundle's int8 partitions."""

    plan: str
    kind: str
    samples: int  # photographs
    scale: int
    float_psnr: float
    float_ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    int8: tuple[ImageBackendCheck, ...] = field(default_factory=tuple)

    def worst_drop(self) -> float | None:
        return max((b.drop_db for b in self.int8), default=None)

    def accuracy_record(self, dataset: str | None = None) -> dict:
        """The manifest's ``accuracy`` entry of this plan (see docs/BUNDLE.md): PSNR/SSIM keys, never the
        top-1 keys ``float``/``int8`` that plan selection ranks classifiers by."""
        acc = {"samples": self.samples, "dataset": dataset, "metric": "psnr_y", "psnr_float": self.float_psnr,
               "ssim_float": self.float_ssim, "psnr_bicubic": self.bicubic_psnr, "ssim_bicubic": self.bicubic_ssim}
        for b in self.int8:
            suffix = "" if b.backend == "litert" else f"_{b.backend}"
            acc[f"psnr_int8{suffix}"] = b.psnr
            acc[f"ssim_int8{suffix}"] = b.ssim
        return acc

    def as_dict(self) -> dict:
        d = asdict(self)
        d["int8"] = [asdict(b) for b in self.int8]
        return d


def _require_task(bundle: Bundle, model: Any, image: bool, use: str) -> None:
    """Refuses a bundle or model of the other task, naming what was received and what is expected."""
    from paradis_tf.convert.converter import is_super_resolution

    what = "super-resolution" if image else "classifier"
    if bundle.model.is_image != image:
        raise ConversionError(f"{bundle.root} is {bundle.model.describe()}; {use} checks a {what} bundle")
    if is_super_resolution(model) != image:
        kind = "a super-resolution model" if is_super_resolution(model) else "a classifier"
        raise ConversionError(f"the model is {kind}; {use} needs the {what} model the bundle was converted from")


def _levels(y: np.ndarray, pre) -> np.ndarray:
    """Float output -> pixel levels 0..255 (clipped, not rounded)."""
    return np.clip((np.asarray(y, np.float64) - pre.offset) / pre.scale, 0, 255)


def _to_pixels(y: np.ndarray, pre) -> np.ndarray:
    return np.round(_levels(y, pre)).astype(np.uint8)


def sr_qcheck(
    bundle: "Bundle | str | os.PathLike",
    model: Any,
    images: "dict[str, np.ndarray] | Sequence[np.ndarray]",
    *,
    plans: Iterable[str] | None = None,
    backends: Sequence[str] = ("litert",),
    tflm_plans: Iterable[str] | None = None,
    num_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SRPlanCheck]:
    """PSNR and SSIM (Y, border cropped by the scale) of a super-resolution bundle's plans on photographs.

    Each photograph is cropped to a multiple of the scale and downscaled
    (`paradis_tf.data.sr.sr_pairs`); the low-resolution image is upscaled by
    the Keras float switch network in one piece, by the int8 partitions tile
    by tile (`LocalRunner.upscale`), and bicubically, and each is rounded to
    uint8 and compared with the original.

    Args:
        bundle: a super-resolution bundle (or its directory).
        model: the `ParaDiSSRModel` it was converted from.
        images: uint8 photographs ``(H, W, C)`` by name (or a sequence) in
            the bundle's pixel format (C = 3 for rgb, 1 for y: see
            `paradis_tf.data.sr.sr_image`).
        plans, backends, tflm_plans, num_threads: as `qcheck`.
        progress: called with 1 after each photograph of each run.

    Raises:
        ConversionError: a classifier bundle or model, or a model whose scale
            or channels differ from the bundle's.
        InputError: an image of another channel count, or whose
            low-resolution version is smaller than the bundle's tile.
    """
    from paradis_tf.data.sr import bicubic_upscale, psnr, sr_pairs, ssim
    from paradis_tf.runtime import LocalRunner

    bundle = bundle if isinstance(bundle, Bundle) else load(bundle)
    _require_task(bundle, model, True, "sr_qcheck() (PSNR and SSIM)")
    out_info, pre = bundle.model.output, bundle.model.preprocessing
    scale = out_info.scale
    if int(model.scale) != scale or int(model.image_shape[-1]) != out_info.channels:
        raise ConversionError(f"the model upscales x{model.scale} images of {model.image_shape[-1]} channel(s), the "
                              f"bundle x{scale} {out_info.pixel_format} ({out_info.channels}); wrong --model?")
    pairs = sr_pairs(images, scale)
    names = list(bundle.plans) if plans is None else [bundle.plan(p).name for p in plans]
    tflm = set() if tflm_plans is None else {bundle.plan(p).name for p in tflm_plans}
    progress = progress or (lambda n: None)
    bicubic = [(psnr(hr, up, scale), ssim(hr, up, scale))
               for lr, hr in pairs.values() for up in [bicubic_upscale(lr, scale)]]
    known = {str(s): s for s in model.switches}
    out = []
    for name in names:
        plan = bundle.plan(name)
        if name not in known:
            raise ConversionError(f"plan {name} is not a switch of the model (it has {list(known)}); wrong --model?")
        net = model.switch_model(known[name])
        floats = []
        for lr, _ in pairs.values():
            floats.append(np.asarray(net(pre.apply(lr)[None], training=False))[0])
            progress(1)
        f_pix = [_to_pixels(f, pre) for f in floats]
        f_scores = [(psnr(hr, f, scale), ssim(hr, f, scale)) for (_, hr), f in zip(pairs.values(), f_pix)]
        checks = []
        for backend in list(backends) + (["tflm"] if name in tflm and "tflm" not in backends else []):
            runner = LocalRunner(bundle, plan, backend, num_threads=num_threads)
            scores, err = [], 0.0
            for (lr, hr), f, fp in zip(pairs.values(), floats, f_pix):
                with native_stderr_quiet():
                    y = upscale(pre.apply(lr), runner.predict, bundle.model.input_shape[:2], scale, out_info.margin)
                err = max(err, float(np.abs(_levels(y, pre) - _levels(f, pre)).max()))
                up = _to_pixels(y, pre)
                scores.append((psnr(hr, up, scale), ssim(hr, up, scale), psnr(fp, up, scale)))
                progress(1)
            mean = np.mean(scores, axis=0) if scores else (np.nan,) * 3
            fp_mean = float(np.mean([s[0] for s in f_scores]))
            checks.append(ImageBackendCheck(backend, float(mean[0]), float(mean[1]), round(fp_mean - float(mean[0]), 4),
                                            float(mean[2]), err))
        out.append(SRPlanCheck(name, plan.kind, len(pairs), scale, float(np.mean([s[0] for s in f_scores])),
                               float(np.mean([s[1] for s in f_scores])), float(np.mean([b[0] for b in bicubic])),
                               float(np.mean([b[1] for b in bicubic])), tuple(checks)))
    return out
