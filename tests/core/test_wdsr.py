"""WDSR as a ParaDiS network: the devices' partial residuals plus the skip branch are the switch model, exactly."""

import keras
import numpy as np
import pytest

from core_reference import SWITCHES
from paradis_tf.errors import InputError, SwitchError
from paradis_tf.models import ParaDiSSRModel, wdsr
from paradis_tf.models.sr import bicubic_upsampling_kernel, depth_to_space
from paradis_tf.switches import Switch

SHAPE = (10, 12, 3)


def randomize(model, seed=0):
    """Non-zero biases everywhere and every kernel of the same size (the trained network's are: the small
    initial ones of the blocks' second convolutions and the output convolution would hide slicing mistakes)."""
    rng = np.random.default_rng(seed)
    body = model.body
    convs = [body.head_conv] + [c for block in body.blocks for c in block]
    for layer in convs + [body.skip_conv]:
        layer.bias.assign(rng.normal(0, 0.2, tuple(layer.bias.shape)).astype("float32"))
    for layer in convs[1:] + [body.tail]:
        layer.kernel.assign(rng.normal(0, 0.1, tuple(layer.kernel.shape)).astype("float32"))


@pytest.fixture(scope="module")
def tiny_wdsr():
    keras.utils.set_random_seed(0)
    m = wdsr(2, SWITCHES, channels=8, blocks=2, expansion=2, input_shape=SHAPE)
    randomize(m)
    return m


@pytest.fixture(scope="module")
def lr_images():
    return np.random.default_rng(1).random((3, *SHAPE)).astype("float32")


def fuse(model, switch, x, image_shape=None):
    """What a runtime does: sum the devices' partial residuals, add the skip branch and the bias, depth-to-space."""
    parts = [np.asarray(d(x)) for d in model.device_models(switch, image_shape)]
    return depth_to_space(sum(parts) + np.asarray(model.skip_model(image_shape)(x)) + model.fusion_bias, model.scale)


@pytest.mark.parametrize("switch", SWITCHES)
def test_sum_of_device_models_and_skip_equals_switch_model(tiny_wdsr, lr_images, switch):
    devices = tiny_wdsr.device_models(switch)
    assert len(devices) == len(Switch.parse(switch))
    for d in devices:
        for layer in d.layers:
            assert type(layer).__module__.startswith("keras."), f"{layer} is not a standard Keras layer"
        # each device outputs a partial residual of scale**2 * C channels at low resolution
        assert tuple(d.output.shape[1:]) == (*SHAPE[:2], 4 * 3)
    ref = np.asarray(tiny_wdsr.switch_model(switch)(lr_images))
    assert ref.shape == (3, 20, 24, 3)
    residual = ref - depth_to_space(np.asarray(tiny_wdsr.skip_model()(lr_images)), 2)
    assert np.abs(residual).max() > 0.1, "the body's residual must not be trivially zero"
    np.testing.assert_allclose(fuse(tiny_wdsr, switch, lr_images), ref, rtol=1e-4, atol=1e-4)
    # the per-device reference path (one kernel per device and layer) computes the same image
    np.testing.assert_allclose(np.asarray(tiny_wdsr.forward(switch, lr_images, per_device=True)), ref,
                               rtol=1e-4, atol=1e-4)


def test_switches_differ_and_model_call_returns_every_switch(tiny_wdsr, lr_images):
    outs = [np.asarray(o) for o in tiny_wdsr(lr_images)]
    assert len(outs) == len(SWITCHES)
    for s, o in zip(SWITCHES, outs):
        np.testing.assert_allclose(o, np.asarray(tiny_wdsr.switch_model(s)(lr_images)), atol=1e-5)
    assert np.abs(outs[0] - outs[SWITCHES.index("4x0.25")]).max() > 1e-2
    assert np.abs(outs[SWITCHES.index("4x0.25")] - outs[SWITCHES.index("1x0.25")]).max() > 1e-2


def test_fully_convolutional_tiles_and_whole_images(tiny_wdsr):
    """Device and skip models built for another tile size compose exactly; the switch model takes any size."""
    x = np.random.default_rng(5).random((2, 7, 9, 3)).astype("float32")
    ref = np.asarray(tiny_wdsr.switch_model("4x0.25")(x))
    assert ref.shape == (2, 14, 18, 3)
    np.testing.assert_allclose(fuse(tiny_wdsr, "4x0.25", x, image_shape=(7, 9, 3)), ref, rtol=1e-4, atol=1e-4)


