"""`paradis flash --node`, `paradis mesh status|infer|bench` against live daemons."""

from __future__ import annotations

import pytest
import json

import numpy as np

from paradis_tf.cli import main


@pytest.mark.slow
def test_flash_status_infer_bench(mesh4, bundle4, images, tmp_path, capsys):
    a, b, c, d = mesh4.addresses
    assert main(["flash", str(bundle4), "--node", a, "--node", f"{b},{c},{d}", "--activate", "auto"]) == 0
    out = capsys.readouterr().out
    assert out.count("mobilenet_v1") == 4  # bundle name: the manifest's model name
    assert "flashed 4 node(s)" in out and "active: 4x0.25" in out

    assert main(["mesh", "status", "--nodes", ",".join(mesh4.addresses)]) == 0
    out = capsys.readouterr().out
    for i in range(4):
        assert f"node{i}" in out
    assert out.count("4x0.25 role") == 4

    path = tmp_path / "imgs.npy"
    np.save(path, (images[:3] * 255).round().astype(np.uint8))
    assert main(["mesh", "infer", "--nodes", ",".join(mesh4.addresses), "--input", str(path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "plan 4x0.25" in out and "3 image(s)" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("0:", "1:", "2:"))]) == 3

    report = tmp_path / "bench.json"
    assert main(["mesh", "bench", "--nodes", ",".join(mesh4.addresses), "--requests", "20", "--concurrency", "1,4", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    r = json.loads(report.read_text())
    assert r["plan"] == "4x0.25" and r["mode"] == "automatic"
    assert r["latency"]["requests"] == 20 and r["latency"]["p99_ms"] >= r["latency"]["p50_ms"] > 0
    assert [t["concurrency"] for t in r["throughput"]] == [1, 4] and all(t["throughput"] > 0 for t in r["throughput"])
    # every row names the plan that answered it (20 timed requests + 5 warm-up); nothing failed, no re-plan
    assert [row["plans"] for row in [r["latency"], *r["throughput"]]] == [{"4x0.25": 25}] * 3
    assert r["stats"]["failed"] == 0 and r["stats"]["replans"] == 0 and r["stats"]["plans"] == [r["stats"]["plans"][0]]
    rows = [line.split() for line in out.splitlines() if line.startswith(("latency", "concurrency"))]
    assert [row[-6] for row in rows] == ["4x0.25"] * 3 and [row[-2:] for row in rows] == [["0", "0"]] * 3
    assert "75 requests, 0 failed, 0 re-plan(s)" in out


def test_switch_names_exactly_one_plan_or_fails(mesh4, bundle4, capsys):
    nodes = ",".join(mesh4.addresses)
    assert main(["mesh", "infer", "--nodes", nodes, "--bundle", str(bundle4), "--random", "2", "--switch", "8x0.125"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "paradis: plan '8x0.125' is not in the bundle (it has 1x0.25, 2x0.25, 3x0.25, 4x0.25); "
        "plans that fit: 4x0.25, 3x0.25, 2x0.25, 1x0.25"
    )
    two = ",".join(mesh4.addresses[:2])
    assert main(["mesh", "bench", "--nodes", two, "--bundle", str(bundle4), "--requests", "5", "--switch", "3x0.25"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "paradis: plan '3x0.25' does not fit the healthy nodes: it has 3 roles and 2 healthy node(s) can take one"
    )
    assert "plans that fit: 2x0.25, 1x0.25" in err
    # a plan that fits runs exactly
    assert main(["mesh", "infer", "--nodes", two, "--bundle", str(bundle4), "--random", "2", "--switch", "1x0.25"]) == 0
    assert "final plan 1x0.25" in capsys.readouterr().out


def test_cli_errors_are_one_line(capsys):
    assert main(["mesh", "status", "--nodes", "nohost"]) == 1
    assert "paradis: invalid node address 'nohost' (expected HOST:PORT)" in capsys.readouterr().err
    assert main(["flash", "/nonexistent/bundle"]) == 1
    assert "paradis: nothing to flash to" in capsys.readouterr().err


def test_mesh_status_reports_a_down_node(capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert main(["mesh", "status", "--nodes", f"127.0.0.1:{port}"]) == 1
    out = capsys.readouterr().out
    assert f"127.0.0.1:{port}" in out and "UNAVAILABLE" in out
