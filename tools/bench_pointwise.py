"""Block-diagonal pointwise layers: masked dense matmul vs grouped kernels.

A multi-device switch trains its split pointwise convolutions as one
full-size matmul with the block-diagonal mask (`ParaDiSConv2D.packed_weights`):
K devices of equal width do 1/K of its multiply-adds, but the masked matmul
does them all. This tool times, for every pointwise layer of the MobileNet
v1 the accuracy benchmark trains (its input size, channels and batch), the
forward pass and both gradients of three ways to compute the same
block-diagonal product on one TensorFlow thread (as a ``bench_accuracy
--jobs`` worker):

* ``masked``: the kit's way, ``x @ (W * mask)``;
* ``per_device``: K matmuls on ``ops.split`` slices, concatenated;
* ``grouped``: ``tf.nn.conv2d`` with a grouped kernel (oneDNN's grouped
  convolution; ``groups`` = K).

Rounds interleave the three, so machine noise hits them alike; the record
keeps each layer's median CPU milliseconds and the sums over the layers.
All three give the same numbers (checked on every layer before timing).

`use_conv_kernels(model)` builds the other variant of the kit's own
pointwise layers: ``ParaDiSConv2D`` runs a 1x1 stride-1 convolution as a
matmul over the pixels; the variant runs TensorFlow's 1x1 convolution
kernel instead (``bench_train_time --conv-pointwise`` times both).

    python tools/bench_pointwise.py --groups 2 4 --rounds 5 --out docs/benchmarks/pointwise_grouped.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

# TensorFlow's CPU kernels compute the gradient of a grouped convolution only through oneDNN, which
# TensorFlow turns on by default on some CPUs only (off on AMD EPYC, for one): ask for it before TensorFlow loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # workers.py sits beside this script (tests load the script by its path)
    sys.path.insert(0, str(TOOLS))

WAYS = ("masked", "per_device", "grouped")


def layer_shapes(width: float, depth: int, image: int = 28) -> list[dict]:
    """(spatial size, input and output channels) of each split pointwise layer of the benchmark's MobileNet v1."""
    from paradis_tf.models import mobilenet_v1

    m = mobilenet_v1((image, image, 1), 10, ["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25"],
                     width=width, depth=depth)
    size = -(-image // m.body.stem_stride)
    shapes = []
    for dw, _, pw, _ in m.body.blocks:
        size = -(-size // dw.strides[0])
        shapes.append({"layer": pw.name, "size": size, "in": pw.in_channels, "out": pw.filters})
    return shapes


def use_conv_kernels(model) -> list[str]:
    """Makes ``model``'s pointwise (1x1, stride 1) ParaDiS convolutions run the
    1x1 convolution kernel instead of a matmul over the pixels: the same
    numbers up to float summation order. Call it before the model's first
    step is traced. Returns the names of the layers changed."""
    from keras import ops

    from paradis_tf.layers import ParaDiSConv2D

    def conv_kernel(layer, x, weights):
        y = ops.conv(x, weights[0], strides=layer.strides, padding=layer.padding)
        return y + weights[1] if layer.bias is not None else y

    changed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ParaDiSConv2D) and layer.kernel_size == (1, 1) and layer.strides == (1, 1):
            layer._conv = types.MethodType(conv_kernel, layer)
            changed.append(layer.name)
    return changed


def ways(groups: int, cin: int, cout: int) -> dict:
    """The three block-diagonal pointwise products for ``groups`` equal devices; each maps (x, W) to y."""
    import tensorflow as tf

    from paradis_tf.layers.conv import block_diagonal_mask

    c, d = cin // groups, cout // groups
    in_ranges = [(k * c, (k + 1) * c) for k in range(groups)]
    out_ranges = [(k * d, (k + 1) * d) for k in range(groups)]
    mask = tf.constant(block_diagonal_mask(in_ranges, out_ranges))  # the mask ParaDiSConv2D trains with

    def blocks(w):
        return [w[ia:ib, oa:ob] for (ia, ib), (oa, ob) in zip(in_ranges, out_ranges)]

    def masked(x, w):
        return tf.reshape(tf.reshape(x, (-1, cin)) @ (w * mask), (*x.shape[:-1], cout))

    def per_device(x, w):
        xs = tf.split(tf.reshape(x, (-1, cin)), groups, axis=-1)
        return tf.reshape(tf.concat([a @ b for a, b in zip(xs, blocks(w))], -1), (*x.shape[:-1], cout))

    def grouped(x, w):
        return tf.nn.conv2d(x, tf.concat(blocks(w), axis=-1)[None, None], 1, "SAME")

    return {"masked": masked, "per_device": per_device, "grouped": grouped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, nargs="+", default=[2, 4], help="devices of equal width (%(default)s)")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="timed forward+gradient passes per way, layer and round")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    for name in ("rounds", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1. Received {getattr(args, name)}.")
    bad = [g for g in args.groups if g < 2]
    if bad:
        raise SystemExit(f"--groups {bad[0]}: pass 2 or more devices (1 device has no zero blocks to skip).")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from workers import set_threads

    try:
        set_threads(1)
    except RuntimeError as e:
        raise SystemExit(f"One TensorFlow thread: {e}") from None

    try:
        shapes = layer_shapes(args.width, args.depth)  # builds a model: after the threads are set
    except ValueError as e:
        raise SystemExit(f"--width {args.width} --depth {args.depth}: {e}") from None
    for g in args.groups:
        odd = [s for s in shapes if s["in"] % g or s["out"] % g]
        if odd:
            raise SystemExit(f"--groups {g}: layer {odd[0]['layer']} has {odd[0]['in']} -> {odd[0]['out']} channels, "
                             f"which do not split into {g} equal devices; pass a group count that divides them.")

    cases = []  # (groups, shape, way, step function, x, w)
    for g in args.groups:
        for s in shapes:
            x = tf.random.stateless_normal((args.batch_size, s["size"], s["size"], s["in"]), seed=(g, s["in"]))
            w = tf.random.stateless_normal((s["in"], s["out"]), seed=(g, s["out"]))
            fns = ways(g, s["in"], s["out"])
            ref = fns["masked"](x, w)
            for way, fn in fns.items():
                err = float(tf.reduce_max(tf.abs(fn(x, w) - ref)))
                if err > 1e-3 * float(tf.reduce_max(tf.abs(ref))):
                    raise SystemExit(f"{way} differs from masked by {err} at layer {s['layer']}, {g} groups.")

                @tf.function
                def step(x, w, fn=fn):
                    with tf.GradientTape() as tape:
                        tape.watch([x, w])
                        y = fn(x, w)
                        loss = tf.reduce_sum(y * y)
                    return tape.gradient(loss, [x, w])

                step(x, w)  # trace and warm up
                cases.append((g, s, way, step, x, w))
    times: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for g, s, way, step, x, w in cases:
            start = time.process_time()
            for _ in range(args.steps):
                out = step(x, w)
            _ = [float(tf.reduce_sum(v)) for v in out]
            times.setdefault((g, s["layer"], way), []).append((time.process_time() - start) / args.steps * 1e3)
    record = {"width": args.width, "depth": args.depth, "batch_size": args.batch_size, "rounds": args.rounds,
              "steps": args.steps, "threads": 1, "layers": shapes, "groups": {},
              "command": "python tools/bench_pointwise.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    for g in args.groups:
        per_layer = {s["layer"]: {way: round(statistics.median(times[(g, s["layer"], way)]), 3) for way in WAYS}
                     for s in shapes}
        total = {way: round(sum(v[way] for v in per_layer.values()), 3) for way in WAYS}
        best = round(sum(min(v.values()) for v in per_layer.values()), 3)
        record["groups"][str(g)] = {
            "cpu_ms_per_layer": per_layer, "cpu_ms_total": total, "cpu_ms_best_per_layer": best,
            "over_masked": {way: round(total[way] / total["masked"], 3) for way in WAYS},
            "best_per_layer_over_masked": round(best / total["masked"], 3)}
        print(f"{g} devices: " + ", ".join(f"{way} {total[way]:.1f} ms ({total[way] / total['masked']:.2f}x)"
                                           for way in WAYS)
              + f"; the best way per layer {best:.1f} ms ({best / total['masked']:.2f}x) "
              "(forward and gradients of all pointwise layers, one batch, CPU ms)", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
