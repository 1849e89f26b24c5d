"""`paradis convert`: the sequential baselines a model cannot make are skipped with a notice; the output is quiet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paradis_tf.bundle import load
from paradis_tf.cli import main

ROOT = Path(__file__).resolve().parents[2]
NOTICE = ("paradis: skipping the sequential baseline plans seq-2, seq-3, seq-4: they cut the 1x1.0 switch, which the "
          "model lacks (it has 2x0.5, 1x0.5)\n")


@pytest.mark.slow
def test_default_convert_of_a_model_without_1x1_is_quiet_and_skips_the_baselines(saved_model, tmp_path):
    """In a fresh process, as a user runs it: stderr holds the one notice and nothing of TensorFlow's."""
    model = saved_model("2x0.5", "1x0.5")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    run = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "convert", str(model), "--out", str(tmp_path / "b"),
                          "--dataset", "fashion_mnist", "--calib-samples", "8", "--switches", "1x0.5", "--no-tflm"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == NOTICE
    assert list(load(tmp_path / "b").plans) == ["1x0.5"]


@pytest.mark.slow
def test_convert_skips_the_baselines_a_short_network_cannot_make(saved_model, tmp_path, capfd):
    model = saved_model("1x1.0", "2x0.5")  # depth 1: three stages, so seq-4 cannot be cut
    assert main(["convert", str(model), "--out", str(tmp_path / "b"), "--dataset", "fashion_mnist",
                 "--calib-samples", "8", "--switches", "2x0.5", "--no-tflm"]) == 0
    err = capfd.readouterr().err
    assert err.startswith("paradis: skipping the sequential baseline plans seq-4: Expected 1 <= num_devices <= 3")
    assert err.count("\n") == 1 and "fully_quantize" not in err
    assert list(load(tmp_path / "b").plans) == ["2x0.5", "seq-2", "seq-3"]
    # asked for by name, a plan that cannot be made is an error; --log-level DEBUG lets the converter speak
    assert main(["--log-level", "DEBUG", "convert", str(model), "--out", str(tmp_path / "c"), "--dataset",
                 "fashion_mnist", "--calib-samples", "8", "--switches", "2x0.5", "--no-tflm", "--sequential", "2,4"]) == 1
    err = capfd.readouterr().err
    assert "paradis: cannot make the sequential plan seq-4: Expected 1 <= num_devices <= 3" in err
    assert not (tmp_path / "c").exists()
    assert main(["convert", str(model), "--out", str(tmp_path / "d"), "--dataset", "fashion_mnist", "--calib-samples",
                 "8", "--switches", "2x0.5", "--no-tflm", "--sequential", "none", "--log-level", "DEBUG"]) == 0
    assert "fully_quantize" in capfd.readouterr().err


def test_tensorflow_load_noise_is_filtered_and_everything_else_on_descriptor_2_kept(capfd):
    from paradis_tf.cli._logs import _TF_LOAD_NOISE
    from paradis_tf.runtime.backends import quiet_native_stderr

    with quiet_native_stderr(_TF_LOAD_NOISE):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"F0000 something native failed: keep me\n")
    assert capfd.readouterr().err == "F0000 something native failed: keep me\n"
