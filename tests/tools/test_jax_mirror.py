"""tools/jax_mirror.py computes what paradis_tf computes: the same logits for
the same weights (training and inference BN), the same loss; and its plans,
summaries and vmapped training behave."""

import json
from pathlib import Path

import numpy as np
import pytest

from paradis_tf.switches import parse_switches
from paradis_tf.training.distillation import teacher_indices

ROOT = Path(__file__).resolve().parents[2]
SIX = ["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25"]


@pytest.fixture(scope="module")
def mirror(tool):
    return tool("jax_mirror")


@pytest.fixture(scope="module")
def paradis_model():
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, SIX, width=0.25, depth=3, teacher="nested", label_mix=0.3,
                         switch_weights={"1x0.25": 2.0, "2x0.5": 0.5})
    rng = np.random.default_rng(0)
    # Private BN parameters and statistics differ per switch, so a mirror that
    # read another switch's would disagree.
    for bn in model.body.bn_layers():
        for group, low in ((bn.gammas, 0.5), (bn.betas, -0.5), (bn.moving_means, -0.5), (bn.moving_vars, 0.5)):
            for v in group:
                v.assign(rng.uniform(low, low + 1.0, v.shape).astype(np.float32))
    model.body.head.bias.assign(rng.normal(0, 0.1, 10).astype(np.float32))
    return model


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.slow
def test_forward_matches_paradis_model(mirror, paradis_model, training):
    import jax.numpy as jnp
    import tensorflow as tf

    texts, layers, params, stats = mirror.params_from_paradis(paradis_model)
    assert texts == SIX
    forward = mirror.make_forward(parse_switches(texts), layers)
    x = np.random.default_rng(1).uniform(0, 1, (16, 28, 28, 1)).astype(np.float32)
    for i, s in enumerate(SIX):
        want = paradis_model.forward(s, tf.constant(x), training=training).numpy()
        got, _ = forward(params, jnp.asarray(x), i, None if training else stats[i])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4, err_msg=f"switch {s}")


