#!/usr/bin/env python3
"""ParaDiS against sequential placement under emulated link conditions (needs root).

    sudo python tools/bench_network.py                      # every profile, both models -> docs/benchmarks/network.json
    sudo python tools/bench_network.py --profiles wifi --models fmnist --requests 20 --out /tmp/smoke.json
    python tools/bench_network.py --table                   # the Markdown tables of --out (no root)

For each profile of `tools/testbed.py` (four node daemons in network
namespaces behind shaped links, each with its CPU quota) and each model,
one run measures side by side:

* every plan of the model through a `Coordinator` on the testbed: the
  ParaDiS switches 1x1.0, 2x0.5, 4x0.25, 0.5+0.25+0.25, the sequential plans
  seq-2 and seq-4 (the 1x1.0 network cut into pieces with balanced MACs, a
  feature map passed hop by hop) and, for MobileNet, 2x0.5 of a second
  network with a sync layer (``2x0.5-sync``: the devices all-gather their
  feature maps once before block `SYNC_BLOCK`'s pointwise convolution);
* ``single``: the whole 1x1.0 network on one board with no network at all
  (`LocalRunner` in node 0's namespace and CPU quota);
* ``chosen``: what the planner picks by itself (``Objective("latency")``,
  an automatic `select()` once, after the warm-up), that plan measured in
  every round (``select(plan)``: the plan the planner chose, not a new
  choice per round, which would follow the noise of the latest requests).

Every coordinator has the latency objective, so every row's plan, named,
runs on the assignment of roles to nodes that the planner predicts fastest
for it (on the mixed line, 1x1.0 on the wired node): the rows compare
plans as the planner would place them.

Per row: p50/p99 latency with 1 request in flight, throughput at 1 and 8 in
flight, the bytes each node's link carried per inference (the testbed's
counters: Ethernet frames, so headers, ACKs and retransmissions count, over
the requests timed at 1 in flight), the int8 payload the mesh counted, and
the planner's prediction. The prediction is made before any timed request:
links measured (`Coordinator.measure_links`), then every plan warmed up with
a few requests (each role's compute measured live), then
`Coordinator.predictions()` (``predicted_ms``: the plan on its fastest
predicted assignment) and the prediction for the placement the row is
measured on (``predicted_ms_at_placement``: the same model and data, read
with the coordinator's `_predict`). Rows are measured in ``--rounds``
rounds in alternating order, so drift in the host's load falls on all of
them; their samples are pooled.

Models: ``mobilenet`` (MobileNet v1 at 224x224x3, 1000 classes, random
weights) and ``fmnist`` (the Fashion-MNIST record model
docs/benchmarks/fashion_mnist_paradis_e10_sgd.keras; it has no sync layer,
so no sync row). Bundles are built once under ``--bundle-dir`` (MobileNet:
a few minutes). Stall detection is off by default (``--stall on``): on the
Wi-Fi profile a lost segment stalls a stream 200 ms, which it would take for
a stalled node and re-plan around.

The planner's targets (issue 36): the chosen plan's p50 (its own row)
within 10% of the best measured mesh row; every plan's prediction within 20% of its measured
p50. ``targets`` of each record entry says whether they held.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from paradis_tf.files import atomic_write_json  # noqa: E402

SWITCHES = ("1x1.0", "2x0.5", "4x0.25", "0.5+0.25+0.25")
SEQUENTIAL = (2, 4)
SYNC_BLOCK = 6  # MobileNet v1 block 6: its pointwise convolution reads 14x14x512, half from each 2x0.5 device
SYNC_LABEL = "2x0.5-sync"
SINGLE = "single"
CHOSEN = "chosen"
NODES = 4
FMNIST_MODEL = ROOT / "docs" / "benchmarks" / "fashion_mnist_paradis_e10_sgd.keras"
MODELS = ("mobilenet", "fmnist")
MODEL_TEXT = {
    "mobilenet": "MobileNet v1 224x224x3, 1000 classes, random weights, int8",
    "fmnist": "Fashion-MNIST record model (MobileNet v1 28x28x1, fashion_mnist_paradis_e10_sgd.keras), int8",
}
PREDICTION_TOLERANCE = 0.20  # predicted within 20% of measured
CHOSEN_TOLERANCE = 0.10  # chosen p50 within 10% of the best


# --- bundles --------------------------------------------------------------------------------------------------------
def _convert(model, out: Path, calib: np.ndarray, calib_samples: int, sequential: Sequence[int], name: str) -> None:
    from paradis_tf.convert import convert_model

    t0 = time.perf_counter()
    convert_model(model, out, calib, calib_samples=calib_samples, sequential=tuple(sequential), tflm=False,
                  overwrite=True, name=name, progress=lambda m: print(f"  convert {name}: {m}", flush=True))
    print(f"bundle {name} built in {time.perf_counter() - t0:.0f} s: {out}", flush=True)


def build_mobilenet(out: Path, sync: bool = False) -> None:
    """MobileNet v1 224 with random weights: the switches and sequential plans, or (``sync``) 2x0.5 of the same
    network with block `SYNC_BLOCK` a sync layer."""
    from paradis_tf.models import mobilenet_v1

    shape = (224, 224, 3)
    calib = np.random.default_rng(0).integers(0, 256, (8, *shape), dtype=np.uint8)
    if sync:
        model = mobilenet_v1(shape, 1000, ["2x0.5"], width=1.0, sync_layers=[SYNC_BLOCK])
        _convert(model, out, calib, 4, (), "bench-mobilenet-sync")
    else:
        model = mobilenet_v1(shape, 1000, list(SWITCHES), width=1.0)
        _convert(model, out, calib, 4, SEQUENTIAL, "bench-mobilenet")


def build_fmnist(out: Path, calib_samples: int) -> None:
    """The Fashion-MNIST record model: the switches of `SWITCHES` (it has more: 1x0.5, 1x0.25, narrower and less
    accurate, left out) and seq-2, seq-4, calibrated on training images."""
    from paradis_tf.convert import load_model
    from paradis_tf.data import load_fashion_mnist

    model = load_model(str(FMNIST_MODEL))
    x, _ = load_fashion_mnist("train")
    from paradis_tf.convert import convert_model

    t0 = time.perf_counter()
    convert_model(model, out, x[: max(calib_samples, 1)], switches=list(SWITCHES), calib_samples=calib_samples,
                  sequential=SEQUENTIAL, tflm=False, overwrite=True, name="bench-fmnist",
                  progress=lambda m: print(f"  convert bench-fmnist: {m}", flush=True))
    print(f"bundle bench-fmnist built in {time.perf_counter() - t0:.0f} s: {out}", flush=True)


def bundles_of(model: str, bundle_dir: Path, calib_samples: int) -> list[tuple[Path, dict[str, str]]]:
    """The bundles a model is measured with, built if missing: (directory, {row label: plan name})."""
    main = bundle_dir / model
    if not (main / "manifest.json").exists():
        build_mobilenet(main) if model == "mobilenet" else build_fmnist(main, calib_samples)
    names = list(json.loads((main / "manifest.json").read_text())["plans"])
    out = [(main, {p: p for p in names})]
    if model == "mobilenet":
        sync = bundle_dir / "mobilenet-sync"
        if not (sync / "manifest.json").exists():
            build_mobilenet(sync, sync=True)
        out.append((sync, {SYNC_LABEL: "2x0.5"}))
    return out


def request_input(bundle: Path) -> np.ndarray:
    """One request: a random image through the bundle's preprocessing (latency does not depend on the pixels)."""
    from paradis_tf.bundle import load

    b = load(bundle, verify=False)
    raw = np.random.default_rng(1).integers(0, 256, tuple(b.model.input_shape), dtype=np.uint8)
    return b.model.preprocessing.apply(raw)


