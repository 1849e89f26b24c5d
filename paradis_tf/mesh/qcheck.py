"""The quantization check *on device*: the live mesh against local runs.

`paradis qcheck bundle/ --nodes ...` (the qcheck command owns the float
Keras side and the report) calls `mesh_qcheck`, which deploys the bundle,
runs the test set through every requested plan on the nodes and compares the
fused logits with `LocalRunner`'s int8 logits for the same plan (they must be
identical: same partitions, same requantization) and, when labels are given,
the accuracies. For a super-resolution bundle, `mesh_image_check` upscales
whole images tile by tile through the mesh and compares them with
`LocalRunner`'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from paradis_tf.mesh.coordinator import Coordinator

__all__ = ["MeshCheck", "MeshImageCheck", "mesh_image_check", "mesh_qcheck"]


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


@dataclass(frozen=True)
class MeshImageCheck:
    """A super-resolution plan on the mesh against `LocalRunner`: whole images, tile by tile."""

    plan: str
    nodes: tuple[str, ...]
    images: int
    identical: float  # fraction of images whose mesh output equals the local int8 output exactly
    max_abs_diff: float  # largest |mesh - local| over every pixel (float output units)
    mesh_s_per_image: float

    def as_dict(self) -> dict:
        return asdict(self)


def mesh_image_check(
    bundle_dir: str | os.PathLike,
    nodes: Sequence[str] | str,
    images: Sequence[np.ndarray],
    plans: Iterable[str] | None = None,
    *,
    deploy: bool = True,
    backend: str = "litert",
    tls=None,
) -> list[MeshImageCheck]:
    """Upscales low-resolution images through the mesh and through `LocalRunner` for each plan and compares.

    Args:
        bundle_dir: a super-resolution bundle (deployed first unless ``deploy=False``).
        nodes: node addresses.
        images: float32 ``(H, W, C)`` low-resolution images, preprocessed,
            each at least the bundle's tile.
        plans: plan names (default: every ParaDiS plan that fits the nodes).
        backend: LocalRunner backend for the local reference.
        tls: `paradis_tf.mesh.security.TlsConfig` for nodes serving TLS.
    """
    from paradis_tf.mesh.placement import NodeCandidate, fitting_plans
    from paradis_tf.runtime import LocalRunner
    from paradis_tf.runtime.image import check_sr_model, upscale

    out = []
    with Coordinator(nodes, bundle=bundle_dir, auto_replan=False, tls=tls) as c:
        model = c.bundle.model
        check_sr_model(model, f"bundle {bundle_dir}")
        tile, scale, margin = model.input_shape[:2], model.output.scale, model.output.margin
        if deploy:
            c.deploy(bundle_dir)
        if plans is None:
            up = [NodeCandidate.from_info(s.address, s.info) for s in c.status() if s.up]
            plans = fitting_plans(c.bundle.plans, up)
        for name in plans:
            placement = c.select(name)
            local = LocalRunner(bundle_dir, name, backend)
            t0 = time.perf_counter()
            got = [upscale(x, c.infer, tile, scale, margin) for x in images]
            dt = (time.perf_counter() - t0) / max(1, len(images))
            want = [upscale(x, local.predict, tile, scale, margin) for x in images]
            out.append(MeshImageCheck(
                plan=name, nodes=placement.addresses, images=len(images),
                identical=float(np.mean([np.array_equal(g, w) for g, w in zip(got, want)])),
                max_abs_diff=max((float(np.max(np.abs(g - w))) for g, w in zip(got, want)), default=0.0),
                mesh_s_per_image=round(dt, 4),
            ))
    return out
