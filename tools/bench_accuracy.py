#!/usr/bin/env python
"""Accuracy benchmark: ParaDiS vs individually trained switches vs slimmable.

Fashion-MNIST, full 60k train / 10k test, MobileNet v1, one recipe for
every model. Writes docs/benchmarks/accuracy.json and prints a table (the
tables in docs/benchmarks/accuracy.md are made from the JSON by `--table`).

    python tools/bench_accuracy.py --epochs 8 --width 0.5 --depth 7

Models run one after another in one process, so the wall-time ratio of the
joint training to the six individual trainings is measured side by side.
With ``--jobs 2`` the trainings run in two worker processes at once, each
pinned to its own core with one TensorFlow thread (on 2 cores about 1.1x
the images per second of one two-thread process); every time in the
record is then a single-thread time, the ratio still compares like with
like, and the record keeps the whole run's elapsed time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paradis_tf.switches import BENCHMARK_SWITCHES

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # workers.py sits beside this script (tests load the script by its path)
    sys.path.insert(0, str(TOOLS))

SWITCHES = list(BENCHMARK_SWITCHES)  # the six switches of the accuracy benchmark
ROOT = Path(__file__).resolve().parents[1]


def signed(x: float) -> str:
    """``+0.29``, ``-0.54``; ``+0.00``, never ``-0.00``."""
    return f"{round(x, 2) + 0.0:+.2f}"


def optimizer_text(data: dict) -> str:
    """``Adam lr 0.002``, ``AdamW lr 0.002 weight decay 0.05``, ``SGD (Nesterov 0.9) lr 0.1 weight decay 0.005``."""
    from paradis_tf.training.recipe import optimizer_name

    wd = data.get("weight_decay") or 0.0
    name = optimizer_name(data.get("optimizer", "adam"), data.get("momentum", 0.9), wd)
    return f"{name} lr {data.get('learning_rate', 2e-3):g}" + (f" weight decay {wd:g}" if wd else "")


def sync_text(data: dict) -> str:
    """``sync pointwise convolution in blocks 1, 3, `` (empty without sync layers)."""
    sync = data.get("sync_layers") or []
    if not sync:
        return ""
    return f"sync pointwise convolution in block{'s' if len(sync) > 1 else ''} {', '.join(map(str, sync))}, "


def shape_text(data: dict) -> str:
    """``width 0.5 depth 7``, or ``channels 12, 24, 64, ... depth 7`` for a network given channel by channel."""
    if data.get("channels"):
        return f"channels {', '.join(map(str, data['channels']))} (stem, then each block) depth {data['depth']}"
    return f"width {data['width']} depth {data['depth']}"


def smoothing_text(data: dict) -> str:
    """``, label smoothing 0.1`` (empty for hard labels)."""
    eps = data.get("label_smoothing") or 0.0
    return f", label smoothing {eps:g}" if eps else ""


def table(data: dict) -> str:
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    lines = [
        f"Fashion-MNIST test top-1, MobileNet v1 {shape_text(data)}, "
        f"{data['epochs']} epochs, batch {data['batch_size']}, "
        f"{optimizer_text(data)}, "
        f"{'augmented' if data['augment'] else 'no augmentation'}"
        f"{' (a shift per image)' if data['augment'] and data.get('translate') == 'image' else ''}, "
        f"{'random erasing %g, ' % data['erase'] if data.get('erase') else ''}"
        f"{sync_text(data)}"
        f"label mix {data.get('label_mix', 0.0):g} (ParaDiS and slimmable distilled switches){smoothing_text(data)}, "
        f"seed {data.get('seed', 0)}",
        "",
        "| switch | ParaDiS | individual | slimmable | ParaDiS - individual | MACs per device |",
        "|---|---|---|---|---|---|",
    ]
    for s in data["switches"]:
        p = rows.get(("paradis", s))
        i = rows.get(("individual", s))
        sl = rows.get(("slimmable", s))
        fmt = lambda r: f"{100 * r['top1']:.2f}" if r else "-"
        diff = signed(100 * (p['top1'] - i['top1'])) if p and i else "-"
        macs = ", ".join(f"{m / 1e6:.2f}M" for m in p["macs_per_device"]) if p else "-"
        lines.append(f"| {s} | {fmt(p)} | {fmt(i)} | {fmt(sl)} | {diff} | {macs} |")
    lines += ["", "Targets (issue 2):", ""] + [f"- {t}" for t in targets(rows, data["switches"])]
    t = data["timing"]
    if data.get("switch_weights"):
        lines.insert(1, "ParaDiS loss weights per switch: "
                     + ", ".join(f"{k} {v:g}" for k, v in data["switch_weights"].items()) + " (others 1).")
    if data.get("logit_scale"):
        lines.insert(1, "Learned logit scale per switch (ParaDiS and slimmable).")
    if data.get("teacher", "widest") != "widest":
        lines.insert(1, f"Distillation teacher: {data['teacher']} (ParaDiS and slimmable).")
    if data.get("temperature", 1.0) != 1.0:
        lines.insert(1, f"Distillation temperature {data['temperature']:g} (ParaDiS and slimmable).")
    if data.get("sandwich"):
        lines.insert(1, f"ParaDiS sandwich sample: {data['sandwich']} of the {len(data['switches'])} switches per step "
                     "(the widest, the narrowest and random others).")
    if data.get("teacher_of"):
        lines.insert(2 if data.get("teacher", "widest") != "widest" else 1, "ParaDiS teachers overridden: "
                     + ", ".join(f"{k} learns from {v}" for k, v in data["teacher_of"].items()) + ".")
    src = baselines_source(data)
    if src:
        keys = {tuple(k) for k in src["rows"]}
        parts = []
        for kind in ("individual", "slimmable"):
            if kind in mixed_kinds(data):  # name the switches
                parts.append(f"{kind} " + ", ".join(s for s in data["switches"] if (kind, s) in keys))
            elif kind in reused_kinds(data):
                parts.append(kind)
        same = ("same recipe but without sync layers: they are single-device models, which a sync layer does not change"
                if src.get("without_sync") else "same recipe")
        here = f"ParaDiS: {t['paradis_seconds']:.0f} s" if "paradis_seconds" in t else ""
        lines += ["", f"Rows of {' and '.join(parts)} reused from `{src['file']}` ({same}, seed {src['seed']}); "
                  f"the other rows were trained with this recipe{f' ({here})' if here else ''}."]
    elif "joint_over_individual" in t:
        lines += [
            "",
            f"Wall time: joint ParaDiS training {t['paradis_seconds']:.0f} s, the six individual trainings "
            f"{t['individual_seconds']:.0f} s together: ratio {t['joint_over_individual']:.2f}. "
            f"Slimmable: {t['slimmable_seconds']:.0f} s.",
        ]
    else:  # a run of some kinds or some individual switches (--only, --individual): no ratio
        parts = [f"{k} {t[f'{k}_seconds']:.0f} s" for k in ("paradis", "slimmable") if f"{k}_seconds" in t]
        parts += [f"individual {s} {rows[('individual', s)]['train_seconds']:.0f} s" for s in data["switches"]
                  if ("individual", s) in rows]
        lines += ["", "Wall time (not a full run, so no joint-vs-individual ratio): " + ", ".join(parts) + "."]
    cpu = cpu_text(data, rows)
    if cpu:
        lines.append(cpu)
    if data.get("jobs", 1) > 1:
        elapsed = f", {t['elapsed_seconds'] / 60:.0f} minutes in all" if "elapsed_seconds" in t else ""
        lines.append(f"Trained in {data['jobs']} processes side by side, each on one core with one TensorFlow thread "
                     f"(the times above are single-thread times){elapsed}.")
    return "\n".join(lines)


def cpu_text(data: dict, rows: dict) -> str:
    """The process CPU time of each training that recorded one, and its wall time over it."""
    trainings = [(k, rows.get((k, s))) for k, s in (("paradis", "1x1.0"), ("slimmable", "1x1.0"))]
    trainings[1:1] = [(f"individual {s}", rows.get(("individual", s))) for s in data["switches"]]
    parts = [f"{name} {r['train_cpu_seconds']:.0f} s (wall {r['train_seconds'] / r['train_cpu_seconds']:.2f}x)"
             for name, r in trainings if r and r.get("train_cpu_seconds")]
    if not parts:  # records written before CPU time was kept
        return ""
    one_thread = (" Each trained on one thread: wall time above CPU time is time it spent waiting (for input, "
                  "or on a throttled host).") if data.get("jobs", 1) > 1 else ""
    return "Process CPU time per training: " + ", ".join(parts) + "." + one_thread


RECIPE = ("epochs", "width", "depth", "channels", "sync_layers", "batch_size", "optimizer", "momentum", "learning_rate", "weight_decay",
          "augment", "translate", "erase", "label_mix", "label_smoothing", "train_images")
# Values of recipe options that files written before the option existed had.
RECIPE_DEFAULTS = {"channels": None, "sync_layers": [], "label_mix": 0.0, "label_smoothing": 0.0, "weight_decay": 0.0, "erase": 0.0, "optimizer": "adam", "momentum": 0.9,
                   "translate": "batch"}


# Options that are not part of the recipe (--baselines accepts other values),
# with their value when a file predates them; an --out file's rows are reused
# only when they match too.
VARIANT = {"switch_weights": {}, "logit_scale": False, "seed": 0, "teacher": "widest", "teacher_of": {}, "temperature": 1.0,
           "sandwich": None}


def recipe_diff(old: dict, new: dict) -> dict:
    """Recipe options whose values differ: ``{option: (old, new)}`` (`RECIPE_DEFAULTS` when absent)."""
    get = lambda d, k: d.get(k, RECIPE_DEFAULTS.get(k))  # noqa: E731
    return {k: (get(old, k), get(new, k)) for k in RECIPE if get(old, k) != get(new, k)}


def merge_rows(earlier: list[dict], base: list[dict], reused: list[tuple[str, str]]) -> list[dict]:
    """Result rows of a ``--baselines`` run: the ``reused`` (model, switch) rows
    from ``base``, the others from an earlier run into the same ``--out`` with
    the same recipe (so ``--only slimmable`` after ``--only paradis`` keeps the
    ParaDiS rows)."""
    keys = {tuple(k) for k in reused}
    return ([r for r in earlier if (r["model"], r["switch"]) not in keys]
            + [r for r in base if (r["model"], r["switch"]) in keys])


def reusable_rows(base: dict, trained: set[tuple[str, str]], one_device_only: bool) -> list[tuple[str, str]]:
    """The baseline rows of ``base`` that a ``--baselines`` run takes: those it
    does not train itself and, when the two runs differ only in their sync
    layers, only single-device models (a sync convolution on one device is
    the plain convolution, so those models are the same)."""
    from paradis_tf.switches import Switch

    return [(r["model"], r["switch"]) for r in base["results"]
            if r["model"] in ("individual", "slimmable") and (r["model"], r["switch"]) not in trained
            and (not one_device_only or len(Switch.parse(r["switch"])) == 1)]


# The options of VARIANT that shape each kind of model (seed excepted): runs
# averaged together must agree on them.
SHAPED_BY = {"paradis": ("switch_weights", "logit_scale", "teacher", "teacher_of", "temperature", "sandwich"),
             "slimmable": ("logit_scale", "teacher", "temperature"),
             "individual": ()}


def baselines_source(data: dict) -> dict | None:
    """``{"file", "models", "seed", "rows"}`` of the run a record took rows from with --baselines
    (records before the models and seed were kept: a file name, individual and slimmable, seed 0;
    before the rows were: every row of those models)."""
    src = data.get("baselines_from")
    if not src:
        return None
    src = src if isinstance(src, dict) else {"file": src, "models": ["individual", "slimmable"]}
    src = {"seed": 0, **src}
    if "rows" not in src:
        src["rows"] = [[r["model"], r["switch"]] for r in data["results"] if r["model"] in src["models"]]
    return src


def reused_kinds(data: dict) -> list[str]:
    """The kinds of model whose rows a run all took from --baselines (those rows are that run's)."""
    src = baselines_source(data)
    if not src:
        return []
    keys = {tuple(k) for k in src["rows"]}
    kinds = {r["model"] for r in data["results"]}
    return sorted(k for k in kinds if all((r["model"], r["switch"]) in keys for r in data["results"] if r["model"] == k))


def mixed_kinds(data: dict) -> list[str]:
    """The kinds of model with some rows trained by the run and some taken from --baselines."""
    src = baselines_source(data)
    if not src:
        return []
    keys = {tuple(k) for k in src["rows"]}
    return sorted({m for m, _ in keys} - set(reused_kinds(data)))


def trained_here(data: dict) -> list[str]:
    """The kinds of model a run trained itself, wholly or in part (not those it took all from --baselines)."""
    return sorted({r["model"] for r in data["results"]} - set(reused_kinds(data)))


def parse_mean_source(text: str) -> tuple[str, list[str] | None]:
    """``FILE`` or ``FILE:kind,kind`` of ``--mean``."""
    if ":" not in text:
        return text, None
    path, _, kinds = text.rpartition(":")
    chosen = [k for k in kinds.split(",") if k]
    bad = [k for k in chosen if k not in SHAPED_BY]
    if bad or not chosen:
        raise SystemExit(f"--mean {text}: expected FILE or FILE:KINDS with KINDS from {sorted(SHAPED_BY)} "
                         f"(comma-separated). Received kinds {kinds!r}.")
    return path, chosen


def mean_over_runs(runs: list[tuple[str, dict, list[str] | None]]) -> dict:
    """One record of mean top-1 over several runs (seeds) of one recipe.

    Args:
        runs: ``(name, run record, kinds)``; ``kinds`` None takes the kinds
            that run trained itself.

    Returns:
        A run record whose rows hold the mean ``top1`` of each (kind,
        switch) and, in ``tops``, each run's value; ``seeds`` maps each kind
        to its runs' seeds. Refuses runs of another recipe, a kind trained
        with other options (`SHAPED_BY`) in two runs, and one seed twice.
    """
    first_name, first, _ = runs[0]
    merged = {k: v for k, v in first.items() if k not in ("results", "timing", "baselines_from", "command")}
    seeds: dict[str, list[int]] = {}
    shape: dict[str, tuple] = {}
    tops: dict[tuple[str, str], list[float]] = {}
    for name, data, kinds in runs:
        diff = recipe_diff(first, data)
        if diff:
            raise SystemExit(f"--mean: {name} used another recipe than {first_name} (option: (first, this)): {diff}.")
        kinds = trained_here(data) if kinds is None else kinds
        reused = reused_kinds(data)
        for kind in kinds:
            if kind in mixed_kinds(data) and baselines_source(data)["seed"] != data.get("seed", VARIANT["seed"]):
                raise SystemExit(f"--mean: the {kind} rows of {name} mix seed {data.get('seed', VARIANT['seed'])} "
                                 f"and rows of seed {baselines_source(data)['seed']} from --baselines; "
                                 "average files whose rows of a kind share one seed.")
            # Rows taken from --baselines carry that run's seed (and, by
            # --baselines' own check, the options SHAPED_BY names).
            seed = baselines_source(data)["seed"] if kind in reused else data.get("seed", VARIANT["seed"])
            rows = [r for r in data["results"] if r["model"] == kind]
            if not rows:
                raise SystemExit(f"--mean: {name} has no {kind} rows.")
            opts = tuple((k, data.get(k, VARIANT[k])) for k in SHAPED_BY[kind])
            if shape.setdefault(kind, opts) != opts:
                raise SystemExit(f"--mean: {kind} of {name} was trained with {dict(opts)}, an earlier file's with "
                                 f"{dict(shape[kind])}; average runs of one configuration.")
            if seed in seeds.setdefault(kind, []):
                raise SystemExit(f"--mean: two {kind} runs with seed {seed} (the second in {name}); "
                                 "pass each run once.")
            seeds[kind].append(seed)
            for r in rows:
                tops.setdefault((kind, r["switch"]), []).append(r["top1"])
    merged.update(shape.get("paradis", ()))
    merged["seeds"] = seeds
    merged["results"] = [{"model": k, "switch": s, "top1": sum(v) / len(v), "tops": v}
                         for (k, s), v in tops.items()]
    return merged


def mean_table(data: dict) -> str:
    """Markdown table of `mean_over_runs`: each cell the mean and, in brackets, each seed's value."""
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    kinds = [k for k in ("paradis", "individual", "slimmable") if k in data["seeds"]]
    label = {"paradis": "ParaDiS", "individual": "individual", "slimmable": "slimmable"}
    opts = [f"{k} {data[k]}" for k in ("teacher", "teacher_of", "switch_weights") if data.get(k)]
    if data.get("temperature", 1.0) != 1.0:
        opts.append(f"temperature {data['temperature']:g}")
    if data.get("sandwich"):
        opts.append(f"sandwich {data['sandwich']}")
    lines = [
        f"Mean Fashion-MNIST test top-1 over seeds, MobileNet v1 {shape_text(data)}, "
        f"{data['epochs']} epochs, {sync_text(data)}{optimizer_text(data)}, label mix {data.get('label_mix', 0.0):g}"
        + smoothing_text(data)
        + (", augmented with a shift per image" if data.get("augment") and data.get("translate") == "image" else "")
        + (f"; ParaDiS {', '.join(opts)}" if opts and "paradis" in kinds else ""),
        "",
        "Seeds: " + "; ".join(f"{label[k]} {', '.join(map(str, data['seeds'][k]))}" for k in kinds),
        "",
        "| switch | " + " | ".join(label[k] for k in kinds) + (" | ParaDiS - individual |" if
                                                              {"paradis", "individual"} <= set(kinds) else " |"),
        "|---|" + "---|" * (len(kinds) + ({"paradis", "individual"} <= set(kinds))),
    ]
    for s in data["switches"]:
        cells = []
        for k in kinds:
            r = rows.get((k, s))
            cells.append("-" if r is None else f"{100 * r['top1']:.2f} ({', '.join(f'{100 * v:.2f}' for v in r['tops'])})")
        if {"paradis", "individual"} <= set(kinds):
            p, i = rows.get(("paradis", s)), rows.get(("individual", s))
            cells.append(signed(100 * (p['top1'] - i['top1'])) if p and i else "-")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Targets (issue 2), on the means:", ""] + [f"- {t}" for t in targets(rows, data["switches"])]
    return "\n".join(lines)


def target_checks(rows: dict, switches: list[str]) -> list[dict]:
    """Each accuracy claim of the issue that ``rows`` can check: ``{"target", "value", "ok", "text"}``.

    ``target`` names the claim: ``"1x1.0"`` (93%), ``"individual"`` (every
    switch within 0.3 of its individual model), ``"4x0.25"`` (+1.5 over the
    slimmable 1x0.25), ``"slimmable 1x1.0"``, ``"slimmable 1x0.5"``,
    ``"slimmable 1x0.25"`` (within 0.5 of the slimmable model); ``value``
    the measured number the claim bounds (top-1 in %, or a difference in
    points; for "individual" the worst switch); ``text`` the claim with the
    measured numbers and met / missed.
    """
    # Top-1 on the 10,000 test images moves in steps of 0.01 points: rounded to that, a difference of
    # exactly -0.30 is -0.30 and meets "at least minus 0.3" (in floating point it can come out -0.30000000000000027).
    top = lambda kind, s: round(100 * rows[(kind, s)]["top1"], 2) if (kind, s) in rows else None  # noqa: E731
    mark = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    out = []
    p = top("paradis", "1x1.0")
    if p is not None:
        out.append({"target": "1x1.0", "value": p, "ok": p >= 93.0,
                    "text": f"ParaDiS 1x1.0 >= 93.0%: {p:.2f}% ({mark(p >= 93.0)})"})
    worst = [(round(top("paradis", s) - top("individual", s), 2), s) for s in switches
             if top("paradis", s) is not None and top("individual", s) is not None]
    if worst:
        d, s = min(worst)
        out.append({"target": "individual", "value": d, "ok": d >= -0.3,
                    "text": f"every ParaDiS switch >= its individual model - 0.3 points: worst {s} {signed(d)} "
                            f"({mark(d >= -0.3)}; {sum(x >= -0.3 for x, _ in worst)} of {len(worst)} switches within)"})
    p4, s4 = top("paradis", "4x0.25"), top("slimmable", "1x0.25")
    if p4 is not None and s4 is not None:
        margin = round(p4 - s4, 2)
        out.append({"target": "4x0.25", "value": margin, "ok": margin >= 1.5,
                    "text": f"ParaDiS 4x0.25 >= slimmable 1x0.25 + 1.5 points: {p4:.2f} vs {s4:.2f}, {signed(p4 - s4)} "
                            f"({mark(margin >= 1.5)})"})
    for s in ("1x1.0", "1x0.5", "1x0.25"):
        a, b = top("paradis", s), top("slimmable", s)
        if a is not None and b is not None:
            d = round(a - b, 2)
            out.append({"target": f"slimmable {s}", "value": d, "ok": d >= -0.5,
                        "text": f"ParaDiS {s} within 0.5 points of slimmable {s}: {a:.2f} vs {b:.2f}, {signed(a - b)} "
                                f"({mark(d >= -0.5)})"})
    return out


def targets(rows: dict, switches: list[str]) -> list[str]:
    """Each claim of the issue, with the measured numbers and met / missed."""
    return [c["text"] for c in target_checks(rows, switches)]


TIME_LIMIT_MINUTES = 90  # the whole benchmark on the 2 cores (issue 2)


def run_minutes(data: dict) -> tuple[float, str] | None:
    """The minutes a record's whole benchmark took, and how they were measured: ``"elapsed"`` (the run's
    recorded elapsed time) or ``"trainings"`` (a one-process run before elapsed time was kept: its
    trainings' times added up, a lower bound since it leaves out evaluation). None for a run that did not
    train all three kinds itself (``--only``, ``--individual``, ``--baselines``)."""
    t = data.get("timing", {})
    if baselines_source(data) or "joint_over_individual" not in t or "slimmable_seconds" not in t:
        return None
    if "elapsed_seconds" in t:
        return t["elapsed_seconds"] / 60, "elapsed"
    if data.get("jobs", 1) > 1:
        return None
    return (t["paradis_seconds"] + t["individual_seconds"] + t["slimmable_seconds"]) / 60, "trainings"


def verdict_table(records: list[tuple[str, dict]]) -> str:
    """One Markdown row per benchmark record: each target of issue 2, its measured number, and how many
    of the targets the record can check it met (missed numbers in bold). Records without ParaDiS,
    individual or slimmable rows (pilots of one kind) are named under the table instead."""
    lines = [
        "| record | epochs | network | optimizer | seed | 1x1.0 >= 93.0 | worst ParaDiS - individual >= -0.3 "
        "| 4x0.25 - slimmable 1x0.25 >= +1.5 | worst single-device - slimmable >= -0.5 "
        f"| joint / individual time <= 1 | minutes <= {TIME_LIMIT_MINUTES} | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    left_out = [name for name, data in records if not {"paradis", "individual", "slimmable"} <= {r["model"] for r in data["results"]}]
    if len(left_out) == len(records):
        raise SystemExit(f"--verdict {' '.join(left_out)}: no record has ParaDiS, individual and slimmable rows, so "
                         "the targets of issue 2 cannot be checked; pass records of whole benchmark runs (or of "
                         "runs that took the baselines' rows with --baselines).")
    for name, data in records:
        if name in left_out:
            continue
        rows = {(r["model"], r["switch"]): r for r in data["results"]}
        checks = {c["target"]: c for c in target_checks(rows, data["switches"])}
        bold = lambda text, ok: text if ok else f"**{text}**"  # noqa: E731
        cell = lambda key, fmt: bold(fmt(checks[key]["value"]), checks[key]["ok"]) if key in checks else "-"  # noqa: E731
        singles = [checks[k] for k in ("slimmable 1x1.0", "slimmable 1x0.5", "slimmable 1x0.25") if k in checks]
        worst_single = (bold(signed(min(c["value"] for c in singles)), all(c["ok"] for c in singles))
                        if singles else "-")
        ok = [c["ok"] for k, c in checks.items() if not k.startswith("slimmable ")]
        ok += [all(c["ok"] for c in singles)] if singles else []
        ratio = data.get("timing", {}).get("joint_over_individual")
        if ratio is not None and not baselines_source(data):
            ok.append(ratio <= 1.0)
            ratio_cell = bold(f"{ratio:.2f}", ratio <= 1.0)
        else:
            ratio_cell = "-"
        minutes = run_minutes(data)
        if minutes is not None:
            ok.append(minutes[0] <= TIME_LIMIT_MINUTES)
            minutes_cell = bold(f"{'>=' if minutes[1] == 'trainings' else ''}{minutes[0]:.0f}",
                                minutes[0] <= TIME_LIMIT_MINUTES)
        else:
            minutes_cell = "-"
        net = (f"channels {'-'.join(map(str, data['channels']))} d{data['depth']}" if data.get("channels")
               else f"w{data['width']} d{data['depth']}")
        opt = "SGD" if data.get("optimizer") == "sgd" else "Adam"
        lines.append(f"| {Path(name).name} | {data['epochs']} | {net} | {opt} | {data.get('seed', 0)} "
                     f"| {cell('1x1.0', lambda v: f'{v:.2f}')} | {cell('individual', signed)} | {cell('4x0.25', signed)} "
                     f"| {worst_single} | {ratio_cell} | {minutes_cell} | {sum(ok)} of {len(ok)} |")
    if left_out:
        lines += ["", "Left out (no ParaDiS, individual or slimmable rows, so not every target can be checked): "
                  + ", ".join(Path(n).name for n in left_out) + "."]
    return "\n".join(lines)


# Options --jobs decides for each worker; the rest of the command line passes through.
JOB_OPTIONS = ("--jobs", "--out", "--model-out", "--only", "--individual", "--baselines")


def worker_argv(argv: list[str]) -> list[str]:
    """``argv`` without the options in `JOB_OPTIONS` (``--opt value`` and ``--opt=value`` forms)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.split("=", 1)[0] in JOB_OPTIONS:
            skip = "=" not in a
        else:
            kept.append(a)
    return kept


def job_list(kinds: list[str], chosen: list[str]) -> list[tuple[str, list[str]]]:
    """``(name, options)`` of each training, longest first: the joint model, slimmable, the individual models."""
    jobs = [("paradis", ["--only", "paradis"])] if "paradis" in kinds else []
    jobs += [("slimmable", ["--only", "slimmable"])] if "slimmable" in kinds else []
    jobs += [(f"individual {s}", ["--only", "individual", "--individual", s]) for s in chosen] if "individual" in kinds else []
    return jobs


def run_jobs(args, argv: list[str], kinds: list[str], chosen: list[str], cores: list[int], data: dict, store,
             seconds: dict[str, float]) -> list[str]:
    """Runs each training of this benchmark in its own worker process (this tool, one kind or switch, its own
    --out in a scratch folder), at most ``args.jobs`` at once, each pinned to a core of its own with one
    TensorFlow thread; ``store(kind, rows)`` records each worker's rows into --out as it finishes, and
    ``seconds[training]`` its time. A failed worker loses only its own training: the others still run.

    Returns:
        The failed trainings, each with its log.
    """
    from workers import start_pinned_worker

    start = time.perf_counter()
    base = worker_argv(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench_accuracy_jobs_"))
    pending = job_list(kinds, chosen)
    print(f"{len(pending)} trainings in {args.jobs} processes; logs in {scratch}", flush=True)
    running: dict[int, tuple[str, subprocess.Popen, Path, Path, object]] = {}  # core -> job
    failed: list[str] = []
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                name, options = pending.pop(0)
                core = next(c for c in cores[: args.jobs] if c not in running)
                tag = name.replace(" ", "_").replace("+", "p")
                result, log = scratch / f"{tag}.json", scratch / f"{tag}.log"
                model_out = args.model_out if name == "paradis" else str(scratch / f"{tag}.keras")
                cmd = [sys.executable, str(Path(__file__).resolve()), *base, *options, "--out", str(result),
                       "--model-out", model_out]
                handle = open(log, "w")
                running[core] = (name, start_pinned_worker(cmd, core, ROOT, stdout=handle, stderr=subprocess.STDOUT),
                                 result, log, handle)
                print(f"started {name} on core {core}", flush=True)
            time.sleep(0.5)
            for core, (name, proc, result, log, handle) in list(running.items()):
                if proc.poll() is None:
                    continue
                handle.close()
                del running[core]
                if proc.returncode != 0:
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    print(f"{name} failed (exit status {proc.returncode}); the end of {log}:\n" + "\n".join(tail), flush=True)
                    failed.append(f"{name} (log {log})")
                    continue
                done = json.loads(result.read_text())
                for kind in ("paradis", "individual", "slimmable"):
                    rows = [r for r in done["results"] if r["model"] == kind]
                    if rows:
                        seconds[name] = rows[0]["train_seconds"]
                        if name in ("paradis", "slimmable"):
                            data["timing"][f"{name}_seconds"] = seconds[name]
                        store(kind, rows)
                print(f"finished {name}: " + ", ".join(f"{r['switch']} {100 * r['top1']:.2f}" for r in done["results"])
                      + f" ({seconds[name]:.0f} s)", flush=True)
    finally:  # interrupted (Ctrl-C, an error here): no worker outlives this process
        for name, proc, *_ in running.values():
            proc.terminate()
            proc.wait()
    data["timing"]["elapsed_seconds"] = round(time.perf_counter() - start, 1)
    return failed


def ensemble_table(paths: list[str], labels) -> str:
    """Top-1 of each saved logits file (`--logits-out`) and of their sums, over every subset of each size.

    Summing the logits of K models is what a ParaDiS multi-device switch does with its devices' partial
    logits, so K independently trained single-device models summed are K devices that never exchange
    anything and were trained apart: the reference for what joint training adds.
    """
    import itertools

    import numpy as np

    logits = []
    for path in paths:
        try:
            z = np.load(path)
        except (OSError, ValueError) as e:
            raise SystemExit(f"--ensemble {path}: not a NumPy .npy file ({e}); pass files written by --logits-out.") from None
        if z.ndim != 2 or len(z) != len(labels):
            raise SystemExit(f"--ensemble {path}: logits of shape {z.shape}; expected ({len(labels)}, classes), "
                             "one row per test image, as --logits-out writes them.")
        if logits and z.shape != logits[0].shape:
            raise SystemExit(f"--ensemble {path}: logits of shape {z.shape}, but {paths[0]} has {logits[0].shape}; "
                             "pass logits of one dataset and one set of classes.")
        logits.append(z.astype(np.float64))

    def top1(z):
        return 100.0 * float(np.mean(np.argmax(z, axis=1) == labels))

    lines = ["| file | top-1 |", "|---|---|"] + [f"| {p} | {top1(z):.2f} |" for p, z in zip(paths, logits)]
    lines += ["", "| models summed | top-1, mean over subsets | min | max | subsets |", "|---|---|---|---|---|"]
    for k in range(1, len(logits) + 1):
        accs = [top1(sum(logits[i] for i in c)) for c in itertools.combinations(range(len(logits)), k)]
        lines.append(f"| {k} | {sum(accs) / len(accs):.2f} | {min(accs):.2f} | {max(accs):.2f} | {len(accs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from paradis_tf.switches import parse_switches
    from paradis_tf.training.distillation import (TEACHERS, check_label_smoothing, check_sandwich, check_teacher_of,
                                                  check_temperature, teacher_indices)
    from paradis_tf.data.pipeline import TRANSLATIONS
    from paradis_tf.training.recipe import OPTIMIZERS

    # no abbreviated options: --jobs hands the workers this command line minus the options it owns
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--epochs", type=int, default=8, help="epochs for every model (%(default)s)")
    ap.add_argument("--width", type=float, default=0.5, help="MobileNet v1 width (%(default)s)")
    ap.add_argument("--depth", type=int, default=7, help="separable blocks (%(default)s)")
    ap.add_argument("--channels", default="", metavar="COUNTS",
                    help="comma-separated output channels of the stem and of each block (depth + 1 counts), "
                         "e.g. 12,24,64,64,128,128,256,256, instead of the standard layout times --width")
    ap.add_argument("--sync-layers", default="", metavar="BLOCKS",
                    help="comma-separated blocks whose pointwise convolution reads all devices' channels, "
                         "e.g. 1,3 (every model; default: none, devices exchange nothing before the fusion)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                    help="adam, or sgd with Nesterov momentum (%(default)s)")
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (%(default)s)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (%(default)s)")
    ap.add_argument("--weight-decay", type=float, default=0.0,
                    help="decoupled weight decay: kernels times 1 - lr_t * wd each step (AdamW with adam) (%(default)s)")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--translate", choices=TRANSLATIONS, default="batch",
                    help="augmentation shifts the whole batch by one random offset (%(default)s) or each image by its own")
    ap.add_argument("--erase", type=float, default=0.0, metavar="P",
                    help="random erasing probability per training image, every model (%(default)s)")
    ap.add_argument("--label-mix", type=float, default=0.0,
                    help="label-loss weight of the distilled ParaDiS switches (%(default)s)")
    ap.add_argument("--switch-weight", action="append", default=[], metavar="SWITCH=W",
                    help="loss weight of one ParaDiS switch (repeatable; default 1 each)")
    ap.add_argument("--logit-scale", action="store_true",
                    help="learn one logit scale per switch (ParaDiS and slimmable; a single-switch individual "
                         "model's scale would only duplicate its kernel's)")
    ap.add_argument("--teacher", choices=TEACHERS, default="widest",
                    help="whom the distilled switches of ParaDiS and slimmable learn from: the widest switch, or "
                         "the cheapest switch that contains them (teacher assistants) (%(default)s)")
    ap.add_argument("--teacher-of", action="append", default=[], metavar="STUDENT=TEACHER",
                    help="override --teacher for one ParaDiS switch, e.g. 1x0.25=1x1.0 (repeatable; ParaDiS only)")
    ap.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                    help="label smoothing of every label term, every model: the true class gets 1 - EPS plus "
                         "EPS / classes (%(default)s: hard labels)")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="distillation temperature of ParaDiS and slimmable (%(default)s: plain in-place distillation)")
    ap.add_argument("--sandwich", type=int, default=None, metavar="N",
                    help="train N of the ParaDiS switches per step (the widest, the narrowest and N-2 random "
                         "others) instead of all of them; the baselines are unaffected")
    ap.add_argument("--seed", type=int, default=0, help="random seed of weights, shuffling and augmentation (%(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke runs)")
    ap.add_argument("--only", choices=["paradis", "individual", "slimmable"], action="append")
    ap.add_argument("--individual", metavar="SWITCH", action="append",
                    help="train the individual model of this switch only (repeatable; default all six). "
                         "The joint-vs-individual wall-time ratio needs all six, so it is left out")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/accuracy.json"))
    ap.add_argument("--model-out", default=None,
                    help="where to save the trained ParaDiS model (default: fashion_mnist_paradis_e{epochs}.keras in the "
                         "system's temporary folder; docs/benchmarks/ keeps one model, the one the quantization table cites)")
    ap.add_argument("--baselines", default=None, metavar="JSON",
                    help="take the rows of the models this run does not train (--only) from this earlier "
                         "run (same recipe: epochs, width, depth, batch, lr, weight decay, augmentation, erasing, label "
                         "mix, train images) instead of training them again; for trying ParaDiS-only options such as "
                         "--switch-weight (default --only paradis)")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="train in N worker processes at once, each pinned to one core with one TensorFlow thread "
                         "(N <= the cores this process may use; default %(default)s: every model in this process)")
    ap.add_argument("--logits-out", default=None, metavar="DIR",
                    help="also save each trained model's test-set logits, one (10000, 10) float32 .npy per switch: "
                         "DIR/{model}_{switch}_seed{seed}.npy (for --ensemble)")
    ap.add_argument("--ensemble", nargs="+", metavar="NPY",
                    help="print the test top-1 of each --logits-out file and of their summed logits (every subset "
                         "of each size), then exit")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    ap.add_argument("--verdict", nargs="+", metavar="JSON",
                    help="print one row per record: each target of issue 2 with its measured number (the time "
                         "targets only for runs that trained all three kinds themselves), then exit; records "
                         "without ParaDiS, individual and slimmable rows are named as left out")
    ap.add_argument("--mean", nargs="+", metavar="JSON[:KINDS]",
                    help="print the mean top-1 over runs of one recipe (seeds), each seed's value beside it, and "
                         "the targets checked on the means, then exit. KINDS (comma-separated paradis, "
                         "individual, slimmable) picks a file's rows; default: the kinds that run trained itself")
    args = ap.parse_args(argv)
    if args.ensemble:
        from paradis_tf.data import load_fashion_mnist

        _, labels = load_fashion_mnist("test")
        print(ensemble_table(args.ensemble, labels))
        return 0
    if args.verdict:
        records = []
        for path in args.verdict:
            try:
                records.append((path, json.loads(Path(path).read_text())))
            except (OSError, ValueError) as e:
                raise SystemExit(f"--verdict {path}: cannot read a benchmark record there ({e}); pass JSON files "
                                 "written by this tool's --out.") from None
        print(verdict_table(records))
        return 0
    if args.mean:
        runs = []
        for text in args.mean:
            path, kinds = parse_mean_source(text)
            runs.append((path, json.loads(Path(path).read_text()), kinds))
        print(mean_table(mean_over_runs(runs)))
        return 0
    bad = [s for s in args.individual or () if s not in SWITCHES]
    if bad:
        raise SystemExit(f"--individual {bad[0]}: not a benchmark switch; pass one of {', '.join(SWITCHES)}.")
    from paradis_tf.cli.cmd_train import parse_layer_channels, parse_sync_layers, parse_teacher_of

    try:
        switches = parse_switches(SWITCHES)
        teacher_of = check_teacher_of(parse_teacher_of(args.teacher_of), switches)  # canonical switch texts
        teacher_indices(switches, args.teacher, teacher_of)  # refuses loops
    except ValueError as e:
        raise SystemExit(f"--teacher-of: {e}") from None
    try:
        check_temperature(args.temperature)
    except ValueError:
        raise SystemExit(f"--temperature {args.temperature}: use a finite temperature > 0 (1: plain distillation).") from None
    try:
        check_label_smoothing(args.label_smoothing)
    except ValueError:
        raise SystemExit(f"--label-smoothing {args.label_smoothing}: pass 0 <= EPS < 1 (0: hard labels; 0.1 is usual).") from None
    try:
        check_sandwich(args.sandwich, len(SWITCHES))
    except ValueError:
        raise SystemExit(f"--sandwich {args.sandwich}: pass 2 to {len(SWITCHES)} switches per step, "
                         "or leave it out to train all of them every step.") from None
    try:
        sync = sorted(set(parse_sync_layers(args.sync_layers)))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    bad = [i for i in sync if not 0 <= i < args.depth]
    if bad:
        raise SystemExit(f"--sync-layers {args.sync_layers}: block {bad[0]} does not exist; the network has "
                         f"{args.depth} blocks (--depth), numbered 0 to {args.depth - 1}.")
    try:
        channels = parse_layer_channels(args.channels, args.depth, "--channels")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if not 1 <= args.jobs <= len(cores):
        raise SystemExit(f"--jobs {args.jobs}: pass 1 to {len(cores)} (the cores this process may use: "
                         f"{', '.join(map(str, cores))}); each job takes one core.")
    if args.logits_out:  # checked before any training, so that saving the logits cannot fail after one
        try:
            Path(args.logits_out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"--logits-out {args.logits_out}: cannot create that folder ({e.strerror}); "
                             "pass a folder you can write to.") from None
        if not os.access(args.logits_out, os.W_OK):
            raise SystemExit(f"--logits-out {args.logits_out}: the folder is not writable; pass a folder you can write to.")
    if args.model_out is None:
        args.model_out = os.path.join(tempfile.gettempdir(), f"fashion_mnist_paradis_e{args.epochs}.keras")
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return 0

    from paradis_tf.cli.cmd_train import parse_switch_weights
    from paradis_tf.data import FASHION_MNIST_LABELS, load_fashion_mnist
    from paradis_tf.models import mobilenet_v1
    from paradis_tf.training import SLIMMABLE_SWITCHES, TrainConfig, evaluate, train

    x, y = load_fashion_mnist("train", limit=args.limit)
    xt, yt = load_fashion_mnist("test")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                      warmup_epochs=0.5, weight_decay=args.weight_decay, optimizer=args.optimizer, momentum=args.momentum,
                      augment=not args.no_augment, translate=args.translate, erase=args.erase, seed=args.seed)

    weights = parse_switch_weights(args.switch_weight)

    def build(switches, paradis=False):
        return mobilenet_v1((28, 28, 1), 10, switches, width=args.width, depth=args.depth, sync_layers=sync, channels=channels,
                            labels=FASHION_MNIST_LABELS, label_mix=args.label_mix,
                            switch_weights=weights if paradis else None,
                            logit_scale=args.logit_scale and len(switches) > 1, teacher=args.teacher,
                            teacher_of=teacher_of if paradis else None, temperature=args.temperature,
                            label_smoothing=args.label_smoothing,
                            sandwich=args.sandwich if paradis else None)

    out = Path(args.out)
    data = {"dataset": "fashion_mnist", "epochs": args.epochs, "width": args.width, "depth": args.depth, "channels": channels, "sync_layers": sync,
            "batch_size": args.batch_size, "optimizer": args.optimizer, "momentum": args.momentum, "learning_rate": args.lr, "weight_decay": args.weight_decay, "augment": not args.no_augment,
            "translate": args.translate, "erase": args.erase, "label_mix": args.label_mix, "label_smoothing": args.label_smoothing, "seed": args.seed, "switch_weights": weights, "logit_scale": args.logit_scale,
            "teacher": args.teacher, "teacher_of": teacher_of, "temperature": args.temperature, "sandwich": args.sandwich, "train_images": len(x), "test_images": len(xt), "switches": SWITCHES, "results": [],
            "timing": {}, "command": "python tools/bench_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if out.exists():
        old = json.loads(out.read_text())
        if not recipe_diff(old, data) and all(old.get(k, d) == data[k] for k, d in VARIANT.items()):
            data["results"], data["timing"] = old["results"], old.get("timing", {})
            if old.get("baselines_from"):  # rows an earlier command took from --baselines
                data["baselines_from"] = baselines_source(old)
            # the rows kept came from earlier commands: list them all, oldest first
            earlier = old.get("command", [])
            data["command"] = (earlier if isinstance(earlier, list) else [earlier]) + [data["command"]]
    kinds = args.only or (["paradis"] if args.baselines else ["paradis", "individual", "slimmable"])
    chosen = [s for s in SWITCHES if s in (args.individual or SWITCHES)]
    trained = ({("paradis", s) for s in SWITCHES} if "paradis" in kinds else set()) | (
        {("individual", s) for s in chosen} if "individual" in kinds else set()) | (
        {("slimmable", s) for s in SLIMMABLE_SWITCHES} if "slimmable" in kinds else set())
    if args.baselines:
        base = json.loads(Path(args.baselines).read_text())
        diff = recipe_diff(base, data)
        one_device_only = set(diff) == {"sync_layers"}
        if diff and not one_device_only:
            raise SystemExit(f"--baselines {args.baselines} used another recipe (option: (that run, this run)): {diff}; "
                             "pass the same options or train the baselines again.")
        earlier = data.get("baselines_from")
        if earlier and earlier["file"] != args.baselines:
            raise SystemExit(f"--baselines {args.baselines}: {out} already holds rows from {earlier['file']}; "
                             "write to a new --out or pass that file.")
        keys = reusable_rows(base, trained, one_device_only)
        reused = sorted({k for k, _ in keys})
        for kind in reused:  # the options that shape a reused model must match
            for k in SHAPED_BY[kind]:
                if base.get(k, VARIANT[k]) != data[k]:
                    raise SystemExit(f"--baselines {args.baselines}: its {kind} model was trained with "
                                     f"{k}={base.get(k, VARIANT[k])}, this run uses {data[k]}; "
                                     f"add --only {kind} to train it again.")
        data["results"] = merge_rows(data["results"], base["results"], keys)
        for k in reused:  # a kind's total time, where every row of it is reused
            if f"{k}_seconds" in base.get("timing", {}) and all((r["model"], r["switch"]) in keys
                                                                for r in base["results"] if r["model"] == k):
                data["timing"][f"{k}_seconds"] = base["timing"][f"{k}_seconds"]
        rows = [list(k) for k in (earlier or {}).get("rows", []) if tuple(k) not in set(keys)] + [list(k) for k in keys]
        data["baselines_from"] = {"file": args.baselines, "models": sorted({m for m, _ in rows}), "seed": base.get("seed", 0),
                                  "rows": rows}
        if one_device_only:
            data["baselines_from"]["without_sync"] = True

    def save_logits(kind, model, switches):
        if not args.logits_out:
            return
        import numpy as np

        from paradis_tf.data import make_dataset

        ds = make_dataset(xt, None, 500, preprocessing=model.preprocessing)
        outs = model.predict(ds, verbose=0)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for s, z in zip(model.switches, outs):  # the folder was made when the options were checked
            if str(s) in switches:
                np.save(Path(args.logits_out) / f"{kind}_{s}_seed{args.seed}.npy", np.asarray(z, np.float32))

    def record(kind, model, accs, result, switches):
        store(kind, [{
            "model": kind, "switch": s, "top1": round(accs[s], 4),
            "macs_per_device": [d["macs"] for d in model.device_stats(s)], "params": int(model.count_params()),
            "train_seconds": round(result["train_seconds"], 1), "train_cpu_seconds": round(result["train_cpu_seconds"], 1),
        } for s in switches])
        save_logits(kind, model, switches)  # after the row is stored: a logits folder that fails loses no result

    def store(kind, new_rows):
        switches = [r["switch"] for r in new_rows]
        data["results"] = [r for r in data["results"] if not (r["model"] == kind and r["switch"] in switches)]
        src = data.get("baselines_from")
        if src:  # rows trained now are no longer the --baselines file's
            src["rows"] = [k for k in src["rows"] if not (k[0] == kind and k[1] in switches)]
            src["models"] = sorted({m for m, _ in src["rows"]})
            if not src["rows"]:
                del data["baselines_from"]
        data["results"].extend(new_rows)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")

    seconds: dict[str, float] = {}  # "paradis", "slimmable", "individual 2x0.5": training time

    def individual_total():
        """The six individual trainings' total time, where this run trained all six."""
        if chosen == SWITCHES and all(f"individual {s}" in seconds for s in chosen):
            data["timing"]["individual_seconds"] = sum(seconds[f"individual {s}"] for s in chosen)
        else:  # an earlier run's total into the same --out no longer times these rows
            data["timing"].pop("individual_seconds", None)

    failed = []
    if args.jobs > 1:
        data["jobs"] = args.jobs
        failed = run_jobs(args, sys.argv[1:] if argv is None else argv, kinds, chosen, cores, data, store, seconds)
        if "individual" in kinds:
            individual_total()
    if args.jobs == 1 and "paradis" in kinds:
        m = build(SWITCHES, paradis=True)
        r = train(m, x, y, cfg, verbose=2)
        accs = evaluate(m, xt, yt)
        print("paradis", accs, f"{r['train_seconds']:.0f}s", flush=True)
        data["timing"]["paradis_seconds"] = r["train_seconds"]
        record("paradis", m, accs, r, SWITCHES)
        m.save(args.model_out)
    if args.jobs == 1 and "individual" in kinds:
        for s in chosen:
            m = build([s])
            r = train(m, x, y, cfg, verbose=2)
            accs = evaluate(m, xt, yt)
            seconds[f"individual {s}"] = r["train_seconds"]
            print("individual", s, accs, f"{r['train_seconds']:.0f}s", flush=True)
            record("individual", m, accs, r, [s])
        individual_total()
    if args.jobs == 1 and "slimmable" in kinds:
        m = build(list(SLIMMABLE_SWITCHES))
        r = train(m, x, y, cfg, verbose=2)
        accs = evaluate(m, xt, yt)
        print("slimmable", accs, f"{r['train_seconds']:.0f}s", flush=True)
        data["timing"]["slimmable_seconds"] = r["train_seconds"]
        record("slimmable", m, accs, r, list(SLIMMABLE_SWITCHES))
    t = data["timing"]
    if "paradis_seconds" in t and "individual_seconds" in t and not data.get("baselines_from") and not failed:
        t["joint_over_individual"] = t["paradis_seconds"] / t["individual_seconds"]
    else:  # derived from the two totals: an earlier run's ratio must not outlive them
        t.pop("joint_over_individual", None)
    out.write_text(json.dumps(data, indent=2) + "\n")
    if failed:
        raise SystemExit(f"--jobs: {len(failed)} training(s) failed: {'; '.join(failed)}. The rows of the others "
                         f"are in {args.out}; run the failed ones again with --only/--individual and the same --out.")
    if {"paradis_seconds", "individual_seconds", "slimmable_seconds"} <= set(t):
        print(table(data))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
