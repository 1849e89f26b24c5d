#!/usr/bin/env python
"""Super-resolution benchmark (issue 37): ParaDiS WDSR x2 against its individually trained switches and bicubic.

Trains the ParaDiS WDSR network jointly over its switches (L1 with in-place
distillation, `paradis_tf.training.sr.train_sr`) and, with the same recipe
and number of steps, the individually trained model of every switch
(`individual_model`); evaluates them on scikit-image's held-out photographs
(`VALIDATION_IMAGES`, whole images): PSNR/SSIM of the float network
(`evaluate_sr`), of the int8 bundle with LiteRT and with TFLM (each
network converted with `convert_model(tile=)`, checked by `sr_qcheck`,
which runs `LocalRunner` tile by tile), of bicubic upsampling; MACs and
parameters per device from the bundle's partitions (one tile). Writes
docs/benchmarks/sr.json, the figure docs/benchmarks/sr_crop.png and
prints the table (the one in docs/benchmarks/super_resolution.md is made from the JSON by
``--table``).

    nice -n 19 python tools/bench_sr.py --channels 32 --blocks 4 --steps 2400 --label-mix 0.9
    python tools/bench_sr.py --table

``--crop PX`` keeps a PX x PX centre crop of every validation photograph
(smoke runs); every phase's time is printed and kept in the record.
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

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = ["1x1.0", "2x0.5", "4x0.25", "1x0.5", "1x0.25"]
SCALE = 2
# The targets (dB).
OVER_BICUBIC_DB = 1.0
NEAR_INDIVIDUAL_DB = 0.2
FOUR_OVER_ONE_DB = 0.3
INT8_DROP_DB = 0.3
FIGURE_SWITCHES = ["1x0.25", "4x0.25", "1x1.0"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Phases:
    """Wall time of each named phase, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log(f"{name}: {self.seconds[name]:.1f} s")
        return out


def centre_crop(images: dict[str, np.ndarray], size: int | None) -> dict[str, np.ndarray]:
    """``size`` x ``size`` centre crops (None: the images unchanged)."""
    if not size:
        return images
    out = {}
    for name, a in images.items():
        if min(a.shape[:2]) < size:
            raise SystemExit(f"--crop {size}: {name} is {a.shape[0]}x{a.shape[1]}; give a crop at most "
                             f"{min(a.shape[:2])}")
        y, x = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
        out[name] = a[y:y + size, x:x + size]
    return out


def build(args, switches: list[str]):
    from paradis_tf.models import wdsr

    c = 1 if args.pixel_format == "y" else 3
    return wdsr(scale=SCALE, switches=switches, channels=args.channels, blocks=args.blocks,
                expansion=args.expansion, input_shape=(args.patch, args.patch, c), label_mix=args.label_mix)


def train_config(args):
    from paradis_tf.training.sr import SRTrainConfig

    return SRTrainConfig(epochs=args.steps // args.steps_per_epoch, steps_per_epoch=args.steps_per_epoch,
                         batch_size=args.batch, patch_size=args.patch, learning_rate=args.lr, seed=args.seed)


def int8_check(model, switches: list[str], calib: np.ndarray, val: dict, args, out_dir: Path, phases: Phases,
               tag: str) -> dict[str, dict]:
    """Converts ``model`` (``switches``) to a bundle with ``args.tile`` tiles and runs `sr_qcheck` per switch
    with every backend of ``args.backends``; per switch: the check, per-backend seconds, MACs/params per device."""
    from paradis_tf.convert import convert_model, sr_qcheck

    bundle = phases.run(f"{tag} convert", convert_model, model, out_dir / tag, calib, switches=switches,
                        calib_samples=len(calib), tile=args.tile, sequential=(), tflm="tflm" in args.backends,
                        overwrite=True)
    n = len(val)
    out = {}
    for s in switches:
        stamps = [time.perf_counter()]
        start = time.perf_counter()
        check, = sr_qcheck(bundle, model, val, plans=[s], backends=args.backends,
                           progress=lambda k: stamps.append(time.perf_counter()))
        phases.seconds[f"{tag} qcheck {s}"] = round(time.perf_counter() - start, 2)
        # progress ticks once per photograph: first the float network, then each backend in order
        seconds = {"float": stamps[n] - stamps[0]}
        for i, b in enumerate(args.backends):
            seconds[b] = stamps[(i + 2) * n] - stamps[(i + 1) * n]
        plan = bundle.plan(s)
        out[s] = {"check": check, "seconds": {k: round(v, 2) for k, v in seconds.items()},
                  "macs_per_device": [d.macs for d in plan.devices],
                  "params_per_device": [d.params for d in plan.devices]}
        log(f"{tag} {s}: float {check.float_psnr:.3f} dB, "
            + ", ".join(f"{b.backend} {b.psnr:.3f} dB ({seconds[b.backend]:.1f} s)" for b in check.int8))
    return out


