"""`paradis train --task sr`: a WDSR ParaDiS super-resolution network, all switches jointly."""

from __future__ import annotations

from paradis_tf.cli._common import print_json, print_table
from paradis_tf.cli.cmd_train import (SR_DEFAULTS, SR_LR, SR_SWITCHES, parse_switch_weights, parse_sync_layers,
                                      parse_teacher_of)


def sr_blocks(text: str | None) -> int:
    """``--blocks`` for WDSR: one whole number of residual blocks (default `SR_DEFAULTS`)."""
    if text is None:
        return SR_DEFAULTS["blocks"]
    try:
        blocks = int(text)
    except ValueError:
        blocks = 0
    if blocks < 1:
        raise ValueError(f"--blocks {text}: WDSR takes one whole number of residual blocks >= 1, e.g. "
                         f"{SR_DEFAULTS['blocks']}.")
    return blocks


def sr_train_config(args):
    """The super-resolution recipe the command line asks for (`SR_DEFAULTS`, `SR_LR` where it is silent)."""
    from paradis_tf.training import SRTrainConfig

    optimizer = args.optimizer or "adam"
    return SRTrainConfig(
        epochs=SR_DEFAULTS["epochs"] if args.epochs is None else args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=SR_DEFAULTS["batch_size"] if args.batch_size is None else args.batch_size,
        patch_size=args.patch_size, learning_rate=SR_LR[optimizer] if args.lr is None else args.lr,
        optimizer=optimizer, momentum=args.momentum, seed=args.seed)


def build_sr_model(args):
    """The WDSR network the command line describes (input: one low-resolution patch)."""
    from paradis_tf.models import wdsr

    return wdsr(args.scale, (args.switches or SR_SWITCHES).split(","), channels=args.features,
                blocks=sr_blocks(args.blocks), expansion=args.expansion,
                input_shape=(args.patch_size, args.patch_size, args.channels),
                sync_layers=parse_sync_layers(args.sync_layers), label_mix=args.label_mix, sandwich=args.sandwich,
                switch_weights=parse_switch_weights(args.switch_weight), teacher=args.teacher,
                teacher_of=parse_teacher_of(args.teacher_of))


def run_sr(args) -> int:
    import keras

    from paradis_tf.data.sr import load_sr_split
    from paradis_tf.switches import parse_switches
    from paradis_tf.training import evaluate_sr, train_sr

    parse_switches(args.switches or SR_SWITCHES)  # fail fast, before loading TensorFlow and the photographs
    sr_blocks(args.blocks)
    cfg = sr_train_config(args)
    train_images = load_sr_split("train", args.data, channels=args.channels)
    held_out = load_sr_split("validation", args.data, channels=args.channels)
    keras.utils.set_random_seed(args.seed)
    model = build_sr_model(args)
    result = train_sr(model, train_images, cfg, verbose=0 if args.json else "auto")
    model.save(args.out)
    quality = evaluate_sr(model, held_out)
    if args.json:
        print_json({"model": args.out, "train_seconds": result["train_seconds"], "scale": model.scale,
                    "validation_images": sorted(held_out),
                    "psnr": {k: v["psnr"] for k, v in quality.items()},
                    "ssim": {k: v["ssim"] for k, v in quality.items()}})
        return 0
    bicubic = quality["bicubic"]["psnr"]
    print(f"saved {args.out} ({result['train_seconds']:.0f} s); x{model.scale} on {len(held_out)} held-out "
          f"images ({', '.join(sorted(held_out))}), Y channel, {model.scale} pixels of border cropped:")
    rows = [["bicubic", "-", f"{bicubic:.2f}", f"{quality['bicubic']['ssim']:.4f}", ""]]
    for i, s in enumerate(model.switches):
        q = quality[str(s)]
        rows.append([str(s), len(s), f"{q['psnr']:.2f}", f"{q['ssim']:.4f}", f"{q['psnr'] - bicubic:+.2f}"])
    print_table(["switch", "devices", "PSNR dB", "SSIM", "vs bicubic dB"], rows)
    return 0
