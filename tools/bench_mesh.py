#!/usr/bin/env python3
"""Mesh benchmarks: overhead, parallel speedup, bytes per inference, throughput.

    python tools/bench_mesh.py --bundle /tmp/mnv1-224 --out docs/benchmarks/mesh.json
    python tools/bench_mesh.py --bundle /tmp/mnv1-224 --only tls --out docs/benchmarks/mesh_tls.json

Builds (once, if ``--bundle`` does not exist yet) a MobileNet v1 bundle at
224x224x3 with random weights (switches 1x1.0, 2x0.5, 4x0.25 and the
sequential plans seq-2, seq-4), starts node daemons as local subprocesses on
loopback (TensorFlow blocked in them), and measures:

* mesh overhead: median latency of 2x0.5 on 2 nodes / median latency of
  `LocalRunner` running the same plan in one process (both devices one after
  the other, one interpreter thread each); once with the nodes on different
  cores and once with both nodes pinned to the LocalRunner's core (protocol
  overhead without parallelism);
* parallel speedup: 2x0.5 on 2 nodes pinned to different cores / 1x1.0 on
  1 node;
* bytes crossing devices per inference (coordinator->nodes, nodes->
  coordinator, node->node) for each ParaDiS switch against the sequential plan
  with the same device count;
* throughput and p50/p99 latency at 1, 4 and 16 concurrent requests;
* mutual TLS against plaintext, side by side (`tls_vs_plaintext`, also
  alone with ``--only tls``): two 2-node meshes of the same configuration,
  one serving TLS with certificates of a fresh CA (nodes role ``node``, the
  coordinator role ``coordinator``), the same bundle and requests; latency
  and throughput at 1 and 16 in flight, measured round by round in
  alternating order (ABBA) so that drift in the host's load falls on both,
  and the TLS/plaintext ratios of each round's pair.

Every number comes with the machine it ran on (cores, load) in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paradis_tf.files import atomic_write_json  # noqa: E402
from paradis_tf.mesh import Coordinator, LocalMesh  # noqa: E402
from paradis_tf.mesh.bench import mesh_latency, mesh_throughput, time_calls  # noqa: E402

SWITCHES = ("1x1.0", "2x0.5", "4x0.25")
SEQUENTIAL = (2, 4)


def build_bundle(out: Path, input_shape=(224, 224, 3), num_classes=1000) -> None:
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1(input_shape, num_classes, list(SWITCHES), width=1.0)
    calib = np.random.default_rng(0).integers(0, 256, (8, *input_shape), dtype=np.uint8)
    t0 = time.perf_counter()
    convert_model(model, out, calib, calib_samples=4, sequential=SEQUENTIAL, tflm=False,
                  progress=lambda m: print(f"  convert: {m}", flush=True))
    print(f"bundle built in {time.perf_counter() - t0:.0f} s: {out}", flush=True)


def pinned(cores):
    """Context manager pinning this process to ``cores``."""

    class _Pin:
        def __enter__(self):
            self.old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(cores))

        def __exit__(self, *exc):
            os.sched_setaffinity(0, self.old)

    return _Pin()


def local_latency(bundle: Path, plan: str, x: np.ndarray, n: int, core: int) -> dict:
    from paradis_tf.runtime import LocalRunner

    with pinned([core]):
        runner = LocalRunner(bundle, plan, num_threads=1)
        return time_calls(lambda: runner.predict(x[None]), n).as_dict()


def compute_share(c: Coordinator, x: np.ndarray, n: int) -> dict:
    """Latency with the nodes' own interpreter time (slowest role) next to it."""
    before = (c.stats.node_compute_ms, c.stats.answered)
    lat = mesh_latency(c, x, n).as_dict()
    lat["node_compute_ms_mean"] = round((c.stats.node_compute_ms - before[0]) / max(1, c.stats.answered - before[1]), 3)
    return lat


def node_counters(c: Coordinator) -> dict[str, tuple[int, int]]:
    return {s.address: (s.info.counters.exchange_bytes_sent, s.info.counters.exchanges_sent) for s in c.status()}


def bytes_per_inference(c: Coordinator, x: np.ndarray, n: int) -> dict:
    c.infer(x[None])  # warm
    before = (c.stats.bytes_to_nodes, c.stats.bytes_from_nodes, node_counters(c))
    for _ in range(n):
        c.infer(x[None])
    after = (c.stats.bytes_to_nodes, c.stats.bytes_from_nodes, node_counters(c))
    exch = sum(after[2][a][0] - before[2][a][0] for a in after[2])
    msgs = sum(after[2][a][1] - before[2][a][1] for a in after[2])
    return {
        "coordinator_to_nodes": (after[0] - before[0]) / n,
        "nodes_to_coordinator": (after[1] - before[1]) / n,
        "node_to_node": exch / n,
        "node_to_node_messages": msgs / n,
        "total": (after[0] - before[0] + after[1] - before[1] + exch) / n,
    }


def _median(values) -> float:
    return round(float(np.median(values)), 3)


