"""A JAX mirror of the accuracy benchmark's recipe, for sweeps on an accelerator.

Not the benchmark of record: `tools/bench_accuracy.py` (TensorFlow, 2 CPU
cores) is. This script re-implements the same network and recipe in plain JAX
so that many seeds and recipe variants can be trained side by side on a GPU
(one vmapped program per model structure), to find which variants are worth
a CPU run of the real benchmark. The switch rules (parsing, channel ranges,
teachers) are paradis_tf's own (`paradis_tf.switches` and
`paradis_tf.training.distillation`, pure Python, so the checkout needs no
TensorFlow there); the rest is mirrored from paradis_tf:

- MobileNet v1 (`models/mobilenet.py`): stem 3x3 conv (stride 1 at 28x28),
  ``depth`` separable blocks, global average pool, classifier; channels
  rounded up to the switches' divisor; he_normal convolution kernels
  (truncated normal, Keras fans), glorot_uniform classifier, zero bias.
- Packed execution (`models/interpret.py`): a switch uses the leading
  channels of each layer; a pointwise kernel is multiplied by the switch's
  block-diagonal mask; switchable BN keeps private gamma/beta per switch.
- Loss (`ParaDiSModel.compute_loss`): the widest switch learns from labels,
  every other switch from its teacher's detached softmax (``widest`` or
  ``nested`` rule) at a distillation ``temperature``, ``label_mix`` of the
  label loss mixed in, per-switch weights.
- Recipe (`training/recipe.py`): Adam (Keras defaults) or AdamW on kernels,
  or SGD with Nesterov momentum (group keys ``"optimizer": "sgd"``,
  ``"momentum"``; the same decoupled decay), cosine decay after a
  0.5-epoch linear warm-up, batch 128, random flip and reflect-pad-2 crop,
  BN statistics re-estimated per switch on 20 batches. The crop takes one
  offset per batch as paradis_tf's pipeline does (group key ``"translate":
  "batch"``) or one per image (``"image"``, the default when a plan says
  nothing: every run recorded before session 13 cropped per image, while
  TensorFlow cropped per batch).

Usage (on the accelerator machine):
    python tools/jax_mirror.py --data DIR --plan PLAN.json --out RESULTS.jsonl --deadline SECONDS
PLAN.json: a list of groups, each ``{"name", "switches": [...], "teacher",
"optimizer", "momentum", "translate", "width", "depth", "epochs", "members": [{"seed", "lr", "label_mix",
"weight_decay", "temperature", "switch_weights": {...}}, ...]}``. The members of a group
train side by side in one vmapped program. Fashion-MNIST (28x28x1 IDX files)
only; runs wherever JAX runs, but on a CPU the vmapped grouped convolutions
are far slower than paradis_tf itself.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout (the accelerator machine has no paradis_tf installed)
    sys.path.insert(0, str(ROOT))

from paradis_tf.data.pipeline import TRANSLATIONS  # noqa: E402
from paradis_tf.switches import Switch, channel_divisor, parse_switches  # noqa: E402
from paradis_tf.training.distillation import check_temperature, teacher_indices  # noqa: E402
from paradis_tf.training.recipe import OPTIMIZERS, optimizer_name  # noqa: E402

BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


# -- data ------------------------------------------------------------------
def load_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data: Path, limit=None):
    x = load_idx(data / "train-images-idx3-ubyte.gz")[..., None]
    y = load_idx(data / "train-labels-idx1-ubyte.gz").astype(np.int32)
    xt = load_idx(data / "t10k-images-idx3-ubyte.gz")[..., None]
    yt = load_idx(data / "t10k-labels-idx1-ubyte.gz").astype(np.int32)
    if limit:
        x, y = x[:limit], y[:limit]
    return x, y, xt, yt


# -- the network -----------------------------------------------------------
def build_spec(switch_texts, width, depth):
    sw = parse_switches(switch_texts)
    d = channel_divisor(sw)

    def channels(c):
        return max(d, int(-(-round(c) // d) * d))

    c = channels(32 * width)
    layers = [("stem", 1, c, 1)]
    for i, (f, stride) in enumerate(BLOCKS[:depth]):
        out = channels(f * width)
        layers.append(("block", c, out, stride))
        c = out
    return sw, layers, c


def init_params(key, layers, head_in, n_switches, classes=10):
    import jax
    import jax.numpy as jnp

    def he(key, shape, fan_in):
        std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # Keras truncated-normal correction
        return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)

    keys = jax.random.split(key, 2 * len(layers) + 1)
    p = {"layers": []}
    for i, (kind, cin, cout, _) in enumerate(layers):
        bn = lambda ch: {"g": jnp.ones((n_switches, ch)), "b": jnp.zeros((n_switches, ch))}
        if kind == "stem":
            p["layers"].append({"k": he(keys[2 * i], (3, 3, cin, cout), 9 * cin), "bn": bn(cout)})
        else:
            p["layers"].append({
                "dw": he(keys[2 * i], (3, 3, 1, cin), 9 * cin),  # Keras depthwise fans: 9 * channels
                "dw_bn": bn(cin),
                "pw": he(keys[2 * i + 1], (cin, cout), cin),
                "pw_bn": bn(cout),
            })
    lim = math.sqrt(6.0 / (head_in + classes))
    p["head"] = {"k": jax.random.uniform(keys[-1], (head_in, classes), jnp.float32, -lim, lim),
                 "b": jnp.zeros((classes,))}
    return p


def make_forward(sw, layers):
    import jax.numpy as jnp
    from jax import lax

    masks = []
    for ws in sw:
        m = []
        for kind, cin, cout, _ in layers:
            if kind == "stem":
                m.append(None)
                continue
            ri, ro = ws.channel_ranges(cin), ws.channel_ranges(cout)
            mk = np.zeros((ri[-1][1], ro[-1][1]), np.float32)
            for (a, b), (c, d) in zip(ri, ro):
                mk[a:b, c:d] = 1.0
            m.append(mk)
        masks.append(m)

    def bn(x, g, b, stats, collect):
        if stats is None:
            mean = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.var(x, axis=(0, 1, 2))
            collect.append((mean, var))
        else:
            mean, var = stats.pop(0)
        return (x - mean) * lax.rsqrt(var + 1e-3) * g + b

    def relu6(x):
        return jnp.clip(x, 0.0, 6.0)

    def forward(p, x, si, stats=None):
        """Logits of switch ``si`` on float images; with ``stats`` None,
        BN uses batch statistics and they are returned too."""
        ws = sw[si]
        collect = []
        st = None if stats is None else list(stats)
        for li, (kind, cin, cout, stride) in enumerate(layers):
            lp = p["layers"][li]
            uo = ws.used_channels(cout)
            if kind == "stem":
                x = lax.conv_general_dilated(x, lp["k"][..., :uo], (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
                x = relu6(bn(x, lp["bn"]["g"][si, :uo], lp["bn"]["b"][si, :uo], st, collect))
                continue
            ui = ws.used_channels(cin)
            x = lax.conv_general_dilated(x, lp["dw"][..., :ui], (stride, stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=ui)
            x = relu6(bn(x, lp["dw_bn"]["g"][si, :ui], lp["dw_bn"]["b"][si, :ui], st, collect))
            k = lp["pw"][:ui, :uo] * masks[si][li]
            x = jnp.einsum("bhwc,cd->bhwd", x, k)
            x = relu6(bn(x, lp["pw_bn"]["g"][si, :uo], lp["pw_bn"]["b"][si, :uo], st, collect))
        u = x.shape[-1]
        logits = jnp.mean(x, axis=(1, 2)) @ p["head"]["k"][:u] + p["head"]["b"]
        return logits, collect

    return forward


def distill_loss(logits, labels, teachers, label_mix, weights, temperature=1.0):
    """`ParaDiSModel.compute_loss`: cross-entropy of the switch without a
    teacher, plus for every other switch ``(1 - label_mix) * KD + label_mix *
    CE`` against its teacher's detached softmax, each times its weight; KD at
    ``temperature`` T is ``T**2 * CE(softmax(teacher / T), student / T)``."""
    import jax
    import jax.numpy as jnp

    logp = [jax.nn.log_softmax(l) for l in logits]
    ce = [-jnp.mean(jnp.take_along_axis(lp, labels[:, None], 1)) for lp in logp]
    total = 0.0
    for i, t in enumerate(teachers):
        if t is None:
            total = total + weights[i] * ce[i]
            continue
        soft = jax.lax.stop_gradient(jax.nn.softmax(logits[t] / temperature))
        kd = -jnp.mean(jnp.sum(soft * jax.nn.log_softmax(logits[i] / temperature), axis=-1)) * temperature ** 2
        total = total + weights[i] * ((1.0 - label_mix) * kd + label_mix * ce[i])
    return total


def params_from_paradis(model):
    """The mirror's spec and parameters (NumPy) of a paradis_tf MobileNet v1
    ``ParaDiSModel``, with its BN moving statistics as per-switch ``stats``
    for `make_forward`: ``(switch texts, layers, params, stats)``."""
    body = model.body
    if getattr(body, "stem_stride", 1) != 1 or body.sync_layers or body.head.log_scales is not None:
        raise ValueError("The mirror covers MobileNet v1 with stem stride 1, no sync layers and no logit "
                         f"scales. Received stem_stride={body.stem_stride}, sync_layers={body.sync_layers}, "
                         f"logit_scale={body.head.log_scales is not None}.")
    texts = [str(s) for s in model.switches]
    sw, layers, head_in = build_spec(texts, body.width, body.depth)

    def bn(layer):
        return {"g": np.stack([np.asarray(v) for v in layer.gammas]),
                "b": np.stack([np.asarray(v) for v in layer.betas])}

    params = {"layers": [{"k": np.asarray(body.stem_conv.kernel), "bn": bn(body.stem_bn)}]}
    for dw, dw_bn, pw, pw_bn in body.blocks:
        params["layers"].append({
            "dw": np.transpose(np.asarray(dw.kernel), (0, 1, 3, 2)),
            "dw_bn": bn(dw_bn),
            "pw": np.asarray(pw.kernel)[0, 0],
            "pw_bn": bn(pw_bn),
        })
    params["head"] = {"k": np.asarray(body.head.kernel), "b": np.asarray(body.head.bias)}
    # body.bn_layers() lists the BN layers in the order forward() meets them.
    stats = [[(np.asarray(bn.moving_means[i])[:ws.used_channels(bn.channels)],
               np.asarray(bn.moving_vars[i])[:ws.used_channels(bn.channels)]) for bn in body.bn_layers()]
             for i, ws in enumerate(sw)]
    return texts, layers, params, stats


def is_kernel(path) -> bool:
    names = [getattr(k, "key", None) for k in path]
    return names[-1] in ("k", "dw", "pw")


GROUP_KEYS = ("name", "switches", "width", "depth", "epochs", "members")
MEMBER_KEYS = {"seed", "lr", "label_mix", "weight_decay", "switch_weights", "temperature"}


def check_plan(plan) -> None:
    """Refuses a plan the runner would misread, naming the group and value."""
    if not isinstance(plan, list) or not plan:
        raise ValueError(f"Expected the plan to be a non-empty list of groups. Received {type(plan).__name__}.")
    for g in plan:
        missing = [k for k in GROUP_KEYS if k not in g]
        if missing:
            raise ValueError(f"Plan group {g.get('name', g)!r} lacks {missing}; each group needs {list(GROUP_KEYS)}.")
        name = g["name"]
        try:
            parse_switches(g["switches"])
        except ValueError as e:
            raise ValueError(f"Plan group {name!r}: {e}") from None
        if g.get("optimizer", "adam") not in OPTIMIZERS:
            raise ValueError(f"Plan group {name!r}: optimizer={g['optimizer']!r}; use one of {', '.join(OPTIMIZERS)}.")
        mom = g.get("momentum", 0.9)
        if not isinstance(mom, (int, float)) or isinstance(mom, bool) or not 0 <= mom < 1:
            raise ValueError(f"Plan group {name!r}: momentum={mom!r}; use a number 0 <= momentum < 1 (SGD only).")
        if g.get("translate", "image") not in TRANSLATIONS:
            raise ValueError(f"Plan group {name!r}: translate={g['translate']!r}; use 'batch' (one crop offset per "
                             "batch, as paradis_tf) or 'image' (one per image).")
        if g.get("teacher", "widest") not in ("widest", "nested"):
            raise ValueError(f"Plan group {name!r}: teacher={g['teacher']!r}; use 'widest' or 'nested'.")
        if not g["width"] > 0 or not 1 <= int(g["depth"]) <= len(BLOCKS) or int(g["epochs"]) < 1:
            raise ValueError(f"Plan group {name!r}: width={g['width']!r}, depth={g['depth']!r}, "
                             f"epochs={g['epochs']!r}; need width > 0, 1 <= depth <= {len(BLOCKS)}, epochs >= 1.")
        if not g["members"]:
            raise ValueError(f"Plan group {name!r} has no members; give at least one, e.g. {{\"seed\": 0}}.")
        for m in g["members"]:
            unknown = set(m) - MEMBER_KEYS
            if unknown:
                raise ValueError(f"Plan group {name!r}: member {m} has unknown keys {sorted(unknown)}; "
                                 f"allowed: {sorted(MEMBER_KEYS)}.")
            t = m.get("temperature", 1.0)
            try:
                if not isinstance(t, (int, float)):  # a plan is JSON: "3" is a mistake, not a number
                    raise TypeError(t)
                check_temperature(t)
            except (TypeError, ValueError):
                raise ValueError(f"Plan group {name!r}: member {m} has temperature={m['temperature']!r}; "
                                 "use a finite temperature > 0 (1: plain distillation).") from None
            bad = set(m.get("switch_weights", {})) - set(g["switches"])
            if bad:
                raise ValueError(f"Plan group {name!r}: switch_weights names {sorted(bad)}, not among the "
                                 f"group's switches {g['switches']}.")


# -- optimizers (Keras 3's update rules, `training/recipe.py`) --------------
def adam_update(p, o, grads, lr, wd, decay_mask):
    """One step of Keras Adam (defaults), AdamW's decoupled decay ``w * wd * lr`` first on the kernels.
    ``o``: ``{"m", "v", "t"}`` (moments and step count)."""
    import jax
    import jax.numpy as jnp

    t = o["t"] + 1.0
    m = jax.tree_util.tree_map(lambda m_, g_: m_ + (g_ - m_) * 0.1, o["m"], grads)
    v = jax.tree_util.tree_map(lambda v_, g_: v_ + (g_ * g_ - v_) * 0.001, o["v"], grads)
    alpha = lr * jnp.sqrt(1.0 - 0.999 ** t) / (1.0 - 0.9 ** t)
    p = jax.tree_util.tree_map(
        lambda w, m_, v_, dm: (w - w * wd * lr if dm else w) - alpha * m_ / (jnp.sqrt(v_) + 1e-7),
        p, m, v, decay_mask)
    return p, {"m": m, "v": v, "t": t}


def sgd_update(p, o, grads, lr, wd, decay_mask, momentum=0.9):
    """One step of Keras SGD with Nesterov momentum, the same decoupled decay first on the kernels.
    ``o["m"]`` holds the velocities (``v = momentum * v - lr * g``; ``w += momentum * v - lr * g``)."""
    import jax

    p = jax.tree_util.tree_map(lambda w, dm: w - w * wd * lr if dm else w, p, decay_mask)
    m = jax.tree_util.tree_map(lambda m_, g_: momentum * m_ - lr * g_, o["m"], grads)
    p = jax.tree_util.tree_map(lambda w, m_, g_: w + momentum * m_ - lr * g_, p, m, grads)
    return p, {**o, "m": m, "t": o["t"] + 1.0}


# -- one group -------------------------------------------------------------
def run_group(g, data, deadline, log, grace=0.0):
    import jax
    import jax.numpy as jnp
    from jax import lax

    x, y, xt, yt = data
    sw, layers, head_in = build_spec(g["switches"], g["width"], g["depth"])
    ns = len(sw)
    teachers = teacher_indices(sw, g.get("teacher", "widest"))
    forward = make_forward(sw, layers)
    members = g["members"]
    M = len(members)
    bs = g.get("batch_size", 128)
    steps = len(x) // bs
    epochs = g["epochs"]
    total = epochs * steps
    warm = int(0.5 * steps)
    per_image = g.get("translate", "image") == "image"

    def hp(name, default):
        return jnp.asarray([float(m.get(name, default)) for m in members], jnp.float32)

    lr, mix, wd, temp = hp("lr", 2e-3), hp("label_mix", 0.0), hp("weight_decay", 0.0), hp("temperature", 1.0)
    sweights = jnp.asarray([[float(m.get("switch_weights", {}).get(s, 1.0)) for s in g["switches"]]
                            for m in members], jnp.float32)
    seeds = [int(m.get("seed", 0)) for m in members]

    params = jax.vmap(lambda k: init_params(k, layers, head_in, ns))(
        jnp.stack([jax.random.PRNGKey(s) for s in seeds]))
    optimizer, momentum = g.get("optimizer", "adam"), float(g.get("momentum", 0.9))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    opt = {"m": zeros, "v": zeros, "t": jnp.zeros((M,), jnp.float32)}
    update = adam_update if optimizer == "adam" else functools.partial(sgd_update, momentum=momentum)
    decay_mask = jax.tree_util.tree_map_with_path(lambda pth, _: is_kernel(pth), init_params(
        jax.random.PRNGKey(0), layers, head_in, ns))

    X = jnp.asarray(x)
    Y = jnp.asarray(y)

    def augment(key, imgs):
        kf, kc = jax.random.split(key)
        flip = jax.random.bernoulli(kf, 0.5, (imgs.shape[0],))
        imgs = jnp.where(flip[:, None, None, None], imgs[:, :, ::-1], imgs)
        pad = jnp.pad(imgs, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
        off = jax.random.randint(kc, (imgs.shape[0] if per_image else 1, 2), 0, 5)
        off = jnp.broadcast_to(off, (imgs.shape[0], 2))
        return jax.vmap(lambda im, o: lax.dynamic_slice(im, (o[0], o[1], 0), (28, 28, 1)))(pad, off)

    def loss_fn(p, imgs, labels, mix_m, sw_m, t_m):
        logits = [forward(p, imgs, i)[0] for i in range(ns)]
        return distill_loss(logits, labels, teachers, mix_m, sw_m, t_m)

    def schedule(step, peak):
        s = step.astype(jnp.float32)
        warm_lr = peak * s / max(warm, 1)
        frac = jnp.clip((s - warm) / max(total - warm, 1), 0.0, 1.0)
        return jnp.where(s < warm, warm_lr, peak * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))

    def member_step(p, o, idx, key, step, lr_m, mix_m, wd_m, sw_m, t_m):
        imgs = augment(key, X[idx].astype(jnp.float32) / 255.0)
        loss, grads = jax.value_and_grad(loss_fn)(p, imgs, Y[idx], mix_m, sw_m, t_m)
        p, o = update(p, o, grads, schedule(step, lr_m), wd_m, decay_mask)
        return p, o, loss

    vstep = jax.vmap(member_step, in_axes=(0, 0, 0, 0, None, 0, 0, 0, 0, 0))

    @jax.jit
    def epoch(p, o, idx, keys, start):
        def body(carry, inp):
            p, o = carry
            i, bidx, bkeys = inp
            p, o, loss = vstep(p, o, bidx, bkeys, start + i, lr, mix, wd, sweights, temp)
            return (p, o), loss
        (p, o), losses = lax.scan(body, (p, o), (jnp.arange(steps), idx, keys))
        return p, o, losses.mean(axis=0)

    @jax.jit
    def batch_stats(p, imgs):
        return jax.vmap(lambda pm, im: [forward(pm, im, i)[1] for i in range(ns)])(p, imgs)

    @jax.jit
    def predict(p, stats, imgs):
        def one(pm, st, im):
            return jnp.stack([jnp.argmax(forward(pm, im, i, st[i])[0], -1) for i in range(ns)])
        return jax.vmap(one, in_axes=(0, 0, None))(p, stats, imgs)

    rng = [np.random.default_rng(s) for s in seeds]
    t0 = time.time()
    history = []
    for e in range(epochs):
        if time.time() > deadline + grace:
            log(f"  {g['name']}: deadline reached after {e} epochs; group abandoned")
            return None
        idx = np.stack([r.permutation(len(x))[: steps * bs].reshape(steps, bs) for r in rng], 1)
        keys = jnp.stack([jax.random.split(jax.random.PRNGKey(1000 * s + e), steps) for s in seeds], 1)
        params, opt, loss = epoch(params, opt, jnp.asarray(idx), keys, jnp.int32(e * steps))
        loss = np.asarray(loss)
        history.append(loss.tolist())
        if e in (0, 1):
            log(f"  {g['name']}: epoch {e + 1} done at {time.time() - t0:.1f}s (first includes compile), "
                f"loss {loss.round(3).tolist()}")
    jax.block_until_ready(params)
    train_s = time.time() - t0
    # BN calibration: 20 batches of un-augmented training images per member.
    ncal = min(20, len(x) // bs)
    cal = np.stack([x[r.permutation(len(x))[: ncal * bs]] for r in rng], 0).astype(np.float32) / 255.0
    acc_stats = None
    for b in range(ncal):
        st = batch_stats(params, jnp.asarray(cal[:, b * bs:(b + 1) * bs]))
        acc_stats = st if acc_stats is None else jax.tree_util.tree_map(jnp.add, acc_stats, st)
    stats = jax.tree_util.tree_map(lambda a: a / ncal, acc_stats)
    preds = []
    for b in range(0, len(xt), 1000):
        preds.append(np.asarray(predict(params, stats, jnp.asarray(xt[b:b + 1000].astype(np.float32) / 255.0))))
    preds = np.concatenate(preds, axis=-1)  # (M, ns, N)
    top1 = (preds == yt[None, None, :]).mean(-1)
    out = []
    for mi, m in enumerate(members):
        out.append({"group": g["name"], "member": m, "teacher": g.get("teacher", "widest"), "optimizer": optimizer,
                    **({"momentum": momentum} if optimizer == "sgd" else {}),
                    "translate": "image" if per_image else "batch", "width": g["width"],
                    "depth": g["depth"], "epochs": epochs,
                    "top1": {s: float(top1[mi, i]) for i, s in enumerate(g["switches"])},
                    "final_loss": history[-1][mi]})
    log(f"  {g['name']}: {M} members x {epochs} epochs in {train_s:.1f}s")
    return out


def kind_of(row) -> str:
    sw = list(row["top1"])
    if len(sw) == 1:
        return "individual"
    if all(len(Switch.parse(t)) == 1 for t in sw):
        return "slimmable"
    return "paradis"


def summary(rows: list[dict]) -> str:
    """Mean and sample standard deviation over seeds of every variant, the
    ParaDiS gaps to the individual models and the issue's targets."""
    def recipe(r):
        m = r["member"]
        wd = float(m.get("weight_decay", 0.0))
        return (r["width"], r["depth"], r["epochs"], float(m.get("lr", 2e-3)), wd, r.get("precision", "default"),
                optimizer_name(r.get("optimizer", "adam"), r.get("momentum", 0.9), wd), r.get("translate", "image"))

    base: dict = {}
    variants: dict = {}
    for r in rows:
        kind = kind_of(r)
        if kind == "paradis":
            m = {k: v for k, v in r["member"].items() if k != "seed"}
            key = (recipe(r), r["teacher"], json.dumps(m, sort_keys=True))
            variants.setdefault(key, []).append(r)
        else:
            for s, v in r["top1"].items():
                base.setdefault((recipe(r), kind, s), []).append(100 * v)

    def stat(vals):
        a = np.asarray(vals, float)
        return a.mean(), (a.std(ddof=1) if len(a) > 1 else float("nan")), len(a)

    out = []
    for (rec, teacher, m), rs in variants.items():
        w, d, e, lr, wd, precision, opt, translate = rec
        out.append(f"\nParaDiS width {w} depth {d}, {e} epochs, {opt}, lr {lr:g}, weight decay {wd:g}, "
                   f"precision {precision}, crop per {translate}, teacher {teacher}, {m}")
        out.append("| switch | ParaDiS mean +- sd (n) | individual mean +- sd (n) | gap | slimmable mean (n) |")
        out.append("|---|---|---|---|---|")
        mean = {}
        for s in rs[0]["top1"]:
            pm, psd, pn = stat([100 * r["top1"][s] for r in rs])
            mean[s] = pm
            ind = base.get((rec, "individual", s))
            slim = base.get((rec, "slimmable", s))
            ind_txt, gap = "-", "-"
            if ind:
                im, isd, inn = stat(ind)
                ind_txt, gap = f"{im:.2f} +- {isd:.2f} ({inn})", f"{pm - im:+.2f}"
            slim_txt = f"{stat(slim)[0]:.2f} ({len(slim)})" if slim else "-"
            out.append(f"| {s} | {pm:.2f} +- {psd:.2f} ({pn}) | {ind_txt} | {gap} | {slim_txt} |")
        ind_ok = [s for s in mean if base.get((rec, "individual", s)) and mean[s] >= stat(base[(rec, "individual", s)])[0] - 0.3]
        with_ind = [s for s in mean if base.get((rec, "individual", s))]
        out.append(f"- 1x1.0 >= 93.0: {mean.get('1x1.0', float('nan')):.2f}")
        out.append(f"- within 0.3 of individual: {len(ind_ok)} of {len(with_ind)} ({', '.join(ind_ok) or 'none'})")
        slim25 = base.get((rec, "slimmable", "1x0.25"))
        if slim25 and "4x0.25" in mean:
            out.append(f"- 4x0.25 over slimmable 1x0.25: {mean['4x0.25'] - stat(slim25)[0]:+.2f} (target +1.5)")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--plan", help="groups to train (JSON)")
    ap.add_argument("--out", help="results, one JSON line per trained model (appended)")
    ap.add_argument("--summary", nargs="+", metavar="JSONL", help="print the means over seeds of result files and exit")
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds from start after which no group starts")
    ap.add_argument("--grace", type=float, default=0.0, help="seconds past the deadline a started group may run")
    ap.add_argument("--precision", choices=["default", "high", "highest"], default="default",
                    help="JAX matmul/convolution precision: 'default' lets a GPU use TF32 (the recorded runs), "
                         "'highest' computes in full float32 as TensorFlow on a CPU does (%(default)s)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    if args.summary:
        rows = [json.loads(line) for path in args.summary for line in Path(path).read_text().splitlines() if line.strip()]
        print(summary(rows))
        return 0
    if not args.plan or not args.out:
        ap.error("--plan and --out are required to train (or pass --summary)")
    start = time.time()
    deadline = start + args.deadline

    def log(msg):
        print(f"[{time.time() - start:7.1f}s] {msg}", flush=True)

    plan = json.loads(Path(args.plan).read_text())
    try:
        check_plan(plan)
    except ValueError as e:
        raise SystemExit(f"--plan {args.plan}: {e}") from None
    if not (Path(args.data) / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"--data {args.data}: no Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) there; "
                         "install Debian's dataset-fashion-mnist or pass the folder that holds them.")
    import jax
    jax.config.update("jax_default_matmul_precision", args.precision)
    log(f"jax {jax.__version__} devices {jax.devices()} precision {args.precision}")
    data = load(Path(args.data), args.limit)
    for g in plan:
        if time.time() > deadline:
            log(f"skip {g['name']}: deadline")
            continue
        log(f"group {g['name']}: {g['switches']} teacher={g.get('teacher', 'widest')} width={g['width']} "
            f"depth={g['depth']} epochs={g['epochs']} members={len(g['members'])}")
        rows = run_group(g, data, deadline, log, args.grace)
        if rows:
            with open(args.out, "a") as f:
                for r in rows:
                    r["precision"] = args.precision
                    f.write(json.dumps(r) + "\n")
                    log(f"    {r['member']}: " + " ".join(f"{s}={v:.4f}" for s, v in r["top1"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