def test_changing_device_j_never_changes_device_k(lr_images):
    switch = "4x0.25"
    m = wdsr(2, [switch], channels=8, blocks=2, expansion=2, input_shape=SHAPE)
    randomize(m)
    before = [np.asarray(d(lr_images)) for d in m.device_models(switch)]
    s, j, rng = Switch.parse(switch), 2, np.random.default_rng(3)
    body = m.body
    for layer in [c for block in body.blocks for c in block]:
        w = layer.kernel.numpy()
        (ia, ib), (oa, ob) = s.channel_ranges(layer.in_channels)[j], s.channel_ranges(layer.filters)[j]
        w[:, :, ia:ib, oa:ob] += rng.normal(0, 1, w[:, :, ia:ib, oa:ob].shape)
        layer.kernel.assign(w)
    w = body.tail.kernel.numpy()
    ia, ib = s.channel_ranges(body.tail.in_channels)[j]
    w[:, :, ia:ib, :] += rng.normal(0, 1, w[:, :, ia:ib, :].shape)
    body.tail.kernel.assign(w)
    after = [np.asarray(d(lr_images)) for d in m.device_models(switch)]
    for k in range(4):
        if k == j:
            assert np.abs(after[k] - before[k]).max() > 1e-3, "device 2 must see its own change"
        else:
            np.testing.assert_array_equal(after[k], before[k])


def test_every_head_sees_the_whole_image(tiny_wdsr, lr_images):
    x2 = lr_images.copy()
    x2[:, 0, 0, 2] += 5.0  # one corner pixel of the blue channel
    for d in tiny_wdsr.device_models("4x0.25"):
        head = d.get_layer("head")
        assert head.kernel.shape[2] == 3 and head.kernel.shape[3] == tiny_wdsr.body.feature_channels // 4
        out = keras.Model(d.input, head.output)
        assert np.abs(np.asarray(out(x2)) - np.asarray(out(lr_images)))[:, :2, :2].max() > 0.0


@pytest.mark.parametrize("scale,channels", [(2, 3), (3, 1), (4, 3)])
def test_untrained_skip_branch_is_bicubic_upsampling(scale, channels):
    """The skip convolution starts as bicubic interpolation, away from the zero-padded border: tf.image.resize's
    exact Keys kernel (antialias=True, which only widens the kernel when downscaling; without it TensorFlow reads
    the kernel from a 1024-entry table, 5e-4 off at thirds of a pixel)."""
    import tensorflow as tf

    m = wdsr(scale, ["1x1.0", "2x0.5"], channels=4, blocks=1, input_shape=(16, 16, channels))
    x = np.random.default_rng(scale).random((2, 16, 16, channels)).astype("float32")
    skip = depth_to_space(np.asarray(m.skip_model()(x)), scale)
    bicubic = tf.image.resize(x, (16 * scale, 16 * scale), method="bicubic", antialias=True).numpy()
    b = 2 * scale  # two low-resolution pixels: where the 5x5 kernel reads no padding
    np.testing.assert_allclose(skip[:, b:-b, b:-b], bicubic[:, b:-b, b:-b], atol=1e-5)
    # a flat image stays flat: the weights of every output position sum to one
    assert np.allclose(bicubic_upsampling_kernel(scale, channels).sum(axis=(0, 1, 2)), 1.0, atol=1e-6)


def test_numpy_depth_to_space_is_tensorflows():
    import tensorflow as tf

    x = np.random.default_rng(0).random((2, 3, 5, 27)).astype("float32")
    np.testing.assert_array_equal(depth_to_space(x, 3), tf.nn.depth_to_space(x, 3).numpy())


def test_sync_block_gives_two_segments_that_compose_exactly(lr_images):
    m = wdsr(2, ["1x1.0", "2x0.5", "4x0.25"], channels=8, blocks=3, expansion=2, input_shape=SHAPE, sync_layers=[1])
    randomize(m)
    assert m.has_sync
    with pytest.raises(ValueError, match="device_segments"):
        m.device_models("2x0.5")
    skip = np.asarray(m.skip_model()(lr_images))
    for s in m.switches:
        segs = m.device_segments(s)
        assert all(len(dev) == 2 for dev in segs)
        outs = [np.asarray(dev[0](lr_images)) for dev in segs]
        parts = [np.asarray(dev[1](outs)) for dev in segs]
        total = depth_to_space(sum(parts) + skip + m.fusion_bias, 2)
        np.testing.assert_allclose(total, np.asarray(m.switch_model(s)(lr_images)), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip_is_identical(tiny_wdsr, lr_images, tmp_path):
    path = tmp_path / "wdsr.keras"
    tiny_wdsr.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ParaDiSSRModel) and loaded.scale == 2 and loaded.task == "super_resolution"
    assert [str(s) for s in loaded.switches] == SWITCHES
    for s in SWITCHES:
        np.testing.assert_array_equal(np.asarray(loaded.switch_model(s)(lr_images)),
                                      np.asarray(tiny_wdsr.switch_model(s)(lr_images)))


