"""Choosing a plan for the healthy nodes (pure: no I/O).

Fit. A role fits a node when its width is at most the node's capacity, its
memory (its .tflite files plus their TFLM arenas) is within the node's
memory budget when the node has one, and its estimated latency is within
the node's latency budget when the node has one. Roles are placed widest
first, each on the most capable free node it fits (capacity, then measured
speed).

Ranking (automatic choice, among the plans of the wanted kinds that fit):

1. Plans whose manifest records an accuracy (int8 top-1, else float) rank
   above plans without one.
2. Measured plans are told apart only beyond their sampling noise. Two
   accuracies p1 and p2 measured on n1 and n2 images (the accuracy entry's
   ``samples``) differ significantly when
   ``|p1 - p2| >= 1.96 * sqrt(p * (1 - p) * (1/n1 + 1/n2))`` with the pooled
   ``p = (n1*p1 + n2*p2) / (n1 + n2)`` (the two-proportion z bound at 95%).
   The most accurate remaining plan and every plan not significantly below
   it form a group; a group ranks more devices first (the fleet's every
   device is used when it costs no measurable accuracy), then higher
   accuracy; then the next group. Example: on 1,000 images 3x0.25 at 86.6%
   and 4x0.25 at 86.1% are 0.5 points apart against a bound of 3.0 points,
   so 4x0.25 ranks first; on 100,000 images (bound 0.3 points) 3x0.25 does.
   An entry without ``samples`` has no known noise: its plan is ranked by
   accuracy alone. A super-resolution bundle records PSNR instead of top-1
   (``metric`` ``"psnr_y"``: int8 PSNR with LiteRT, else with another
   backend, else float, in dB); two PSNRs less than `PSNR_TIE_DB` apart
   form a group the same way.
3. Plans without accuracy: wider total width first (slimmable networks gain
   accuracy with width), then fewer devices (less traffic).

Plan names break the remaining ties.

Objectives (`Objective`). The ranking above is the ``accuracy`` objective.
With a latency model (``predict``: plan and role addresses to seconds, e.g.
`paradis_tf.mesh.predict` over measured links and compute), ``latency``
takes the plan with the lowest predicted latency among those whose recorded
accuracy is within ``tolerance`` points of the best fitting one (percentage
points of top-1, dB of PSNR),
and ``budget`` the best-ranked plan predicted within ``budget_ms``. Both try
every assignment of roles to the nodes they fit (up to `MAX_ASSIGNMENTS`),
so a role also lands on the node whose link and speed suit it.

A named plan (``choose_placement(..., plan="2x0.5")``) is that plan or an
error, never another plan: `NoPlanFitsError` names it, says why it does not
fit (not in the bundle; too few healthy nodes; which role needs which
width, memory or time against which nodes) and lists the plans that do fit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from paradis_tf.bundle import PLAN_KINDS, Device, Plan
from paradis_tf.errors import ParaDiSError
from paradis_tf.mesh.errors import NoPlanFitsError
from paradis_tf.switches import Switch

__all__ = [
    "NOISE_Z",
    "NodeCandidate",
    "Placement",
    "PSNR_TIE_DB",
    "plan_accuracy",
    "plan_metric",
    "plan_samples",
    "indistinguishable",
    "rank_plans",
    "fit_plan",
    "why_not_fit",
    "fitting_plans",
    "choose_placement",
    "Objective",
    "MAX_ASSIGNMENTS",
    "fastest_assignment",
    "choose_by_objective",
]

#: role-to-node assignments a latency objective tries per plan (4 roles on 7 nodes: 840)
MAX_ASSIGNMENTS = 5040
#: PSNRs (dB) closer than this rank as equals, more devices first: an order of magnitude below
#: what int8 costs a switch (0.2-0.3 dB), and LiteRT and TFLM agree to 0.002 dB
PSNR_TIE_DB = 0.05


#: z of the two-proportion bound below which measured accuracies count as equal (95%).
NOISE_Z = 1.96


@dataclass(frozen=True)
class NodeCandidate:
    """A healthy node as `GetInfo` describes it."""

    address: str
    capacity: float = 1.0
    speed_score: float = 1.0
    latency_budget_ms: float = 0.0
    node_id: str = ""
    memory_budget_bytes: int = 0

    @classmethod
    def from_info(cls, address: str, info: Any) -> "NodeCandidate":
        """From a `NodeInfo` message (a capacity of 0 means unset: 1.0)."""
        return cls(address, info.capacity or 1.0, info.speed_score, info.latency_budget_ms, info.node_id,
                   info.memory_budget_bytes)

    def estimated_ms(self, macs: float) -> float:
        # speed_score is GFLOP/s of a float matmul: a crude, relative scale.
        return 2.0 * macs / max(self.speed_score, 1e-6) / 1e6

    def why_not(self, width: float, macs: float = 0.0, nbytes: int = 0) -> str | None:
        """Why a role of this width, MACs and memory does not fit here (None: it fits)."""
        if width > self.capacity + 1e-9:
            return f"capacity {self.capacity:g} < width {width:g}"
        if self.memory_budget_bytes > 0 and nbytes > self.memory_budget_bytes:
            return f"memory budget {self.memory_budget_bytes:,} bytes < {nbytes:,} bytes"
        if self.latency_budget_ms > 0 and macs > 0 and self.estimated_ms(macs) > self.latency_budget_ms:
            return f"latency budget {self.latency_budget_ms:g} ms < estimated {self.estimated_ms(macs):.1f} ms"
        return None

    def fits(self, width: float, macs: float = 0.0, nbytes: int = 0) -> bool:
        """Whether a role of this width, MACs and memory (model + arenas) fits."""
        return self.why_not(width, macs, nbytes) is None


@dataclass(frozen=True)
class Placement:
    """A plan and the node address of each of its roles."""

    plan: str
    addresses: tuple[str, ...]  # index = role
    accuracy: float | None = None
    predicted_ms: float | None = field(default=None, compare=False)  # the latency model's, where one was used

    def __str__(self) -> str:
        roles = ", ".join(f"{r}@{a}" for r, a in enumerate(self.addresses))
        return f"{self.plan} [{roles}]"


def role_bytes(device: Device) -> int:
    """Memory a role needs: its .tflite files plus their TFLM arenas when known."""
    return sum(s.size + (s.tflm.arena_bytes if s.tflm is not None else 0) for s in device.segments)


def plan_metric(plan: Plan) -> str:
    """What the plan's recorded accuracy measures: ``"psnr_y"`` (dB, super-resolution) or ``"top1"``."""
    return "psnr_y" if plan.accuracy.get("metric") == "psnr_y" else "top1"


