"""tools/bench_train_time.py: refusals, and a real side-by-side timing of the joint and individual steps."""

import json

import pytest

TOOL = "bench_train_time"  # the `bench` fixture loads it


@pytest.mark.parametrize("argv,message", [
    (["--threads", "0"], "--threads 0: pass 1 or more threads"),
    (["--sandwich", "7"], "--sandwich 7: pass 2 to 6 switches per step"),
    (["--steps", "3", "--also-batch", "100"], r"--also-batch 100: pass a batch size > 0 that divides steps x batch-size \(3 x 128\)"),
])
def test_bad_options_are_refused_before_any_training(bench, argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        bench.main([*argv, "--out", str(tmp_path / "t.json")])
    assert not (tmp_path / "t.json").exists()


def test_threads_cannot_be_set_once_tensorflow_ran(bench, tmp_path):
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the runtime and its thread pools exist now
    with pytest.raises(SystemExit, match="--threads 1: .*start a fresh process"):
        bench.main(["--threads", "1", "--out", str(tmp_path / "t.json")])


@pytest.mark.slow
def test_joint_and_individual_steps_are_timed_side_by_side(run_tool, tmp_path):
    out = tmp_path / "t.json"
    run = run_tool("bench_train_time", "--rounds", "1", "--steps", "2", "--width", "0.25", "--depth", "2",
                   "--batch-size", "16", "--threads", "1", "--per-device", "--conv-pointwise", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    switches = ["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25"]
    timed = {"paradis", *(f"individual {s}" for s in switches)}
    assert timed <= set(data["seconds_per_step"]), data.keys()
    # one joint step trains six switches: it costs more than the cheapest single-switch step
    med = data["seconds_per_step"]
    assert med["paradis"] > min(med[f"individual {s}"] for s in switches) > 0
    assert data["joint_over_individual"] == pytest.approx(med["paradis"] / sum(med[f"individual {s}"] for s in switches))
    assert "| paradis |" in run.stdout
    # the variants the tools build (per-device path, 1x1 convolution kernels) were timed beside
    assert {"paradis per device", "paradis conv pointwise", "individual 1x1.0 conv pointwise"} <= set(med)
    assert data["packed_over_per_device"] == pytest.approx(med["paradis"] / med["paradis per device"])
    assert set(data["matmul_over_conv_pointwise"]) == {"paradis", "individual 1x1.0"}
    assert f"joint packed / per device = {data['packed_over_per_device']:.2f} wall" in run.stdout
    assert "individual 1x1.0: pointwise as matmul / as 1x1 convolution = " in run.stdout
