"""The quantization check *on device*: the live mesh against local runs.

`paradis qcheck bundle/ --nodes ...` (the qcheck command owns the float
Keras side and the report) calls `mesh_qcheck`, which deploys the bundle,
runs the test set through every requested plan on the nodes and compares the
fused logits with `LocalRunner`'s int8 logits for the same plan (they must be
identical: same partitions, same requantization) and, when labels are given,
the accuracies.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from paradis_tf.mesh.coordinator import Coordinator

__all__ = ["MeshCheck", "mesh_qcheck"]


@dataclass(frozen=True)
class MeshCheck:
    plan: str
    nodes: tuple[str, ...]
    samples: int
    identical: float  # fraction of samples whose mesh logits equal local int8 logits exactly
    max_abs_diff: float  # mesh vs local int8 logits
    top1_agreement: float  # argmax(mesh) == argmax(local int8)
    mesh_accuracy: float | None
    local_int8_accuracy: float | None
    mesh_ms_per_sample: float
    logits: np.ndarray  # mesh logits, (N, num_classes)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("logits")
        return d


def mesh_qcheck(
    bundle_dir: str | os.PathLike,
    nodes: Sequence[str] | str,
    x: np.ndarray,
    y: np.ndarray | None = None,
    plans: Iterable[str] | None = None,
    *,
    deploy: bool = True,
    backend: str = "litert",
    tls=None,
) -> list[MeshCheck]:
    """Runs ``x`` (preprocessed floats) through the mesh for each plan.

    Args:
        bundle_dir: the bundle (deployed first unless ``deploy=False``).
        nodes: node addresses.
        x: images, float32 (N,) + input_shape, preprocessed.
        y: integer labels (N,), optional.
        plans: plan names (default: every ParaDiS plan that fits the nodes).
        backend: LocalRunner backend for the local reference.
        tls: `paradis_tf.mesh.security.TlsConfig` for nodes serving TLS.

    Returns:
        One `MeshCheck` per plan that was run.
    """
    from paradis_tf.mesh.placement import NodeCandidate, fitting_plans
    from paradis_tf.runtime import LocalRunner

    out = []
    with Coordinator(nodes, bundle=bundle_dir, auto_replan=False, tls=tls) as c:
        if deploy:
            c.deploy(bundle_dir)
        if plans is None:
            up = [NodeCandidate.from_info(s.address, s.info) for s in c.status() if s.up]
            plans = fitting_plans(c.bundle.plans, up)
        for name in plans:
            placement = c.select(name)
            t0 = time.perf_counter()
            mesh = c.infer(x)
            dt = (time.perf_counter() - t0) / max(1, len(x))
            local = LocalRunner(bundle_dir, name, backend).predict(x)
            same = np.all(mesh == local, axis=1)
            agree = np.argmax(mesh, 1) == np.argmax(local, 1)
            acc = (lambda z: float(np.mean(np.argmax(z, 1) == y))) if y is not None else (lambda z: None)
            out.append(
                MeshCheck(
                    plan=name, nodes=placement.addresses, samples=len(x), identical=float(same.mean()),
                    max_abs_diff=float(np.max(np.abs(mesh - local))), top1_agreement=float(agree.mean()),
                    mesh_accuracy=acc(mesh), local_int8_accuracy=acc(local), mesh_ms_per_sample=round(dt * 1e3, 3), logits=mesh,
                )
            )
    return out
