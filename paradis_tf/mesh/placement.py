"""Choosing a plan for the healthy nodes (pure: no I/O).

The most accurate plan whose roles all fit: a role fits a node when its
width is at most the node's capacity and, when the node has a latency
budget, its estimated latency is within it. The widest role goes to the most
capable node (capacity, then measured speed). Plans are ranked by the int8
accuracy the manifest records (else float accuracy); plans without recorded
accuracy rank after those with it, wider total width first (slimmable
networks gain accuracy with width), then fewer devices (less traffic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from paradis_tf.mesh.errors import NoPlanFitsError

__all__ = ["NodeCandidate", "Placement", "rank_plans", "fit_plan", "choose_placement"]


@dataclass(frozen=True)
class NodeCandidate:
    """A healthy node as `GetInfo` describes it."""

    address: str
    capacity: float = 1.0
    speed_score: float = 1.0
    latency_budget_ms: float = 0.0
    node_id: str = ""
    memory_budget_bytes: int = 0

    def estimated_ms(self, macs: float) -> float:
        # speed_score is GFLOP/s of a float matmul: a crude, relative scale.
        return 2.0 * macs / max(self.speed_score, 1e-6) / 1e6

    def fits(self, width: float, macs: float = 0.0, nbytes: int = 0) -> bool:
        """Whether a role of this width, MACs and memory (model + arenas) fits."""
        if width > self.capacity + 1e-9:
            return False
        if self.memory_budget_bytes > 0 and nbytes > self.memory_budget_bytes:
            return False
        return not (self.latency_budget_ms > 0 and macs > 0 and self.estimated_ms(macs) > self.latency_budget_ms)


@dataclass(frozen=True)
class Placement:
    """A plan and the node address of each of its roles."""

    plan: str
    addresses: tuple[str, ...]  # index = role
    accuracy: float | None = None

    def __str__(self) -> str:
        roles = ", ".join(f"{r}@{a}" for r, a in enumerate(self.addresses))
        return f"{self.plan} [{roles}]"


def plan_widths(plan: Mapping[str, Any]) -> list[float]:
    return [float(d.get("width", 1.0)) for d in plan["devices"]]


def role_bytes(device: Mapping[str, Any]) -> int:
    """Memory a role needs: its .tflite files plus their TFLM arenas when known."""
    total = 0
    for seg in device.get("segments", []):
        total += int(seg.get("size") or 0)
        tflm = seg.get("tflm") or {}
        total += int(tflm.get("arena_bytes") or 0)
    return total


def plan_accuracy(plan: Mapping[str, Any]) -> float | None:
    acc = plan.get("accuracy") or {}
    for key in ("int8", "float"):
        v = acc.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def rank_plans(plans: Mapping[str, Mapping[str, Any]], kinds: Iterable[str] = ("paradis",)) -> list[str]:
    """Plan names, most accurate first (see module doc)."""
    kinds = tuple(kinds)
    names = [n for n, p in plans.items() if p.get("kind", "paradis") in kinds]

    def key(name: str):
        p = plans[name]
        acc = plan_accuracy(p)
        return (acc is not None, acc or 0.0, round(sum(plan_widths(p)), 6), -len(p["devices"]), name)

    return sorted(names, key=key, reverse=True)


def fit_plan(plan: Mapping[str, Any], nodes: Sequence[NodeCandidate]) -> tuple[str, ...] | None:
    """Node address per role, widest role to the most capable node; None if it does not fit."""
    devices = plan["devices"]
    if len(devices) > len(nodes):
        return None
    order = sorted(range(len(devices)), key=lambda r: (-float(devices[r].get("width", 1.0)), r))
    free = sorted(nodes, key=lambda n: (-n.capacity, -n.speed_score, n.address))
    out: dict[int, str] = {}
    for r in order:
        width = float(devices[r].get("width", 1.0))
        macs = float(devices[r].get("macs") or 0.0)
        nbytes = role_bytes(devices[r])
        pick = next((n for n in free if n.fits(width, macs, nbytes)), None)
        if pick is None:
            return None
        free.remove(pick)
        out[r] = pick.address
    return tuple(out[r] for r in range(len(devices)))


def choose_placement(
    plans: Mapping[str, Mapping[str, Any]],
    nodes: Sequence[NodeCandidate],
    plan: str | None = None,
    kinds: Iterable[str] = ("paradis",),
) -> Placement:
    """The most accurate plan that fits ``nodes`` (or the named ``plan``).

    Raises:
        NoPlanFitsError: nothing fits; the message lists nodes and plans.
    """
    if plan is not None:
        if plan not in plans:
            raise NoPlanFitsError(f"plan {plan!r} is not in the bundle (plans: {', '.join(sorted(plans))})")
        candidates = [plan]
    else:
        candidates = rank_plans(plans, kinds)
    for name in candidates:
        addresses = fit_plan(plans[name], nodes)
        if addresses is not None:
            return Placement(name, addresses, plan_accuracy(plans[name]))
    have = ", ".join(f"{n.address} (capacity {n.capacity:g})" for n in nodes) or "none"
    wanted = ", ".join(f"{c} (widths {'/'.join(f'{w:g}' for w in plan_widths(plans[c]))})" for c in candidates) or "none"
    raise NoPlanFitsError(f"no plan fits the healthy nodes: nodes {have}; plans tried {wanted}")