def result_row(kind: str, switch: str, ev: dict, q: dict | None) -> dict:
    row = {"model": kind, "switch": switch, "psnr_float": ev["psnr"], "psnr_int8": None, "ssim_float": ev["ssim"],
           "macs_per_device": None, "params_per_device": None}
    if q is not None:
        c = q["check"]
        for b in c.int8:
            row[f"psnr_int8_{b.backend}"] = b.psnr
            row[f"ssim_int8_{b.backend}"] = b.ssim
            row[f"drop_db_{b.backend}"] = b.drop_db
            row[f"psnr_vs_float_{b.backend}"] = b.psnr_vs_float
            row[f"max_abs_pixel_error_{b.backend}"] = b.max_abs_pixel_error
        row["psnr_int8"] = row.get("psnr_int8_litert")
        row["qcheck_float_psnr"] = c.float_psnr
        row["macs_per_device"] = q["macs_per_device"]
        row["params_per_device"] = q["params_per_device"]
        row["int8_seconds"] = q["seconds"]
    row["images"] = ev["images"]
    return row


def target_checks(data: dict) -> dict:
    """Whether each of the issue's targets held, with the margins (positive: held by that much)."""
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    switches = data["switches"]
    bicubic = rows[("bicubic", None)]["psnr_float"]
    p = {s: rows[("paradis", s)] for s in switches if ("paradis", s) in rows}
    ind = {s: rows[("individual", s)] for s in switches if ("individual", s) in rows}
    out = {}
    m = {s: round(r["psnr_float"] - bicubic - OVER_BICUBIC_DB, 4) for s, r in p.items()}
    out["over_bicubic"] = {"target": f"every ParaDiS switch >= bicubic + {OVER_BICUBIC_DB} dB",
                           "held": bool(m) and min(m.values()) >= 0, "margins_db": m}
    m = {s: round(p[s]["psnr_float"] - ind[s]["psnr_float"] + NEAR_INDIVIDUAL_DB, 4) for s in p if s in ind}
    out["near_individual"] = {"target": f"every ParaDiS switch >= its individual model - {NEAR_INDIVIDUAL_DB} dB",
                              "held": bool(m) and min(m.values()) >= 0, "margins_db": m}
    if "4x0.25" in p and "1x0.25" in p:
        margin = round(p["4x0.25"]["psnr_float"] - p["1x0.25"]["psnr_float"] - FOUR_OVER_ONE_DB, 4)
        out["four_over_one"] = {"target": f"ParaDiS 4x0.25 >= ParaDiS 1x0.25 + {FOUR_OVER_ONE_DB} dB",
                                "held": margin >= 0, "margin_db": margin}
    m = {}
    for s, r in p.items():
        for b in data["backends"]:
            if r.get(f"psnr_int8_{b}") is not None:
                m[f"{s} {b}"] = round(INT8_DROP_DB - (r["qcheck_float_psnr"] - r[f"psnr_int8_{b}"]), 4)
    out["int8_near_float"] = {"target": f"every ParaDiS switch's int8 PSNR >= float - {INT8_DROP_DB} dB, "
                                        f"with {' and '.join(data['backends'])}",
                              "held": bool(m) and min(m.values()) >= 0, "margins_db": m}
    return out


def target_lines(data: dict) -> list[str]:
    lines = []
    for t in data["targets"].values():
        word = "held" if t["held"] else "MISSED"
        if "margins_db" in t:
            worst = min(t["margins_db"], key=t["margins_db"].get) if t["margins_db"] else None
            detail = (f"worst {worst}: {t['margins_db'][worst]:+.2f} dB against the target" if worst
                      else "not measured")
        else:
            detail = f"margin {t['margin_db']:+.2f} dB"
        lines.append(f"- {t['target']}: **{word}** ({detail})")
    return lines