def payload_bytes(bundle: Path, plan: str) -> dict:
    """The int8 bytes of one inference of ``plan``: each role's model input, the fusion outputs, the feature maps
    passed between roles, and what the links carry of them (a feature map crosses two links: its sender's and its
    receiver's)."""
    from paradis_tf.bundle import load
    from paradis_tf.mesh.program import model_input_spec

    p = load(bundle, verify=False).plan(plan)
    inputs = sum(s.nbytes for s in (model_input_spec(p, r) for r in range(len(p.devices))) if s is not None)
    outputs = sum(p.segment(ref).output.nbytes for ref in p.fusion.outputs)
    between = sum(p.segment(i.source).output.nbytes for d in p.devices for s in d.segments for i in s.inputs
                  if i.source is not None and i.source.device != d.role)
    return {"inputs": inputs, "outputs": outputs, "between_roles": between, "total": inputs + outputs + between,
            "on_links": inputs + outputs + 2 * between}


# --- measuring ------------------------------------------------------------------------------------------------------
def _timed(c, x: np.ndarray, n: int) -> tuple[list[float], float, int]:
    """``n`` requests one after another: (latencies in s, wall time, failed)."""
    from paradis_tf.mesh.errors import RequestFailedError

    lat, failed = [], 0
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        try:
            c.submit(x).result()
        except RequestFailedError:
            failed += 1
            continue
        lat.append(time.perf_counter() - t)
    return lat, time.perf_counter() - t0, failed


