#!/usr/bin/env python
"""Training time with tf.data's autotuner on and off, side by side.

Each round starts two worker processes at once, each pinned to a core of its
own with one TensorFlow thread (as `bench_accuracy --jobs 2` runs its
trainings): one trains with ``make_dataset(autotune=True)``, the other with
the default ``autotune=False``; the next round swaps their cores. Both train
the same model with the accuracy benchmark's recipe (full Fashion-MNIST
training set, batch 128, augmented, SGD) and record the wall time and the
process CPU time of every epoch. The first epoch (tracing, filling the
shuffle buffer) is left out of the medians.

    python tools/bench_data_autotune.py --models 1x0.25 1x1.0 --epochs 3 --rounds 2

``--models`` takes switch texts (that switch trained alone, an individual
model) or ``paradis`` (the six switches of the benchmark, jointly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from paradis_tf.switches import BENCHMARK_SWITCHES

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # workers.py sits beside this script (tests load the script by its path)
    sys.path.insert(0, str(TOOLS))

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = list(BENCHMARK_SWITCHES)  # the six switches of the accuracy benchmark


def worker(args) -> int:
    """One training; prints one JSON line per epoch: ``{"epoch", "wall", "cpu"}``."""
    import keras

    from paradis_tf.data import load_fashion_mnist, make_dataset
    from paradis_tf.models import mobilenet_v1
    from paradis_tf.training.recipe import TrainConfig, make_optimizer
    from workers import set_threads

    set_threads(1)
    switches = SWITCHES if args.worker == "paradis" else [args.worker]
    config = TrainConfig(epochs=args.epochs, optimizer="sgd", learning_rate=0.1, weight_decay=5e-3,
                         warmup_epochs=0.5, augment=True, seed=0)
    x, y = load_fashion_mnist("train", limit=args.train_images)
    keras.utils.set_random_seed(config.seed)
    model = mobilenet_v1((28, 28, 1), 10, switches, width=args.width, depth=args.depth)
    model.compile(optimizer=make_optimizer(config, len(x) // config.batch_size))
    ds = make_dataset(x, y, config.batch_size, training=True, augment=True, preprocessing=model.preprocessing,
                      seed=config.seed, autotune=args.autotune == "on")

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            print(json.dumps({"epoch": epoch, "wall": time.perf_counter() - self.t,
                              "cpu": time.process_time() - self.c}), flush=True)

    model.fit(ds, epochs=args.epochs, verbose=0, calibrate=False, callbacks=[EpochClock()])
    return 0


def run_pair(args, model: str, cores: dict[str, int]) -> dict[str, list[dict]]:
    """Trains ``model`` twice at once, autotune on and off, each on its core; the epochs of each."""
    from workers import start_pinned_worker

    procs = {}
    for setting, core in cores.items():
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", model, "--autotune", setting,
               "--epochs", str(args.epochs), "--width", str(args.width), "--depth", str(args.depth)]
        cmd += ["--train-images", str(args.train_images)] if args.train_images else []
        procs[setting] = start_pinned_worker(cmd, core, ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    out = {}
    for setting, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{model} with autotune {setting} failed (exit status {proc.returncode}):\n"
                             + "\n".join(stderr.splitlines()[-15:]))
        out[setting] = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["1x0.25", "1x1.0"],
                    help="switch texts (trained alone) or 'paradis' (the six switches jointly) (%(default)s)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per training, the first not counted (%(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of trainings per model, cores swapped (%(default)s)")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--train-images", type=int, default=None,
                    help="train on the first N training images (default: all 60000)")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/data_autotune.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--autotune", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.epochs < 2:
        raise SystemExit(f"--epochs {args.epochs}: pass 2 or more; the first epoch (tracing) is not counted.")
    if args.rounds < 1:
        raise SystemExit(f"--rounds {args.rounds}: pass 1 or more.")
    if args.train_images is not None and args.train_images < 128:
        raise SystemExit(f"--train-images {args.train_images}: pass at least one batch (128), or leave it out.")
    from paradis_tf.switches import Switch

    for m in args.models:
        if m != "paradis":
            try:
                Switch.parse(m)
            except ValueError as e:
                raise SystemExit(f"--models {m!r}: pass a switch text such as 1x0.25, or 'paradis'. ({e})") from None
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("This benchmark pins its two trainings to two cores of their own; it needs Linux and "
                         "2 or more schedulable cores.")
    cores = sorted(os.sched_getaffinity(0))[:2]
    result = {"epochs": args.epochs, "rounds": args.rounds, "width": args.width, "depth": args.depth,
              "batch_size": 128, "train_images": args.train_images or 60000, "models": {},
              "command": "python tools/bench_data_autotune.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    for model in args.models:
        epochs = {"on": [], "off": []}
        for r in range(args.rounds):
            placed = {"on": cores[r % 2], "off": cores[(r + 1) % 2]}
            got = run_pair(args, model, placed)
            for setting, rows in got.items():
                epochs[setting] += [dict(e, round=r, core=placed[setting]) for e in rows]
            print(f"{model} round {r + 1}: " + "; ".join(
                f"autotune {s} (core {placed[s]}) " + ", ".join(f"{e['wall']:.1f} s ({e['cpu']:.1f} s CPU)"
                                                               for e in got[s]) for s in got), flush=True)
        med = {s: {k: statistics.median(e[k] for e in rows if e["epoch"] > 0) for k in ("wall", "cpu")}
               for s, rows in epochs.items()}
        result["models"][model] = {
            "epochs": epochs, "median_epoch_seconds": med,
            "wall_on_over_off": med["on"]["wall"] / med["off"]["wall"],
            "idle_fraction": {s: 1 - sum(e["cpu"] for e in rows if e["epoch"] > 0)
                              / sum(e["wall"] for e in rows if e["epoch"] > 0) for s, rows in epochs.items()},
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n| model | autotune on: s per epoch (CPU) | off: s per epoch (CPU) | wall on / off | idle on, off |")
    print("|---|---|---|---|---|")
    for model, r in result["models"].items():
        m, idle = r["median_epoch_seconds"], r["idle_fraction"]
        print(f"| {model} | {m['on']['wall']:.1f} ({m['on']['cpu']:.1f}) | {m['off']['wall']:.1f} ({m['off']['cpu']:.1f})"
              f" | {r['wall_on_over_off']:.2f} | {100 * idle['on']:.0f} %, {100 * idle['off']:.0f} % |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