def table(data: dict) -> str:
    """The Markdown table of a record."""
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    bic = rows[("bicubic", None)]
    a = data["args"]
    tflm = "tflm" in data["backends"]
    head = (f"WDSR x{data['scale']} on {data['pixel_format'].upper()}, {a['channels']} channels, {a['blocks']} blocks, "
            f"expansion {a['expansion']:g}; {a['steps']} Adam steps (lr {a['lr']:g}, cosine) of batch {a['batch']} "
            f"{a['patch']}x{a['patch']} low-resolution patches, label mix {a['label_mix']:g}, seed {a['seed']}; "
            f"int8 tiles {a['tile']}x{a['tile']} (margin {data.get('margin')}). PSNR/SSIM on Y, {data['scale']} px "
            f"border cropped, mean over {', '.join(data['validation_images'])} (whole images). "
            "MACs per device: one tile.")
    lines = [head, "",
             "| switch | ParaDiS float | int8 LiteRT" + (" | int8 TFLM" if tflm else "") + " | SSIM | individual float "
             "| individual int8 | ParaDiS - individual | over bicubic | MACs per device | params per device |",
             "|---|---|---|" + ("---|" if tflm else "") + "---|---|---|---|---|---|---|"]
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    for s in data["switches"]:
        p, i = rows.get(("paradis", s)), rows.get(("individual", s))
        if p is None:
            continue
        diff = f"{p['psnr_float'] - i['psnr_float']:+.2f}" if i else "-"
        macs = ", ".join(f"{m / 1e6:.1f}M" for m in p["macs_per_device"] or [])
        params = ", ".join(f"{m / 1e3:.1f}k" for m in p["params_per_device"] or [])
        lines.append(f"| {s} | {f(p['psnr_float'])} | {f(p.get('psnr_int8_litert'))} | "
                     + (f"{f(p.get('psnr_int8_tflm'))} | " if tflm else "")
                     + f"{f(p['ssim_float'], 4)} | {f(i and i['psnr_float'])} | {f(i and i.get('psnr_int8'))} | "
                     f"{diff} | {p['psnr_float'] - bic['psnr_float']:+.2f} | {macs} | {params} |")
    lines.append(f"| bicubic | {f(bic['psnr_float'])} | | " + ("| " if tflm else "")
                 + f"{f(bic['ssim_float'], 4)} | | | | | | |")
    lines += ["", "Targets (issue 37):", ""] + target_lines(data)
    t = data["timing"]
    lines += ["", f"Run: {t['total_seconds'] / 60:.1f} min on {data['host']['cpus']} CPUs ({data['host']['machine']}); "
              + ", ".join(f"{k} {v:.0f} s" for k, v in t["phases"].items() if "qcheck" not in k) + "."]
    return "\n".join(lines)


def figure(path: Path, crops: dict[str, np.ndarray], titles: dict[str, str], caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(crops), figsize=(2.6 * len(crops), 3.0))
    for ax, (name, a) in zip(axes, crops.items()):
        ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray" if a.shape[-1] == 1 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(titles[name], fontsize=9)
        ax.axis("off")
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def make_figure(args, model, val: dict, data: dict, path: Path) -> None:
    """A crop of one held-out photograph: bicubic, the `FIGURE_SWITCHES`, ground truth; titles: that
    photograph's PSNR (whole image)."""
    from paradis_tf.data.sr import bicubic_upscale, sr_pairs
    from paradis_tf.training.sr import upscale_image

    name = args.figure_image
    lr, hr = sr_pairs({name: val[name]}, SCALE)[name]
    size = min(args.figure_size, *hr.shape[:2])
    y = min(max(0, args.figure_y), hr.shape[0] - size) // SCALE * SCALE
    x = min(max(0, args.figure_x), hr.shape[1] - size) // SCALE * SCALE
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    crops = {"bicubic": bicubic_upscale(lr, SCALE)}
    titles = {"bicubic": f"bicubic {rows[('bicubic', None)]['images'][name]['psnr']:.2f} dB"}
    for s in FIGURE_SWITCHES:
        if s in model.switches or s in [str(w) for w in model.switches]:
            crops[s] = upscale_image(model, s, lr)
            titles[s] = f"ParaDiS {s} {rows[('paradis', s)]['images'][name]['psnr']:.2f} dB"
    crops["ground truth"], titles["ground truth"] = hr, "ground truth"
    crops = {k: v[y:y + size, x:x + size] for k, v in crops.items()}
    fmt = data["pixel_format"].upper()
    figure(path, crops, titles,
           f"{name}, x{SCALE}, {fmt}, HR crop {size}x{size} at ({y}, {x}); PSNR of the whole image")
    data["figure"] = {"path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path), "image": name,
                      "crop": [y, x, size], "panels": list(crops)}


