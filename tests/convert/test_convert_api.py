"""convert_model: refusals, atomicity, TFLM artefacts, plans and their cost."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tiny_paradis import TinyParaDiS, images

from paradis_tf.bundle import MANIFEST, load
from paradis_tf.convert import ConversionError, convert_model
from paradis_tf.runtime import load_interpreter
from paradis_tf.runtime.plan_cost import plan_cost
from paradis_tf.tflite_file import read_tflite


def test_refuses_a_model_that_is_not_a_paradis_model(tmp_path):
    import keras

    x = keras.Input((8, 8, 1))
    plain = keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with pytest.raises(ConversionError, match=r"is a Functional, not a ParaDiS model \(it lacks switches, image_shape"):
        convert_model(plain, tmp_path / "b", images(4))
    assert not (tmp_path / "b").exists()


def test_refuses_an_unknown_switch(tmp_path):
    with pytest.raises(ConversionError, match=r"unknown switch '4x0.25': the model has \['1x1.0', '2x0.5'\]"):
        convert_model(TinyParaDiS(), tmp_path / "b", images(4), switches=["2x0.5", "4x0.25"])
    with pytest.raises(ConversionError, match="Cannot parse switch 'two halves'"):
        convert_model(TinyParaDiS(), tmp_path / "b", images(4), switches=["two halves"])


def test_refuses_a_calibration_set_of_the_wrong_shape_or_dtype(tmp_path):
    with pytest.raises(ConversionError, match=r"calibration set has shape \(4, 28, 28, 1\); the model takes images of shape \(N, 8, 8, 1\)"):
        convert_model(TinyParaDiS(), tmp_path / "b", np.zeros((4, 28, 28, 1), np.uint8))
    with pytest.raises(ConversionError, match="uint8 \\(raw\\) or float \\(preprocessed\\); received int32"):
        convert_model(TinyParaDiS(), tmp_path / "b", np.zeros((4, 8, 8, 1), np.int32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failed_conversion_leaves_no_bundle_and_keeps_the_old_one(tmp_path, tiny_bundle_dir):
    import shutil

    class Broken(TinyParaDiS):
        def device_segments(self, switch):
            segs = super().device_segments(switch)
            if str(switch) == "2x0.5":
                raise RuntimeError("model bug while slicing 2x0.5")
            return segs

    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, target)
    before = (target / MANIFEST).read_bytes()
    with pytest.raises(RuntimeError, match="slicing"):
        convert_model(Broken(), target, images(8), calib_samples=4, sequential=(), overwrite=True, num_threads=1)
    assert (target / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary directory left


def test_tflm_artefacts_follow_the_tflm_convention(tiny_bundle_dir):
    b = load(tiny_bundle_dir)
    seg = b.plan("0.5+0.25+0.25").devices[2].segments[0]
    assert seg.tflm.symbol == "g_0_5p0_25p0_25_device_2_segment_0_model_data"
    cc = b.path(seg.tflm.cc).read_text()
    h = b.path(seg.tflm.h).read_text()
    data = b.read_bytes(seg.file)
    assert f"alignas(16) const unsigned char {seg.tflm.symbol}[] = {{" in cc
    assert f"const unsigned int {seg.tflm.symbol}_size = {len(data)};" in cc
    assert '#include "segment-0.h"' in cc
    body = cc.split("= {", 1)[1].split("};", 1)[0]
    assert bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body)) == data
    assert f"extern const unsigned char {seg.tflm.symbol}[];" in h
    assert f"g_0_5p0_25p0_25_device_2_segment_0_arena_bytes = {seg.tflm.arena_bytes};" in h
    assert seg.tflm.ops == read_tflite(data).ops == ("CONV_2D", "FULLY_CONNECTED", "MEAN")
    assert "AddConv2D, AddFullyConnected, AddMean" in h
    # the recorded arena is enough for TFLM to run the segment
    it = load_interpreter(data, "tflm", arena_size=seg.tflm.arena_bytes)
    assert it.run([np.zeros((2, 8, 8, 1), np.int8)])[0].shape == (2, 4)


def test_manifest_records_quantization_and_macs(tiny_bundle_dir):
    b = load(tiny_bundle_dir)
    raw = json.loads((tiny_bundle_dir / MANIFEST).read_text())
    assert raw["schema_version"] == 1 and raw["conversion"]["calibration_samples"] == 16
    full, half = b.plan("1x1.0").devices[0], b.plan("2x0.5").devices
    seg = full.segments[0]
    assert seg.inputs[0].tensor.quant.dtype == "int8" and seg.output.quant.dtype == "int8"
    # input [0, 1] in 1/255 steps: the raw uint8 image exactly
    assert np.isclose(seg.inputs[0].tensor.quant.scale, 1 / 255, rtol=1e-5) and seg.inputs[0].tensor.quant.zero_point == -128
    # 8x8 maps, 3x3 kernels: stem 1->8, conv2 8->8, conv3 8->8, fc 8->4
    assert full.macs == 64 * 8 * 9 * 1 + 2 * 64 * 8 * 9 * 8 + 8 * 4
    # split convs are block-diagonal: each half device does a quarter of conv2/conv3
    assert [d.macs for d in half] == [64 * 4 * 9 + 2 * 64 * 4 * 9 * 4 + 4 * 4] * 2
    assert np.allclose(b.plan("2x0.5").fusion.bias, TinyParaDiS().b4)


def test_plan_cost_counts_bytes_crossing_devices(tiny_bundle_dir):
    b = load(tiny_bundle_dir)
    c = plan_cost(b.plan("2x0.5"))
    assert c.input_broadcast_bytes == 2 * 64 and c.exchange_bytes == 0 and c.output_bytes == 2 * 4
    s = plan_cost(b.plan("seq-3"))
    # input to device 0; 8x8x8 feature maps 0->1 and 1->2; logits from device 2
    assert s.input_broadcast_bytes == 64 and s.exchange_bytes == 2 * 512 and s.output_bytes == 4
    assert [d.sent_bytes for d in s.devices] == [512, 512, 0]
    assert s.total_macs == plan_cost(b.plan("1x1.0")).total_macs


@pytest.mark.slow
def test_a_learned_logit_scale_is_folded_into_the_partitions(tmp_path):
    """Float partitions of a model with per-switch logit scales, fused with one
    bias, equal the Keras switches: the scale lives in each device's kernel."""
    from core_reference import randomize_bn

    from paradis_tf.models import mobilenet_v1
    from paradis_tf.runtime import LocalRunner

    m = mobilenet_v1((12, 12, 1), 4, ["1x1.0", "2x0.5"], width=0.25, depth=2, logit_scale=True)
    randomize_bn(m)
    m.body.head.log_scales.assign(np.log(np.array([0.5, 3.0], dtype="float32")))
    x = images(16, shape=(12, 12, 1))
    bundle = convert_model(m, tmp_path / "b", x, calib_samples=8, float_variant=True, num_threads=1)
    xf = x.astype(np.float32) / 255.0
    for s in ("1x1.0", "2x0.5"):
        ref = m.switch_model(s).predict(xf, verbose=0)
        got = LocalRunner(bundle, s, precision="float", num_threads=1).predict(xf)
        np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=s)


@pytest.mark.parametrize("count", [2, 4, 5])
def test_calibration_samples_reach_their_own_inputs(count):
    """The converter orders a multi-input model's inputs its own way (with 4 inputs, in_03 first);
    calibration samples must still reach the input they were given for, or every range after a
    sync point's inputs is measured on mis-wired data. Input i here spans [0, 10**i]."""
    import keras

    from paradis_tf.convert.tflite import keras_to_tflite

    ins = [keras.Input((4,)) for _ in range(count)]
    model = keras.Model(ins, keras.layers.Add()([keras.layers.Dense(3)(t) for t in ins]))
    rng = np.random.default_rng(0)
    samples = [[rng.uniform(0, 10.0**i, (1, 4)).astype(np.float32) for i in range(count)] for _ in range(50)]
    info = read_tflite(keras_to_tflite(model, lambda: iter(samples)))
    spans = [255 * float(np.ravel(t.quant.scale)[0]) for t in info.inputs]
    for i, span in enumerate(spans):
        assert 0.9 * 10.0**i < span < 1.1 * 10.0**i, (i, spans)