def _node_exchange_bytes(c) -> int:
    return sum(s.info.counters.exchange_bytes_sent for s in c.status() if s.info is not None)


class Row:
    """One measured row: samples pooled over rounds."""

    def __init__(self, label: str, kind: str) -> None:
        self.label, self.kind = label, kind
        self.latencies: list[float] = []
        self.wall1 = 0.0
        self.failed = 0
        self.answered8 = 0
        self.wall8 = 0.0
        self.failed8 = 0
        self.link_bytes: dict[int, list[int]] = {}
        self.timed = 0
        self.payload = {"coordinator_to_nodes": 0, "nodes_to_coordinator": 0, "node_to_node": 0}
        self.placements: list[tuple[str, tuple[str, ...]]] = []
        self.rounds: list[dict] = []
        self.compute_ms = 0.0  # the slowest role's interpreter time, summed over the timed requests
        self.answered = 0

    def add_links(self, before, after) -> None:
        for b, a in zip(before, after):
            got = self.link_bytes.setdefault(a.node, [0, 0])
            got[0] += a.to_node_bytes - b.to_node_bytes
            got[1] += a.from_node_bytes - b.from_node_bytes

    def result(self) -> dict:
        from paradis_tf.mesh.bench import summarize

        s1 = summarize(self.latencies, self.wall1, 1, self.failed)
        out = {"plan": self.label, "kind": self.kind, "requests": s1.requests, "failed": s1.failed + self.failed8,
               "p50_ms": s1.p50_ms, "p90_ms": s1.p90_ms, "p99_ms": s1.p99_ms, "mean_ms": s1.mean_ms,
               "throughput": {"in_flight_1": s1.throughput,
                              "in_flight_8": round(self.answered8 / self.wall8, 2) if self.wall8 > 0 else None}}
        if self.timed:
            per = {f"n{k}": {"to_node": round(v[0] / self.timed), "from_node": round(v[1] / self.timed)}
                   for k, v in sorted(self.link_bytes.items())}
            total = sum(v["to_node"] + v["from_node"] for v in per.values())
            out["bytes_per_inference"] = {"links": per, "total": total,
                                          "payload": {k: round(v / self.timed) for k, v in self.payload.items()}}
        else:
            out["bytes_per_inference"] = {"links": {}, "total": 0, "payload": None}
        if self.placements:
            seen = sorted({p for p in self.placements}, key=self.placements.index)
            out["served_by"] = [{"plan": p, "addresses": list(a)} for p, a in seen]
        if self.answered:
            out["node_compute_ms_mean"] = round(self.compute_ms / self.answered, 3)
        out["rounds"] = self.rounds
        return out


_LOCAL = r"""
import json, sys, time
import numpy as np
from paradis_tf.runtime import LocalRunner
runner = LocalRunner(sys.argv[1], sys.argv[2], num_threads=1)
x = np.load(sys.argv[3])[None]
n = int(sys.argv[4])
for _ in range(3):
    runner.predict(x)
lat = []
t0 = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    runner.predict(x)
    lat.append(time.perf_counter() - t)
print(json.dumps({"latencies": lat, "wall": time.perf_counter() - t0}))
"""


