"""Plan selection: the best plan that fits (accuracy told apart beyond sampling
noise, then more devices), widest role to the most capable node, and a named
plan is that plan or an error that says why."""

import math

import pytest

from paradis_tf.bundle import Device, Fusion, Plan, Segment, SegmentInput, SegmentRef, TensorSpec, TflmInfo
from paradis_tf.mesh.errors import NoPlanFitsError
from paradis_tf.mesh.placement import NodeCandidate, choose_placement, fitting_plans, indistinguishable, rank_plans
from paradis_tf.quant import QuantParams

_LOGITS = TensorSpec((1, 10), QuantParams("int8", 0.1, 0))


def plan(name, widths=None, accuracy=None, kind="paradis", macs=1000, size=0, samples=None):
    """A `Plan` as the manifest describes it (one segment per role of ``size`` bytes plus an arena as large)."""
    widths = widths or [float(w) for w in name.split("x")[1:]] * int(name.split("x")[0])
    tflm = TflmInfo(size, ("ADD",), "s.cc", "s.h", "s") if size else None
    devices = tuple(
        Device(k, w, macs, 0, (Segment(0, f"{name}/{k}.tflite", "0" * 64, size, (SegmentInput(None, _LOGITS),), _LOGITS, tflm=tflm),))
        for k, w in enumerate(widths)
    )
    acc = {}
    if accuracy is not None:
        acc["int8"] = accuracy
    if samples is not None:
        acc["samples"] = samples
    return Plan(name, kind, tuple(widths), Fusion("sum", (0.0,) * 10, tuple(SegmentRef(k, 0) for k in range(len(widths)))),
                devices, acc)


def bundle(*plans):
    return {p.name: p for p in plans}


FLEET = bundle(plan("1x0.25"), plan("2x0.25"), plan("3x0.25"), plan("4x0.25"))


def nodes(*caps, speed=1.0):
    return [NodeCandidate(f"h:{5000 + i}", c, speed) for i, c in enumerate(caps)]


@pytest.mark.parametrize("count,expected", [(4, "4x0.25"), (3, "3x0.25"), (2, "2x0.25"), (1, "1x0.25"), (6, "4x0.25")])
def test_equal_fleet_uses_every_device(count, expected):
    assert choose_placement(FLEET, nodes(*[0.25] * count)).plan == expected


def test_recorded_accuracy_wins_over_width():
    plans = bundle(plan("2x0.5", accuracy=0.80), plan("1x1.0", accuracy=0.91), plan("1x0.5", accuracy=0.85))
    assert rank_plans(plans) == ["1x1.0", "1x0.5", "2x0.5"]
    assert choose_placement(plans, nodes(1.0, 1.0)).plan == "1x1.0"
    assert choose_placement(plans, nodes(0.5, 0.5)).plan == "1x0.5"


def test_accuracies_within_sampling_noise_prefer_more_devices():
    # the demo: on 1,000 images 3x0.25 scored 0.5 points above 4x0.25
    demo = dict(accuracy=None, samples=1000)
    plans = bundle(plan("1x0.25", **{**demo, "accuracy": 0.847}), plan("2x0.25", **{**demo, "accuracy": 0.858}),
                   plan("3x0.25", **{**demo, "accuracy": 0.866}), plan("4x0.25", **{**demo, "accuracy": 0.861}))
    # the two-proportion bound at 95%: 1.96 * sqrt(p (1 - p) (1/1000 + 1/1000)) with p pooled
    p = (0.866 + 0.861) / 2
    assert math.isclose(1.96 * math.sqrt(p * (1 - p) * 2 / 1000), 0.0301, abs_tol=1e-4)
    assert indistinguishable(plans["3x0.25"], plans["4x0.25"])
    assert rank_plans(plans) == ["4x0.25", "3x0.25", "2x0.25", "1x0.25"]
    assert choose_placement(plans, nodes(*[0.25] * 4)).plan == "4x0.25"
    # one node lost: three devices (not "3x0.25 again")
    assert choose_placement(plans, nodes(*[0.25] * 3)).plan == "3x0.25"

    # measured on 100,000 images the same half point is beyond the noise (bound 0.3 points)
    big = bundle(*(plan(p.name, accuracy=p.accuracy["int8"], samples=100_000) for p in plans.values()))
    assert not indistinguishable(big["3x0.25"], big["4x0.25"])
    assert rank_plans(big)[:2] == ["3x0.25", "4x0.25"]
    # a bundle whose entries lack the sample count keeps the ranking by accuracy alone
    unknown = bundle(*(plan(p.name, accuracy=p.accuracy["int8"]) for p in plans.values()))
    assert rank_plans(unknown) == ["3x0.25", "4x0.25", "2x0.25", "1x0.25"]


