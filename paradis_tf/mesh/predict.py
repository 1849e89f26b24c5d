"""Predicting a plan's latency on a network of nodes (pure: no I/O).

A request of a plan is a small graph: the coordinator sends the model input
to every role that reads it, each role runs its segments in order, a segment
waits for the feature maps it takes from other roles (``Exchange``, node to
node), and the fusion outputs go back to the coordinator. The prediction
walks that graph with

* a link per node (`Link`): one-way time ``rtt / 2`` plus ``bytes / rate``;
  node-to-node traffic crosses both nodes' links (half of each round trip,
  the slower rate), as on a switched LAN or the testbed's star of veths;
* an optional coordinator uplink rate, shared by the input broadcast (every
  role's input leaves through it);
* each role's compute time for its whole partition at batch 1
  (`NodeModel.compute_s`, measured by the node at activation and from live
  ``RunReply.compute_ms``), else the role's MACs at the node's measured
  seconds per MAC, split between a role's segments by their MACs;
* a software cost per RPC (``rpc_overhead_s``: serialization, event
  loops, the interpreter hand-over; per node where measured), paid once per
  role call and once per exchange;
* the coordinator's own serial work (``coordinator_call_s``): it prepares
  and sends the role calls one after another (role k's call leaves after k
  others) and takes the replies in one event loop (each reply after the
  first waits for the one before).

The latency is when the last fusion output reaches the coordinator; every
stage of that path is in `Prediction.critical_path`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from paradis_tf.bundle import Plan, SegmentRef

__all__ = ["Link", "NodeModel", "Prediction", "predict_plan", "segment_fractions"]


@dataclass(frozen=True)
class Link:
    """A node's link as the coordinator measures it: payload rate (bytes/s, inf: unlimited) and round trip (s)."""

    rate_bytes_per_s: float = math.inf
    rtt_s: float = 0.0

    def one_way_s(self, nbytes: int) -> float:
        return self.rtt_s / 2 + (nbytes / self.rate_bytes_per_s if nbytes and math.isfinite(self.rate_bytes_per_s) else 0.0)


@dataclass(frozen=True)
class NodeModel:
    """What the coordinator knows of one node's speed and link.

    ``compute_s`` maps (plan, role) to the role's measured time at batch 1;
    ``seconds_per_mac`` stands in for roles never measured on the node
    (None: unknown, such roles cannot be predicted). ``rpc_overhead_s`` is
    the node's own measured cost of a call beyond compute and link (a slow
    board decodes and answers slowly too), else `predict_plan`'s default.
    """

    address: str
    link: Link = Link()
    compute_s: Mapping[tuple[str, int], float] = field(default_factory=dict)
    seconds_per_mac: float | None = None
    rpc_overhead_s: float | None = None  # this node's software cost per call (None: the plan-wide default)

    def role_s(self, plan: Plan, role: int) -> float | None:
        t = self.compute_s.get((plan.name, role))
        if t is not None:
            return t
        if self.seconds_per_mac is None:
            return None
        return plan.devices[role].macs * self.seconds_per_mac


@dataclass(frozen=True)
class Prediction:
    plan: str
    addresses: tuple[str, ...]
    latency_s: float
    input_s: float  # the slowest role's input arrival
    compute_s: float  # the slowest role's compute
    exchange_s: float  # time in node-to-node transfers on the critical path
    output_s: float  # the last output's trip back
    critical_path: tuple[str, ...]

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1000


def segment_fractions(plan: Plan, segment_macs: Mapping[SegmentRef, int] | None = None) -> dict[SegmentRef, float]:
    """Each segment's share of its role's compute: by MACs where known, else equal shares."""
    out: dict[SegmentRef, float] = {}
    for d in plan.devices:
        refs = [SegmentRef(d.role, s.index) for s in d.segments]
        macs = [segment_macs.get(r, 0) if segment_macs else 0 for r in refs]
        total = sum(macs)
        for r, m in zip(refs, macs):
            out[r] = m / total if total > 0 else 1.0 / len(refs)
    return out


