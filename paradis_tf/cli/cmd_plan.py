"""`paradis plan BUNDLE`: what every plan of a bundle costs, per device.

Per plan and device role: MACs and parameters, int8 partition bytes, TFLM
arena bytes, and the bytes that cross devices per inference (the input the
coordinator broadcasts, feature maps exchanged at sync points or between
sequential stages, partial outputs to the fusion). Read from the manifest
alone: deterministic, no TensorFlow.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="per-device cost and traffic of every plan of a bundle", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle directory (from `paradis convert`)")
    p.add_argument("--plans", default=None, metavar="P1,P2", help="only these plans (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_plan)


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def _m(n: int) -> str:
    return f"{n / 1e6:.3f}"


def format_costs(costs) -> str:
    lines = []
    for c in costs:
        lines.append(
            f"plan {c.name} ({c.kind}, {len(c.devices)} device{'s' if len(c.devices) != 1 else ''}): "
            f"{_m(c.total_macs)} M MACs in all, {_m(c.max_device_macs)} M on the busiest device; "
            f"{c.crossing_bytes} B cross devices per inference "
            f"(input {c.input_broadcast_bytes} B, exchange {c.exchange_bytes} B, outputs {c.output_bytes} B)"
        )
        lines.append(
            f"  {'role':>4} {'width':>6} {'MMACs':>9} {'params':>9} {'segs':>4} {'tflite KiB':>10} "
            f"{'arena KiB':>9} {'in B':>7} {'recv B':>7} {'sent B':>7} {'out B':>6}"
        )
        for d in c.devices:
            lines.append(
                f"  {d.role:>4} {d.width:>6g} {_m(d.macs):>9} {d.params:>9} {d.segments:>4} {_kb(d.partition_bytes):>10} "
                f"{_kb(d.arena_bytes):>9} {d.input_bytes:>7} {d.received_bytes:>7} {d.sent_bytes:>7} {d.output_bytes:>6}"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _plan(args: argparse.Namespace) -> int:
    import json

    from paradis_tf.bundle import load
    from paradis_tf.runtime.plan_cost import plan_cost

    bundle = load(args.bundle)
    names = list(bundle.plans) if not args.plans else [bundle.plan(n.strip()).name for n in args.plans.split(",") if n.strip()]
    costs = [plan_cost(bundle.plan(n)) for n in names]
    if args.json:
        print(json.dumps({"bundle": str(bundle.root), "model": bundle.model.name, "plans": [c.as_dict() for c in costs]}, indent=2))
    else:
        what = (f"{bundle.model.num_classes} classes" if bundle.model.output is None else
                f"x{bundle.model.output.scale} {bundle.model.output.pixel_format} image out")
        print(f"bundle {bundle.root}: model {bundle.model.name}, input {list(bundle.model.input_shape)}, {what}")
        print(format_costs(costs), end="")
    return 0
