"""`paradis train`: train all switches of a ParaDiS network jointly (a classifier, or with ``--task sr`` WDSR
super-resolution)."""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import add_data_args, data_source, print_json, print_table
from paradis_tf.switches import BENCHMARK_SWITCHES
from paradis_tf.training.distillation import TEACHERS
from paradis_tf.data.pipeline import TRANSLATIONS
from paradis_tf.training.recipe import OPTIMIZERS

DEFAULT_SWITCHES = ",".join(BENCHMARK_SWITCHES)
# Peak learning rate and weight decay per optimizer when the command line gives none.
RECIPE_DEFAULTS = {"sgd": {"lr": 0.1, "weight_decay": 5e-3}, "adam": {"lr": 2e-3, "weight_decay": 0.0}}
WARMUP_EPOCHS = 0.5  # linear warm-up before the cosine decay

TASKS = ("classify", "sr")
# --task classify where the command line is silent.
CLASSIFIER_DEFAULTS = {"arch": "mobilenet_v1", "blocks": "1,1", "epochs": 2, "batch_size": 128, "optimizer": "sgd"}
# --task sr: WDSR x2 on scikit-image's photographs, the switch set of the super-resolution benchmark.
SR_SWITCHES = "1x1.0,2x0.5,4x0.25,1x0.5,1x0.25"
SR_DEFAULTS = {"scale": 2, "features": 32, "blocks": 8, "expansion": 4.0, "patch_size": 48, "steps_per_epoch": 100,
               "epochs": 20, "batch_size": 16}
SR_LR = {"adam": 1e-3, "sgd": 1e-2}  # peak learning rate per optimizer (WDSR: Adam at 1e-3, no warm-up)
# Options (argparse dests) that only one task takes.
CLASSIFIER_ONLY = ("width", "depth", "layer_channels", "logit_scale", "image_size", "augment", "translate", "erase",
                   "temperature", "label_smoothing", "weight_decay", "limit")
SR_ONLY = ("scale", "features", "expansion", "patch_size", "steps_per_epoch")