def test_quarter_width_devices_cost_a_sixteenth_of_the_blocks(tiny_wdsr):
    full = tiny_wdsr.device_stats("1x1.0")[0]
    quarters = tiny_wdsr.device_stats("4x0.25")
    assert len({q["macs"] for q in quarters}) == 1
    h, w, _ = SHAPE
    c, wide, out = tiny_wdsr.body.feature_channels, tiny_wdsr.body.wide_channels, 12
    head, block, tail = h * w * 9 * 3 * c, 2 * h * w * 9 * c * wide, h * w * 9 * c * out
    assert full["macs"] == head + 2 * block + tail
    assert quarters[0]["macs"] == head // 4 + 2 * block // 16 + tail // 4
    assert tiny_wdsr.skip_stats()["macs"] == h * w * 25 * 3 * out


@pytest.mark.slow
def test_device_and_skip_models_convert_to_int8_on_litert_and_tflm(tiny_wdsr, lr_images):
    """The partitions are plain convolutions: int8 TFLite runs them on LiteRT and TFLM, close to float."""
    from paradis_tf.convert.tflite import keras_to_tflite
    from paradis_tf.quant import dequantize, quantize
    from paradis_tf.runtime.backends import load_interpreter

    calib = np.random.default_rng(7).random((16, *SHAPE)).astype("float32")
    models = tiny_wdsr.device_models("4x0.25") + [tiny_wdsr.skip_model()]
    flat = [keras_to_tflite(km, lambda: ([calib[i:i + 1]] for i in range(16)), what=km.name) for km in models]
    ref = np.asarray(tiny_wdsr.switch_model("4x0.25")(lr_images))
    for backend in ("litert", "tflm"):
        total = 0.0
        for data in flat:
            it = load_interpreter(data, backend)
            q = it.run([quantize(lr_images, it.inputs[0].quant)])[0]
            assert q.dtype == np.int8
            total = total + dequantize(q, it.outputs[0].quant)
        out = depth_to_space(total, 2)
        psnr = 10 * np.log10(np.ptp(ref) ** 2 / np.mean((out - ref) ** 2))
        assert psnr > 35.0, (backend, psnr)


def test_bad_arguments_are_named(tiny_wdsr):
    with pytest.raises(InputError, match=r"1 channel \(Y\) or 3 \(RGB\).*\(10, 12, 2\)"):
        wdsr(2, ["1x1.0"], input_shape=(10, 12, 2))
    with pytest.raises(ValueError, match="scale=1"):
        wdsr(1, ["1x1.0"], input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"expansion=0\.5"):
        wdsr(2, ["1x1.0"], input_shape=SHAPE, expansion=0.5)
    with pytest.raises(ValueError, match=r"sync_layers=\[3\]"):
        wdsr(2, ["1x1.0"], input_shape=SHAPE, blocks=2, sync_layers=[3])
    with pytest.raises(InputError, match=r"\(batch, height, width, 3\) \(RGB\)\. Received shape \(1, 10, 12, 1\)"):
        tiny_wdsr.switch_model("1x1.0")(np.zeros((1, 10, 12, 1), "float32"))
    with pytest.raises(InputError, match=r"image_shape \(height, width, 3\)\. Received image_shape=\(8, 8, 1\)"):
        tiny_wdsr.device_models("2x0.5", image_shape=(8, 8, 1))
    with pytest.raises(SwitchError, match="3x0.25"):
        tiny_wdsr.device_models("3x0.25")
    with pytest.raises(ValueError, match="classifiers only"):
        tiny_wdsr.sequential_models(2)
    with pytest.raises(ValueError, match=r"one output per switch \(6: .*Received 0"):
        tiny_wdsr.compute_loss(y_pred=[])


def test_untrained_network_is_bicubic_on_a_photograph():
    """The output convolution starts at zero: before training every switch upscales as bicubic does."""
    from paradis_tf.data import sr

    m = wdsr(2, ["1x1.0", "4x0.25"], channels=16, blocks=4, input_shape=(24, 24, 1))
    lr, hr = sr.sr_pairs(sr.load_skimage_images(["chelsea"], channels=1), 2)["chelsea"]
    lr, hr = lr[:80, :100], hr[:160, :200]
    bicubic = sr.psnr(hr, sr.bicubic_upscale(lr, 2), 4)  # 4: away from the skip convolution's zero padding
    for s in m.switches:
        out = np.asarray(m.switch_model(s)(lr[None].astype("float32") / 255))[0]
        assert sr.psnr(hr, out, 4) == pytest.approx(bicubic, abs=0.05), s