def measure_single(tb, bundle: Path, x_path: Path, n: int) -> tuple[list[float], float]:
    """The 1x1.0 network run by one board alone (`LocalRunner`, one thread) in node 0's namespace and CPU quota."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    argv = [sys.executable, "-c", _LOCAL, str(bundle), "1x1.0", str(x_path), str(n)]
    p = tb.exec(0, argv, cgroup=tb.nodes[0].cgroup is not None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env)
    out, err = p.communicate(timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"the single-device run failed (exit {p.returncode}): {err[-2000:]}")
    got = json.loads(out.strip().splitlines()[-1])
    return got["latencies"], got["wall"]


def prediction_detail(c, plan, addresses: tuple[str, ...]) -> dict | None:
    """What the prediction of ``plan`` on ``addresses`` is made of: `predict_plan` over the coordinator's node
    models and per-call cost, as `Coordinator._predict` calls it (its private state: a diagnosis, not an API)."""
    got, models = c._prediction(plan, addresses)
    if got is None:
        return None
    ms = lambda v: None if v is None else round(v * 1e3, 3)  # noqa: E731
    return {"latency_ms": ms(got.latency_s), "input_ms": ms(got.input_s), "compute_ms": ms(got.compute_s),
            "exchange_ms": ms(got.exchange_s), "output_ms": ms(got.output_s),
            "rpc_overhead_ms": [ms(models[a].rpc_overhead_s) for a in addresses],
            "role_compute_ms": [ms(models[a].role_s(plan, r)) for r, a in enumerate(addresses)],
            "critical_path": list(got.critical_path)}


def _measure_mesh(row: Row, c, tb, x: np.ndarray, n1: int, n8: int, warmup: int) -> None:
    from paradis_tf.mesh.bench import mesh_throughput

    _timed(c, x, warmup)  # a new activation: first calls, connections between new peers
    stats = c.stats
    # GetInfo (the exchange counters) outside the link counters' window: only the requests cross the links there
    exchanged = _node_exchange_bytes(c)
    before = (tb.link_counters(), stats.bytes_to_nodes, stats.bytes_from_nodes, exchanged)
    compute0, answered0 = stats.node_compute_ms, stats.answered
    lat, wall, failed = _timed(c, x, n1)
    compute1, answered1 = stats.node_compute_ms, stats.answered
    links_after = tb.link_counters()
    after = (links_after, stats.bytes_to_nodes, stats.bytes_from_nodes, _node_exchange_bytes(c))
    row.compute_ms += compute1 - compute0
    row.answered += answered1 - answered0
    row.latencies += lat
    row.wall1 += wall
    row.failed += failed
    row.add_links(before[0], after[0])
    row.timed += n1
    row.payload["coordinator_to_nodes"] += after[1] - before[1]
    row.payload["nodes_to_coordinator"] += after[2] - before[2]
    row.payload["node_to_node"] += after[3] - before[3]
    row.placements.append((c.placement.plan, tuple(c.placement.addresses)))
    row.rounds.append({"plan": c.placement.plan, "addresses": list(c.placement.addresses),
                       "p50_ms": round(float(np.median(lat)) * 1e3, 3) if lat else None,
                       "node_compute_ms_mean": round((compute1 - compute0) / (answered1 - answered0), 3)
                       if answered1 > answered0 else None})
    if n8 > 0:
        s8 = mesh_throughput(c, x, n8, 8, warmup=0)
        row.answered8 += s8.requests
        row.wall8 += s8.seconds
        row.failed8 += s8.failed


def run_model(tb, model: str, groups: list[tuple[Path, dict[str, str]]], *, requests: int, rounds: int,
              in_flight_8: int, warmup: int, stall: bool, workdir: Path, log: Callable[[str], None]) -> dict:
    """Every row of one model on a running testbed (module doc); one record entry."""
    from paradis_tf.bundle import load
    from paradis_tf.mesh import Coordinator
    from paradis_tf.mesh.coordinator import StallPolicy
    from paradis_tf.mesh.errors import DeployError
    from paradis_tf.mesh.placement import Objective

    x = request_input(groups[0][0])
    x_path = workdir / f"{model}-x.npy"
    np.save(x_path, x)
    policy = StallPolicy(enabled=stall)
    coords = []
    try:
        for k, (bundle, _) in enumerate(groups):
            # a latency objective: each named plan runs where the planner predicts it fastest, as it would
            coords.append(Coordinator(tb.addresses, run_timeout_s=60, stall=policy, objective=Objective("latency")))
        main = coords[0]
        for c, (bundle, _) in zip(coords, groups):
            t0 = time.perf_counter()
            for attempt in range(3):
                try:
                    c.deploy(bundle)
                    break
                except DeployError as e:  # a connection that timed out on a host loaded far past its cores
                    if attempt == 2:
                        raise
                    log(f"{model}: deploy of {bundle.name} failed ({e}); trying again")
                    _log_tails(tb, log)
            log(f"{model}: deployed {bundle.name} in {time.perf_counter() - t0:.1f} s")
        links = main.measure_links()
        for c in coords[1:]:
            c.links.update(links)
        log(f"{model}: links " + ", ".join(f"{a} {l.rtt_s * 1e3:.2f} ms {l.rate_bytes_per_s * 8 / 1e6:.1f} Mbit/s"
                                           for a, l in links.items()))
        mesh_rows = [(label, plan, c, bundle) for c, (bundle, labels) in zip(coords, groups) for label, plan in labels.items()]
        # warm-up: every plan activated and run, so each role's compute is measured on its node; twice, the
        # second time on the assignment the first one's measurements predict fastest
        placed: dict[str, tuple[str, ...]] = {}
        for _ in range(2):
            for label, plan, c, _ in mesh_rows:
                placed[label] = tuple(c.select(plan).addresses)
                _timed(c, x, warmup)
        preds: dict[str, object] = {}
        at_placement: dict[str, float | None] = {}
        details: dict[str, dict | None] = {}
        for c, (bundle, labels) in zip(coords, groups):
            table = {p.plan: p for p in c.predictions()}
            plans = load(bundle, verify=False).plans
            for label, plan in labels.items():
                preds[label] = table.get(plan)
                t = c._predict(plans[plan], placed[label])  # the same model, for the placement measured
                at_placement[label] = None if t is None else t * 1000
                details[label] = prediction_detail(c, plans[plan], placed[label])
        chosen = main.select()
        details[CHOSEN] = prediction_detail(main, main.bundle.plan(chosen.plan), tuple(chosen.addresses))
        log(f"{model}: predictions " + ", ".join(
            f"{k} {v.predicted_ms:.1f} ms" if v is not None and v.predicted_ms is not None else f"{k} -"
            for k, v in preds.items()) + f"; chosen {chosen}")
        rows = {label: Row(label, load(bundle, verify=False).plan(plan).kind) for label, plan, _, bundle in mesh_rows}
        rows[CHOSEN] = Row(CHOSEN, "auto")
        rows[SINGLE] = Row(SINGLE, "local")
        order = [r[0] for r in mesh_rows] + [CHOSEN, SINGLE]
        by_label = {r[0]: r for r in mesh_rows}
        n1 = [requests // rounds + (1 if i < requests % rounds else 0) for i in range(rounds)]
        n8 = [in_flight_8 // rounds + (1 if i < in_flight_8 % rounds else 0) for i in range(rounds)]
        for r in range(rounds):
            for label in (order if r % 2 == 0 else list(reversed(order))):
                row = rows[label]
                if label == SINGLE:
                    lat, wall = measure_single(tb, groups[0][0], x_path, n1[r])
                    row.latencies += lat
                    row.wall1 += wall
                    row.rounds.append({"p50_ms": round(float(np.median(lat)) * 1e3, 3)})
                    continue
                if label == CHOSEN:  # the planner's one choice, made before any timed request
                    c = main
                    c.select(chosen.plan)
                else:
                    _, plan, c, _ = by_label[label]
                    c.select(plan)
                _measure_mesh(row, c, tb, x, n1[r], n8[r], min(warmup, 3))
            log(f"{model}: round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {np.median(v.latencies) * 1e3:.1f}" for k, v in rows.items() if v.latencies) + " ms (p50 so far)")
        plans_out = []
        for label in order:
            res = rows[label].result()
            if label == CHOSEN:
                p = preds.get(chosen.plan)
                res["picks"] = [pl for pl, _ in rows[label].placements]
                res["predicted_ms"] = None if chosen.predicted_ms is None else round(chosen.predicted_ms, 3)
                res["predicted_ms_at_placement"] = res["predicted_ms"]
                res["predicted_addresses"] = list(chosen.addresses)
                res["chose"] = chosen.plan
            elif label == SINGLE:
                res["predicted_ms"] = None
                res["predicted_ms_at_placement"] = None
            else:
                p = preds.get(label)
                res["predicted_ms"] = None if p is None or p.predicted_ms is None else round(p.predicted_ms, 3)
                res["predicted_addresses"] = None if p is None else list(p.addresses)
                t = at_placement.get(label)
                res["predicted_ms_at_placement"] = None if t is None else round(t, 3)
                bundle, plan = by_label[label][3], by_label[label][1]
                res["payload_expected"] = payload_bytes(bundle, plan)
            if details.get(label) is not None:
                res["prediction"] = details[label]
            if res["p50_ms"] and res.get("predicted_ms_at_placement"):
                res["predicted_over_measured"] = round(res["predicted_ms_at_placement"] / res["p50_ms"], 3)
            plans_out.append(res)
        return _entry(tb, model, links, plans_out, chosen)
    finally:
        for c in coords:
            c.close()


def judge(plans: list[dict]) -> tuple[str, dict]:
    """The measured fastest plan (the pinned rows: ParaDiS, sequential, sync) and the targets (module doc)."""
    pinned = [p for p in plans if p["kind"] in ("paradis", "sequential") and p["p50_ms"] is not None]
    best = min(pinned, key=lambda p: p["p50_ms"])
    ch = next(p for p in plans if p["plan"] == CHOSEN)
    # the chosen plan's own row, measured in the same rounds as the others (the chosen row measures the same plan
    # again: two measurements of one plan differ by the host's noise, up to ~10% on the Pi 3 quotas)
    same = next((p for p in pinned if p["plan"] == ch.get("chose")), ch)
    ratio = round(same["p50_ms"] / best["p50_ms"], 3) if same["p50_ms"] and best["p50_ms"] else None
    row_ratio = round(ch["p50_ms"] / best["p50_ms"], 3) if ch["p50_ms"] and best["p50_ms"] else None
    errors = {p["plan"]: p.get("predicted_over_measured") for p in plans if p["kind"] in ("paradis", "sequential")}
    seq = [p for p in pinned if p["kind"] == "sequential"]
    par = [p for p in pinned if p["kind"] == "paradis"]
    return best["plan"], {
        "chosen_over_best_p50": ratio,
        "chosen_within_10pct": ratio is not None and ratio <= 1 + CHOSEN_TOLERANCE,
        "chosen_row_over_best_p50": row_ratio,
        "predicted_over_measured": errors,
        "predicted_within_20pct": all(e is not None and abs(e - 1) <= PREDICTION_TOLERANCE for e in errors.values()),
        "fastest_paradis": min(par, key=lambda p: p["p50_ms"])["plan"] if par else None,
        "fastest_sequential": min(seq, key=lambda p: p["p50_ms"])["plan"] if seq else None,
        "paradis_slower_than_sequential": (min(p["p50_ms"] for p in par) > min(p["p50_ms"] for p in seq))
        if par and seq else None,
    }


def _entry(tb, model: str, links: dict, plans: list[dict], chosen) -> dict:
    rec = tb.record()
    best, targets = judge(plans)
    ch = next(p for p in plans if p["plan"] == CHOSEN)
    return {
        "name": rec["profile"],
        "model": model,
        "run": rec["run"],
        "model_text": MODEL_TEXT[model],
        "description": rec["description"],
        "delay_mechanism": rec["delay_mechanism"],
        "cpu_mechanism": rec["cpu_mechanism"],
        "links": {
            n["address"]: {
                "configured": {**n["link"], "cpu": n["cpu"]},
                "measured": ({"rtt_ms": round(links[n["address"]].rtt_s * 1e3, 3),
                              "rate_mbit": round(links[n["address"]].rate_bytes_per_s * 8 / 1e6, 2)}
                             if n["address"] in links else None),
            } for n in rec["nodes"]
        },
        "plans": plans,
        "chosen": chosen.plan,
        "chosen_addresses": list(chosen.addresses),
        "chosen_picks": ch.get("picks"),  # the plans that served the chosen row (its one choice, or a re-plan)
        "best": best,
        "targets": targets,
    }


def _log_tails(tb, log: Callable[[str], None], chars: int = 1500) -> None:
    """The end of every node's daemon and relay log (what a failed run leaves to read)."""
    for k in range(len(tb.nodes)):
        for name in (f"n{k}.log", f"n{k}.relay.log"):
            path = tb.workdir / name
            if path.exists():
                log(f"--- {name} (end) ---\n{path.read_text(errors='replace')[-chars:]}")


