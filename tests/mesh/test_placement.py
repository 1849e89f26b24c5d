"""Plan selection: most accurate plan that fits, widest role to the most capable node."""

import pytest

from paradis_tf.mesh.errors import NoPlanFitsError
from paradis_tf.mesh.placement import NodeCandidate, choose_placement, rank_plans


def plan(widths, accuracy=None, kind="paradis", macs=1000):
    p = {"kind": kind, "widths": list(widths), "devices": [{"role": k, "width": w, "macs": macs} for k, w in enumerate(widths)]}
    if accuracy is not None:
        p["accuracy"] = {"int8": accuracy}
    return p


FLEET = {"1x0.25": plan([0.25]), "2x0.25": plan([0.25] * 2), "3x0.25": plan([0.25] * 3), "4x0.25": plan([0.25] * 4)}


def nodes(*caps, speed=1.0):
    return [NodeCandidate(f"h:{5000 + i}", c, speed) for i, c in enumerate(caps)]


@pytest.mark.parametrize("count,expected", [(4, "4x0.25"), (3, "3x0.25"), (2, "2x0.25"), (1, "1x0.25"), (6, "4x0.25")])
def test_equal_fleet_uses_every_device(count, expected):
    assert choose_placement(FLEET, nodes(*[0.25] * count)).plan == expected


def test_recorded_accuracy_wins_over_width():
    plans = {"2x0.5": plan([0.5, 0.5], 0.80), "1x1.0": plan([1.0], 0.91), "1x0.5": plan([0.5], 0.85)}
    assert rank_plans(plans) == ["1x1.0", "1x0.5", "2x0.5"]
    assert choose_placement(plans, nodes(1.0, 1.0)).plan == "1x1.0"
    assert choose_placement(plans, nodes(0.5, 0.5)).plan == "1x0.5"


def test_widest_role_goes_to_the_most_capable_node():
    plans = {"0.25+0.5+0.25": plan([0.25, 0.5, 0.25])}
    ns = [NodeCandidate("weak:1", 0.25), NodeCandidate("strong:1", 1.0), NodeCandidate("weak:2", 0.25)]
    p = choose_placement(plans, ns)
    assert p.addresses[1] == "strong:1" and set(p.addresses) == {"weak:1", "weak:2", "strong:1"}
    # equal capacity: the faster node gets the wide role
    ns = [NodeCandidate("slow:1", 1.0, 1.0), NodeCandidate("fast:1", 1.0, 9.0), NodeCandidate("slow:2", 1.0, 1.0)]
    assert choose_placement(plans, ns).addresses[1] == "fast:1"


def test_sequential_plans_only_on_request():
    plans = dict(FLEET, **{"seq-2": plan([1.0, 1.0], kind="sequential")})
    assert choose_placement(plans, nodes(1.0, 1.0)).plan == "2x0.25"
    assert choose_placement(plans, nodes(1.0, 1.0), plan="seq-2").plan == "seq-2"


def test_latency_budget_excludes_slow_roles():
    slow = [NodeCandidate("a:1", 1.0, speed_score=1.0, latency_budget_ms=1.0)]
    plans = {"1x1.0": plan([1.0], macs=10_000_000), "1x0.25": plan([0.25], macs=100_000)}
    # 2 * 1e7 MAC / 1 GFLOP/s = 20 ms > 1 ms; 0.2 ms fits
    assert choose_placement(plans, slow).plan == "1x0.25"


def test_nothing_fits_says_why():
    with pytest.raises(NoPlanFitsError, match=r"h:5000 \(capacity 0.1\).*4x0.25 \(widths 0.25/0.25/0.25/0.25\)"):
        choose_placement(FLEET, nodes(0.1))
    with pytest.raises(NoPlanFitsError, match="plan '8x0.125' is not in the bundle"):
        choose_placement(FLEET, nodes(1.0), plan="8x0.125")


def test_memory_budget_excludes_big_roles():
    def sized(widths, size):
        p = plan(widths)
        for d in p["devices"]:
            d["segments"] = [{"size": size, "tflm": {"arena_bytes": size}}]
        return p

    plans = {"1x1.0": sized([1.0], 4_000_000), "2x0.5": sized([0.5, 0.5], 1_000_000)}
    small = [NodeCandidate(f"m:{i}", 1.0, memory_budget_bytes=3_000_000) for i in range(2)]
    assert choose_placement(plans, small).plan == "2x0.5"  # 8 MB does not fit, 2 MB does
    assert choose_placement(plans, [NodeCandidate("big:1", 1.0)]).plan == "1x1.0"
