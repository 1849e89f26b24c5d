"""ParaDiS layers against NumPy references of the same computation."""

import keras
import numpy as np
import pytest

from paradis_tf.errors import ChannelSplitError
from paradis_tf.layers import ParaDiSConv2D, ParaDiSDense, ParaDiSDepthwiseConv2D, SwitchableBatchNormalization
from paradis_tf.switches import Switch

RNG = np.random.default_rng(0)


def np_conv_same(x, w, stride=1):
    """NHWC 'same' convolution, reference implementation."""
    n, h, wd, c = x.shape
    kh, kw, ci, co = w.shape
    assert ci == c
    oh, ow = -(-h // stride), -(-wd // stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - wd, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, oh, ow, co), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def np_dw_same(x, w, stride=1):
    return np.concatenate(
        [np_conv_same(x[..., c : c + 1], w[:, :, c : c + 1, :], stride) for c in range(x.shape[-1])], axis=-1
    )


def split(x, s, axis_channels):
    return [x[..., a:b] for a, b in Switch.parse(s).channel_ranges(axis_channels)]


@pytest.mark.parametrize("switch", ["1x1.0", "2x0.5", "0.5+0.25+0.25", "1x0.5"])
@pytest.mark.parametrize("role", ["stem", "split", "sync"])
def test_conv_roles_match_numpy(role, switch):
    cin = 3 if role == "stem" else 8
    layer = ParaDiSConv2D(8, 3, strides=2, role=role, switches=[switch])
    layer.build((None, 7, 7, cin))
    w = layer.kernel.numpy()
    x = RNG.normal(size=(2, 7, 7, cin)).astype("float32")
    s = Switch.parse(switch)
    outs = layer(x if role == "stem" else split(x, switch, cin), switch=switch)
    assert len(outs) == len(s)
    in_ranges = s.channel_ranges(cin) if role != "stem" else [(0, cin)] * len(s)
    used = s.used_channels(cin) if role != "stem" else cin
    for k, ((oa, ob), (ia, ib)) in enumerate(zip(s.channel_ranges(8), in_ranges)):
        if role == "split":
            ref = np_conv_same(x[..., ia:ib], w[:, :, ia:ib, oa:ob], 2)
        else:  # stem and sync read every used input channel
            ref = np_conv_same(x[..., :used], w[:, :, :used, oa:ob], 2)
        np.testing.assert_allclose(np.asarray(outs[k]), ref, rtol=1e-4, atol=1e-4)


def test_split_conv_equals_block_diagonal_full_conv():
    layer = ParaDiSConv2D(8, 1, switches=["2x0.5"])
    layer.build((None, 4, 4, 8))
    w = layer.kernel.numpy()
    block = np.zeros_like(w)
    block[:, :, :4, :4] = w[:, :, :4, :4]
    block[:, :, 4:, 4:] = w[:, :, 4:, 4:]
    x = RNG.normal(size=(1, 4, 4, 8)).astype("float32")
    out = np.concatenate([np.asarray(t) for t in layer(split(x, "2x0.5", 8), switch="2x0.5")], -1)
    np.testing.assert_allclose(out, np_conv_same(x, block), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("role", ["split", "sync"])
def test_pointwise_conv_as_matmul_matches_numpy(role):
    # 1x1 stride-1 kernels run as a matmul over the pixels: the same convolution
    # (tools/bench_pointwise.py builds the 1x1-convolution-kernel variant to time them).
    layer = ParaDiSConv2D(8, 1, role=role, switches=["0.5+0.25+0.25"], use_bias=True)
    layer.build((None, 5, 3, 8))
    layer.bias.assign(RNG.normal(size=8).astype("float32"))
    w, b = layer.kernel.numpy(), layer.bias.numpy()
    x = RNG.normal(size=(3, 5, 3, 8)).astype("float32")
    s = Switch.parse("0.5+0.25+0.25")
    outs = layer(split(x, s, 8), switch=s)
    for (a, e), out in zip(s.channel_ranges(8), outs):
        ia, ib = (a, e) if role == "split" else (0, 8)
        np.testing.assert_allclose(np.asarray(out), np_conv_same(x[..., ia:ib], w[:, :, ia:ib, a:e]) + b[a:e],
                                   rtol=1e-4, atol=1e-4)
    packed = layer(x, switch=s, packed=True)
    np.testing.assert_allclose(np.asarray(packed), np.concatenate([np.asarray(o) for o in outs], -1),
                               rtol=1e-5, atol=1e-5)


def test_depthwise_matches_numpy():
    layer = ParaDiSDepthwiseConv2D(3, 1, switches=["4x0.25"])
    layer.build((None, 5, 5, 8))
    x = RNG.normal(size=(2, 5, 5, 8)).astype("float32")
    outs = layer(split(x, "4x0.25", 8), switch="4x0.25")
    ref = np_dw_same(x, layer.kernel.numpy())
    np.testing.assert_allclose(np.concatenate([np.asarray(o) for o in outs], -1), ref, rtol=1e-4, atol=1e-4)


def test_switchable_bn_inference_uses_the_switch_own_parameters():
    layer = SwitchableBatchNormalization(["1x1.0", "2x0.5"], epsilon=1e-3)
    layer.build((None, 3, 3, 8))
    for i in range(2):
        layer.gammas[i].assign(RNG.uniform(0.5, 2, 8).astype("float32"))
        layer.betas[i].assign(RNG.normal(size=8).astype("float32"))
        layer.moving_means[i].assign(RNG.normal(size=8).astype("float32"))
        layer.moving_vars[i].assign(RNG.uniform(0.5, 2, 8).astype("float32"))
    x = RNG.normal(size=(2, 3, 3, 8)).astype("float32")
    out = np.concatenate([np.asarray(o) for o in layer(split(x, "2x0.5", 8), switch="2x0.5", training=False)], -1)
    g, b, m, v = (t[1].numpy() for t in (layer.gammas, layer.betas, layer.moving_means, layer.moving_vars))
    np.testing.assert_allclose(out, (x - m) / np.sqrt(v + 1e-3) * g + b, rtol=1e-4, atol=1e-4)


def test_switchable_bn_training_normalizes_per_slice_and_updates_only_its_switch():
    layer = SwitchableBatchNormalization(["1x1.0", "1x0.5"], momentum=0.9, epsilon=1e-3)
    layer.build((None, 4, 4, 8))
    x = (RNG.normal(size=(4, 4, 4, 4)) * 3 + 2).astype("float32")
    out = np.asarray(layer([x], switch="1x0.5", training=True)[0])
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-3, atol=1e-3)
    mm = layer.moving_means[1].numpy()
    np.testing.assert_allclose(mm[:4], 0.1 * mean, rtol=1e-4, atol=1e-4)
    assert np.all(mm[4:] == 0.0), "channels the switch does not use keep their statistics"
    assert np.all(layer.moving_means[0].numpy() == 0.0), "another switch's statistics are untouched"


def test_dense_fuses_partials_with_one_bias():
    layer = ParaDiSDense(5, ["0.5+0.25+0.25"])
    layer.build((None, 8))
    layer.bias.assign(RNG.normal(size=5).astype("float32"))
    x = RNG.normal(size=(3, 8)).astype("float32")
    xs = split(x, "0.5+0.25+0.25", 8)
    fused = np.asarray(layer(xs, switch="0.5+0.25+0.25"))
    ref = x @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(fused, ref, rtol=1e-5, atol=1e-5)
    parts = layer(xs, switch="0.5+0.25+0.25", partial=True)
    np.testing.assert_allclose(sum(np.asarray(p) for p in parts) + layer.bias.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_dense_logit_scale_is_per_switch_and_folds_into_device_kernels():
    layer = ParaDiSDense(5, ["1x1.0", "4x0.25"], logit_scale=True)
    layer.build((None, 8))
    layer.bias.assign(RNG.normal(size=5).astype("float32"))
    layer.log_scales.assign(np.log(np.array([1.5, 0.4], dtype="float32")))
    x = RNG.normal(size=(3, 8)).astype("float32")
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    for switch, scale in (("1x1.0", 1.5), ("4x0.25", 0.4)):
        ref = scale * (x @ kernel) + bias  # the scale is on the partial logits, not on the bias
        np.testing.assert_allclose(np.asarray(layer(split(x, switch, 8), switch=switch)), ref, rtol=1e-5, atol=1e-5)
        folded = sum(xk @ np.asarray(layer.device_weights(switch, k)[0])
                     for k, xk in enumerate(split(x, switch, 8)))
        np.testing.assert_allclose(folded + bias, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ChannelSplitError, match="2x0.5"):
        layer.switch_scale("2x0.5")
    assert ParaDiSDense(5, ["1x1.0"]).switch_scale("1x1.0") == 1.0
    assert ParaDiSDense.from_config(layer.get_config()).logit_scale is True


def test_layer_channel_check_names_layer_and_switch():
    layer = ParaDiSConv2D(6, 1, switches=["1x1.0", "4x0.25"], name="odd_conv")
    with pytest.raises(ChannelSplitError) as e:
        layer.build((None, 4, 4, 8))
    assert "odd_conv" in str(e.value) and "4x0.25" in str(e.value)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(filters=0), "filters=0"), (dict(filters=4, role="ring"), "role='ring'"),
    (dict(filters=4, padding="full"), "padding='full'"), (dict(filters=4, switches=["3x0.5"]), "3x0.5"),
])
def test_conv_argument_errors_name_the_value(kwargs, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        ParaDiSConv2D(**kwargs)


def test_bn_rejects_unknown_switch_and_bad_momentum():
    with pytest.raises(ValueError, match="momentum=1.5"):
        SwitchableBatchNormalization(momentum=1.5)
    layer = SwitchableBatchNormalization(["1x1.0"])
    layer.build((None, 2, 2, 4))
    with pytest.raises(ValueError, match="2x0.5"):
        layer([np.zeros((1, 2, 2, 2), "float32")] * 2, switch="2x0.5")


def test_layers_round_trip_through_keras_save(tmp_path):
    s = "2x0.5"
    inp = keras.Input((6, 6, 2))
    stem = ParaDiSConv2D(8, 3, role="stem", switches=[s])
    bn = SwitchableBatchNormalization([s])
    dw = ParaDiSDepthwiseConv2D(3, switches=[s])
    sync = ParaDiSConv2D(8, 1, role="sync", switches=[s])
    head = ParaDiSDense(3, [s])
    xs = stem(inp, switch=s)
    xs = bn(xs, switch=s)
    xs = dw(xs, switch=s)
    xs = sync(xs, switch=s)
    out = head([keras.layers.GlobalAveragePooling2D()(x) for x in xs], switch=s)
    model = keras.Model(inp, out)
    for v in bn.moving_vars + bn.moving_means:
        v.assign(RNG.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
    head.bias.assign(RNG.normal(size=3).astype("float32"))
    x = RNG.normal(size=(2, 6, 6, 2)).astype("float32")
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    for layer in (stem, bn, dw, sync, head):
        cfg = layer.get_config()
        clone = type(layer).from_config(cfg)
        assert clone.get_config() == cfg


def _shapes(out):
    return [tuple(o.shape) for o in out] if isinstance(out, list) else tuple(out.shape)


@pytest.mark.parametrize("switch", ["1x1.0", "2x0.5", "0.5+0.25+0.25", "1x0.5"])
def test_output_shapes_are_those_of_the_outputs_eager_and_symbolic(switch):
    """compute_output_shape takes the switch (a call argument): eager outputs, the shapes it computes and the
    symbolic outputs of a functional model (built from it, without running the layer) agree, per device and
    packed."""
    s = Switch.parse(switch)
    layers = {
        "stem": (ParaDiSConv2D(8, 3, strides=2, role="stem", switches=[switch]), (2, 7, 7, 3)),
        "split": (ParaDiSConv2D(8, 3, strides=2, padding="valid", switches=[switch]), (2, 7, 7, 8)),
        "sync": (ParaDiSConv2D(12, 1, role="sync", switches=[switch]), (2, 5, 5, 8)),
        "dw": (ParaDiSDepthwiseConv2D(3, 2, switches=[switch]), (2, 7, 7, 8)),
        "bn": (SwitchableBatchNormalization([switch]), (2, 5, 5, 8)),
        "dense": (ParaDiSDense(5, [switch]), (2, 8)),
    }
    for name, (layer, shape) in layers.items():
        layer.build(shape)  # at full width, as the models build them
        x = RNG.normal(size=shape).astype("float32")
        xs = x if name == "stem" else split(x, s, shape[-1])
        calls = [dict(), dict(packed=True)] + ([dict(partial=True)] if name == "dense" else [])
        for kwargs in calls:
            inputs = x[..., : s.used_channels(shape[-1])] if kwargs.get("packed") and name != "stem" else xs
            got = _shapes(layer(inputs, switch=switch, **kwargs))
            in_shapes = [tuple(t.shape) for t in inputs] if isinstance(inputs, list) else tuple(inputs.shape)
            assert layer.compute_output_shape(in_shapes, switch=switch, **kwargs) == got, (name, kwargs)
            if isinstance(inputs, list):
                symbolic = [keras.Input(batch_shape=t.shape) for t in inputs]
            else:
                symbolic = keras.Input(batch_shape=inputs.shape)
            assert _shapes(layer(symbolic, switch=switch, **kwargs)) == got, (name, kwargs)
    stem = layers["stem"][0]
    assert stem.compute_output_shape((None, 7, 7, 3), switch=switch) == [(None, 4, 4, b - a)
                                                                         for a, b in s.channel_ranges(8)]
    assert layers["split"][0].compute_output_shape((None, None, 7, 8), switch=switch, packed=True) == (
        None, None, 3, s.used_channels(8))