def test_forward_refuses_sync_layers(mirror):
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, ["1x1.0", "2x0.5"], width=0.25, depth=2, sync_layers=[1])
    with pytest.raises(ValueError, match="sync_layers=\\[1\\]"):
        mirror.params_from_paradis(model)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_loss_matches_compute_loss(mirror, paradis_model, temperature):
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    logits = [rng.normal(0, 2, (32, 10)).astype(np.float32) for _ in SIX]
    labels = rng.integers(0, 10, 32)
    paradis_model.temperature = temperature
    try:
        want = float(paradis_model.compute_loss(y=labels, y_pred=logits))
    finally:
        paradis_model.temperature = 1.0
    switches = parse_switches(SIX)
    weights = [paradis_model.switch_weights.get(t, 1.0) for t in SIX]
    got = float(mirror.distill_loss([jnp.asarray(l) for l in logits], jnp.asarray(labels),
                                    teacher_indices(switches, "nested"), 0.3, weights, temperature))
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizer_steps_match_keras(mirror, optimizer):
    """Three steps of the mirror's update on a kernel (decayed) and a bias (not
    decayed) equal Keras's Adam, AdamW and Nesterov SGD on the same gradients."""
    import jax.numpy as jnp
    import keras

    lr, wd = 0.05, (0.0 if optimizer == "adam" else 0.2)
    rng = np.random.default_rng(1)
    start = {"kernel": rng.normal(size=(3, 4)).astype(np.float32), "bias": rng.normal(size=(4,)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()} for _ in range(3)]
    if optimizer == "sgd":
        ref = keras.optimizers.SGD(lr, momentum=0.8, nesterov=True, weight_decay=wd)
        update = lambda *a: mirror.sgd_update(*a, momentum=0.8)  # noqa: E731
    else:
        ref = keras.optimizers.AdamW(lr, weight_decay=wd) if wd else keras.optimizers.Adam(lr)
        update = mirror.adam_update
    if wd:
        ref.exclude_from_weight_decay(var_names=["bias"])
    variables = {k: keras.Variable(v, name=k) for k, v in start.items()}
    p = {k: jnp.asarray(v) for k, v in start.items()}
    zeros = {k: jnp.zeros_like(v) for k, v in p.items()}
    o = {"m": zeros, "v": zeros, "t": jnp.float32(0.0)}
    for g in grads:
        ref.apply_gradients([(g[k], variables[k]) for k in start])
        p, o = update(p, o, {k: jnp.asarray(v) for k, v in g.items()}, lr, wd, {"kernel": True, "bias": False})
    for k in start:
        np.testing.assert_allclose(np.asarray(p[k]), keras.ops.convert_to_numpy(variables[k]), rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    assert not np.allclose(np.asarray(p["kernel"]), start["kernel"])


@pytest.mark.slow
def test_training_runs_members_independently(mirror):
    """Two members with the same seed and recipe train to the same weights;
    a third with another seed does not (each member draws its own batches)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)
    y = (x.reshape(512, -1).mean(1) > 127).astype(np.int32)  # a learnable label
    group = {"name": "tiny", "switches": ["2x0.5"], "width": 0.25, "depth": 1, "epochs": 2,
             "members": [{"seed": 0}, {"seed": 0}, {"seed": 5}]}
    rows = mirror.run_group(group, (x, y, x[:200], y[:200]), deadline=float("inf"), log=lambda m: None)
    top = [r["top1"]["2x0.5"] for r in rows]
    loss = [r["final_loss"] for r in rows]
    assert np.isfinite(loss).all()
    assert top[0] == top[1] and loss[0] == loss[1]
    assert loss[2] != loss[0]
    assert rows[0]["optimizer"] == "adam" and "momentum" not in rows[0]
    sgd = mirror.run_group(dict(group, optimizer="sgd", momentum=0.5, members=[{"seed": 0, "lr": 0.05}]),
                           (x, y, x[:200], y[:200]), deadline=float("inf"), log=lambda m: None)
    assert sgd[0]["optimizer"] == "sgd" and sgd[0]["momentum"] == 0.5
    assert np.isfinite(sgd[0]["final_loss"]) and sgd[0]["final_loss"] != loss[0]
    assert rows[0]["translate"] == "image"  # a plan without the key crops per image, as before it existed
    batch = mirror.run_group(dict(group, translate="batch", members=[{"seed": 0}]),
                             (x, y, x[:200], y[:200]), deadline=float("inf"), log=lambda m: None)
    assert batch[0]["translate"] == "batch" and batch[0]["final_loss"] != loss[0]  # other crops, other weights


def test_summary_gaps_and_targets(mirror):
    def row(switches, top1, seed, **member):
        return {"group": "g", "member": {"seed": seed, **member}, "teacher": "nested", "width": 0.5, "depth": 7,
                "epochs": 20, "top1": dict(zip(switches, top1))}

    rows = [row(["1x1.0", "4x0.25", "1x0.25"], [0.93, 0.915, 0.90], 0, label_mix=0.5),
            row(["1x1.0", "4x0.25", "1x0.25"], [0.932, 0.913, 0.90], 1, label_mix=0.5),
            row(["1x1.0"], [0.935], 0), row(["4x0.25"], [0.92], 0), row(["1x0.25"], [0.89], 0),
            row(["1x1.0", "1x0.5", "1x0.25"], [0.93, 0.91, 0.898], 0)]
    text = mirror.summary(json.loads(json.dumps(rows)))
    assert "| 1x1.0 | 93.10 +- 0.14 (2) | 93.50 +- nan (1) | -0.40 | 93.00 (1) |" in text
    assert "within 0.3 of individual: 1 of 3 (1x0.25)" in text
    assert "4x0.25 over slimmable 1x0.25: +1.60" in text
    assert "1x1.0 >= 93.0: 93.10" in text


@pytest.mark.parametrize("name", ["jax_mirror_e20_plan.json", "jax_mirror_next_plan.json"])
def test_committed_plans_are_valid(mirror, name):
    mirror.check_plan(json.loads((ROOT / "docs/benchmarks" / name).read_text()))


@pytest.mark.parametrize("change, message", [
    ({"switches": ["3x0.5"]}, "Invalid switch '3x0.5'"),
    ({"switches": ["1x1.0", "two"]}, "Cannot parse switch 'two'"),
    ({"teacher": "best"}, "teacher='best'"),
    ({"depth": 14}, "depth=14"),
    ({"members": []}, "has no members"),
    ({"members": [{"seed": 0, "lr_peak": 1}]}, "unknown keys \\['lr_peak'\\]"),
    ({"members": [{"seed": 0, "switch_weights": {"1x0.5": 2}}]}, "switch_weights names \\['1x0.5'\\]"),
    ({"members": [{"seed": 0, "temperature": 0}]}, "temperature=0"),
    ({"members": [{"seed": 0, "temperature": "hot"}]}, "temperature='hot'"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
    ({"optimizer": "sgd", "momentum": 1}, "momentum=1"),
    ({"optimizer": "sgd", "momentum": "0.9"}, "momentum='0.9'"),
    ({"translate": "pixel"}, "translate='pixel'"),
])
def test_plan_errors_name_the_group_and_value(mirror, change, message):
    group = {"name": "g1", "switches": ["1x1.0", "2x0.5"], "teacher": "nested", "width": 0.5, "depth": 7,
             "epochs": 2, "members": [{"seed": 0}]}
    group.update(change)
    with pytest.raises(ValueError, match=f"Plan group 'g1'.*{message}|{message}.*"):
        mirror.check_plan([group])


def test_command_line_refuses_a_bad_plan_before_loading_anything(mirror, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"name": "g", "switches": ["1x1.0"], "width": 0.5, "depth": 7, "epochs": 1,
                                 "members": [{"seed": 0, "lr_peak": 1}]}]))
    with pytest.raises(SystemExit, match="--plan .*plan.json: Plan group 'g'"):
        mirror.main(["--plan", str(plan), "--out", str(tmp_path / "r.jsonl"), "--data", str(tmp_path)])
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"name": "g", "switches": ["1x1.0"], "width": 0.5, "depth": 7, "epochs": 1,
                                 "members": [{"seed": 0}]}]))
    with pytest.raises(SystemExit, match="--data .*: no Fashion-MNIST IDX files"):
        mirror.main(["--plan", str(good), "--out", str(tmp_path / "r.jsonl"), "--data", str(tmp_path)])


def test_summary_keeps_precisions_apart(mirror):
    base = {"group": "g", "teacher": "nested", "width": 0.5, "depth": 7, "epochs": 20}
    rows = [dict(base, member={"seed": 0}, top1={"1x1.0": 0.92, "2x0.5": 0.91}),
            dict(base, member={"seed": 1}, top1={"1x1.0": 0.90, "2x0.5": 0.89}, precision="highest"),
            dict(base, member={"seed": 0}, top1={"1x1.0": 0.93})]
    text = mirror.summary(rows)
    assert text.count("\nParaDiS width") == 2
    assert "precision default" in text and "precision highest" in text
    assert "| 1x1.0 | 92.00 +- nan (1) | 93.00 +- nan (1) | -1.00 | - |" in text
    assert "| 1x1.0 | 90.00 +- nan (1) | - | - | - |" in text


def test_summary_keeps_crops_per_batch_and_per_image_apart(mirror):
    """A row without "translate" (every run before session 13) cropped per image."""
    base = {"group": "g", "teacher": "nested", "width": 0.5, "depth": 7, "epochs": 20}
    rows = [dict(base, member={"seed": 0}, top1={"1x1.0": 0.92, "2x0.5": 0.91}),
            dict(base, member={"seed": 1}, top1={"1x1.0": 0.90, "2x0.5": 0.89}, translate="image"),
            dict(base, member={"seed": 0}, top1={"1x1.0": 0.93, "2x0.5": 0.92}, translate="batch")]
    text = mirror.summary(rows)
    assert text.count("\nParaDiS width") == 2
    assert "crop per image" in text and "crop per batch" in text
    assert "| 1x1.0 | 91.00 +- 1.41 (2) | - | - | - |" in text


def test_summary_keeps_optimizers_apart(mirror):
    base = {"group": "g", "teacher": "nested", "width": 0.5, "depth": 7, "epochs": 20}
    rows = [dict(base, member={"seed": 0}, top1={"1x1.0": 0.92, "2x0.5": 0.91}),
            dict(base, member={"seed": 0}, optimizer="sgd", momentum=0.9, top1={"1x1.0": 0.93, "2x0.5": 0.92}),
            dict(base, member={"seed": 0}, optimizer="sgd", momentum=0.9, top1={"1x1.0": 0.925}),
            dict(base, member={"seed": 0}, top1={"1x1.0": 0.91})]
    text = mirror.summary(rows)
    assert "20 epochs, Adam, lr 0.002" in text and "20 epochs, SGD (Nesterov 0.9), lr 0.002" in text
    assert "| 1x1.0 | 93.00 +- nan (1) | 92.50 +- nan (1) | +0.50 | - |" in text
    assert "| 1x1.0 | 92.00 +- nan (1) | 91.00 +- nan (1) | +1.00 | - |" in text
