"""tools/bench_mesh.py: the TLS-vs-plaintext comparison, on a tiny bundle (the benchmark itself uses MobileNet 224)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # converts a model and runs four node daemons

TOOL = "bench_mesh"


def test_tls_and_plaintext_are_measured_side_by_side(bench, tiny_bundle, tmp_path):
    x = np.random.default_rng(0).random((28, 28, 1), dtype=np.float32)
    res = bench.tls_vs_plaintext(tiny_bundle, x, n=12, rounds=2, root=tmp_path, plans=("2x0.5", "seq-2"))
    assert res["rounds"] == 2 and res["requests_per_measure"] == 12
    for plan in ("2x0.5", "seq-2"):  # seq-2: a feature map between the nodes, node certificates both ways
        row = res[plan]
        assert row["same_logits"] is True
        for k in (1, 16):
            m = row[f"in_flight_{k}"]
            assert m["failed"] == 0
            for mode in ("plaintext", "tls"):
                rounds = m["rounds"][mode]
                assert len(rounds) == 2 and all(r["requests"] == 12 and r["concurrency"] == k for r in rounds)
                assert m["median"][mode]["p50_ms"] > 0
            ratio = m["ratio_tls_over_plaintext"]
            expect = np.median([t["p50_ms"] / p["p50_ms"] for t, p in zip(m["rounds"]["tls"], m["rounds"]["plaintext"])])
            assert ratio["p50_ms"] == pytest.approx(expect, abs=1e-3)
    summary = bench._tls_summary(res)
    assert set(summary) == {f"tls_ratio_{p}_{k}_in_flight_{q}" for p in ("2x0.5", "seq-2") for k in (1, 16)
                            for q in ("p50", "p99", "throughput")}
    assert (tmp_path / "pki" / "bench-coordinator.pem").exists() and (tmp_path / "tls" / "node0").is_dir()
