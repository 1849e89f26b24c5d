"""tools/bench_overhead.py: the mesh's per-request cost next to a bare gRPC echo, on a tiny bundle (the benchmark
itself uses MobileNet 224)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # converts a model and starts a node daemon and an echo server

TOOL = "bench_overhead"


def test_overhead_and_its_floor_are_measured_side_by_side(tool, tiny_bundle):
    rec = tool(TOOL).measure(tiny_bundle, requests=16, rounds=2, warmup=2, node_cpu=0, client_cpu=0, log=lambda m: None)
    assert rec["plan"] == "1x1.0" and rec["input_bytes"] == 28 * 28 and rec["output_bytes"] == 10
    res = rec["results"]
    for kind in ("mesh", "compute", "overhead", "direct", "direct_overhead", "echo_reply", "echo_full"):
        assert res[kind]["n"] == 16, kind
    # the node computed something, and the whole request took longer than the node's interpreter
    assert 0 < res["compute"]["p50_ms"] < res["mesh"]["p50_ms"]
    assert res["overhead"]["p50_ms"] > 0 and res["direct_overhead"]["p50_ms"] > 0 and res["echo_reply"]["p50_ms"] > 0
    assert rec["overhead_over_echo_reply"] == pytest.approx(res["overhead"]["p50_ms"] / res["echo_reply"]["p50_ms"],
                                                            rel=1e-2)
    assert rec["target"]["met"] == (rec["overhead_over_echo_reply"] <= rec["target"]["max_ratio"])