def run_profile(profile: str, models: Sequence[str], bundles: dict, args, log: Callable[[str], None],
                attempts: int = 2) -> list[dict]:
    """Every model on one testbed of ``profile``; a failed run (its node logs printed) is tried again on a new
    testbed, up to ``attempts`` times in all."""
    from testbed import Testbed

    for attempt in range(1, attempts + 1):
        out = []
        with tempfile.TemporaryDirectory(prefix=f"paradis-bench-network-{profile}-") as tmp:
            t0 = time.perf_counter()
            with Testbed(profile, NODES, Path(tmp) / "bed") as tb:
                log(f"{profile}: testbed {tb.run_id} up in {time.perf_counter() - t0:.1f} s ({tb.delay_mechanism} delays)")
                try:
                    for model in models:
                        load0 = os.getloadavg()
                        t1 = time.perf_counter()
                        entry = run_model(tb, model, bundles[model], requests=args.requests, rounds=args.rounds,
                                          in_flight_8=args.in_flight_requests, warmup=args.warmup,
                                          stall=args.stall == "on", workdir=Path(tmp),
                                          log=lambda m: log(f"{profile}: {m}"))
                        entry["seconds"] = round(time.perf_counter() - t1, 1)
                        entry["loadavg_start"], entry["loadavg_end"] = load0, os.getloadavg()
                        entry["attempt"] = attempt
                        out.append(entry)
                        log(f"{profile}: {model}: chosen {entry['chosen']}, best {entry['best']}, "
                            f"targets {json.dumps(entry['targets'])}")
                    return out
                except Exception as e:  # noqa: BLE001 - reported with the nodes' logs, then tried again or raised
                    log(f"{profile}: run {attempt}/{attempts} failed: {type(e).__name__}: {e}")
                    _log_tails(tb, log)
                    if attempt == attempts:
                        raise
    raise AssertionError("unreachable")


