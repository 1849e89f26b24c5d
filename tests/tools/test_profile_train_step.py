"""The step profiler: op events grouped from a real TensorFlow profiler trace; its refusals."""

import json

import pytest

TOOL = "profile_train_step"  # the `bench` fixture loads it


@pytest.mark.parametrize("op_type, group", [
    ("_MklMatMul", "pointwise matmul"),
    ("MatMul", "pointwise matmul"),
    ("_MklNativeFusedBatchNormGradV3", "batch normalization"),
    ("_MklNativeDepthwiseConv2dNativeBackpropFilter", "depthwise convolution"),
    ("_MklNativeConv2DBackpropFilter", "convolution"),
    ("Conv2D", "convolution"),
    ("Relu6Grad", "activation"),
    ("StridedSliceGrad", "other"),
])
def test_op_types_fall_in_their_group(bench, op_type, group):
    assert bench.group_of(op_type) == group


def test_op_event_names_are_told_from_executor_events(bench):
    assert bench.OP_EVENT.match("model/block0_pw/MatMul:_MklMatMul").group(1) == "_MklMatMul"
    assert bench.OP_EVENT.match("ExecutorState::Process") is None
    assert bench.OP_EVENT.match("ThreadpoolListener::Record") is None


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1. Received 0"),
    (["--threads", "0"], "--threads must be at least 1. Received 0"),
    (["--switches", "3x0.5"], "--switches 3x0.5: "),
    (["--table"], "--table needs --out FILE"),
])
def test_bad_options_are_named(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(argv)


def test_threads_cannot_be_set_once_tensorflow_ran(bench):
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the runtime and its thread pools exist now
    with pytest.raises(SystemExit, match="--threads 1: .*start a fresh process"):
        bench.main(["--steps", "1", "--threads", "1"])


@pytest.mark.slow
def test_a_traced_joint_step_is_split_into_groups(bench, run_tool, tmp_path):
    out = tmp_path / "p.json"
    run = run_tool("profile_train_step", "--switches", "1x1.0", "2x0.5", "--width", "0.25", "--depth", "2",
                   "--batch-size", "16", "--steps", "3", "--warmup", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| pointwise matmul |" in run.stdout
    got = json.loads(out.read_text())
    assert got["switches"] == ["1x1.0", "2x0.5"] and got["steps"] == 3 and got["threads"] == 1
    groups = got["groups"]
    # every layer kind of a MobileNet step ran and was traced, forward and gradients
    for g in ("pointwise matmul", "convolution", "depthwise convolution", "batch normalization", "activation"):
        assert groups[g]["ms_per_step"] > 0, g
    assert sum(v["share"] for v in groups.values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(v["ms_per_step"] for v in groups.values()) == pytest.approx(got["ops_ms_per_step"], rel=1e-2)
    types = got["op_types"]
    assert any(t.endswith("FusedBatchNormGradV3") for t in types)  # gradients are in the trace
    assert all(v["group"] == bench.group_of(t) for t, v in types.items())
    # the ops ran one after another on one thread inside the traced steps (event times are wall times): no
    # op counted twice, none from outside the steps
    assert 0 < got["ops_ms_per_step"] <= got["wall_ms_per_step"]
    assert "| batch normalization |" in bench.table(got)