def predict_plan(
    plan: Plan,
    addresses: Sequence[str],
    nodes: Mapping[str, NodeModel],
    *,
    rpc_overhead_s: float = 0.0,
    coordinator_rate_bytes_per_s: float = math.inf,
    segment_macs: Mapping[SegmentRef, int] | None = None,
    coordinator_call_s: float = 0.0,
) -> Prediction | None:
    """The latency of one request of ``plan`` with role k on ``addresses[k]`` (None: a role's compute is unknown).

    ``coordinator_call_s`` is the coordinator's serial time per role call
    (half sending, half taking the reply).
    """
    if len(addresses) != len(plan.devices):
        raise ValueError(f"plan {plan.name!r} has {len(plan.devices)} roles; {len(addresses)} addresses given")
    models = [nodes[a] for a in addresses]
    role_s = [m.role_s(plan, r) for r, m in enumerate(models)]
    if any(t is None for t in role_s):
        return None
    frac = segment_fractions(plan, segment_macs)
    # the input broadcast: each role's model input, all leaving through the coordinator's uplink
    in_bytes = {}
    for d in plan.devices:
        seen = False
        for s in d.segments:
            for i in s.inputs:
                if i.source is None and not seen:
                    in_bytes[d.role] = in_bytes.get(d.role, 0) + i.tensor.nbytes
                    seen = True
    total_in = sum(in_bytes.values())
    shared = total_in / coordinator_rate_bytes_per_s if math.isfinite(coordinator_rate_bytes_per_s) else 0.0
    over = [m.rpc_overhead_s if m.rpc_overhead_s is not None else rpc_overhead_s for m in models]
    send = coordinator_call_s / 2
    start = {}
    for r, m in enumerate(models):
        nbytes = in_bytes.get(r, 0)
        if nbytes:
            start[r] = r * send + over[r] + max(m.link.one_way_s(nbytes), m.link.rtt_s / 2 + shared)
        else:
            start[r] = r * send + over[r] + m.link.rtt_s / 2  # the Run call itself still travels
    done: dict[SegmentRef, float] = {}
    path: dict[SegmentRef, tuple[str, ...]] = {}
    exch: dict[SegmentRef, float] = {}

    def finish(ref: SegmentRef) -> float:
        """When segment ``ref`` ends (memoized; a role runs its segments in order)."""
        if ref in done:
            return done[ref]
        r = ref.device
        if ref.segment == 0:
            ready, why, spent = start[r], (f"input to role {r}",), 0.0
        else:
            prev = SegmentRef(r, ref.segment - 1)
            ready, why, spent = finish(prev), path[prev], exch[prev]
        for i in plan.segment(ref).inputs:
            src = i.source
            if src is None:
                continue
            if src.device == r:
                if finish(src) > ready:
                    ready, why, spent = done[src], path[src], exch[src]
                continue
            a, b = models[src.device].link, models[r].link
            rate = min(a.rate_bytes_per_s, b.rate_bytes_per_s)
            nbytes = plan.segment(src).output.nbytes
            hop = over[src.device] + a.rtt_s / 2 + b.rtt_s / 2 + (nbytes / rate if math.isfinite(rate) else 0.0)
            if finish(src) + hop > ready:
                ready = done[src] + hop
                why = path[src] + (f"exchange role {src.device} -> {r} ({nbytes:,} B)",)
                spent = exch[src] + hop
        done[ref] = ready + role_s[r] * frac[ref]
        path[ref] = why + (f"role {r} segment {ref.segment}",)
        exch[ref] = spent
        return done[ref]

    end, last = -1.0, None
    for ref in plan.fusion.outputs:
        t = finish(ref) + models[ref.device].link.one_way_s(plan.segment(ref).output.nbytes)
        if t > end:
            end, last = t, ref
    assert last is not None
    take = coordinator_call_s - send
    if take > 0:  # every role's reply (outputs or not) is taken in arrival order, one after another
        arrivals = []
        for d in plan.devices:
            out_bytes = sum(plan.segment(ref).output.nbytes for ref in plan.fusion.outputs if ref.device == d.role)
            arrivals.append(finish(SegmentRef(d.role, len(d.segments) - 1)) + models[d.role].link.one_way_s(out_bytes))
        free = 0.0
        for t in sorted(arrivals):
            free = max(free, t) + take
        end = max(end, free)
    r = last.device
    return Prediction(
        plan=plan.name,
        addresses=tuple(addresses),
        latency_s=end,
        input_s=max(start.values()),
        compute_s=max(role_s),
        exchange_s=exch[last],
        output_s=end - done[last],
        critical_path=path[last] + (f"output of role {r} to the coordinator",),
    )