def test_differences_beyond_the_noise_still_rank_by_accuracy():
    # 1x1.0 vs 2x0.5 on 1,000 images: 2.1 points < bound 2.9 points, so the two-device plan;
    # on 10,000 images (bound 0.9 points) the more accurate one
    for n, first in ((1000, "2x0.5"), (10_000, "1x1.0")):
        plans = bundle(plan("1x1.0", accuracy=0.892, samples=n), plan("2x0.5", accuracy=0.871, samples=n),
                       plan("4x0.25", accuracy=0.80, samples=n))
        assert rank_plans(plans)[0] == first, n
        assert rank_plans(plans)[-1] == "4x0.25"  # 9 points below: its own group
    # samples on one side only: no known noise
    assert not indistinguishable(plan("1x1.0", accuracy=0.9, samples=1000), plan("2x0.5", accuracy=0.9))


def test_widest_role_goes_to_the_most_capable_node():
    plans = bundle(plan("0.25+0.5+0.25", [0.25, 0.5, 0.25]))
    ns = [NodeCandidate("weak:1", 0.25), NodeCandidate("strong:1", 1.0), NodeCandidate("weak:2", 0.25)]
    p = choose_placement(plans, ns)
    assert p.addresses[1] == "strong:1" and set(p.addresses) == {"weak:1", "weak:2", "strong:1"}
    # equal capacity: the faster node gets the wide role
    ns = [NodeCandidate("slow:1", 1.0, 1.0), NodeCandidate("fast:1", 1.0, 9.0), NodeCandidate("slow:2", 1.0, 1.0)]
    assert choose_placement(plans, ns).addresses[1] == "fast:1"


def test_sequential_plans_only_on_request():
    plans = dict(FLEET, **bundle(plan("seq-2", [1.0, 1.0], kind="sequential")))
    assert choose_placement(plans, nodes(1.0, 1.0)).plan == "2x0.25"
    assert choose_placement(plans, nodes(1.0, 1.0), plan="seq-2").plan == "seq-2"
    assert fitting_plans(plans, nodes(1.0, 1.0)) == ["2x0.25", "1x0.25"]


def test_latency_budget_excludes_slow_roles():
    slow = [NodeCandidate("a:1", 1.0, speed_score=1.0, latency_budget_ms=1.0)]
    plans = bundle(plan("1x1.0", macs=10_000_000), plan("1x0.25", macs=100_000))
    # 2 * 1e7 MAC / 1 GFLOP/s = 20 ms > 1 ms; 0.2 ms fits
    assert choose_placement(plans, slow).plan == "1x0.25"
    with pytest.raises(NoPlanFitsError, match=r"a:1: latency budget 1 ms < estimated 20.0 ms"):
        choose_placement(plans, slow, plan="1x1.0")


def test_nothing_fits_says_why():
    with pytest.raises(NoPlanFitsError, match=r"h:5000 \(capacity 0.1\).*4x0.25 \(widths 0.25/0.25/0.25/0.25\)"):
        choose_placement(FLEET, nodes(0.1))


def test_a_named_plan_is_that_plan_or_an_error_naming_it_and_the_plans_that_fit():
    two = nodes(0.25, 0.25)
    # normalised switch text names the same plan
    assert choose_placement(FLEET, two, plan="2x0.250").plan == "2x0.25"
    with pytest.raises(NoPlanFitsError) as e:
        choose_placement(FLEET, two, plan="8x0.125")
    assert str(e.value) == (
        "plan '8x0.125' is not in the bundle (it has 1x0.25, 2x0.25, 3x0.25, 4x0.25); "
        "plans that fit: 2x0.25, 1x0.25 (name one of them, or 'auto')"
    )
    with pytest.raises(NoPlanFitsError) as e:
        choose_placement(FLEET, two, plan="4x0.25")
    assert str(e.value) == (
        "plan '4x0.25' does not fit the healthy nodes: it has 4 roles and 2 healthy node(s) can take one "
        "(h:5000, h:5001); plans that fit: 2x0.25, 1x0.25 (name one of them, or 'auto')"
    )
    wide = bundle(plan("2x0.5"), plan("1x0.25"))
    with pytest.raises(NoPlanFitsError) as e:
        choose_placement(wide, nodes(0.25, 1.0), plan="2x0.5")
    assert str(e.value) == (
        "plan '2x0.5' does not fit the healthy nodes: role 1 needs width 0.5, 0 bytes and 1,000 MACs, which none of "
        "the nodes left offers (h:5000: capacity 0.25 < width 0.5); plans that fit: 1x0.25 (name one of them, or 'auto')"
    )
    assert "\n" not in str(e.value)
    with pytest.raises(NoPlanFitsError, match=r"plan '2x0.5' does not fit .*; no plan fits them$"):
        choose_placement(wide, nodes(0.1), plan="2x0.5")


