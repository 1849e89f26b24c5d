"""Fixtures shared by every test folder."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# As quiet as `paradis` by default (paradis_tf/cli/_logs.py): TensorFlow reads this when it loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tool():
    """Loads a script of ``tools/`` as a module, once: ``tool("bench_accuracy")``."""
    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up while the script runs
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def run_tool():
    """Runs a script of ``tools/`` in a fresh process, as a user does (TensorFlow's thread pools are fixed once
    it has run in a process): ``run_tool("bench_pointwise", "--groups", "2")``, a `subprocess.CompletedProcess`."""

    def run(name: str, *argv: str):
        path = [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, env=env)

    return run


# Super-resolution bundles (issue 37): a small WDSR converted once per session (helpers in tests/sr_kit.py).
@pytest.fixture(scope="session")
def sr_model():
    from sr_kit import make_sr_model

    return make_sr_model()


@pytest.fixture(scope="session")
def sr_bundle(tmp_path_factory, sr_model):
    """The bundle of `sr_model`: every switch, int8 + float partitions + TFLM arrays, 24x24 tiles."""
    from paradis_tf.convert import convert_model
    from sr_kit import sr_calibration

    out = tmp_path_factory.mktemp("sr") / "wdsr"
    convert_model(sr_model, out, sr_calibration(), calib_samples=32, float_variant=True, tflm=True, num_threads=1)
    return out
