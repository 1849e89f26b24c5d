"""Quantization check: Keras float against the bundle's int8 partitions.

Per plan: top-1 of the Keras float model, top-1 of the fused int8 partitions
(`LocalRunner`, ``litert``) and, for the plans chosen for microcontrollers,
through the real TFLM kernels (``tflm``); how often int8 and float agree on
the top-1 class, and the largest logit error.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from paradis_tf.bundle import Bundle, Plan, load
from paradis_tf.convert.tflite import ConversionError, native_stderr_quiet

__all__ = ["BackendCheck", "PlanCheck", "float_reference", "qcheck"]


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