def test_memory_budget_excludes_big_roles():
    plans = bundle(plan("1x1.0", size=2_000_000), plan("2x0.5", size=500_000))
    small = [NodeCandidate(f"m:{i}", 1.0, memory_budget_bytes=3_000_000) for i in range(2)]
    assert choose_placement(plans, small).plan == "2x0.5"  # 4 MB does not fit, 1 MB does
    assert choose_placement(plans, [NodeCandidate("big:1", 1.0)]).plan == "1x1.0"
    with pytest.raises(NoPlanFitsError, match=r"role 0 needs width 1, 4,000,000 bytes .*m:0: memory budget 3,000,000 bytes < 4,000,000 bytes"):
        choose_placement(plans, small, plan="1x1.0")


def sr_plan(name, psnr_int8=None, psnr_float=None, tflm=None):
    """A super-resolution plan: its accuracy entry records PSNR (dB), as `SRQualityReport.accuracy_record` writes it."""
    p = plan(name)
    acc = {"metric": "psnr_y", "samples": 4}
    for key, v in (("psnr_int8", psnr_int8), ("psnr_float", psnr_float), ("psnr_int8_tflm", tflm)):
        if v is not None:
            acc[key] = v
    return Plan(p.name, p.kind, p.widths, p.fusion, p.devices, acc)


def test_super_resolution_plans_rank_by_psnr_and_near_ties_use_more_devices():
    from paradis_tf.mesh.placement import PSNR_TIE_DB, plan_accuracy, plan_metric

    sr = bundle(sr_plan("1x1.0", 33.50, 33.70), sr_plan("2x0.5", 33.48, 33.60), sr_plan("4x0.25", 33.20, 33.40),
                sr_plan("1x0.25", None, 33.00, tflm=32.90))
    assert plan_metric(sr["1x1.0"]) == "psnr_y" and plan_metric(plan("1x1.0", accuracy=0.9)) == "top1"
    # int8 LiteRT, else another backend's int8, else float
    assert plan_accuracy(sr["2x0.5"]) == 33.48 and plan_accuracy(sr["1x0.25"]) == 32.90
    # 1x1.0 and 2x0.5 are 0.02 dB apart (below PSNR_TIE_DB): the two-device plan first; 4x0.25 is 0.3 dB below
    assert 0.02 < PSNR_TIE_DB < 0.30
    assert rank_plans(sr) == ["2x0.5", "1x1.0", "4x0.25", "1x0.25"]
    assert indistinguishable(sr["1x1.0"], sr["2x0.5"]) and not indistinguishable(sr["1x1.0"], sr["4x0.25"])
    # PSNR in dB is never compared with a top-1 fraction
    assert not indistinguishable(sr["1x1.0"], plan("1x1.0", accuracy=33.5, samples=100))
    assert choose_placement(sr, nodes(1.0, 1.0, 1.0, 1.0)).plan == "2x0.5"


def test_latency_objective_tolerance_is_in_db_for_super_resolution():
    from paradis_tf.mesh.placement import Objective, choose_by_objective

    sr = bundle(sr_plan("1x1.0", 33.50), sr_plan("2x0.5", 33.30), sr_plan("4x0.25", 32.90))
    ms = {"1x1.0": 40.0, "2x0.5": 22.0, "4x0.25": 12.0}

    def predict(p, addresses):
        return ms[p.name] / 1000

    fleet = nodes(1.0, 1.0, 1.0, 1.0)
    assert choose_by_objective(sr, fleet, Objective("latency", 0.1), predict)[0].plan == "1x1.0"
    assert choose_by_objective(sr, fleet, Objective("latency", 0.25), predict)[0].plan == "2x0.5"
    assert choose_by_objective(sr, fleet, Objective("latency", 0.6), predict)[0].plan == "4x0.25"
