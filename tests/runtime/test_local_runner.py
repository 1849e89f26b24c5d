"""LocalRunner and DeviceProgram: the plan semantics, against the Keras switch models."""

from __future__ import annotations

import numpy as np
import pytest

from paradis_tf.bundle import BundleError, SegmentRef
from paradis_tf.errors import InputError, ParaDiSError
from paradis_tf.runtime import DeviceProgram, LocalRunner, QTensor, QuantParams, fuse


def _x(images):
    return images.astype(np.float32) / 255.0


def _keras(model, plan_name, x):
    switch = "1x1.0" if plan_name.startswith("seq-") else plan_name
    return model.switch_model(switch).predict(x, verbose=0)


@pytest.mark.slow
def test_float_partitions_fused_equal_the_keras_switch(tiny_model, tiny_bundle, sync_model, sync_bundle, tiny_images):
    x = _x(tiny_images)
    names = []
    for model, bundle in ((tiny_model, tiny_bundle), (sync_model, sync_bundle)):
        for name in bundle.plans:
            logits = LocalRunner(bundle.root, name, precision="float", num_threads=1).predict(x)
            np.testing.assert_allclose(logits, _keras(model, name, x), atol=1e-4, err_msg=name)
            names.append(name)
    assert {"1x1.0", "2x0.5", "0.5+0.25+0.25", "seq-2", "seq-3", "4x0.25"} <= set(names)


@pytest.mark.parametrize("backend", ["litert", "tflm"])
@pytest.mark.slow
def test_int8_partitions_fused_track_the_keras_switch(tiny_model, tiny_bundle, tiny_images, backend):
    x = _x(tiny_images)
    for name in tiny_bundle.plans:
        ref = _keras(tiny_model, name, x)
        got = LocalRunner(tiny_bundle, name, backend, num_threads=1).predict(x)
        spread = ref.max() - ref.min()
        assert np.abs(got - ref).max() < 0.05 * spread, name
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9, name


def test_sync_model_has_two_segments_per_device_and_runs_through_local_runner(sync_model, sync_bundle, tiny_images):
    plan = sync_bundle.plan("4x0.25")
    assert [len(d.segments) for d in plan.devices] == [2, 2, 2, 2]
    seg1 = plan.devices[2].segments[1]
    assert [i.source for i in seg1.inputs] == [SegmentRef(k, 0) for k in range(4)]
    x = _x(tiny_images)
    ref = sync_model.switch_model("4x0.25").predict(x, verbose=0)
    float_got = LocalRunner(sync_bundle.root, "4x0.25", precision="float", num_threads=1).predict(x)
    np.testing.assert_allclose(float_got, ref, atol=1e-4)
    results = []
    for backend in ("litert", "tflm"):
        got = LocalRunner(sync_bundle.root, "4x0.25", backend, num_threads=1).predict(x)
        # As close as the split plans: the gathered inputs' calibration must reach the
        # inputs it was meant for (with the converter's own input order, the largest
        # error here was 24% of the logit spread; docs/BUNDLE.md, "Sync segments").
        spread = ref.max() - ref.min()
        assert np.abs(got - ref).max() < 0.05 * spread
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
        results.append(got)
    # litert (XNNPACK) and tflm differ by a few LSB at most (test_runtime_backends)
    assert (results[0].argmax(1) == results[1].argmax(1)).mean() >= 0.95
    assert np.abs(results[0] - results[1]).max() < 0.02 * (ref.max() - ref.min())


def test_device_program_says_what_a_device_needs_and_who_consumes_it(sync_bundle, tiny_bundle):
    p = DeviceProgram(sync_bundle, "2x0.5", 1, num_threads=1)
    assert p.num_segments == 2
    assert [i.source for i in p.needs(0)] == [None]
    assert p.remote_inputs(1) == [SegmentRef(0, 0)]
    assert p.consumers(0) == [SegmentRef(0, 1), SegmentRef(1, 1)]
    assert p.remote_consumers(0) == [0]
    assert not p.is_fusion_output(0) and p.is_fusion_output(1)
    seq = DeviceProgram(tiny_bundle, "seq-3", 1, num_threads=1)
    assert [i.source for i in seq.needs(0)] == [SegmentRef(0, 0)]
    assert seq.remote_consumers(0) == [2] and not seq.is_fusion_output(0)


def test_run_segment_requantizes_inputs_whose_parameters_differ(sync_bundle, tiny_images):
    x = _x(tiny_images[:8])
    progs = [DeviceProgram(sync_bundle, "2x0.5", k, num_threads=1) for k in range(2)]
    outs0 = [p.run_segment(0, [x]) for p in progs]
    ref = progs[0].run_segment(1, outs0)
    # the same feature maps, stored with other (finer) parameters, must give the same result
    finer = [QTensor(o.data.astype(np.int16) * 2, QuantParams("int16", o.params.scale / 2, o.params.zero_point * 2)) for o in outs0]
    np.testing.assert_array_equal(progs[0].run_segment(1, finer).data, ref.data)
    # and float feature maps are quantized on the way in
    np.testing.assert_array_equal(progs[0].run_segment(1, [o.dequantize() for o in outs0]).data, ref.data)
    assert ref.params == progs[0].output_spec(1).quant


def test_fuse_sums_dequantized_partials_plus_bias(tiny_bundle, tiny_images):
    runner = LocalRunner(tiny_bundle, "2x0.5", num_threads=1)
    x = _x(tiny_images[:4])
    outs = runner.run(x)
    manual = sum(outs[r].dequantize() for r in runner.plan.fusion.outputs) + np.array(runner.plan.fusion.bias, np.float32)
    np.testing.assert_allclose(fuse(runner.plan, outs), manual, rtol=0, atol=1e-6)
    np.testing.assert_allclose(runner.predict(x), manual, atol=1e-6)
    with pytest.raises(InputError, match="missing"):
        fuse(runner.plan, {})


def test_predict_refuses_wrong_shape_or_dtype(tiny_bundle, tiny_images):
    r = LocalRunner(tiny_bundle, "1x1.0", num_threads=1)
    with pytest.raises(InputError, match=r"expects a float array of shape \(N, 8, 8, 1\).*received shape \(8, 8, 1\)"):
        r.predict(np.zeros((8, 8, 1), np.float32))
    with pytest.raises(InputError, match=r"received shape \(2, 8, 8, 3\)"):
        r.predict(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="received dtype uint8 \\(raw images: use predict_raw\\)"):
        r.predict(tiny_images[:2])
    with pytest.raises(InputError, match="received list"):
        r.predict([[0.0]])
    with pytest.raises(InputError, match="NaN"):
        r.predict(np.full((1, 8, 8, 1), np.nan, np.float32))
    np.testing.assert_allclose(r.predict_raw(tiny_images[:3]), r.predict(_x(tiny_images[:3])), atol=0)


def test_unknown_plan_role_or_missing_float_partitions_are_clear(tiny_bundle, sync_bundle):
    with pytest.raises(BundleError, match=r"no plan '3x0.25'.*'1x1.0'"):
        LocalRunner(tiny_bundle, "3x0.25")
    with pytest.raises(BundleError, match="roles 0..1; received role 2"):
        DeviceProgram(tiny_bundle, "2x0.5", 2)
    assert LocalRunner(tiny_bundle, "2x0.50").plan.name == "2x0.5"  # switch text is normalised
    assert issubclass(BundleError, ParaDiSError)