def run(args) -> dict:
    import tensorflow as tf

    from paradis_tf.convert import sr_calibration_patches
    from paradis_tf.data.sr import VALIDATION_IMAGES, load_sr_split
    from paradis_tf.models import wdsr
    from paradis_tf.training.baselines import individual_model
    from paradis_tf.training.sr import BICUBIC, evaluate_sr, train_sr

    started = time.perf_counter()
    phases = Phases()
    c = 1 if args.pixel_format == "y" else 3
    train = phases.run("load train", load_sr_split, "train", channels=c)
    val = centre_crop(phases.run("load validation", load_sr_split, "validation", channels=c), args.crop)
    # calibration tiles come from the training photographs whose low-resolution version holds a tile
    calib_images = {k: v for k, v in train.items() if min(v.shape[:2]) // SCALE >= args.tile}
    calib = phases.run("calibration tiles", sr_calibration_patches, calib_images, SCALE, (args.tile, args.tile),
                       args.calib_samples, seed=args.seed)
    config = train_config(args)
    switches = list(args.switches)
    data = {"scale": SCALE, "pixel_format": args.pixel_format, "switches": switches, "backends": list(args.backends),
            "validation_images": list(val), "validation_sizes": {k: list(v.shape[:2]) for k, v in val.items()},
            "training_images": list(train), "calibration_images": list(calib_images),
            "args": {k: v for k, v in vars(args).items() if k not in ("out", "figure", "table")},
            "recipe": {"loss": "L1, in-place distillation from 1x1.0 (ParaDiS); L1 (individual)",
                       "optimizer": "adam", "schedule": "cosine decay to 0, no warm-up",
                       "epochs": config.epochs, "steps_per_epoch": config.steps_per_epoch},
            "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
                     "python": platform.python_version(), "tensorflow": tf.__version__,
                     "nice": os.nice(0)}, "results": []}
    log(f"validation {', '.join(f'{k} {v.shape[1]}x{v.shape[0]}' for k, v in val.items())}; "
        f"{len(train)} training photographs; {args.steps} steps")
    with tempfile.TemporaryDirectory(prefix="bench_sr_") as tmp:
        tmp = Path(tmp)
        model = build(args, switches)
        data["loss_border"] = model.loss_border
        tr = phases.run("paradis train", train_sr, model, train, config, verbose=args.verbose)
        data["paradis_train"] = {"loss": tr["history"].get("loss"), "steps": tr["steps"],
                                 "seconds": round(tr["train_seconds"], 2)}
        ev = phases.run("paradis float eval", evaluate_sr, model, val)
        bic = ev[BICUBIC]
        data["results"].append({"model": "bicubic", "switch": None, "psnr_float": bic["psnr"], "psnr_int8": None,
                                "ssim_float": bic["ssim"], "macs_per_device": None, "images": bic["images"]})
        q = int8_check(model, switches, calib, val, args, tmp, phases, "paradis") if args.int8 else {}
        for s in switches:
            data["results"].append(result_row("paradis", s, ev[s], q.get(s)))
            log(f"paradis {s}: {ev[s]['psnr']:.3f} dB (bicubic {bic['psnr']:.3f})")
        if q:
            from paradis_tf.bundle import load

            data["margin"] = load(tmp / "paradis").model.output.margin
        if args.figure:
            phases.run("figure", make_figure, args, model, val, data, Path(args.figure))
        if not args.no_individual:
            for s in switches:
                ind = individual_model(wdsr, s, scale=SCALE, channels=args.channels, blocks=args.blocks,
                                       expansion=args.expansion, input_shape=(args.patch, args.patch, c),
                                       label_mix=args.label_mix)
                tr = phases.run(f"individual {s} train", train_sr, ind, train, config, verbose=args.verbose)
                iev = phases.run(f"individual {s} float eval", evaluate_sr, ind, val, bicubic=False)
                iq = (int8_check(ind, [s], calib, val, args, tmp, phases, f"individual {s}")
                      if args.int8 and args.individual_int8 else {})
                row = result_row("individual", s, iev[s], iq.get(s))
                row["train"] = {"loss": tr["history"].get("loss"), "seconds": round(tr["train_seconds"], 2)}
                data["results"].append(row)
                log(f"individual {s}: {iev[s]['psnr']:.3f} dB")
    data["targets"] = target_checks(data)
    data["timing"] = {"phases": phases.seconds, "total_seconds": round(time.perf_counter() - started, 1)}
    return data


