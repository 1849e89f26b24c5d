#!/usr/bin/env python
"""Training wall time: one joint ParaDiS model vs the six individual models.

Steady-state seconds per training step (batch 128, Fashion-MNIST shapes,
MobileNet v1 width 0.5 depth 7 as in tools/bench_accuracy.py) of the joint
six-switch model and of each switch trained alone. The models are timed in
interleaved rounds in one process, so machine noise hits all of them alike;
the ratio joint / sum(individual) is the medians' ratio. CPU time (the
process's, both cores) is recorded beside wall time: this VM's wall times
come quantized (steps of exactly 256, 64, 32 ms when its CPU quota throttles
it), while the CPU time a step consumes is steady to a few per cent.

    python tools/bench_train_time.py --rounds 3 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from paradis_tf.switches import BENCHMARK_SWITCHES

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # workers.py sits beside this script (tests load the script by its path)
    sys.path.insert(0, str(TOOLS))

SWITCHES = list(BENCHMARK_SWITCHES)  # the six switches of the accuracy benchmark
ROOT = Path(__file__).resolve().parents[1]


# Side-by-side ratios of the record (wall time; the "_cpu" twin holds CPU time):
# key -> how a line names one, from the keys nested under it (model, batch then model, or sandwich size)
# and --batch-size.
RATIOS = {
    "packed_over_per_device": lambda batch: "joint packed / per device",
    "matmul_over_conv_pointwise": lambda m, batch: f"{m}: pointwise as matmul / as 1x1 convolution",
    "per_image_over_default": lambda n, m, batch: f"{m}: time per image at batch {n} / at batch {batch}",
    "sandwich_over_all": lambda n, batch: f"joint with a sandwich of {n} / all six switches",
}


def ratio_lines(result: dict, batch_size: int) -> list[str]:
    """The ratios of ``result`` that were measured, one line each: ``<what> = <wall> wall, <cpu> CPU time``."""
    def walk(wall, cpu, keys):
        if not isinstance(wall, dict):
            yield keys, wall, cpu
            return
        for k in wall:
            yield from walk(wall[k], cpu[k], keys + (k,))

    lines = []
    for key, name in RATIOS.items():
        if key in result:
            for keys, wall, cpu in walk(result[key], result[f"{key}_cpu"], ()):
                lines.append(f"{name(*keys, batch=batch_size)} = {wall:.2f} wall, {cpu:.2f} CPU time")
    return lines


def per_device(model):
    """The same model (its configuration; fresh weights) training on the per-device path
    (`ParaDiSModel.forward(per_device=True)`: one kernel per device and layer) instead of packed."""
    from paradis_tf.models import ParaDiSModel

    class PerDeviceModel(ParaDiSModel):
        def forward(self, switch, x, training=None, per_device: bool = True):
            return super().forward(switch, x, training, per_device=True)

    return PerDeviceModel.from_config(model.get_config())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per model per round (%(default)s)")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--xla", action="store_true",
                    help="also time the joint model compiled with XLA (jit_compile=True), side by side")
    ap.add_argument("--per-device", action="store_true",
                    help="also time the joint model run per device (one kernel per device and layer, "
                         "ParaDiSOps) instead of packed, side by side")
    ap.add_argument("--sandwich", type=int, nargs="+", default=[], metavar="N",
                    help="also time the joint model training a sandwich sample of N switches per step "
                         "(the widest, the narrowest and N-2 random others), side by side")
    ap.add_argument("--also-batch", type=int, nargs="+", default=[], metavar="N",
                    help="also time the joint model and the individual 1x1.0 at batch N (the same images per "
                         "round: steps x batch-size / N steps), side by side; reports time per image against "
                         "--batch-size")
    ap.add_argument("--conv-pointwise", action="store_true",
                    help="also time the joint model and the individual 1x1.0 with their pointwise layers run as "
                         "1x1 convolution kernels instead of matmuls (bench_pointwise.use_conv_kernels), side by side")
    ap.add_argument("--threads", type=int, default=None,
                    help="TensorFlow intra- and inter-op threads (bench_accuracy --jobs workers run with 1); "
                         "default: TensorFlow's")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/train_time.json"))
    args = ap.parse_args(argv)
    from paradis_tf.training.distillation import check_sandwich

    bad = [n for n in args.also_batch if n < 1 or (args.steps * args.batch_size) % n]
    if bad:
        raise SystemExit(f"--also-batch {bad[0]}: pass a batch size > 0 that divides steps x batch-size "
                         f"({args.steps} x {args.batch_size}), so every model sees the same images per round.")
    for n in args.sandwich:
        try:
            check_sandwich(n, len(SWITCHES))
        except ValueError:
            raise SystemExit(f"--sandwich {n}: pass 2 to {len(SWITCHES)} switches per step.") from None

    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: pass 1 or more threads, or leave it out for TensorFlow's default.")
    import keras
    import tensorflow as tf

    if args.threads:
        from workers import set_threads

        try:
            set_threads(args.threads)
        except RuntimeError as e:
            raise SystemExit(f"--threads {args.threads}: {e}") from None

    from bench_pointwise import use_conv_kernels
    from paradis_tf.data import load_fashion_mnist, make_dataset
    from paradis_tf.models import mobilenet_v1

    x, y = load_fashion_mnist("train", limit=args.batch_size * 50)
    ds = make_dataset(x, y, args.batch_size, training=True).repeat()
    batch = {}  # model name -> batch size, where not --batch-size
    models = {"paradis": SWITCHES, **{f"individual {s}": [s] for s in SWITCHES}}
    varied = {"paradis": SWITCHES, "individual 1x1.0": ["1x1.0"]}  # the models timed again under a variation
    if args.per_device:
        models["paradis per device"] = SWITCHES
    if args.xla:
        models["paradis XLA"] = SWITCHES
    if args.conv_pointwise:
        models.update({f"{name} conv pointwise": sw for name, sw in varied.items()})
    for n in args.sandwich:
        models[f"paradis sandwich {n}"] = SWITCHES
    for n in args.also_batch:
        for name, sw in varied.items():
            models[f"{name} batch {n}"] = sw
            batch[f"{name} batch {n}"] = n
    datasets = {n: make_dataset(x, y, n, training=True).repeat() for n in set(batch.values())}
    feed = {name: datasets.get(batch.get(name), ds) for name in models}
    steps = {name: args.steps * args.batch_size // batch.get(name, args.batch_size) for name in models}
    built = {}
    for name, sw in models.items():
        sandwich = int(name.rpartition(" ")[2]) if "sandwich" in name else None
        m = mobilenet_v1((28, 28, 1), 10, sw, width=args.width, depth=args.depth, sandwich=sandwich)
        if name.endswith("per device"):
            m = per_device(m)
        if name.endswith("conv pointwise"):
            use_conv_kernels(m)  # before the step is traced, just below
        m.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=name.endswith("XLA"))
        m.fit(feed[name], steps_per_epoch=3, epochs=1, verbose=0, calibrate=False)  # trace, warm up
        built[name] = m
    times: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        for name, m in built.items():
            t0, c0 = time.perf_counter(), time.process_time()
            m.fit(feed[name], steps_per_epoch=steps[name], epochs=1, verbose=0, calibrate=False)
            times[name].append((time.perf_counter() - t0) / steps[name])
            cpu[name].append((time.process_time() - c0) / steps[name])
        print(f"round {r + 1}: " + ", ".join(f"{n} {1000 * times[n][-1]:.0f} ms ({1000 * cpu[n][-1]:.0f} ms CPU)"
                                            for n in times), flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    med_cpu = {n: statistics.median(t) for n, t in cpu.items()}
    individual = sum(med[f"individual {s}"] for s in SWITCHES)
    result = {
        "width": args.width, "depth": args.depth, "batch_size": args.batch_size, "rounds": args.rounds,
        "steps": args.steps, "seconds_per_step": med, "cpu_seconds_per_step": med_cpu, "individual_sum": individual,
        "joint_over_individual": med["paradis"] / individual, "tensorflow": tf.__version__,
        **({"xla_over_default": med["paradis XLA"] / med["paradis"]} if args.xla else {}),
        # the default (pointwise layers as matmuls) over 1x1 convolution kernels (wall, CPU)
        **({"matmul_over_conv_pointwise": {m: med[m] / med[f"{m} conv pointwise"] for m in varied},
            "matmul_over_conv_pointwise_cpu": {m: med_cpu[m] / med_cpu[f"{m} conv pointwise"]
                                               for m in varied}}
           if args.conv_pointwise else {}),
        "threads": args.threads,
        **({"packed_over_per_device": med["paradis"] / med["paradis per device"],
            "packed_over_per_device_cpu": med_cpu["paradis"] / med_cpu["paradis per device"]} if args.per_device else {}),
        **({"sandwich_over_all": {n: med[f"paradis sandwich {n}"] / med["paradis"] for n in args.sandwich},
            "sandwich_over_all_cpu": {n: med_cpu[f"paradis sandwich {n}"] / med_cpu["paradis"] for n in args.sandwich}}
           if args.sandwich else {}),
        # time per image at batch N over time per image at --batch-size (wall, CPU)
        **({"per_image_over_default": {n: {m: med[f"{m} batch {n}"] * args.batch_size / (n * med[m])
                                           for m in varied} for n in args.also_batch},
            "per_image_over_default_cpu": {n: {m: med_cpu[f"{m} batch {n}"] * args.batch_size / (n * med_cpu[m])
                                               for m in varied} for n in args.also_batch}}
           if args.also_batch else {}),
        "command": "python tools/bench_train_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n| model | ms per step | CPU ms per step |\n|---|---|---|")
    for n, v in med.items():
        print(f"| {n} | {1000 * v:.0f} | {1000 * med_cpu[n]:.0f} |")
    print(f"| six individual models together | {1000 * individual:.0f} |")
    print(f"\njoint / individual = {result['joint_over_individual']:.2f}")
    if args.xla:
        print(f"joint with XLA / without = {result['xla_over_default']:.2f}")
    for line in ratio_lines(result, args.batch_size):
        print(line)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