def plan_accuracy(plan: Plan) -> float | None:
    """The quality selection ranks by (None: not measured).

    A classifier: int8 top-1, else float (a fraction). A super-resolution
    plan: int8 PSNR with LiteRT, else with another backend, else float (dB).
    """
    if plan_metric(plan) == "psnr_y":
        others = sorted(k for k in plan.accuracy if k.startswith("psnr_int8_"))
        keys = ["psnr_int8", *others, "psnr_float"]
    else:
        keys = ["int8", "float"]
    for key in keys:
        v = plan.accuracy.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def _points(plan: Plan) -> float:
    """An objective's tolerance unit in the plan's accuracy: percentage points of top-1, or dB."""
    return 1.0 if plan_metric(plan) == "psnr_y" else 100.0


def plan_samples(plan: Plan) -> int | None:
    """How many images the recorded accuracy was measured on (None: not recorded)."""
    n = plan.accuracy.get("samples")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def indistinguishable(a: Plan, b: Plan, z: float = NOISE_Z) -> bool:
    """Whether the recorded accuracies of ``a`` and ``b`` differ by less than their
    sampling noise (module doc); False when either lacks accuracy or sample count."""
    pa, pb, na, nb = plan_accuracy(a), plan_accuracy(b), plan_samples(a), plan_samples(b)
    if pa is None or pb is None or plan_metric(a) != plan_metric(b):
        return False
    if plan_metric(a) == "psnr_y":
        return abs(pa - pb) < PSNR_TIE_DB
    if na is None or nb is None:
        return False
    p = (pa * na + pb * nb) / (na + nb)
    bound = z * math.sqrt(max(p * (1.0 - p), 0.0) * (1.0 / na + 1.0 / nb))
    return abs(pa - pb) < bound


def _plans(plans: "Mapping[str, Plan] | Iterable[Plan]") -> list[Plan]:
    return list(plans.values()) if isinstance(plans, Mapping) else list(plans)


def rank_plans(plans: "Mapping[str, Plan] | Iterable[Plan]", kinds: Iterable[str] = ("paradis",)) -> list[str]:
    """Plan names of the given kinds, best first (see module doc)."""
    kinds = tuple(kinds)
    pool = [p for p in _plans(plans) if p.kind in kinds]

    def key(p: Plan):
        acc = plan_accuracy(p)
        return (acc is not None, acc or 0.0, round(sum(d.width for d in p.devices), 6), -len(p.devices), p.name)

    strict = sorted(pool, key=key, reverse=True)
    measured = [p for p in strict if plan_accuracy(p) is not None]
    ranked: list[Plan] = []
    while measured:
        top = measured[0]
        group = [p for p in measured if p is top or indistinguishable(top, p)]
        # stable: equal device counts keep the accuracy order
        ranked += sorted(group, key=lambda p: len(p.devices), reverse=True)
        measured = [p for p in measured if all(p is not g for g in group)]
    return [p.name for p in ranked] + [p.name for p in strict if plan_accuracy(p) is None]


