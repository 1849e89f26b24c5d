"""Training a ParaDiS super-resolution network: L1 with in-place distillation from the widest switch, the
individual baselines, PSNR/SSIM on held-out photographs against bicubic, and `paradis train --task sr`."""

import json

import keras
import numpy as np
import pytest

from paradis_tf.data import sr
from paradis_tf.errors import InputError
from paradis_tf.models import ParaDiSSRModel, wdsr
from paradis_tf.training import SRTrainConfig, evaluate_sr, individual_model, train_sr, upscale_image

TINY = dict(channels=8, blocks=1, expansion=2)


def l1(a, b):
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def randomize(model, seed=0):
    """Kernels of one size everywhere (the output convolution starts at zero, so untrained switches agree)."""
    rng = np.random.default_rng(seed)
    body = model.body
    for layer in [c for block in body.blocks for c in block] + [body.tail]:
        layer.kernel.assign(rng.normal(0, 0.1, tuple(layer.kernel.shape)).astype("float32"))


@pytest.fixture(scope="module")
def brick():
    """A crop of a training photograph (Y): brick texture, where a network has most to add to bicubic."""
    return {"brick": sr.load_skimage_images(["brick"], channels=1)["brick"][:160, :160]}


@pytest.mark.parametrize("label_mix", [0.0, 0.3])
def test_loss_is_l1_to_the_image_for_the_widest_and_distillation_from_it_for_the_others(label_mix, tmp_path):
    # The widest switch is not first; 2x0.5 has twice the say.
    m = wdsr(2, ["1x0.25", "1x1.0", "2x0.5"], input_shape=(8, 8, 1), label_mix=label_mix, loss_border=0,
             switch_weights={"2x0.5": 2.0}, **TINY)
    assert m.widest_index == 1 and m.teachers == [1, None, 1]
    rng = np.random.default_rng(0)
    outs = [rng.random((2, 16, 16, 1)).astype("float32") for _ in range(3)]
    y = rng.random((2, 16, 16, 1)).astype("float32")

    def reference(y, outs):
        term = lambda i: (1 - label_mix) * l1(outs[1], outs[i]) + label_mix * l1(y, outs[i])  # noqa: E731
        return l1(y, outs[1]) + term(0) + 2.0 * term(2)

    assert float(m.compute_loss(y=y, y_pred=outs)) == pytest.approx(reference(y, outs), rel=1e-5)
    # The default leaves out the border the 5x5 skip convolution reads past (2 low-resolution pixels).
    bordered = wdsr(2, ["1x0.25", "1x1.0", "2x0.5"], input_shape=(8, 8, 1), label_mix=label_mix,
                    switch_weights={"2x0.5": 2.0}, **TINY)
    assert bordered.loss_border == 4
    crop = lambda a: a[:, 4:-4, 4:-4]  # noqa: E731
    assert float(bordered.compute_loss(y=y, y_pred=outs)) == pytest.approx(
        reference(crop(y), [crop(o) for o in outs]), rel=1e-5)
    path = tmp_path / "sr.keras"
    m.save(path)
    back = keras.saving.load_model(path)
    assert (back.label_mix, back.loss_border, back.switch_weights) == (label_mix, 0, {"2x0.5": 2.0})