# --- reporting ------------------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(record: dict) -> str:
    """Markdown: per model, p50 (predicted) per plan and profile; bytes and throughput; the targets."""
    entries = record["profiles"]
    models = list(dict.fromkeys(e["model"] for e in entries))
    profiles = list(dict.fromkeys(e["name"] for e in entries))
    lines = []
    for model in models:
        es = {e["name"]: e for e in entries if e["model"] == model}
        labels = list(dict.fromkeys(p["plan"] for e in es.values() for p in e["plans"]))
        lines += [f"**{MODEL_TEXT[model]}**: p50 / p99 ms, (predicted ms at the measured placement)", "",
                  "| plan | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
        for label in labels:
            cells = []
            for prof in profiles:
                p = next((q for q in es[prof]["plans"] if q["plan"] == label), None) if prof in es else None
                if p is None:
                    cells.append("")
                    continue
                pred = p.get("predicted_ms_at_placement")
                name = "+".join(dict.fromkeys(p.get("picks") or [p.get("chose")])) if label == CHOSEN else None
                cell = f"{_fmt(p['p50_ms'])} / {_fmt(p['p99_ms'])}" + (f" ({_fmt(pred)})" if pred is not None else "")
                cells.append(f"{name}: {cell}" if name else cell)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "Bytes on the links per inference (KB: every link's Ethernet frames, a feature map between nodes "
                      "counted on both links it crosses) and requests/s at 8 in flight:", "",
                  "| plan | int8 payload on the links KB | " + " | ".join(f"{p} KB | {p} req/s" for p in profiles) + " |",
                  "|---|---|" + "---|---|" * len(profiles)]
        for label in labels:
            if label in (SINGLE, CHOSEN):
                continue
            first = next(q for e in es.values() for q in e["plans"] if q["plan"] == label)
            pay = first.get("payload_expected", {}).get("on_links")
            cells = []
            for prof in profiles:
                p = next((q for q in es[prof]["plans"] if q["plan"] == label), None) if prof in es else None
                cells += ["", ""] if p is None else [_fmt(p["bytes_per_inference"]["total"] / 1000),
                                                     _fmt(p["throughput"]["in_flight_8"])]
            lines.append(f"| {label} | {_fmt(pay / 1000 if pay else None)} | " + " | ".join(cells) + " |")
        lines += ["", "| profile | chosen | best measured | chosen p50 / best p50 | predicted / measured (each plan) | "
                      "fastest ParaDiS / fastest sequential |", "|---|---|---|---|---|---|"]
        for prof in profiles:
            if prof not in es:
                continue
            e, t = es[prof], es[prof]["targets"]
            errs = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in t["predicted_over_measured"].items())
            par = next((p["p50_ms"] for p in e["plans"] if p["plan"] == t["fastest_paradis"]), None)
            seq = next((p["p50_ms"] for p in e["plans"] if p["plan"] == t["fastest_sequential"]), None)
            lines.append(f"| {prof} | {e['chosen']} | {e['best']} | {_fmt(t['chosen_over_best_p50'], 3)} "
                         f"({'met' if t['chosen_within_10pct'] else 'not met'}) | {errs} "
                         f"({'met' if t['predicted_within_20pct'] else 'not met'}) | "
                         f"{t['fastest_paradis']} {_fmt(par)} ms / {t['fastest_sequential']} {_fmt(seq)} ms |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot(record: dict, path: Path) -> None:
    """One figure: p50 latency (bars) and p99 (markers) per plan, one group per plan, one colour per profile,
    one panel per model; log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    entries = record["profiles"]
    models = list(dict.fromkeys(e["model"] for e in entries))
    profiles = list(dict.fromkeys(e["name"] for e in entries))
    fig, axes = plt.subplots(len(models), 1, figsize=(11, 3.8 * len(models)), squeeze=False)
    width = 0.8 / max(1, len(profiles))
    for ax, model in zip(axes[:, 0], models):
        es = {e["name"]: e for e in entries if e["model"] == model}
        labels = list(dict.fromkeys(p["plan"] for e in es.values() for p in e["plans"]))
        for i, prof in enumerate(profiles):
            if prof not in es:
                continue
            got = {p["plan"]: p for p in es[prof]["plans"]}
            xs = [j + (i - (len(profiles) - 1) / 2) * width for j in range(len(labels))]
            p50 = [got[l]["p50_ms"] if l in got and got[l]["p50_ms"] else np.nan for l in labels]
            p99 = [got[l]["p99_ms"] if l in got and got[l]["p99_ms"] else np.nan for l in labels]
            bars = ax.bar(xs, p50, width, label=prof)
            ax.plot(xs, p99, "_", color=bars.patches[0].get_facecolor(), markersize=9, mew=2)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([l if l != CHOSEN else "chosen (planner)" for l in labels])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel("latency, ms (bar p50, dash p99)")
        ax.set_title(MODEL_TEXT[model], fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(profiles))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- command line ---------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    from testbed import PROFILES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default=",".join(PROFILES),
                    help=f"comma-separated testbed profiles (default: %(default)s)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: mobilenet, fmnist (default: %(default)s)")
    ap.add_argument("--requests", type=int, default=100,
                    help="timed requests per row at 1 in flight, over all rounds (default: %(default)s)")
    ap.add_argument("--in-flight-requests", type=int, default=None,
                    help="requests per row at 8 in flight, over all rounds (default: --requests)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds in alternating order (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="requests per plan before the prediction (default: %(default)s)")
    ap.add_argument("--stall", choices=("on", "off"), default="off",
                    help="the coordinator's stall detection (default: %(default)s; see the module doc)")
    ap.add_argument("--bundle-dir", type=Path, default=Path(tempfile.gettempdir()) / "paradis-bench-network",
                    help="where the bundles are built once (default: %(default)s)")
    ap.add_argument("--calib-samples", type=int, default=200,
                    help="Fashion-MNIST calibration images (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "network.json")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "benchmarks" / "network.png"),
                    help="the PNG to draw ('none': no plot) (default: %(default)s)")
    ap.add_argument("--table", action="store_true", help="print the Markdown tables of --out (and redraw --plot); no run")
    args = ap.parse_args(argv)
    if args.table:
        record = json.loads(args.out.read_text())
        print(table(record), end="")
        if args.plot != "none":
            plot(record, Path(args.plot))
        return 0
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [p for p in profiles if p not in PROFILES] + [m for m in models if m not in MODELS]
    if bad or not profiles or not models:
        ap.error(f"unknown or missing profiles/models {bad}: profiles are {', '.join(PROFILES)}; models {', '.join(MODELS)}")
    for name, v in (("--requests", args.requests), ("--rounds", args.rounds)):
        if v < 1:
            ap.error(f"{name} {v}: give 1 or more")
    if args.requests < args.rounds:
        ap.error(f"--requests {args.requests} is fewer than --rounds {args.rounds}: each round needs a request per row")
    if args.in_flight_requests is None:
        args.in_flight_requests = args.requests
    if os.geteuid() != 0:
        print("bench_network: the testbed needs root (network namespaces, qdiscs, cgroups); run it with sudo",
              file=sys.stderr)
        return 2
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    args.bundle_dir.mkdir(parents=True, exist_ok=True)
    bundles = {m: bundles_of(m, args.bundle_dir, args.calib_samples) for m in models}
    record: dict = {
        "machine": {"cores": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "loadavg_start": os.getloadavg()},
        "setup": {"nodes": NODES, "requests": args.requests, "in_flight_8_requests": args.in_flight_requests,
                  "rounds": args.rounds, "warmup": args.warmup, "stall_detection": args.stall,
                  "interpreter": "litert, 1 thread per node", "sync_block": SYNC_BLOCK},
        "profiles": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for profile in profiles:
        record["profiles"] += run_profile(profile, models, bundles, args, log)
        atomic_write_json(args.out, record, indent=1)  # what is measured so far, should a later profile fail
    record["machine"]["loadavg_end"] = os.getloadavg()
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(args.out, record, indent=1)
    print(table(record), end="")
    if args.plot != "none":
        plot(record, Path(args.plot))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