def tls_vs_plaintext(bundle: Path, x: np.ndarray, n: int, rounds: int, root: Path,
                     plans=("2x0.5", "seq-2"), concurrency=(1, 16)) -> dict:
    """Mutual TLS on and off, side by side (see the module doc).

    Returns, per plan: whether both answer the same logits, each round's
    `LatencyStats` per mode and concurrency, their medians, and the medians of
    the per-round ratios TLS / plaintext (p50, p99, throughput).
    """
    from paradis_tf.mesh.security import TlsConfig, issue, make_ca

    pki = root / "pki"
    make_ca(pki)
    issue(pki, "bench-coordinator", [], role="coordinator")
    tls = TlsConfig(pki / "ca.pem", pki / "bench-coordinator.pem", pki / "bench-coordinator.key")
    out: dict = {"rounds": rounds, "requests_per_measure": n,
                 "setup": "2 nodes pinned to cores 0 and 1 per mesh (both meshes up, one measured at a time); "
                          "TLS: EC P-256 certificates of one CA, client certificates required"}
    with LocalMesh(2, root / "plain", cpus=[[0], [1]], block_tensorflow=True) as plain, \
            LocalMesh(2, root / "tls", cpus=[[0], [1]], block_tensorflow=True, pki=pki) as secure, \
            Coordinator(plain.addresses) as cp, Coordinator(secure.addresses, tls=tls) as ct:
        coords = {"plaintext": cp, "tls": ct}
        for c in coords.values():
            c.deploy(bundle)
        for plan in plans:
            for c in coords.values():
                c.select(plan)
            same = bool(np.array_equal(cp.infer(x[None]), ct.infer(x[None])))
            runs: dict = {m: {k: [] for k in concurrency} for m in coords}
            for r in range(rounds):
                order = list(coords) if r % 2 == 0 else list(reversed(coords))
                for k in concurrency:
                    for mode in order:
                        c = coords[mode]
                        stats = mesh_latency(c, x, n) if k == 1 else mesh_throughput(c, x, n, k)
                        runs[mode][k].append(stats.as_dict())
                print(f"  tls {plan} round {r + 1}/{rounds}: " + ", ".join(
                    f"{m} k={k} p50 {runs[m][k][-1]['p50_ms']} ms {runs[m][k][-1]['throughput']}/s"
                    for k in concurrency for m in coords), flush=True)
            row: dict = {"same_logits": same}
            for k in concurrency:
                med = {m: {q: _median([s[q] for s in runs[m][k]]) for q in ("p50_ms", "p99_ms", "throughput")}
                       for m in coords}
                ratio = {q: _median([t[q] / p[q] for t, p in zip(runs["tls"][k], runs["plaintext"][k])])
                         for q in ("p50_ms", "p99_ms", "throughput")}
                failed = sum(s["failed"] for m in coords for s in runs[m][k])
                row[f"in_flight_{k}"] = {"median": med, "ratio_tls_over_plaintext": ratio, "failed": failed,
                                         "rounds": {m: runs[m][k] for m in coords}}
            out[plan] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path(tempfile.gettempdir()) / "paradis-mnv1-224")
    ap.add_argument("--requests", type=int, default=200, help="requests per latency median (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--only", choices=["all", "tls"], default="all",
                    help="'tls': only the TLS-vs-plaintext comparison (default: %(default)s, every measurement)")
    ap.add_argument("--tls-rounds", type=int, default=6,
                    help="alternating rounds of the TLS-vs-plaintext comparison (default: %(default)s)")
    args = ap.parse_args(argv)
    if not (args.bundle / "manifest.json").exists():
        build_bundle(args.bundle)
    ncores = len(os.sched_getaffinity(0))
    if ncores < 2:
        raise SystemExit("bench_mesh: needs at least 2 CPU cores")
    x = np.random.default_rng(1).random((224, 224, 3), dtype=np.float32)
    n = args.requests
    res: dict = {
        "machine": {"cores": ncores, "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "model": "mobilenet_v1 224x224x3, 1000 classes, random weights, int8, litert, 1 interpreter thread per device",
        "requests": n,
    }
    if args.only == "tls":
        with tempfile.TemporaryDirectory(prefix="paradis-bench-") as tmp:
            res["tls_vs_plaintext"] = tls_vs_plaintext(args.bundle, x, n, args.tls_rounds, Path(tmp))
        res["summary"] = _tls_summary(res["tls_vs_plaintext"])
        return _finish(res, args.out)
    print("LocalRunner ...", flush=True)
    res["local"] = {p: local_latency(args.bundle, p, x, n, core=0) for p in ("1x1.0", "2x0.5")}
    print(json.dumps(res["local"], indent=1), flush=True)

    with tempfile.TemporaryDirectory(prefix="paradis-bench-") as tmp:
        # 2 nodes on different cores: overhead, speedup, throughput, bytes for 2-device plans
        with LocalMesh(2, Path(tmp) / "split", cpus=[[0], [1]], block_tensorflow=True) as mesh:
            with Coordinator(mesh.addresses) as c:
                c.deploy(args.bundle)
                c.select("1x1.0")
                # the 1-device plan uses one node: its core
                res["mesh_1x1.0_1node"] = compute_share(c, x, n)
                c.select("2x0.5")
                res["mesh_2x0.5_2cores"] = compute_share(c, x, n)
                res["throughput_2x0.5"] = [mesh_throughput(c, x, max(n, 4 * k), k).as_dict() for k in (1, 4, 16)]
                res["bytes"] = {"2x0.5": bytes_per_inference(c, x, 10)}
                c.select("seq-2")
                res["bytes"]["seq-2"] = bytes_per_inference(c, x, 10)
                res["mesh_seq-2_2cores"] = mesh_latency(c, x, max(20, n // 4)).as_dict()
        print(json.dumps({k: res[k] for k in ("mesh_1x1.0_1node", "mesh_2x0.5_2cores")}, indent=1), flush=True)
        # both nodes on core 0: the protocol's overhead without parallelism
        with LocalMesh(2, Path(tmp) / "same", cpus=[[0], [0]], block_tensorflow=True) as mesh:
            with Coordinator(mesh.addresses) as c:
                c.deploy(args.bundle)
                c.select("2x0.5")
                res["mesh_2x0.5_samecore"] = mesh_latency(c, x, n).as_dict()
        # TFLM kernels: compute that scales with MACs, as on boards without
        # wide int8 SIMD (the litert/XNNPACK kernels above run narrow layers
        # far below their MAC share on this CPU)
        nt = max(10, n // 10)
        with LocalMesh(2, Path(tmp) / "tflm", cpus=[[0], [1]], backend="tflm", block_tensorflow=True) as mesh:
            with Coordinator(mesh.addresses, run_timeout_s=60) as c:
                c.deploy(args.bundle)
                c.select("1x1.0")
                res["tflm_1x1.0_1node"] = compute_share(c, x, nt)
                c.select("2x0.5")
                res["tflm_2x0.5_2cores"] = compute_share(c, x, nt)
        print("TLS against plaintext ...", flush=True)
        res["tls_vs_plaintext"] = tls_vs_plaintext(args.bundle, x, n, args.tls_rounds, Path(tmp) / "tls")
        # 4 nodes: bytes of the 4-device plans (bytes do not depend on speed)
        with LocalMesh(4, Path(tmp) / "four", cpus=[[0], [1], [0], [1]], block_tensorflow=True) as mesh:
            with Coordinator(mesh.addresses) as c:
                c.deploy(args.bundle)
                for plan in ("4x0.25", "seq-4"):
                    c.select(plan)
                    res["bytes"][plan] = bytes_per_inference(c, x, 5)

    p50 = lambda k: res[k]["p50_ms"]  # noqa: E731
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    macs = lambda p: max(d["macs"] for d in manifest["plans"][p]["devices"])  # noqa: E731
    res["summary"] = {
        "overhead_ratio_2x0.5_2cores": round(p50("mesh_2x0.5_2cores") / res["local"]["2x0.5"]["p50_ms"], 3),
        "overhead_ratio_2x0.5_samecore": round(p50("mesh_2x0.5_samecore") / res["local"]["2x0.5"]["p50_ms"], 3),
        "speedup_ratio_2x0.5_vs_1x1.0": round(p50("mesh_2x0.5_2cores") / p50("mesh_1x1.0_1node"), 3),
        "local_ratio_2x0.5_vs_1x1.0": round(res["local"]["2x0.5"]["p50_ms"] / res["local"]["1x1.0"]["p50_ms"], 3),
        "compute_ratio_2x0.5_vs_1x1.0": round(res["mesh_2x0.5_2cores"]["node_compute_ms_mean"] / res["mesh_1x1.0_1node"]["node_compute_ms_mean"], 3),
        "tflm_speedup_ratio_2x0.5_vs_1x1.0": round(p50("tflm_2x0.5_2cores") / p50("tflm_1x1.0_1node"), 3),
        "mac_ratio_2x0.5_device_vs_1x1.0": round(macs("2x0.5") / macs("1x1.0"), 3),
        **_tls_summary(res["tls_vs_plaintext"]),
    }
    print(json.dumps({"bytes": res["bytes"]}, indent=1))
    return _finish(res, args.out)


def _tls_summary(tls: dict) -> dict:
    """TLS / plaintext ratios (medians of the rounds' pairs) of every plan and concurrency."""
    out = {}
    for plan, row in tls.items():
        if not isinstance(row, dict) or "same_logits" not in row:
            continue
        for key, v in row.items():
            if key.startswith("in_flight_"):
                k = key[len("in_flight_"):]
                r = v["ratio_tls_over_plaintext"]
                out[f"tls_ratio_{plan}_{k}_in_flight_p50"] = r["p50_ms"]
                out[f"tls_ratio_{plan}_{k}_in_flight_p99"] = r["p99_ms"]
                out[f"tls_ratio_{plan}_{k}_in_flight_throughput"] = r["throughput"]
    return out


def _finish(res: dict, out: Path | None) -> int:
    res["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps({"summary": res["summary"]}, indent=1))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, res, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
