"""tools/bench_network.py: the smoke configuration run for real on the testbed (root), and its record checked.

Four node daemons in network namespaces behind the Wi-Fi profile's links (30 Mbit/s, 1-5 ms each way, 0.5% loss,
0.35 of a core each), the Fashion-MNIST record model converted, every plan measured: the record's shape, and numbers
that could only come from a real run (bytes on the links against the int8 tensors, latencies above the links' round
trip, predictions near the measurements).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = "bench_network"
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "bench_network.py"

pytestmark = pytest.mark.slow  # converts the Fashion-MNIST model and runs four node daemons

PLANS = {"1x1.0", "2x0.5", "4x0.25", "0.5+0.25+0.25", "seq-2", "seq-4"}
ROW_KEYS = {"plan", "p50_ms", "p99_ms", "throughput", "bytes_per_inference", "predicted_ms"}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke run's record, its output and its files (module-scoped: one run for the checks below)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("the testbed needs root and iproute2 (ip, tc)")
    tmp = tmp_path_factory.mktemp("bench_network")
    out, png = tmp / "network.json", tmp / "network.png"
    argv = [sys.executable, str(SCRIPT), "--profiles", "wifi", "--models", "fmnist", "--requests", "20", "--rounds", "2",
            "--in-flight-requests", "16", "--warmup", "5", "--calib-samples", "32", "--bundle-dir", str(tmp / "bundles"),
            "--out", str(out), "--plot", str(png)]
    run = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout, png, out


def _rows(entry: dict) -> dict[str, dict]:
    return {p["plan"]: p for p in entry["plans"]}


def test_the_record_has_the_shape_the_issue_asks_for(smoke):
    record, _, _, _ = smoke
    assert len(record["profiles"]) == 1
    entry = record["profiles"][0]
    assert {"name", "links", "plans", "chosen", "best"} <= set(entry)
    assert entry["name"] == "wifi" and entry["model"] == "fmnist" and entry["delay_mechanism"] in ("relay", "netem")
    rows = _rows(entry)
    assert set(rows) == PLANS | {"chosen", "single"}  # the model has no sync layer: no sync row
    for row in rows.values():
        assert ROW_KEYS <= set(row), row["plan"]
        assert set(row["throughput"]) == {"in_flight_1", "in_flight_8"}
    # the planner chooses among the ParaDiS plans; "best" names a measured row
    assert entry["chosen"] in {"1x1.0", "2x0.5", "4x0.25", "0.5+0.25+0.25"}
    assert entry["best"] in PLANS
    assert set(entry["targets"]["predicted_over_measured"]) == PLANS
    assert isinstance(entry["targets"]["chosen_within_10pct"], bool)
    assert isinstance(entry["targets"]["predicted_within_20pct"], bool)
    # four nodes, each link configured as the profile says and measured by the coordinator's probes
    assert len(entry["links"]) == 4
    for link in entry["links"].values():
        assert link["configured"]["rate_mbit"] == 30 and link["configured"]["loss_pct"] == 0.5
        assert link["measured"]["rtt_ms"] >= 2 * (3 - 2) * 0.9  # at least delay - jitter each way
        assert 0 < link["measured"]["rate_mbit"] < 30 * 1.5


def test_latencies_are_real_and_every_request_was_answered(smoke):
    entry = smoke[0]["profiles"][0]
    rows = _rows(entry)
    floor_ms = 2 * (3 - 2) * 0.9  # every mesh request crosses a Wi-Fi link both ways
    for label, row in rows.items():
        assert row["failed"] == 0 and row["requests"] == 20, label
        assert 0 < row["p50_ms"] <= row["p99_ms"], label
        assert row["throughput"]["in_flight_1"] > 0, label
        if label != "single":
            assert row["p50_ms"] >= floor_ms, (label, row["p50_ms"])
            assert row["throughput"]["in_flight_8"] > 0, label
    # one board alone has no network to cross: faster than the same network over a Wi-Fi link, and no bytes
    assert rows["single"]["p50_ms"] < rows["1x1.0"]["p50_ms"]
    assert rows["single"]["bytes_per_inference"]["total"] == 0
    # the chosen row ran the plans the planner picked
    assert rows["chosen"]["picks"] and set(rows["chosen"]["picks"]) <= {"1x1.0", "2x0.5", "4x0.25", "0.5+0.25+0.25"}


def test_bytes_on_the_links_are_the_int8_tensors_plus_protocol(smoke):
    entry = smoke[0]["profiles"][0]
    rows = _rows(entry)
    index = {address: f"n{k}" for k, address in enumerate(entry["links"])}
    row = rows["2x0.5"]
    expected = row["payload_expected"]
    assert expected["inputs"] == 2 * 28 * 28  # the int8 input, once to each of the two devices
    assert expected["outputs"] == 2 * 10 and expected["between_roles"] == 0
    got = row["bytes_per_inference"]
    assert got["payload"] == {"coordinator_to_nodes": 2 * 784, "nodes_to_coordinator": 20, "node_to_node": 0}
    used = {index[a] for a in row["served_by"][0]["addresses"]}
    assert len(used) == 2
    for name, link in got["links"].items():
        if name in used:  # its input, its partial logits, and headers, ACKs and gRPC framing of one call
            assert 784 <= link["to_node"] <= 784 + 1500, (name, link)
            assert 10 <= link["from_node"] <= 10 + 1000, (name, link)
        else:  # nothing of the requests crossed the idle nodes' links
            assert link["to_node"] + link["from_node"] <= 100, (name, link)
    assert expected["on_links"] <= got["total"] <= expected["on_links"] + 2 * 2500
    # a sequential plan's feature map crosses two links: its sender's and its receiver's
    seq = rows["seq-2"]
    assert seq["payload_expected"]["between_roles"] > 0
    assert seq["bytes_per_inference"]["payload"]["node_to_node"] == seq["payload_expected"]["between_roles"]
    assert seq["bytes_per_inference"]["total"] >= seq["payload_expected"]["on_links"]


def test_predictions_are_near_the_measurements(smoke):
    entry = smoke[0]["profiles"][0]
    for label, row in _rows(entry).items():
        if label == "single":
            assert row["predicted_ms"] is None
            continue
        assert row["predicted_ms"] is not None and row["predicted_ms"] > 0, label
        # a loose factor: the smoke run is short and shares the host; the issue's 20% is judged on the full run
        ratio = row["predicted_ms_at_placement"] / row["p50_ms"]
        assert 0.2 <= ratio <= 5, (label, row["predicted_ms_at_placement"], row["p50_ms"])
        if label != "chosen":
            assert row["prediction"]["latency_ms"] == pytest.approx(row["predicted_ms_at_placement"], rel=1e-6)


def test_table_plot_and_nothing_left_behind(smoke, tool):
    record, stdout, png, out = smoke
    entry = record["profiles"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| plan | wifi |" in stdout and "| seq-4 |" in stdout
    again = subprocess.run([sys.executable, str(SCRIPT), "--table", "--out", str(out), "--plot", "none"], cwd=ROOT,
                           env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout in stdout
    assert tool("testbed")._leftovers().get(entry["run"], []) == []


def test_without_root_it_says_so_and_exits_2(tmp_path):
    code = (f"import importlib.util, os, sys\n"
            f"sys.path.insert(0, {str(ROOT / 'tools')!r})\n"
            f"spec = importlib.util.spec_from_file_location('bench_network', {str(SCRIPT)!r})\n"
            f"m = importlib.util.module_from_spec(spec); sys.modules['bench_network'] = m; spec.loader.exec_module(m)\n"
            f"import testbed\n"  # loaded as root (uid 65534 cannot read this interpreter's library under /root)
            f"os.geteuid() == 0 and os.seteuid(65534)\n"
            f"sys.exit(m.main(['--profiles', 'wifi', '--models', 'fmnist', '--bundle-dir', {str(tmp_path)!r}, "
            f"'--out', {str(tmp_path / 'x.json')!r}]))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "needs root" in run.stderr
    assert not (tmp_path / "x.json").exists() and list(tmp_path.iterdir()) == []