def test_distillation_targets_come_from_the_widest_switch():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    m = wdsr(2, ["1x1.0", "1x0.25"], input_shape=(8, 8, 1), loss_border=0, **TINY)
    randomize(m)
    rng = np.random.default_rng(1)
    x = rng.random((3, 8, 8, 1)).astype("float32")
    y = rng.random((3, 16, 16, 1)).astype("float32")
    out_w, out_s = (np.asarray(o) for o in m(x, training=True))
    assert l1(out_w, out_s) > 1e-3, "the switches must differ for the check to mean anything"
    assert float(m.compute_loss(y=y, y_pred=m(x))) == pytest.approx(l1(y, out_w) + l1(out_w, out_s), rel=1e-5)
    # Channels that only the widest switch uses: changing them moves its image, not the student's, and the
    # student's term follows the widest switch's new image.
    conv1 = m.body.blocks[0][0]
    kernel = conv1.kernel.numpy()
    kernel[..., kernel.shape[-1] // 4:] *= -3.0
    conv1.kernel.assign(kernel)
    new_w, new_s = (np.asarray(o) for o in m(x))
    assert l1(new_w, out_w) > 1e-3 and np.array_equal(new_s, out_s)
    assert float(m.compute_loss(y=y, y_pred=m(x))) == pytest.approx(l1(y, new_w) + l1(new_w, new_s), rel=1e-5)
    # The target is detached: the student's term sends no gradient into the channels only the teacher uses.
    head = m.body.head_conv
    with tf.GradientTape() as tape:
        outs = m(x, training=True)
        student_only = m.compute_loss(y=y, y_pred=outs) - tf.reduce_mean(tf.abs(y - outs[0]))
    g = tape.gradient(student_only, head.kernel).numpy()
    quarter = g.shape[-1] // 4
    assert np.abs(g[..., :quarter]).max() > 0, "the student's channels learn"
    assert np.all(g[..., quarter:] == 0), "channels only the teacher uses get nothing from the distillation term"


@pytest.mark.slow
def test_brief_training_lowers_the_loss_and_beats_bicubic_on_a_training_crop(brick):
    keras.utils.set_random_seed(0)
    m = wdsr(2, ["1x1.0", "2x0.5", "1x0.25"], input_shape=(24, 24, 1), label_mix=0.5, **TINY)
    before = evaluate_sr(m, brick)
    r = train_sr(m, brick, SRTrainConfig(epochs=4, steps_per_epoch=30, batch_size=8), verbose=0)
    loss = r["history"]["loss"]
    assert len(loss) == 4 and r["steps"] == 120 and loss[-1] < 0.5 * loss[0], loss
    after = evaluate_sr(m, brick)
    assert list(after) == ["bicubic", "1x1.0", "2x0.5", "1x0.25"]
    bicubic = after["bicubic"]["psnr"]
    assert after["1x1.0"]["psnr"] > bicubic + 0.1, after
    assert after["1x1.0"]["psnr"] > before["1x1.0"]["psnr"] + 0.1, (before, after)
    for s in ("2x0.5", "1x0.25"):
        assert after[s]["psnr"] > bicubic - 0.5, (s, after)


def test_individual_baseline_is_one_switch_trained_alone_with_the_same_recipe(brick):
    keras.utils.set_random_seed(0)
    ind = individual_model(wdsr, "2x0.5", scale=2, input_shape=(24, 24, 1), loss_border=0, **TINY)
    assert [str(s) for s in ind.switches] == ["2x0.5"] and ind.teachers == [None]
    assert [len(d) for d in ind.device_segments("2x0.5")] == [1, 1]
    rng = np.random.default_rng(0)
    out, y = rng.random((2, 48, 48, 1)).astype("float32"), rng.random((2, 48, 48, 1)).astype("float32")
    assert float(ind.compute_loss(y=y, y_pred=[out])) == pytest.approx(l1(y, out), rel=1e-5)  # target only
    before = [w.copy() for w in ind.get_weights()]
    r = train_sr(ind, brick, SRTrainConfig(epochs=2, steps_per_epoch=10, batch_size=8), verbose=0)
    assert np.isfinite(r["history"]["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, ind.get_weights()))
    assert set(evaluate_sr(ind, brick)) == {"bicubic", "2x0.5"}


def test_evaluate_reports_psnr_and_ssim_of_whole_held_out_photographs():
    held_out = sr.load_sr_split("validation", channels=1)
    assert sorted(held_out) == sorted(sr.VALIDATION_IMAGES)
    m = wdsr(2, ["1x1.0", "4x0.25"], input_shape=(16, 16, 1), **TINY)
    result = evaluate_sr(m, held_out)
    assert list(result) == ["bicubic", "1x1.0", "4x0.25"]
    lr, hr = sr.sr_pairs({"camera": held_out["camera"]}, 2)["camera"]
    out = upscale_image(m, "4x0.25", lr)
    assert out.dtype == np.uint8 and out.shape == hr.shape == (512, 512, 1)  # the whole image at once
    cam = result["4x0.25"]["images"]["camera"]
    assert cam == {"psnr": pytest.approx(sr.psnr(hr, out, 2)), "ssim": pytest.approx(sr.ssim(hr, out, 2))}
    for name, q in result.items():
        assert set(q["images"]) == set(held_out)
        assert q["psnr"] == pytest.approx(np.mean([v["psnr"] for v in q["images"].values()]))
        assert 20 < q["psnr"] < 50 and 0.5 < q["ssim"] <= 1.0, (name, q)
    # Untrained, every switch is its skip branch, bicubic upsampling (but for the zero-padded image border).
    for s in ("1x1.0", "4x0.25"):
        assert result[s]["psnr"] == pytest.approx(result["bicubic"]["psnr"], abs=0.3)
    assert set(evaluate_sr(m, held_out, switches=["4x0.25"], bicubic=False)) == {"4x0.25"}


@pytest.mark.slow
def test_sandwich_skips_switches_with_nan_images_that_the_loss_leaves_out(brick):
    keras.utils.set_random_seed(0)
    m = wdsr(2, ["1x1.0", "2x0.5", "1x0.5", "1x0.25"], input_shape=(16, 16, 1), sandwich=3, label_mix=0.5, **TINY)
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    outs = [np.asarray(o) for o in m(x, training=True)]
    skipped = [i for i, o in enumerate(outs) if np.isnan(o).any()]
    assert len(skipped) == 1 and skipped[0] in (1, 2) and outs[skipped[0]].shape == (2, 32, 32, 1)
    assert np.isnan(outs[skipped[0]]).all()
    assert np.isfinite(float(m.compute_loss(y=np.zeros((2, 32, 32, 1), "float32"), y_pred=outs)))
    r = train_sr(m, brick, SRTrainConfig(epochs=1, steps_per_epoch=5, batch_size=4), verbose=0)
    assert np.isfinite(r["history"]["loss"]).all()
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m)).sandwich == 3


def test_bad_settings_and_inputs_are_named(brick):
    with pytest.raises(ValueError, match=r"temperature acts on a classifier's softmax.*L1"):
        wdsr(2, ["1x1.0"], input_shape=(8, 8, 1), temperature=2.0, **TINY)
    with pytest.raises(ValueError, match=r"label_smoothing acts on a classifier's softmax"):
        wdsr(2, ["1x1.0"], input_shape=(8, 8, 1), label_smoothing=0.1, **TINY)
    with pytest.raises(ValueError, match=r"16x16 training patch \(None: 4\)\. Received loss_border=8"):
        wdsr(2, ["1x1.0"], input_shape=(8, 8, 1), loss_border=8, **TINY)
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        SRTrainConfig(steps_per_epoch=0)
    with pytest.raises(ValueError, match="learning_rate=0"):
        SRTrainConfig(learning_rate=0)
    m = wdsr(2, ["1x1.0"], input_shape=(8, 8, 1), **TINY)
    rgb = {"rocket": sr.load_skimage_images(["rocket"], channels=3)["rocket"]}
    with pytest.raises(InputError, match=r"rocket: the model takes 1-channel \(Y\).*\(427, 640, 3\).*channels=1"):
        train_sr(m, rgb, SRTrainConfig(epochs=1, steps_per_epoch=1))
    with pytest.raises(InputError, match=r"rocket: the model takes 1-channel"):
        evaluate_sr(m, rgb)
    with pytest.raises(InputError, match=r"brick: expected at least 320x320 pixels \(patch_size=160"):
        train_sr(m, brick, SRTrainConfig(epochs=1, steps_per_epoch=1, patch_size=160))
    with pytest.raises(InputError, match="Expected a uint8 low-resolution image. Received dtype float32"):
        upscale_image(m, "1x1.0", np.zeros((8, 8, 1), "float32"))
    with pytest.raises(InputError, match=r"input is 8x12, not square; give SRTrainConfig\(patch_size=...\)"):
        train_sr(wdsr(2, ["1x1.0"], input_shape=(8, 12, 1), **TINY), brick, SRTrainConfig(epochs=1, steps_per_epoch=1))


# -- paradis train --task sr ------------------------------------------------------------------------------

SMALL_SR = ["--task", "sr", "--features", "8", "--blocks", "1", "--expansion", "2", "--patch-size", "16",
            "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "3", "--channels", "1", "--json"]


def _json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


@pytest.mark.slow
def test_cli_train_sr_writes_a_model_and_reports_every_switch_against_bicubic(tmp_path, capsys):
    from paradis_tf.cli import main

    out = tmp_path / "sr.keras"
    assert main(["train", "--out", str(out), "--switches", "1x1.0,2x0.5", "--label-mix", "0.3",
                 "--switch-weight", "2x0.5=2", *SMALL_SR]) == 0
    result = _json(capsys.readouterr().out)
    assert result["scale"] == 2 and result["validation_images"] == sorted(sr.VALIDATION_IMAGES)
    assert set(result["psnr"]) == set(result["ssim"]) == {"bicubic", "1x1.0", "2x0.5"}
    assert all(20 < v < 50 for v in result["psnr"].values()), result
    model = keras.saving.load_model(out)
    assert isinstance(model, ParaDiSSRModel) and model.architecture == "wdsr"
    assert [str(s) for s in model.switches] == ["1x1.0", "2x0.5"]
    assert (model.image_shape, model.scale, model.label_mix, model.switch_weights) == ((16, 16, 1), 2, 0.3,
                                                                                       {"2x0.5": 2.0})
    assert model.body.feature_channels == 8 and model.body.num_blocks == 1
    assert [len(segs) for segs in model.device_segments("2x0.5")] == [1, 1]


def test_cli_train_sr_on_a_folder_of_photographs_holds_out_a_fifth(tmp_path, capsys):
    import tensorflow as tf

    from paradis_tf.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sr.load_skimage_images(["rocket", "brick", "grass", "gravel", "coins"], channels=3)
    for name, img in photos.items():
        (folder / f"{name}.png").write_bytes(tf.io.encode_png(img[:120, :120]).numpy())
    out = tmp_path / "sr.keras"
    assert main(["train", "--out", str(out), "--data", str(folder), "--switches", "1x1.0,1x0.5", *SMALL_SR]) == 0
    result = _json(capsys.readouterr().out)
    assert len(result["validation_images"]) == 1 and result["validation_images"][0] in {f"{n}.png" for n in photos}
    assert set(result["psnr"]) == {"bicubic", "1x1.0", "1x0.5"}


@pytest.mark.parametrize("argv, message", [
    (["--task", "sr", "--width", "0.25"], "--width 0.25 applies to --task classify; leave it out with --task sr"),
    (["--task", "sr", "--augment"], "--augment applies to --task classify"),
    (["--task", "sr", "--weight-decay", "0.01"], "--weight-decay 0.01 applies to --task classify"),
    (["--task", "sr", "--arch", "resnet"], "--arch resnet is a classifier; --task sr trains --arch wdsr"),
    (["--arch", "wdsr"], "--arch wdsr is a super-resolution network; add --task sr"),
    (["--features", "16"], "--features 16 applies to --task sr; leave it out with --task classify"),
    (["--task", "sr", "--blocks", "3,4"], "--blocks 3,4: WDSR takes one whole number of residual blocks"),
    (["--task", "sr", "--switches", "1x1.0,3x0.5"], "3x0.5"),
    (["--task", "sr", "--steps-per-epoch", "0"], "steps_per_epoch=0"),
])
def test_cli_train_refuses_options_of_the_other_task_naming_them(argv, message, tmp_path, capsys):
    from paradis_tf.cli import main

    assert main(["train", "--out", str(tmp_path / "m.keras"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("paradis: ") and message in err, err
    assert not (tmp_path / "m.keras").exists()