def main(argv=None) -> int:
    from paradis_tf.files import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=32, help="WDSR feature channels (%(default)s)")
    ap.add_argument("--blocks", type=int, default=4, help="residual blocks (%(default)s)")
    ap.add_argument("--expansion", type=float, default=4.0, help="wide activation factor (%(default)s)")
    ap.add_argument("--pixel-format", choices=["y", "rgb"], default="y",
                    help="the network's images: y (BT.601 luma; chroma is upscaled bicubically) or rgb (%(default)s)")
    ap.add_argument("--patch", type=int, default=32, help="low-resolution training patch side (%(default)s)")
    ap.add_argument("--batch", type=int, default=16, help="patches per step (%(default)s)")
    ap.add_argument("--steps", type=int, default=2400, help="training steps of every model (%(default)s)")
    ap.add_argument("--steps-per-epoch", type=int, default=100,
                    help="steps per Keras epoch; --steps must be a multiple (%(default)s)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam peak learning rate, cosine decay (%(default)s)")
    ap.add_argument("--label-mix", type=float, default=0.9,
                    help="weight of the L1 loss to the HR image for distilled switches (%(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--switches", type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
                    default=SWITCHES, help=f"comma-separated ({','.join(SWITCHES)})")
    ap.add_argument("--tile", type=int, default=96, help="int8 partition input, low-resolution px (%(default)s)")
    ap.add_argument("--calib-samples", type=int, default=64, help="calibration tiles (%(default)s)")
    ap.add_argument("--backends", type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
                    default=["litert", "tflm"], help="int8 backends (%(default)s)")
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="float only (no conversion)")
    ap.add_argument("--no-individual-int8", dest="individual_int8", action="store_false",
                    help="convert and check only the ParaDiS network")
    ap.add_argument("--no-individual", action="store_true", help="train no individual model")
    ap.add_argument("--crop", type=int, default=None, metavar="PX",
                    help="keep a PX x PX centre crop of every validation photograph (smoke runs)")
    ap.add_argument("--figure", default=str(ROOT / "docs/benchmarks/sr_crop.png"), help="the PNG ('' for none)")
    ap.add_argument("--figure-image", default="astronaut")
    ap.add_argument("--figure-y", type=int, default=96, help="top of the HR crop (%(default)s)")
    ap.add_argument("--figure-x", type=int, default=176, help="left of the HR crop (%(default)s)")
    ap.add_argument("--figure-size", type=int, default=128, help="HR crop side (%(default)s)")
    ap.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity (%(default)s)")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/sr.json"))
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    if args.steps < args.steps_per_epoch or args.steps % args.steps_per_epoch:
        raise SystemExit(f"--steps {args.steps} must be a positive multiple of --steps-per-epoch "
                         f"{args.steps_per_epoch}")
    from paradis_tf.data.sr import VALIDATION_IMAGES

    if args.figure and args.figure_image not in VALIDATION_IMAGES:
        raise SystemExit(f"--figure-image {args.figure_image}: not a validation photograph; choose one of "
                         f"{', '.join(VALIDATION_IMAGES)}")
    data = run(args)
    atomic_write_json(args.out, data)
    log(f"wrote {args.out}")
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