SYNC_LAYERS_HELP = "comma-separated block indices whose convolution reads every device's channels (default: none)"
# Numeric knobs of the loss and the augmentation: flag, default, metavar, what it does.
_LOSS_AND_AUGMENTATION = (
    ("--erase", 0.0, "P", "random erasing: with probability P, one rectangle of each training image becomes noise"),
    ("--label-mix", 0.5, "W", "weight of the label loss (with --task sr: the L1 loss to the high-resolution "
                              "image) for distilled switches; the rest is distillation"),
    ("--temperature", 1.0, "T", "distillation temperature: distilled switches match softmax(teacher / T) with "
                                "weight T^2; 1 is plain in-place distillation"),
    ("--label-smoothing", 0.0, "EPS", "label smoothing of the label terms: the true class gets 1 - EPS plus "
                                      "EPS / classes; 0 is hard labels"),
)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a ParaDiS model (all switches jointly)")
    p.add_argument("--out", required=True, metavar="MODEL.keras", help="where to save the model (.keras)")
    p.add_argument("--task", choices=TASKS, default="classify",
                   help="classify: an image classifier on --dataset or --data class folders; sr: WDSR "
                        "super-resolution (see the super-resolution options) on scikit-image's photographs, or on "
                        "--data DIR of your photographs with a fifth of them held out (default: %(default)s)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=["mobilenet_v1", "resnet", "wdsr"], default=None,
                   help="network family: mobilenet_v1 or resnet with --task classify, wdsr with --task sr "
                        f"(default: {CLASSIFIER_DEFAULTS['arch']}; wdsr with --task sr)")
    m.add_argument("--switches", default=None, metavar="S1,S2",
                   help=f"comma-separated switches the one set of weights serves (default: {DEFAULT_SWITCHES}; "
                        f"{SR_SWITCHES} with --task sr)")
    m.add_argument("--width", type=float, default=0.5, help="width multiplier of every layer (default: %(default)s)")
    m.add_argument("--depth", type=int, default=7, help="MobileNet separable blocks, 1..13 (default: %(default)s)")
    m.add_argument("--blocks", default=None, metavar="N1,N2",
                   help="ResNet bottleneck blocks per stage, 3,4,6,3 is ResNet-50; WDSR: its number of residual "
                        f"blocks (default: {CLASSIFIER_DEFAULTS['blocks']}; {SR_DEFAULTS['blocks']} with --task sr)")
    m.add_argument("--layer-channels", default="", metavar="COUNTS",
                   help="MobileNet: comma-separated output channels of the stem and of each block (depth + 1 "
                        "counts), e.g. 8,16,64,64,128,128,256,256, instead of the standard layout times --width "
                        "(default: the standard layout)")
    m.add_argument("--sync-layers", default="", metavar="I1,I2", help=SYNC_LAYERS_HELP)
    m.add_argument("--logit-scale", action="store_true",
                   help="learn one scale per switch on the classifier's logits (folded into partitions)")
    m.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="square input size --data images are resized to (required with --data)")
    m.add_argument("--channels", type=int, default=3, choices=[1, 3],
                   help="input channels for --data: 1 grayscale, 3 RGB; with --task sr also of the photographs, "
                        "1 being their luma Y (default: %(default)s)")
    r = p.add_argument_group("super-resolution (--task sr)")
    r.add_argument("--scale", type=int, default=SR_DEFAULTS["scale"],
                   help="upscaling factor (default: %(default)s)")
    r.add_argument("--features", type=int, default=SR_DEFAULTS["features"], metavar="C",
                   help="WDSR feature channels between residual blocks (default: %(default)s)")
    r.add_argument("--expansion", type=float, default=SR_DEFAULTS["expansion"], metavar="X",
                   help="width of the activation inside a residual block, in multiples of --features "
                        "(default: %(default)s)")
    r.add_argument("--patch-size", type=int, default=SR_DEFAULTS["patch_size"], metavar="PX",
                   help="side of a low-resolution training patch; also the input size of the saved model's device "
                        "partitions (default: %(default)s)")
    r.add_argument("--steps-per-epoch", type=int, default=SR_DEFAULTS["steps_per_epoch"], metavar="N",
                   help="batches of random patches per epoch (default: %(default)s)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training split; with --task sr, times --steps-per-epoch batches "
                        f"(default: {CLASSIFIER_DEFAULTS['epochs']}; {SR_DEFAULTS['epochs']} with --task sr)")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"images (patches with --task sr) per step (default: {CLASSIFIER_DEFAULTS['batch_size']}; "
                        f"{SR_DEFAULTS['batch_size']} with --task sr)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="sgd (Nesterov momentum) or adam (AdamW with --weight-decay) (default: "
                        f"{CLASSIFIER_DEFAULTS['optimizer']}; adam with --task sr)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, --optimizer sgd (default: %(default)s)")
    t.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, cosine decay after half an epoch of warm-up (none with --task sr) "
                        f"(default: {RECIPE_DEFAULTS['sgd']['lr']:g} with sgd, {RECIPE_DEFAULTS['adam']['lr']:g} with "
                        f"adam; with --task sr {SR_LR['adam']:g} with adam, {SR_LR['sgd']:g} with sgd)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="decoupled weight decay of the kernels: times 1 - lr_t * wd each step (default: "
                        f"{RECIPE_DEFAULTS['sgd']['weight_decay']:g} with sgd, "
                        f"{RECIPE_DEFAULTS['adam']['weight_decay']:g} with adam)")
    t.add_argument("--augment", action="store_true", help="random horizontal flip and translation")
    t.add_argument("--translate", choices=TRANSLATIONS, default="batch",
                   help="with --augment: one random shift per batch, or one per image (default: %(default)s)")
    t.add_argument("--teacher", choices=TEACHERS, default="widest",
                   help="whom distilled switches learn from: the widest switch, or the cheapest switch that "
                        "contains them (1x0.25 from 1x0.5, 4x0.25 from 0.5+0.25+0.25, ...) (default: %(default)s)")
    for flag, default, metavar, what in _LOSS_AND_AUGMENTATION:
        t.add_argument(flag, type=float, default=default, metavar=metavar, help=f"{what} (default: %(default)s)")
    t.add_argument("--sandwich", type=int, default=None, metavar="N",
                   help="switches trained per step: the widest, the narrowest and random others (default: all)")
    t.add_argument("--switch-weight", action="append", default=[], metavar="SWITCH=W",
                   help="loss weight of one switch, e.g. 1x0.25=2 (repeatable; default: 1 each)")
    t.add_argument("--teacher-of", action="append", default=[], metavar="STUDENT=TEACHER",
                   help="override --teacher for one switch, e.g. 1x0.25=1x1.0 (repeatable; default: none)")
    t.add_argument("--seed", type=int, default=0, help="random seed of the initial weights, the shuffling and the augmentation (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    add_data_args(p)
    # What each task does not take, with the default that means "not given" (refused otherwise, see check_task).
    p.set_defaults(func=run, task_defaults={dest: p.get_default(dest) for dest in CLASSIFIER_ONLY + SR_ONLY})


def parse_teacher_of(items) -> dict[str, str]:
    """``["1x0.25=1x1.0", ...]`` -> ``{"1x0.25": "1x1.0"}`` (switches checked by the model)."""
    out = {}
    for item in items:
        student, sep, teacher = item.partition("=")
        if not sep or not student.strip() or not teacher.strip():
            raise ValueError(f"--teacher-of expects STUDENT=TEACHER switches, e.g. 1x0.25=1x1.0. Received {item!r}.")
        out[student.strip()] = teacher.strip()
    return out


def parse_switch_weights(items) -> dict[str, float]:
    """``["1x0.25=2", ...]`` -> ``{"1x0.25": 2.0}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--switch-weight expects SWITCH=WEIGHT, e.g. 1x0.25=2. Received {item!r}.") from None
    return out


def parse_sync_layers(text: str) -> list[int]:
    """``"1,3"`` -> ``[1, 3]`` (block indices; the model checks their range)."""
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            out.append(int(item))
        except ValueError:
            raise ValueError(f"--sync-layers expects comma-separated block indices, e.g. 1,3. Received {text!r}.") from None
    return out


def parse_layer_channels(text: str, depth: int, option: str = "--layer-channels") -> list[int] | None:
    """``"8,16,64"`` -> ``[8, 16, 64]``: the stem's and each of ``depth`` blocks' channels (None when empty)."""
    if not text.strip():
        return None
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) != depth + 1 or min(counts) < 1:
        from paradis_tf.models.mobilenet import MOBILENET_V1_BLOCKS

        example = [16] + [f // 2 for f, _ in MOBILENET_V1_BLOCKS[:depth]]  # the standard layout at width 0.5
        raise ValueError(f"{option} {text}: pass {depth + 1} positive whole numbers separated by commas, the stem's "
                         f"channels and then each of the {depth} blocks' (--depth), e.g. "
                         f"{','.join(map(str, example))} (width 0.5) for depth {depth}.")
    return counts


def build_model(args, image_shape, num_classes, labels):
    from paradis_tf.models import mobilenet_v1, resnet

    sync = parse_sync_layers(args.sync_layers)
    common = dict(labels=labels, label_mix=args.label_mix, sandwich=args.sandwich,
                  switch_weights=parse_switch_weights(args.switch_weight), logit_scale=args.logit_scale,
                  teacher=args.teacher, teacher_of=parse_teacher_of(args.teacher_of),
                  temperature=args.temperature, label_smoothing=args.label_smoothing)
    if args.arch == "resnet":
        blocks = [int(b) for b in (args.blocks or CLASSIFIER_DEFAULTS["blocks"]).split(",") if b.strip()]
        return resnet(image_shape, num_classes, args.switches.split(","), blocks=blocks, width=args.width,
                      sync_layers=sync, **common)
    return mobilenet_v1(image_shape, num_classes, args.switches.split(","), width=args.width, depth=args.depth,
                        sync_layers=sync, channels=parse_layer_channels(args.layer_channels, args.depth), **common)


def train_config(args, n_images: int | None = None):
    """The recipe the command line asks for (`RECIPE_DEFAULTS` where it is silent)."""
    from paradis_tf.training import TrainConfig

    optimizer = args.optimizer or CLASSIFIER_DEFAULTS["optimizer"]
    defaults = RECIPE_DEFAULTS[optimizer]
    epochs = CLASSIFIER_DEFAULTS["epochs"] if args.epochs is None else args.epochs
    batch = CLASSIFIER_DEFAULTS["batch_size"] if args.batch_size is None else args.batch_size
    return TrainConfig(
        epochs=epochs, batch_size=batch if n_images is None else min(batch, n_images),
        warmup_epochs=WARMUP_EPOCHS, learning_rate=defaults["lr"] if args.lr is None else args.lr,
        weight_decay=defaults["weight_decay"] if args.weight_decay is None else args.weight_decay,
        optimizer=optimizer, momentum=args.momentum, augment=args.augment, translate=args.translate, erase=args.erase,
        seed=args.seed)


def check_task(args) -> None:
    """Refuses an option of the other task (given with a value other than its default) and an --arch of the
    other task, naming the option and the task that takes it."""
    other = "classify" if args.task == "sr" else "sr"
    for dest in CLASSIFIER_ONLY if args.task == "sr" else SR_ONLY:
        value = getattr(args, dest)
        if value != args.task_defaults[dest]:
            flag = "--" + dest.replace("_", "-")
            given = flag if value is True else f"{flag} {value}"
            raise ValueError(f"{given} applies to --task {other}; leave it out with --task {args.task}.")
    if args.task == "sr" and args.arch not in (None, "wdsr"):
        raise ValueError(f"--arch {args.arch} is a classifier; --task sr trains --arch wdsr.")
    if args.task == "classify" and args.arch == "wdsr":
        raise ValueError("--arch wdsr is a super-resolution network; add --task sr (or pick mobilenet_v1 or resnet).")


def run(args) -> int:
    from paradis_tf.data import load_source
    from paradis_tf.switches import parse_switches
    from paradis_tf.training import evaluate, train

    check_task(args)
    if args.task == "sr":
        from paradis_tf.cli._train_sr import run_sr

        return run_sr(args)
    args.arch = args.arch or CLASSIFIER_DEFAULTS["arch"]
    args.switches = args.switches or DEFAULT_SWITCHES
    parse_switches(args.switches)  # fail fast, before loading TensorFlow data
    train_config(args)  # a bad recipe, too
    if args.layer_channels and args.arch != "mobilenet_v1":
        raise ValueError(f"--layer-channels {args.layer_channels}: only --arch mobilenet_v1 takes channels per layer; "
                         f"leave it out for --arch {args.arch} (its --width scales every stage).")
    parse_layer_channels(args.layer_channels, args.depth)
    dataset, folder = data_source(args)
    shape = None
    if folder:
        if not args.image_size:
            raise ValueError("--data needs --image-size (square input size the images are resized to)")
        shape = (args.image_size, args.image_size, args.channels)
    x, y, labels = load_source(dataset, folder, "train", shape, limit=args.limit)
    xt, yt, _ = load_source(dataset, folder, "test", shape, limit=args.limit)
    model = build_model(args, x.shape[1:], len(labels), labels)
    cfg = train_config(args, len(x))
    result = train(model, x, y, cfg, verbose=0 if args.json else "auto")
    model.save(args.out)
    accs = evaluate(model, xt, yt)
    if args.json:
        print_json({"model": args.out, "train_seconds": result["train_seconds"], "top1": accs})
    else:
        print(f"saved {args.out} ({result['train_seconds']:.0f} s); test top-1 on {len(xt)} images:")
        print_table(["switch", "devices", "top-1 %"],
                    [[s, len(model.switches[i]), f"{100 * accs[s]:.2f}"] for i, s in enumerate(accs)])
    return 0
