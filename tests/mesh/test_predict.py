"""The plan latency model (paradis_tf.mesh.predict): checked against hand-computed timelines of real bundles."""

from __future__ import annotations

import math

import pytest

from paradis_tf.bundle import load
from paradis_tf.mesh.predict import Link, NodeModel, predict_plan, segment_fractions
from paradis_tf.runtime.plan_cost import plan_cost


def _nodes(n, link=Link(), **compute):
    return {f"n{k}": NodeModel(f"n{k}", link, compute.get(f"n{k}", {}), seconds_per_mac=1e-9) for k in range(n)}


def test_parallel_roles_on_free_links_take_the_slowest_role(bundle4):
    plan = load(bundle4).plan("4x0.25")
    nodes = _nodes(4)
    nodes["n2"] = NodeModel("n2", Link(), {("4x0.25", 2): 0.005}, seconds_per_mac=1e-9)
    p = predict_plan(plan, ["n0", "n1", "n2", "n3"], nodes)
    slow = max(0.005, *(d.macs * 1e-9 for d in plan.devices if d.role != 2))
    assert p.latency_s == pytest.approx(slow)
    assert p.critical_path[0] == "input to role 2" and p.exchange_s == 0.0


def test_links_cost_half_a_round_trip_each_way_plus_bytes_over_rate(bundle4):
    plan = load(bundle4).plan("2x0.25")
    cost = plan_cost(plan)
    link = Link(rate_bytes_per_s=1e6, rtt_s=0.004)
    nodes = {a: NodeModel(a, link, {("2x0.25", r): 0.010}) for r, a in enumerate(["a", "b"])}
    p = predict_plan(plan, ["a", "b"], nodes, rpc_overhead_s=0.001)
    d = cost.devices[0]
    want = 0.001 + 0.002 + d.input_bytes / 1e6 + 0.010 + 0.002 + d.output_bytes / 1e6
    assert p.latency_s == pytest.approx(want)
    # a coordinator uplink shared by the broadcast: both inputs leave through it
    q = predict_plan(plan, ["a", "b"], nodes, rpc_overhead_s=0.001, coordinator_rate_bytes_per_s=5e5)
    assert q.input_s == pytest.approx(0.001 + 0.002 + cost.input_broadcast_bytes / 5e5)


def test_sequential_plans_pay_every_hop_and_sync_plans_their_exchange(bundle_sync):
    b = load(bundle_sync)
    link = Link(rate_bytes_per_s=2e6, rtt_s=0.002)
    seq = b.plan("seq-2")
    nodes = {a: NodeModel(a, link, {("seq-2", 0): 0.004, ("seq-2", 1): 0.006}) for a in "ab"}
    p = predict_plan(seq, ["a", "b"], nodes)
    cost = plan_cost(seq)
    hop = 0.001 + 0.001 + cost.exchange_bytes / 2e6
    want = 0.001 + cost.devices[0].input_bytes / 2e6 + 0.004 + hop + 0.006 + 0.001 + cost.output_bytes / 2e6
    assert p.latency_s == pytest.approx(want)
    assert any("exchange role 0 -> 1" in s for s in p.critical_path) and p.exchange_s == pytest.approx(hop)
    # 2x0.5 with a sync layer: two segments per role, the exchange between them on the critical path
    sync = b.plan("2x0.5")
    assert all(len(d.segments) == 2 for d in sync.devices)
    nodes = {a: NodeModel(a, link, {("2x0.5", 0): 0.004, ("2x0.5", 1): 0.004}) for a in "ab"}
    p2 = predict_plan(sync, ["a", "b"], nodes)
    free = predict_plan(sync, ["a", "b"], {a: NodeModel(a, Link(), n.compute_s) for a, n in nodes.items()})
    assert free.latency_s == pytest.approx(0.004)  # free links: compute alone, the segments back to back
    assert p2.latency_s > free.latency_s + 0.002 and p2.exchange_s > 0.001


def test_unknown_compute_is_no_prediction_and_fractions_sum_to_one(bundle_sync):
    plan = load(bundle_sync).plan("2x0.5")
    assert predict_plan(plan, ["a", "b"], {a: NodeModel(a) for a in "ab"}) is None
    frac = segment_fractions(plan)
    for d in plan.devices:
        assert math.isclose(sum(v for k, v in frac.items() if k.device == d.role), 1.0)
    with pytest.raises(ValueError, match="2 roles; 1 addresses"):
        predict_plan(plan, ["a"], {"a": NodeModel("a")})
