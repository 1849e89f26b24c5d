"""Where a training step's time goes: TensorFlow profiler time per op type.

Trains a MobileNet v1 ParaDiS model (the accuracy benchmark's recipe: SGD
with Nesterov momentum, weight decay, label mix 0.5, nested teachers,
augmented Fashion-MNIST batches) for a few warm-up steps, then traces
``--steps`` more with the TensorFlow profiler and sums the time of every
executed op by op type (the ``name:Type`` events of the compute threads),
and by group: pointwise matmuls, convolutions, depthwise convolutions,
batch normalization, activations, everything else. Forward and gradient
ops count in their group (``Relu6Grad`` is an activation, a
``FusedBatchNormGradV3`` batch normalization). By default one TensorFlow
thread, as each ``bench_accuracy --jobs`` worker trains.

    python tools/profile_train_step.py --steps 40 --out docs/benchmarks/profile_step_joint.json
    python tools/profile_train_step.py --switches 1x1.0 --steps 40 --out docs/benchmarks/profile_step_1x1.json

The process's CPU time and the wall time of the traced steps are recorded
beside the ops' sum. Op event times are wall times: on a core shared with
another process they include the time the thread waited, so run the tool
alone on its core (``taskset -c 1``) or compare shares, not milliseconds.
Times are of this machine at that moment.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from paradis_tf.switches import BENCHMARK_SWITCHES

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # workers.py sits beside this script (tests load the script by its path)
    sys.path.insert(0, str(TOOLS))

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = list(BENCHMARK_SWITCHES)  # the six switches of the accuracy benchmark
OP_EVENT = re.compile(r"^[^:]+:([A-Za-z_][A-Za-z0-9_]*)$")  # "scope/op_name:OpType" (not "Class::Method")
# Op type (oneDNN's "_Mkl"/"_MklNative" prefixes removed) -> group, by prefix.
GROUPS = (
    ("depthwise convolution", ("DepthwiseConv2d",)),
    ("convolution", ("Conv2D",)),
    ("pointwise matmul", ("MatMul", "BatchMatMul")),
    ("batch normalization", ("FusedBatchNorm",)),
    ("activation", ("Relu",)),
)


def base_type(op_type: str) -> str:
    """``_MklNativeFusedBatchNormGradV3`` -> ``FusedBatchNormGradV3``."""
    for prefix in ("_MklNative", "_Mkl", "_"):
        if op_type.startswith(prefix):
            return op_type[len(prefix):]
    return op_type


def group_of(op_type: str) -> str:
    t = base_type(op_type)
    for group, prefixes in GROUPS:
        if t.startswith(prefixes):
            return group
    return "other"


def op_times(xspace_path: Path, thread_prefix: str = "tf_Compute") -> dict[str, float]:
    """Seconds per op type, summed over the host plane's compute-thread lines of one trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(xspace_path).read_bytes())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith(thread_prefix):
                continue
            for ev in line.events:
                m = OP_EVENT.match(plane.event_metadata[ev.metadata_id].name)
                if m:
                    totals[m.group(1)] += ev.duration_ps * 1e-12
    return dict(totals)


def summarize(seconds: dict[str, float], steps: int) -> dict:
    total = sum(seconds.values())
    if total <= 0:
        raise ValueError(f"The trace holds no op events (op types: {sorted(seconds)}); nothing ran while tracing.")
    groups: collections.Counter = collections.Counter()
    for t, s in seconds.items():
        groups[group_of(t)] += s
    return {
        "ops_ms_per_step": round(total / steps * 1e3, 2),
        "groups": {g: {"ms_per_step": round(s / steps * 1e3, 2), "share": round(s / total, 4)}
                   for g, s in groups.most_common()},
        "op_types": {t: {"ms_per_step": round(s / steps * 1e3, 2), "share": round(s / total, 4), "group": group_of(t)}
                     for t, s in sorted(seconds.items(), key=lambda kv: -kv[1])},
    }


