"""`paradis qcheck BUNDLE --model MODEL`: int8 partitions against Keras float.

A classifier bundle, per plan: top-1 of the Keras float model, top-1 of the
fused int8 partitions (litert) and through TFLM's kernels for the plans
meant for microcontrollers, the agreement of int8 with float on the top-1
class, and the largest logit error. Exits non-zero when an int8 top-1 drops
more than --max-drop points below float.

A super-resolution bundle, per plan: PSNR and SSIM on the Y channel (a
border of `scale` pixels cropped) of the float network, of the int8
partitions run tile by tile (litert, and TFLM), and of bicubic upsampling,
on photographs downscaled bicubically (--dataset skimage: the validation
photographs scikit-image ships, never trained on; or --data DIR). Exits
non-zero when an int8 PSNR is more than --max-drop-db below float.

Measured accuracies are recorded in the bundle's manifest. With --nodes, the
same plans also run through the live mesh and are compared with local int8.
"""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import add_tls_args, tls_config


def register(subparsers) -> None:
    p = subparsers.add_parser("qcheck", help="check int8 partitions against the float model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle directory (from `paradis convert`)")
    p.add_argument("--model", required=True, help="the model the bundle was converted from (model.keras)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["fashion_mnist", "skimage"], default=None,
                     help="fashion_mnist: a classifier's top-1 on its test split; skimage: a super-resolution "
                          "bundle's PSNR/SSIM on the validation photographs scikit-image ships (the default for "
                          "such a bundle; a classifier needs it or --data)")
    src.add_argument("--data", metavar="DIR", default=None,
                     help="check on the images in DIR/<class>/*: one folder per model class, or folders named as "
                          "the model's labels; for a super-resolution bundle, the photographs in DIR")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="first N test images (default: all)")
    p.add_argument("--plans", default=None, metavar="P1,P2", help="plans to check (default: all)")
    p.add_argument("--tflm", default="all", metavar="all|none|P1,P2",
                   help="plans also run through TFLM, the microcontroller kernels (default: %(default)s)")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="largest allowed int8 top-1 drop below float, in points (default: %(default)s)")
    p.add_argument("--max-drop-db", type=float, default=0.3, metavar="DB",
                   help="super-resolution: largest allowed int8 PSNR drop below float, in dB (default: %(default)s)")
    p.add_argument("--no-record", action="store_true", help="do not write the accuracies into manifest.json")
    p.add_argument("--nodes", default=None, metavar="HOST:PORT,...",
                   help="also run the plans through these node daemons and compare with local int8")
    add_tls_args(p)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="interpreter threads (default: the interpreter's choice)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_qcheck)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def format_checks(checks, max_drop: float) -> str:
    head = (f"{'plan':<16} {'backend':<8} {'float top1':>10} {'int8 top1':>9} {'drop pts':>8} "
            f"{'agree %':>7} {'max |dlogit|':>12}  ok")
    lines = [head]
    for c in checks:
        for b in c.int8:
            ok = b.drop_points is None or b.drop_points <= max_drop
            drop = "-" if b.drop_points is None else f"{b.drop_points:+.2f}"
            lines.append(f"{c.plan:<16} {b.backend:<8} {_pct(c.float_top1):>10} {_pct(b.top1):>9} {drop:>8} "
                         f"{100 * b.agreement:>7.2f} {b.max_abs_logit_error:>12.4f}  {'yes' if ok else 'NO'}")
    return "\n".join(lines) + "\n"


def _qcheck(args: argparse.Namespace) -> int:
    import json
    import sys

    from paradis_tf.bundle import load, update_accuracy
    from paradis_tf.cli._progress import ProgressLine
    from paradis_tf.convert import ConversionError, load_images, load_model, qcheck

    bundle = load(args.bundle)
    if bundle.model.is_image:
        return _sr_qcheck(args, bundle)
    if args.dataset == "skimage":
        raise ConversionError(f"{bundle.root} is {bundle.model.describe()}: its check is top-1 on labelled images, "
                              "and --dataset skimage is the photographs of a super-resolution check; give "
                              "--dataset fashion_mnist or --data DIR of class folders")
    model = load_model(args.model)
    if tuple(model.image_shape) != tuple(bundle.model.input_shape):
        raise ConversionError(f"{args.model} takes {tuple(model.image_shape)} images, the bundle {bundle.model.input_shape}")
    x_raw, y = load_images(model, args.dataset, args.data, "test", labelled=True)
    if args.samples is not None:
        x_raw, y = x_raw[: args.samples], y[: args.samples]
    x = bundle.model.preprocessing.apply(x_raw)
    plans = list(bundle.plans) if not args.plans else [bundle.plan(p.strip()).name for p in args.plans.split(",") if p.strip()]
    tflm = {"all": plans, "none": []}.get(args.tflm)
    if tflm is None:
        tflm = [bundle.plan(p.strip()).name for p in args.tflm.split(",") if p.strip()]
    total = len(x) * (2 * len(plans) + len([p for p in plans if p in tflm]))
    with ProgressLine("qcheck", total=total, unit="images") as bar:
        checks = qcheck(bundle, model, x, y, plans=plans, tflm_plans=tflm, num_threads=args.threads,
                        progress=bar.update)
    mesh = []
    if args.nodes:
        from paradis_tf.mesh.qcheck import mesh_qcheck

        mesh = mesh_qcheck(bundle.root, args.nodes, x, y, plans=[p for p in plans if bundle.plan(p).kind == "paradis"],
                           tls=tls_config(args))
    dataset = args.dataset or args.data
    if not args.no_record:
        update_accuracy(bundle.root, {c.plan: c.accuracy_record(dataset) for c in checks})
    failed = [(c.plan, b) for c in checks for b in c.int8 if b.drop_points is not None and b.drop_points > args.max_drop]
    if args.json:
        print(json.dumps({
            "bundle": str(bundle.root), "dataset": dataset, "samples": len(x), "max_drop": args.max_drop,
            "plans": [c.as_dict() for c in checks], "mesh": [m.as_dict() for m in mesh], "pass": not failed,
        }, indent=2))
    else:
        print(f"{len(x)} images of {dataset}; int8 must stay within {args.max_drop:g} points of float")
        print(format_checks(checks, args.max_drop), end="")
        for m in mesh:
            print(f"mesh {m.plan} on {len(m.nodes)} nodes: {100 * m.identical:.2f}% of samples identical to local int8, "
                  f"max |diff| {m.max_abs_diff:.4g}, top-1 agreement {100 * m.top1_agreement:.2f}%")
    for plan, b in failed:
        print(f"paradis: qcheck: {plan} int8 ({b.backend}) top-1 is {b.drop_points:.2f} points below float "
              f"(--max-drop {args.max_drop:g})", file=sys.stderr)
    return 1 if failed else 0