def _assign(plan: Plan, nodes: Sequence[NodeCandidate]) -> tuple[str, ...] | str:
    """Node address per role, widest role to the most capable node; else why not."""
    devices = plan.devices
    if len(devices) > len(nodes):
        have = ", ".join(n.address for n in nodes) or "none"
        return f"it has {len(devices)} roles and {len(nodes)} healthy node(s) can take one ({have})"
    order = sorted(range(len(devices)), key=lambda r: (-devices[r].width, r))
    free = sorted(nodes, key=lambda n: (-n.capacity, -n.speed_score, n.address))
    out: dict[int, str] = {}
    for r in order:
        d = devices[r]
        nbytes = role_bytes(d)
        pick = next((n for n in free if n.fits(d.width, d.macs, nbytes)), None)
        if pick is None:
            others = "; ".join(f"{n.address}: {n.why_not(d.width, d.macs, nbytes)}" for n in free)
            return (f"role {r} needs width {d.width:g}, {nbytes:,} bytes and {d.macs:,} MACs, "
                    f"which none of the nodes left offers ({others})")
        free.remove(pick)
        out[r] = pick.address
    return tuple(out[r] for r in range(len(devices)))


def fit_plan(plan: Plan, nodes: Sequence[NodeCandidate]) -> tuple[str, ...] | None:
    """Node address per role, widest role to the most capable node; None if it does not fit."""
    got = _assign(plan, nodes)
    return got if isinstance(got, tuple) else None


def why_not_fit(plan: Plan, nodes: Sequence[NodeCandidate]) -> str | None:
    """Why ``plan`` does not fit ``nodes`` (None: it fits)."""
    got = _assign(plan, nodes)
    return None if isinstance(got, tuple) else got


def fitting_plans(
    plans: "Mapping[str, Plan] | Iterable[Plan]", nodes: Sequence[NodeCandidate], kinds: Iterable[str] = ("paradis",)
) -> list[str]:
    """Names of the plans of the given kinds that fit ``nodes``, best first."""
    fit = [p for p in _plans(plans) if fit_plan(p, nodes) is not None]
    return rank_plans(fit, kinds)


def _named(plans: Mapping[str, Plan], name: str) -> Plan | None:
    if name in plans:
        return plans[name]
    try:
        return plans.get(str(Switch.parse(name)))
    except ParaDiSError:
        return None


def choose_placement(
    plans: Mapping[str, Plan],
    nodes: Sequence[NodeCandidate],
    plan: str | None = None,
    kinds: Iterable[str] = ("paradis",),
) -> Placement:
    """The best plan that fits ``nodes`` (module doc), or exactly the named ``plan``.

    Raises:
        NoPlanFitsError: nothing fits; or the named plan is not in the
            bundle or does not fit (the message says why, and which plans fit).
    """
    if plan is not None:
        chosen = _named(plans, plan)
        if chosen is None:
            problem = f"plan {plan!r} is not in the bundle (it has {', '.join(plans)})"
        else:
            got = _assign(chosen, nodes)
            if isinstance(got, tuple):
                return Placement(chosen.name, got, plan_accuracy(chosen))
            problem = f"plan {plan!r} does not fit the healthy nodes: {got}"
        fit = fitting_plans(plans, nodes, PLAN_KINDS)
        offer = f"plans that fit: {', '.join(fit)} (name one of them, or 'auto')" if fit else "no plan fits them"
        raise NoPlanFitsError(f"{problem}; {offer}")
    candidates = fitting_plans(plans, nodes, kinds)
    if candidates:
        best = plans[candidates[0]]
        return Placement(best.name, fit_plan(best, nodes), plan_accuracy(best))
    have = ", ".join(f"{n.address} (capacity {n.capacity:g})" for n in nodes) or "none"
    tried = rank_plans(plans, kinds)
    wanted = ", ".join(f"{c} (widths {'/'.join(f'{d.width:g}' for d in plans[c].devices)})" for c in tried) or "none"
    raise NoPlanFitsError(f"no plan fits the healthy nodes: nodes {have}; plans tried {wanted}")


