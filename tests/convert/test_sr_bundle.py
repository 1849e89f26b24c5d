"""Super-resolution bundles: conversion of a small WDSR, the manifest, LocalRunner's images, qcheck.

The converter folds the skip branch into device 0, so the sum of the devices'
dequantized outputs plus the fusion bias, then depth-to-space, is the image;
the float partitions reproduce the Keras switch networks to float error, the
int8 ones to int8 error, and the int8 path equals itself exactly.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from paradis_tf.bundle import BundleError, load
from paradis_tf.convert import ConversionError, convert_model, qcheck, sr_qcheck
from paradis_tf.errors import InputError
from paradis_tf.runtime import DeviceProgram, LocalRunner, depth_to_space, fuse
from sr_kit import SR_SWITCHES, SR_TILE, make_sr_model, sr_calibration  # tests/sr_kit.py

pytestmark = pytest.mark.slow  # converts models


def _tiles(n: int = 6, seed: int = 1) -> np.ndarray:
    """Low-resolution tiles of held-out photographs, preprocessed (pixels / 255)."""
    from paradis_tf.convert import sr_calibration_patches
    from paradis_tf.data.sr import load_skimage_images

    raw = sr_calibration_patches(load_skimage_images(["astronaut", "coffee"]), 2, (SR_TILE, SR_TILE), n, seed=seed)
    return raw.astype(np.float32) / np.float32(255)


def test_manifest_states_task_output_tile_and_fusion(sr_bundle, sr_model):
    raw = json.loads((sr_bundle / "manifest.json").read_text())
    model = raw["model"]
    assert model["task"] == "super_resolution"
    assert model["input_shape"] == [SR_TILE, SR_TILE, 3] and model["num_classes"] == 12
    # margin: 3x3 head, 2 blocks of two 3x3 convolutions, 3x3 tail (6), plus the 5x5 skip folded into device 0
    assert model["output"] == {"kind": "image", "scale": 2, "pixel_format": "rgb", "range": [0.0, 1.0], "margin": 8}
    assert list(raw["plans"]) == list(SR_SWITCHES)  # no sequential baselines for an image network
    bundle = load(sr_bundle)
    assert bundle.model.is_image and bundle.model.output.channels == 3
    assert "super-resolution bundle (x2, rgb, 24x24 tiles)" in bundle.model.describe()
    for plan in bundle.plans.values():
        assert plan.fusion.depth_to_space == 2 and plan.fusion.bias == (0.0,) * 12
        assert raw["plans"][plan.name]["fusion"]["depth_to_space"] == 2
        for dev in plan.devices:
            seg = dev.segments[-1]
            assert seg.output.shape == (1, SR_TILE, SR_TILE, 12)
            assert [i.source for i in seg.inputs] == [None] and seg.tflm is not None
    # device 0 also runs the skip convolution: 5x5x3x12 MACs per pixel more than an equal-width device
    two = bundle.plan("2x0.5")
    assert two.devices[0].macs - two.devices[1].macs == SR_TILE * SR_TILE * 5 * 5 * 3 * 12


def test_every_switch_within_int8_error_of_its_float_network(sr_bundle, sr_model):
    x = _tiles()
    for switch in SR_SWITCHES:
        want = np.asarray(sr_model.switch_model(switch)(x, training=False))
        assert want.shape == (len(x), 2 * SR_TILE, 2 * SR_TILE, 3)
        # the float partitions (skip folded into device 0) are the switch network
        np.testing.assert_allclose(LocalRunner(sr_bundle, switch, precision="float").predict(x), want, atol=2e-5)
        for backend in ("litert", "tflm"):
            got = LocalRunner(sr_bundle, switch, backend).predict(x)
            # as images (clipped to the pixel range [0, 1]): device 0's int8 output covers the calibrated range
            # (about -0.02..1.07, steps of 1/235) and clips the deeper ringing below black, which no pixel shows
            err = np.abs(np.clip(got, 0, 1) - np.clip(want, 0, 1))
            # a few output steps at most, a fraction of one on average
            assert err.max() < 0.02 and err.mean() < 0.003, (switch, backend, err.max(), err.mean())
    # TFLM and LiteRT run the same partitions: a few LSB apart at most
    a = LocalRunner(sr_bundle, "2x0.5", "litert").predict(x)
    b = LocalRunner(sr_bundle, "2x0.5", "tflm").predict(x)
    assert np.abs(a - b).max() < 0.02


def test_sum_of_devices_is_the_image_exactly_and_reproducibly(sr_bundle):
    bundle = load(sr_bundle)
    x = _tiles(4, seed=2)
    for switch in ("2x0.5", "0.5+0.25+0.25"):
        plan = bundle.plan(switch)
        parts = []
        for role in range(len(plan.devices)):
            prog = DeviceProgram(bundle, plan, role)
            parts.append(prog.run_segment(0, [x]).dequantize().astype(np.float32))
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        total = total + np.asarray(plan.fusion.bias, np.float32)
        import tensorflow as tf

        want = tf.nn.depth_to_space(total, 2).numpy()
        runner = LocalRunner(bundle, switch)
        got = runner.predict(x)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(runner.predict(x), got)  # reproducible
        np.testing.assert_array_equal(fuse(plan, runner.run(x)), got)
        np.testing.assert_array_equal(depth_to_space(total, 2), want)
        # every device contributes (the skip alone would be bicubic)
        assert all(np.abs(p).max() > 0 for p in parts[1:])


def test_sync_model_takes_the_image_again_in_device_0s_last_segment(tmp_path):
    model = make_sr_model(switches=("2x0.5",), sync_layers=[1], seed=3)
    bundle = convert_model(model, tmp_path / "sync", sr_calibration(samples=16), calib_samples=16,
                           float_variant=True, tflm=False, num_threads=1)
    plan = bundle.plan("2x0.5")
    dev0, dev1 = plan.devices
    assert len(dev0.segments) == 2
    last = dev0.segments[-1]
    assert [i.source for i in last.inputs][-1] is None and len(last.inputs) == 3
    assert last.inputs[-1].tensor == dev0.segments[0].inputs[0].tensor  # one input tensor per role
    assert all(i.source is not None for i in dev1.segments[-1].inputs)
    x = _tiles(3)
    want = np.asarray(model.switch_model("2x0.5")(x, training=False))
    np.testing.assert_allclose(LocalRunner(bundle, "2x0.5", precision="float").predict(x), want, atol=2e-5)
    assert np.abs(np.clip(LocalRunner(bundle, "2x0.5").predict(x), 0, 1) - np.clip(want, 0, 1)).max() < 0.02


def test_y_bundle_upscales_rgb_photographs(tmp_path):
    model = make_sr_model(channels=1, switches=("1x1.0",), seed=4)
    bundle = convert_model(model, tmp_path / "y", sr_calibration(channels=1, samples=16), calib_samples=16,
                           tflm=False, num_threads=1)
    assert bundle.model.output.pixel_format == "y" and bundle.model.input_shape == (SR_TILE, SR_TILE, 1)
    from paradis_tf.data.sr import load_skimage_images, to_y

    photo = load_skimage_images(["coffee"])["coffee"][:40, :50]
    out = LocalRunner(bundle, "1x1.0").upscale(photo)
    assert out.shape == (80, 100, 3) and out.dtype == np.uint8
    # its luma is the network's on the photograph's luma
    y = np.clip(np.round(to_y(photo)), 0, 255).astype(np.float32)[None, ..., None] / 255
    want = np.asarray(model.switch_model("1x1.0")(y, training=False))[0, ..., 0] * 255
    assert np.abs(to_y(out) - want).max() < 4.0


def test_conversion_refusals(sr_model, tmp_path):
    calib = sr_calibration(samples=8)
    with pytest.raises(ConversionError, match=r"16x16 tile keeps nothing.*margin of 8.*at least 17"):
        convert_model(sr_model, tmp_path / "a", sr_calibration(samples=8)[:, :16, :16], tile=16, tflm=False)
    with pytest.raises(ConversionError, match="no sequential baseline plans"):
        convert_model(sr_model, tmp_path / "b", calib, sequential=(2,), tflm=False)
    with pytest.raises(ConversionError, match=r"calibration set has shape \(8, 24, 24, 3\).*\(N, 32, 32, 3\)"):
        convert_model(sr_model, tmp_path / "c", calib, tile=32, tflm=False)
    from paradis_tf.convert import sr_calibration_patches

    with pytest.raises(ConversionError, match=r"calibration image tiny: .* 10x10, smaller than the 24x24 tile"):
        sr_calibration_patches({"tiny": np.zeros((20, 20, 3), np.uint8)}, 2, (24, 24), 4)
    assert not any(tmp_path.iterdir())


def test_tile_is_refused_for_a_classifier(tmp_path):
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, ["1x1.0"], width=0.25, depth=1)
    with pytest.raises(ConversionError, match="tile size is for super-resolution models"):
        convert_model(model, tmp_path / "c", np.zeros((4, 28, 28, 1), np.uint8), tile=16, sequential=(), tflm=False)


def _edited(src, dst, edit) -> None:
    shutil.copytree(src, dst)
    raw = json.loads((dst / "manifest.json").read_text())
    edit(raw)
    (dst / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["model"].__setitem__("task", "segmentation"), r"model.task: unknown task 'segmentation'"),
    (lambda m: m["model"].pop("output"), r"model: missing required field 'output'"),
    (lambda m: m["model"]["output"].__setitem__("pixel_format", "y"), r"pixel_format 'y' means input tiles of shape"),
    (lambda m: m["model"]["output"].__setitem__("scale", 3), r"num_classes must be scale\*\*2 \* channels = 27"),
    (lambda m: m["model"]["output"].__setitem__("range", [1, 0]), r"output.range: expected \[lo, hi\]"),
    (lambda m: m["plans"]["2x0.5"]["fusion"].pop("depth_to_space"), r"fusion.depth_to_space: expected 2"),
    (lambda m: m["model"].__setitem__("task", "classification"), r"a classifier outputs logits and has no 'output'"),
])
def test_manifest_checks_name_the_field(sr_bundle, tmp_path, edit, message):
    _edited(sr_bundle, tmp_path / "b", edit)
    with pytest.raises(BundleError, match=message):
        load(tmp_path / "b", verify=False)


def test_old_classifier_manifest_without_task_loads(tiny_bundle_dir, tmp_path):
    raw = json.loads((tiny_bundle_dir / "manifest.json").read_text())
    assert raw["model"]["task"] == "classification" and "output" not in raw["model"]
    assert all("depth_to_space" not in p["fusion"] for p in raw["plans"].values())
    _edited(tiny_bundle_dir, tmp_path / "old", lambda m: m["model"].pop("task"))
    bundle = load(tmp_path / "old")
    assert bundle.model.task == "classification" and not bundle.model.is_image
    _edited(tiny_bundle_dir, tmp_path / "d2s", lambda m: m["plans"]["2x0.5"]["fusion"].__setitem__("depth_to_space", 2))
    with pytest.raises(BundleError, match="a classifier's fusion outputs logits; found depth_to_space 2"):
        load(tmp_path / "d2s", verify=False)


@pytest.fixture(scope="module")
def photos():
    """Crops of two held-out photographs (uint8 RGB)."""
    from paradis_tf.data.sr import load_skimage_images

    imgs = load_skimage_images(["astronaut", "coffee"])
    return {"astronaut": imgs["astronaut"][100:220, 150:270], "coffee": imgs["coffee"][50:150, 200:340]}


def test_sr_qcheck_reports_psnr_and_ssim(sr_bundle, sr_model, photos):
    from paradis_tf.data.sr import bicubic_upscale, psnr, sr_pairs

    checks = sr_qcheck(sr_bundle, sr_model, photos, plans=["1x1.0", "2x0.5"], tflm_plans=["2x0.5"])
    assert [c.plan for c in checks] == ["1x1.0", "2x0.5"]
    lr, hr = sr_pairs(photos, 2)["coffee"]
    assert checks[0].samples == 2 and checks[0].scale == 2
    bic = np.mean([psnr(h, bicubic_upscale(l, 2), 2) for l, h in sr_pairs(photos, 2).values()])
    assert checks[0].bicubic_psnr == pytest.approx(bic)
    for c in checks:
        assert 20 < c.float_psnr < 50 and 0.5 < c.float_ssim <= 1
        for b in c.int8:
            assert abs(b.drop_db) < 0.3 and b.psnr_vs_float > 40 and b.max_abs_pixel_error < 8
        record = c.accuracy_record("crops")
        assert record["psnr_float"] == c.float_psnr and record["psnr_int8"] == c.int8[0].psnr
        assert "int8" not in record and "float" not in record  # never read as a top-1 by plan selection
    assert [b.backend for b in checks[1].int8] == ["litert", "tflm"]


def test_top1_and_sr_checks_refuse_the_other_task(sr_bundle, sr_model, tiny_bundle_dir, photos):
    with pytest.raises(ConversionError, match=r"is a super-resolution bundle \(x2, rgb, 24x24 tiles\); qcheck\(\) "
                                              r"\(top-1 of a classifier"):
        qcheck(sr_bundle, sr_model, np.zeros((2, 24, 24, 3), np.float32))
    with pytest.raises(ConversionError, match=r"is a classifier \(\d+ classes\); sr_qcheck\(\) \(PSNR and SSIM\) "
                                              r"checks a super-resolution bundle"):
        sr_qcheck(tiny_bundle_dir, sr_model, photos)
    with pytest.raises(InputError, match=r"has 1 channel\(s\)|expected a uint8 image"):
        sr_qcheck(sr_bundle, sr_model, {"gray": photos["coffee"][..., :1].repeat(1, -1)[..., 0]})


def test_cli_convert_and_qcheck_of_a_super_resolution_model(sr_model, cli, tmp_path):
    path = tmp_path / "wdsr.keras"
    sr_model.save(path)
    code, out, err = cli("convert", path, "--out", tmp_path / "b", "--switches", "1x1.0", "--tile", "24",
                         "--calib-samples", "16", "--no-tflm")
    assert code == 0, err
    bundle = load(tmp_path / "b")
    assert bundle.model.is_image and bundle.manifest["conversion"]["calibration"] == "skimage-train"
    code, out, err = cli("plan", tmp_path / "b")
    assert code == 0 and "x2 rgb image out" in out
    code, out, err = cli("qcheck", tmp_path / "b", "--model", path, "--samples", "1", "--tflm", "none")
    assert code == 0, err
    assert "1 photograph(s) of skimage-validation, x2 rgb" in out and "bicubic" in out
    row = next(line for line in out.splitlines() if line.startswith("1x1.0"))
    assert row.split()[-1] == "yes"
    acc = load(tmp_path / "b").plan("1x1.0").accuracy
    assert acc["dataset"] == "skimage-validation" and acc["samples"] == 1 and acc["psnr_int8"] > 20
    # the other task's data set is refused, naming what the bundle is and what to give
    code, out, err = cli("qcheck", tmp_path / "b", "--model", path, "--dataset", "fashion_mnist")
    assert code == 1 and "is a super-resolution bundle (x2, rgb, 24x24 tiles)" in err
    assert "--dataset fashion_mnist is a classifier's top-1 check; give --dataset skimage" in err
    code, out, err = cli("convert", path, "--out", tmp_path / "c", "--dataset", "fashion_mnist")
    assert code == 1 and "this model is a super-resolution network (x2): give --dataset skimage" in err


def test_cli_qcheck_refuses_a_classifier_given_to_the_sr_check(tiny_bundle_dir, cli, tmp_path):
    code, out, err = cli("qcheck", tiny_bundle_dir, "--model", tmp_path / "unused.keras", "--dataset", "skimage")
    assert code == 1
    assert "is a classifier (" in err and "--dataset skimage is the photographs of a super-resolution check" in err
