"""End to end on a real, briefly trained ParaDiS model: convert, run, qcheck, plan (CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paradis_tf.bundle import SegmentRef, load
from paradis_tf.runtime import LocalRunner

# Every test here uses the module's trained model (about a minute to train and convert).
pytestmark = pytest.mark.slow


def _float_reference(model, plan, x):
    if plan.kind == "sequential":
        h = x
        for piece in model.sequential_models(len(plan.devices)):
            h = piece.predict(h, verbose=0)
        return h
    return model.switch_model(plan.name).predict(x, verbose=0)


def test_convert_cli_writes_every_switch_with_sync_segments_and_the_sequential_plan(real_bundle):
    b = load(real_bundle)
    assert list(b.plans) == ["1x1.0", "2x0.5", "4x0.25", "seq-2"]
    assert b.model.labels[1] == "Trouser" and b.model.name == "mobilenet_v1"
    plan = b.plan("4x0.25")
    assert [len(d.segments) for d in plan.devices] == [2, 2, 2, 2]  # one sync layer: two segments per device
    assert [i.source for i in plan.devices[3].segments[1].inputs] == [SegmentRef(k, 0) for k in range(4)]
    assert all(s.float_file and s.tflm.arena_bytes > 0 for d in plan.devices for s in d.segments)
    assert [len(d.segments) for d in b.plan("seq-2").devices] == [1, 1]


def test_float_partitions_fused_equal_the_keras_switch_within_1e4(trained, real_bundle):
    _, model, xt, _ = trained
    x = xt[:200].astype(np.float32) / 255.0
    b = load(real_bundle)
    for plan in b.plans.values():
        got = LocalRunner(b, plan.name, precision="float", num_threads=1).predict(x)
        np.testing.assert_allclose(got, _float_reference(model, plan, x), atol=1e-4, rtol=0, err_msg=plan.name)


@pytest.mark.parametrize("backend", ["litert", "tflm"])
def test_int8_partitions_fused_agree_with_float_on_99_percent_of_top1(trained, real_bundle, backend):
    _, model, xt, yt = trained
    x = xt.astype(np.float32) / 255.0
    b = load(real_bundle)
    for plan in b.plans.values():
        ref = _float_reference(model, plan, x)
        got = LocalRunner(b, plan.name, backend, num_threads=1).predict(x)
        agreement = float((got.argmax(1) == ref.argmax(1)).mean())
        assert agreement >= 0.99, (plan.name, backend, agreement)
        assert abs(float((got.argmax(1) == yt).mean()) - float((ref.argmax(1) == yt).mean())) <= 0.01


def test_qcheck_cli_reports_records_and_fails_on_a_drop(cli, trained, real_bundle, tmp_path):
    import shutil

    path, _, _, _ = trained
    bundle = tmp_path / "bundle"
    shutil.copytree(real_bundle, bundle)
    code, out, err = cli("qcheck", bundle, "--model", path, "--dataset", "fashion_mnist", "--samples", "300",
                         "--tflm", "4x0.25", "--threads", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["pass"] and report["samples"] == 300
    rows = {p["plan"]: p for p in report["plans"]}
    assert set(rows) == {"1x1.0", "2x0.5", "4x0.25", "seq-2"}
    assert [c["backend"] for c in rows["4x0.25"]["int8"]] == ["litert", "tflm"]
    assert [c["backend"] for c in rows["2x0.5"]["int8"]] == ["litert"]
    for p in rows.values():
        for c in p["int8"]:
            assert c["drop_points"] <= 1.0 and c["agreement"] >= 0.95
    acc = load(bundle).plan("4x0.25").accuracy
    assert acc["samples"] == 300 and acc["dataset"] == "fashion_mnist"
    assert acc["float"] == rows["4x0.25"]["float_top1"] and acc["int8_tflm"] == rows["4x0.25"]["int8"][1]["top1"]
    load(bundle)  # recording keeps the bundle valid

    code, out, err = cli("qcheck", bundle, "--model", path, "--dataset", "fashion_mnist", "--samples", "100",
                         "--tflm", "none", "--max-drop", "-100", "--no-record", "--threads", "1")
    assert code == 1
    assert "paradis: qcheck: 1x1.0 int8 (litert) top-1 is" in err and "(--max-drop -100)" in err
    assert "float top1" in out and "NO" in out


def test_plan_cli_is_deterministic_and_counts_sync_exchanges(cli, real_bundle):
    code, out, _ = cli("plan", real_bundle, "--json")
    assert code == 0
    report = json.loads(out)
    plans = {p["plan"]: p for p in report["plans"]}
    b = load(real_bundle)
    fmap = b.plan("4x0.25").devices[0].segments[0].output.nbytes
    assert plans["4x0.25"]["exchange_bytes"] == 4 * 3 * fmap  # every device sends its slice to the 3 others
    assert plans["4x0.25"]["input_broadcast_bytes"] == 4 * 28 * 28
    assert plans["4x0.25"]["output_bytes"] == 4 * 10
    assert plans["1x1.0"]["exchange_bytes"] == 0
    assert plans["seq-2"]["exchange_bytes"] == b.plan("seq-2").devices[0].segments[0].output.nbytes
    assert all(d["arena_bytes"] > 0 for d in plans["4x0.25"]["devices"])
    code, text, _ = cli("plan", real_bundle)
    assert code == 0 and "plan 4x0.25 (paradis, 4 devices)" in text
    assert cli("plan", real_bundle)[1] == text


def test_convert_cli_refusals(cli, trained, tmp_path):
    import keras

    path, _, _, _ = trained
    code, _, err = cli("convert", tmp_path / "missing.keras", "--out", tmp_path / "b", "--dataset", "fashion_mnist")
    assert code == 1 and "missing.keras: no such model file" in err
    x = keras.Input((28, 28, 1))
    keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(x))).save(tmp_path / "plain.keras")
    code, _, err = cli("convert", tmp_path / "plain.keras", "--out", tmp_path / "b", "--dataset", "fashion_mnist")
    assert code == 1 and "plain.keras is a Functional, not a ParaDiS model" in err
    code, _, err = cli("convert", path, "--out", tmp_path / "b", "--dataset", "fashion_mnist", "--switches", "3x0.25")
    assert code == 1 and "unknown switch '3x0.25'" in err
    code, _, err = cli("convert", path, "--out", tmp_path / "b")
    assert code == 1 and "no images: give --dataset fashion_mnist or --data DIR" in err
    assert not (tmp_path / "b").exists()