@dataclass(frozen=True)
class Objective:
    """What an automatic choice optimizes (module doc).

    ``accuracy``: the ranking alone. ``latency``: the fastest predicted plan
    whose accuracy is within ``tolerance`` points of the best fitting plan's:
    percentage points of top-1, or dB of PSNR for a super-resolution bundle
    (plans without a recorded accuracy take part only when no fitting plan
    has one). ``budget``: the best-ranked plan predicted within
    ``budget_ms``.
    """

    kind: str = "accuracy"
    tolerance: float = 0.5
    budget_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("accuracy", "latency", "budget"):
            raise ValueError(f"objective {self.kind!r} is not one of accuracy, latency, budget")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"objective tolerance {self.tolerance!r} must be a finite number of points >= 0")
        if self.kind == "budget" and not (self.budget_ms is not None and math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ValueError(f"a budget objective needs budget_ms > 0 (received {self.budget_ms!r})")

    @classmethod
    def parse(cls, text: str, tolerance: float = 0.5) -> "Objective":
        """``accuracy``, ``latency`` or a latency budget such as ``20ms`` / ``budget:20``."""
        t = text.strip().lower()
        if t in ("accuracy", "latency"):
            return cls(t, tolerance)
        num = t.removeprefix("budget:").removesuffix("ms").strip()
        try:
            return cls("budget", tolerance, float(num))
        except ValueError:
            raise ValueError(f"objective {text!r}: give accuracy, latency, or a latency budget in ms such as 20ms") from None

    def __str__(self) -> str:
        if self.kind == "latency":
            return f"latency (accuracy within {self.tolerance:g} points)"
        if self.kind == "budget":
            return f"the most accurate plan predicted within {self.budget_ms:g} ms"
        return "accuracy"


Predict = Callable[[Plan, tuple[str, ...]], "float | None"]


def fastest_assignment(plan: Plan, nodes: Sequence[NodeCandidate], predict: Predict) -> tuple[tuple[str, ...], float] | None:
    """The role-to-node assignment with the lowest predicted latency (seconds), among those that fit."""
    devices = plan.devices
    if len(devices) > len(nodes):
        return None
    fits = [[n.fits(d.width, d.macs, role_bytes(d)) for n in nodes] for d in devices]
    best: tuple[tuple[str, ...], float] | None = None
    for k, combo in enumerate(itertools.permutations(range(len(nodes)), len(devices))):
        if k >= MAX_ASSIGNMENTS:
            break
        if not all(fits[r][i] for r, i in enumerate(combo)):
            continue
        addresses = tuple(nodes[i].address for i in combo)
        t = predict(plan, addresses)
        if t is not None and (best is None or t < best[1]):
            best = (addresses, t)
    if best is None:  # nothing predicted: the default assignment, unpredicted
        got = fit_plan(plan, nodes)
        return None if got is None else (got, math.nan)
    return best


def choose_by_objective(
    plans: Mapping[str, Plan], nodes: Sequence[NodeCandidate], objective: Objective, predict: Predict,
    kinds: Iterable[str] = ("paradis",),
) -> tuple[Placement, list[Placement]]:
    """The placement an objective picks and every fitting plan's fastest placement (ranked order).

    Raises:
        NoPlanFitsError: nothing fits; or no plan is predicted within the budget
            (the message lists the predictions).
    """
    ranked = fitting_plans(plans, nodes, kinds)
    table: list[Placement] = []
    for name in ranked:
        got = fastest_assignment(plans[name], nodes, predict)
        if got is not None:
            ms = None if math.isnan(got[1]) else got[1] * 1000
            table.append(Placement(name, got[0], plan_accuracy(plans[name]), ms))
    if not table:
        return choose_placement(plans, nodes, kinds=kinds), []
    if objective.kind == "accuracy":
        return table[0], table
    known = [p for p in table if p.predicted_ms is not None]
    if objective.kind == "latency":
        measured = [p for p in known if p.accuracy is not None]
        pool = known
        if measured:
            top = max(p.accuracy for p in measured)
            pool = [p for p in measured
                    if (top - p.accuracy) * _points(plans[p.plan]) <= objective.tolerance + 1e-9]
        if not pool:
            return table[0], table
        return min(pool, key=lambda p: (p.predicted_ms, table.index(p))), table
    within = [p for p in known if p.predicted_ms <= objective.budget_ms]
    if within:
        return within[0], table
    listed = ", ".join(f"{p.plan} {p.predicted_ms:.1f} ms" for p in known) or "none could be predicted"
    raise NoPlanFitsError(f"no plan that fits is predicted within the latency budget of {objective.budget_ms:g} ms "
                          f"(predictions: {listed}); raise the budget or add faster nodes")
