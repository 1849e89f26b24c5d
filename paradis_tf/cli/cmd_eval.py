"""`paradis eval`: per-switch accuracy of a trained model."""

from __future__ import annotations

from paradis_tf.cli._common import add_data_args, data_source, print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("eval", help="per-switch test accuracy of a trained model")
    p.add_argument("model", help="trained ParaDiS model (model.keras from `paradis train`)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--devices", action="store_true",
                   help="also the top-1 of each device of every multi-device switch on its own (its partial "
                        "logits plus the fusion bias); models without sync layers")
    add_data_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from paradis_tf.convert import load_model
    from paradis_tf.data import load_source, match_classes
    from paradis_tf.training import device_accuracy, evaluate

    model = load_model(args.model)
    dataset, folder = data_source(args)
    x, y, classes = load_source(dataset, folder, "test", model.image_shape, limit=args.limit)
    y = match_classes(classes, y, model.labels, model.num_classes, f"--data {folder}" if folder else str(dataset))
    accs = evaluate(model, x, y)
    devices = device_accuracy(model, x, y) if args.devices else None
    if args.json:
        print_json({"model": args.model, "images": len(x), "top1": accs,
                    **({"device_top1": devices} if devices is not None else {})})
    else:
        print(f"{args.model}: test top-1 on {len(x)} images")
        stats = {str(s): model.device_stats(s) for s in model.switches}
        print_table(["switch", "devices", "top-1 %", "MACs/device (max)"],
                    [[s, len(stats[s]), f"{100 * a:.2f}", f"{max(d['macs'] for d in stats[s]) / 1e6:.2f}M"]
                     for s, a in accs.items()])
        if devices is not None:
            print("\neach device alone (its partial logits plus the fusion bias)")
            print_table(["switch", "top-1 % per device"],
                        [[s, ", ".join(f"{100 * a:.2f}" for a in d)] for s, d in devices.items()])
    return 0