def format_sr_checks(checks, max_drop_db: float) -> str:
    head = (f"{'plan':<16} {'backend':<8} {'float PSNR':>10} {'int8 PSNR':>9} {'drop dB':>7} {'float SSIM':>10} "
            f"{'int8 SSIM':>9} {'int8~float dB':>13}  ok")
    lines = [head]
    for c in checks:
        for b in c.int8:
            ok = b.drop_db <= max_drop_db
            lines.append(f"{c.plan:<16} {b.backend:<8} {c.float_psnr:>10.3f} {b.psnr:>9.3f} {b.drop_db:>+7.3f} "
                         f"{c.float_ssim:>10.4f} {b.ssim:>9.4f} {b.psnr_vs_float:>13.2f}  {'yes' if ok else 'NO'}")
    if checks:
        c = checks[0]
        lines.append(f"{'bicubic':<16} {'-':<8} {c.bicubic_psnr:>10.3f} {'-':>9} {'-':>7} {c.bicubic_ssim:>10.4f}")
    return "\n".join(lines) + "\n"


def _sr_qcheck(args: argparse.Namespace, bundle) -> int:
    """PSNR and SSIM of a super-resolution bundle (see the module doc)."""
    import json
    import sys

    from paradis_tf.bundle import update_accuracy
    from paradis_tf.cli._progress import ProgressLine
    from paradis_tf.convert import ConversionError, load_model, sr_qcheck
    from paradis_tf.data.sr import load_image_dir, load_sr_split, sr_pairs

    out_info = bundle.model.output
    if args.dataset == "fashion_mnist":
        raise ConversionError(f"{bundle.root} is {bundle.model.describe()}: its check is PSNR/SSIM on photographs, "
                              "and --dataset fashion_mnist is a classifier's top-1 check; give --dataset skimage "
                              "or --data DIR of photographs")
    model = load_model(args.model)
    if args.data:
        images = load_image_dir(args.data, out_info.channels)
        dataset = args.data
    else:
        images = load_sr_split("validation", channels=out_info.channels)
        dataset = "skimage-validation"
    if args.samples is not None:
        images = dict(list(images.items())[: args.samples])
    plans = list(bundle.plans) if not args.plans else [bundle.plan(p.strip()).name for p in args.plans.split(",") if p.strip()]
    tflm = {"all": plans, "none": []}.get(args.tflm)
    if tflm is None:
        tflm = [bundle.plan(p.strip()).name for p in args.tflm.split(",") if p.strip()]
    total = len(images) * (2 * len(plans) + len([p for p in plans if p in tflm]))
    with ProgressLine("qcheck", total=total, unit="images") as bar:
        checks = sr_qcheck(bundle, model, images, plans=plans, tflm_plans=tflm, num_threads=args.threads,
                           progress=bar.update)
    mesh = []
    if args.nodes:
        from paradis_tf.mesh.qcheck import mesh_image_check

        lrs = [bundle.model.preprocessing.apply(lr) for lr, _ in sr_pairs(images, out_info.scale).values()]
        mesh = mesh_image_check(bundle.root, args.nodes, lrs, plans=plans, tls=tls_config(args))
    if not args.no_record:
        update_accuracy(bundle.root, {c.plan: c.accuracy_record(dataset) for c in checks})
    failed = [(c.plan, b) for c in checks for b in c.int8 if b.drop_db > args.max_drop_db]
    if args.json:
        print(json.dumps({
            "bundle": str(bundle.root), "task": bundle.model.task, "dataset": dataset, "images": len(images),
            "scale": out_info.scale, "max_drop_db": args.max_drop_db, "plans": [c.as_dict() for c in checks],
            "mesh": [m.as_dict() for m in mesh], "pass": not failed,
        }, indent=2))
    else:
        print(f"{len(images)} photograph(s) of {dataset}, x{out_info.scale} {out_info.pixel_format}; PSNR/SSIM on Y with "
              f"a {out_info.scale}-pixel border cropped; int8 must stay within {args.max_drop_db:g} dB of float")
        print(format_sr_checks(checks, args.max_drop_db), end="")
        for m in mesh:
            print(f"mesh {m.plan} on {len(m.nodes)} nodes: {100 * m.identical:.2f}% of images identical to local int8, "
                  f"max |diff| {m.max_abs_diff:.4g}, {m.mesh_s_per_image:.3f} s per image")
    for plan, b in failed:
        print(f"paradis: qcheck: {plan} int8 ({b.backend}) PSNR is {b.drop_db:.3f} dB below float "
              f"(--max-drop-db {args.max_drop_db:g})", file=sys.stderr)
    return 1 if failed else 0