def table(data: dict) -> str:
    lines = [f"Switches {', '.join(data['switches'])}; width {data['width']:g}, depth {data['depth']}, batch "
             f"{data['batch_size']}, {data['threads']} thread(s); {data['steps']} traced steps: "
             f"{data['cpu_ms_per_step']:.0f} ms of process CPU per step, ops {data['ops_ms_per_step']:.0f} ms.",
             "", "| group | ms per step | share of op time |", "|---|---|---|"]
    lines += [f"| {g} | {v['ms_per_step']:.1f} | {100 * v['share']:.1f} % |" for g, v in data["groups"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switches", nargs="+", default=SWITCHES, help="switches trained every step (the benchmark's six)")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="traced steps (%(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="untraced steps first, to build the graph (%(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="TensorFlow intra- and inter-op threads (%(default)s, as a bench_accuracy --jobs worker)")
    ap.add_argument("--out", default=None, help="JSON to write (default: print only)")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    args = ap.parse_args(argv)
    if args.table:
        if not args.out:
            raise SystemExit("--table needs --out FILE (a JSON this tool wrote).")
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    for name in ("steps", "warmup", "threads", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1. Received {getattr(args, name)}.")
    from paradis_tf.switches import parse_switches

    try:
        switches = [str(s) for s in parse_switches(args.switches)]
    except ValueError as e:
        raise SystemExit(f"--switches {' '.join(args.switches)}: {e}") from None

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from paradis_tf.data import FASHION_MNIST_LABELS, load_fashion_mnist, make_dataset
    from paradis_tf.models import mobilenet_v1
    from paradis_tf.training.recipe import TrainConfig, make_optimizer
    from workers import set_threads

    try:
        set_threads(args.threads)
    except RuntimeError as e:  # TensorFlow ran before in this process: its thread pools are fixed
        raise SystemExit(f"--threads {args.threads}: {e}") from None

    images = args.batch_size * max(args.steps, args.warmup)
    x, y = load_fashion_mnist("train", limit=images)
    if len(x) < images:
        raise SystemExit(f"--steps {args.steps} x --batch-size {args.batch_size} needs {images} training images; "
                         f"the dataset has {len(x)}.")
    cfg = TrainConfig(epochs=13, batch_size=args.batch_size, learning_rate=0.1, weight_decay=5e-3, optimizer="sgd",
                      warmup_epochs=0.5, augment=True)
    try:
        model = mobilenet_v1((28, 28, 1), 10, switches, width=args.width, depth=args.depth,
                             labels=FASHION_MNIST_LABELS, label_mix=0.5, teacher="nested")
    except ValueError as e:
        raise SystemExit(f"--width {args.width} --depth {args.depth}: {e}") from None
    model.compile(optimizer=make_optimizer(cfg, 60000 // args.batch_size))
    ds = make_dataset(x, y, args.batch_size, training=True, augment=True, preprocessing=model.preprocessing)
    model.fit(ds.take(args.warmup), epochs=1, verbose=0, calibrate=False)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        cpu, wall = time.process_time(), time.perf_counter()
        model.fit(ds.take(args.steps), epochs=1, verbose=0, calibrate=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        tf.profiler.experimental.stop()
        traces = sorted(Path(logdir).rglob("*.xplane.pb"))
        if not traces:
            raise SystemExit(f"The profiler wrote no trace under {logdir}; is this TensorFlow built with the profiler?")
        seconds = op_times(traces[-1])
    data = {"switches": switches, "width": args.width, "depth": args.depth, "batch_size": args.batch_size,
            "threads": args.threads, "steps": args.steps, "cpu_ms_per_step": round(cpu / args.steps * 1e3, 2),
            "wall_ms_per_step": round(wall / args.steps * 1e3, 2), **summarize(seconds, args.steps),
            "command": "python tools/profile_train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
