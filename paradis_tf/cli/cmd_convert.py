"""`paradis convert MODEL --out BUNDLE`: int8 partitions for every switch and device.

For each switch of the model and each device role: the device's plain Keras
segments, converted to full-integer int8 TFLite (per-channel weights, int8
input and output), calibrated on real, identically preprocessed images (a
later segment on what the int8 segments before it produce); TFLM C arrays
with the op list and the arena size measured with the tflite_micro
interpreter; sequential baseline plans (the 1x1.0 network cut into K
pieces); manifest.json. The bundle is built next to --out and renamed into
place at the end: a failed conversion leaves nothing that looks complete.

A super-resolution model (paradis_tf.models.wdsr) is converted for one
fixed low-resolution tile (--tile, default its training patch size; the
manifest states it), calibrated on random tiles of bicubically downscaled
photographs (--dataset skimage: the training photographs scikit-image ships;
or --data DIR of photographs). Its skip branch runs with device 0.
"""

from __future__ import annotations

import argparse

from paradis_tf.convert.converter import DEFAULT_SEQUENTIAL


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a trained model into a bundle of int8 partitions",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="trained ParaDiS model (model.keras from `paradis train`)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--switches", default=None, metavar="S1,S2",
                   help="switches to convert, e.g. 2x0.5,4x0.25 (default: all of the model's)")
    c = p.add_argument_group("calibration")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["fashion_mnist", "skimage"], default=None,
                     help="calibrate on this dataset's training split: fashion_mnist for a classifier, skimage (the "
                          "training photographs scikit-image ships; the default for one) for a super-resolution "
                          "model (give it or --data)")
    src.add_argument("--data", metavar="DIR", default=None,
                     help="calibrate on the images in DIR/<class>/* (a super-resolution model: the photographs in "
                          "DIR and its sub-folders)")
    c.add_argument("--tile", type=int, default=None, metavar="N",
                   help="super-resolution: the NxN low-resolution tile every partition takes (default: the model's "
                        "training patch size)")
    c.add_argument("--calib-samples", type=int, default=500, metavar="N",
                   help="calibration images (a fixed random subset; default: %(default)s)")
    o = p.add_argument_group("outputs")
    o.add_argument("--float", action="store_true", help="also write float .tflite partitions (exactness checks)")
    o.add_argument("--sequential", default=None, metavar="K1,K2",
                   help="device counts K of the sequential baseline plans seq-K, the 1x1.0 network cut into K "
                        "pieces, or 'none' (default: " + ",".join(map(str, DEFAULT_SEQUENTIAL)) + ", leaving out "
                        "with a notice those the model cannot make)")
    o.add_argument("--no-tflm", action="store_true", help="skip TFLM C arrays and arena measurement")
    o.add_argument("--sign-key", metavar="KEY", default=None,
                   help="sign the bundle with this private key once written (as `paradis sign BUNDLE --key KEY`; "
                        "nodes with --trust-key accept only signed bundles)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="interpreter threads during calibration (default: the interpreter's choice)")
    p.set_defaults(func=_convert)


def _sequential(text: str | None) -> tuple[int, ...] | None:
    from paradis_tf.convert import ConversionError

    if text is None:
        return None
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConversionError(f"--sequential expects device counts like 2,3,4 or 'none'; received {text!r}") from None


def _calibration_name(model, args) -> str | None:
    from paradis_tf.convert import is_super_resolution

    if is_super_resolution(model) and not args.data:
        return "skimage-train"
    return args.dataset or args.data


def _calibration_images(model, args):
    """Raw uint8 calibration images: a classifier's training split, or a super-resolution model's
    low-resolution tiles of photographs."""
    from paradis_tf.convert import ConversionError, is_super_resolution, load_images, sr_calibration_patches
    from paradis_tf.convert.converter import tile_shape

    if not is_super_resolution(model):
        if args.dataset == "skimage":
            raise ConversionError("--dataset skimage calibrates a super-resolution model on photographs; this model "
                                  f"is a classifier of {tuple(model.image_shape)} images: give --dataset fashion_mnist "
                                  "or --data DIR of class folders")
        tile_shape(model, args.tile)  # refuses --tile for a classifier
        return load_images(model, args.dataset, args.data, "train")[0]
    from paradis_tf.data.sr import load_image_dir, load_sr_split

    if args.dataset == "fashion_mnist":
        raise ConversionError("--dataset fashion_mnist calibrates a classifier; this model is a super-resolution "
                              f"network (x{model.scale}): give --dataset skimage or --data DIR of photographs")
    channels = int(model.image_shape[-1])
    images = load_image_dir(args.data, channels) if args.data else load_sr_split("train", channels=channels)
    shape = tile_shape(model, args.tile)
    return sr_calibration_patches(images, int(model.scale), shape[:2], args.calib_samples)


def _convert(args: argparse.Namespace) -> int:
    import time

    from paradis_tf.cli._progress import ProgressLine
    from paradis_tf.convert import convert_model, load_model
    from paradis_tf.runtime.plan_cost import plan_cost

    seq = _sequential(args.sequential)
    signing_key = None
    if args.sign_key is not None:  # a key that cannot sign is named before the conversion, not after it
        from paradis_tf.cli.cmd_keys import signing_module

        signing = signing_module()
        signing_key = signing.load_private_key(args.sign_key)
    model = load_model(args.model)
    x = _calibration_images(model, args)
    switches = None if args.switches is None else [s.strip() for s in args.switches.split(",") if s.strip()]
    t0 = time.perf_counter()
    with ProgressLine("converting", unit="segments") as bar:
        bundle = convert_model(
            model, args.out, x,
            switches=switches, calib_samples=args.calib_samples, sequential=seq, float_variant=args.float,
            tflm=not args.no_tflm, overwrite=args.force, num_threads=args.threads,
            extra={"source_model": str(args.model), "calibration": _calibration_name(model, args)},
            progress=lambda what: bar.update(note=what), tile=args.tile,
        )
    dt = time.perf_counter() - t0
    print(f"wrote {bundle.root} in {dt:.1f} s: {len(bundle.plans)} plans, {len(bundle.files)} files")
    print(f"{'plan':<16} {'kind':<10} {'devices':>7} {'segments':>8} {'tflite KiB':>10} {'max arena KiB':>13}")
    for plan in bundle.plans.values():
        cost = plan_cost(plan)
        arenas = [d.arena_bytes for d in cost.devices if d.arena_bytes is not None]
        print(f"{plan.name:<16} {plan.kind:<10} {len(plan.devices):>7} {sum(d.segments for d in cost.devices):>8} "
              f"{sum(d.partition_bytes for d in cost.devices) / 1024:>10.1f} "
              f"{(max(arenas) / 1024 if arenas else float('nan')):>13.1f}")
    if signing_key is not None:
        from paradis_tf.cli.cmd_sign import print_signed

        print_signed(signing.sign_bundle(bundle.root, signing_key))
    return 0
