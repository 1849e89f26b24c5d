#!/usr/bin/env python
"""Compute-only time of a ParaDiS partition against the full network, per kernel library.

The mesh's parallel-speedup ratio (2x0.5 on two cores / 1x1.0 on one) can
never be lower than the ratio of the partitions' compute times, whatever the
protocol costs. This measures that floor for one device of each plan, one
thread, pinned to one core, for:

* ``xnnpack``: LiteRT with its default XNNPACK delegate (what boards run);
* ``builtin``: LiteRT's builtin optimized kernels, no delegate;
* ``tflm``: the TFLite Micro kernels (microcontroller boards).

    python tools/bench_kernels.py --bundle /tmp/paradis-mnv1-224 --out docs/benchmarks/kernels.json

The bundle is MobileNet v1 1.0 at 224x224x3 with random weights, the one
`tools/bench_mesh.py` builds (built here too when missing).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _litert(path: Path, delegate: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {} if delegate else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    it = Interpreter(model_path=str(path), num_threads=1, **kw)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    return it.invoke


def _tflm(path: Path):
    from paradis_tf.runtime.backends import load_interpreter

    it = load_interpreter(path, "tflm", arena_size=8 * 1024 * 1024)
    x = [np.zeros(t.shape, t.quant.dtype) for t in it.inputs]
    return lambda: it.run(x)


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path(tempfile.gettempdir()) / "paradis-mnv1-224")
    ap.add_argument("--plans", default="1x1.0,2x0.5,4x0.25")
    ap.add_argument("--repeats", type=int, default=30, help="invokes per median (TFLM: a tenth, at least 3)")
    ap.add_argument("--core", type=int, default=0, help="CPU core to pin to (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.bundle / "manifest.json").exists():
        from bench_mesh import build_bundle

        build_bundle(args.bundle)
    os.sched_setaffinity(0, {args.core})
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    plans = args.plans.split(",")
    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "loadavg_start": os.getloadavg()},
                 "model": "mobilenet_v1 224x224x3, random weights, int8; device 0 of each plan, 1 thread, 1 core",
                 "ms": {}, "macs": {}}
    for plan in plans:
        dev = manifest["plans"][plan]["devices"][0]
        if len(dev["segments"]) != 1:
            raise SystemExit(f"bench_kernels: plan {plan} has sync segments; pick plans without sync layers")
        path = args.bundle / dev["segments"][0]["file"]
        res["macs"][plan] = dev["macs"]
        res["ms"][plan] = {
            "xnnpack": median_ms(_litert(path, True), args.repeats),
            "builtin": median_ms(_litert(path, False), args.repeats),
            "tflm": median_ms(_tflm(path), max(3, args.repeats // 10), warmup=1),
        }
        print(plan, {k: round(v, 2) for k, v in res["ms"][plan].items()}, flush=True)
    full = plans[0]
    res["ratio_vs_" + full] = {
        p: {"macs": round(res["macs"][p] / res["macs"][full], 3),
            **{k: round(res["ms"][p][k] / res["ms"][full][k], 3) for k in res["ms"][p]}}
        for p in plans[1:]
    }
    res["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps(res["ratio_vs_" + full], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
