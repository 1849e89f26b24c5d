"""The runtime, the bundle loader and LocalRunner work where TensorFlow cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    import paradis_tf, paradis_tf.bundle, paradis_tf.runtime
    from paradis_tf.runtime import LocalRunner, BackendError

    bundle_dir, x_path = sys.argv[1], sys.argv[2]
    x = np.load(x_path)
    bundle = paradis_tf.bundle.load(bundle_dir)
    out = {"plans": list(bundle.plans)}
    for backend in ("litert", "tflm"):
        out[backend] = LocalRunner(bundle, "2x0.5", backend, num_threads=1).predict(x).tolist()
    try:
        LocalRunner(bundle, "2x0.5", "tf")
    except BackendError as e:
        out["tf_error"] = str(e)
    out["heavy"] = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    print(json.dumps(out))
    """
)


def test_runtime_imports_and_runs_with_tensorflow_blocked(tiny_bundle, tiny_images, tmp_path):
    x = tiny_images[:4].astype(np.float32) / 255.0
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_bundle.root), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert "2x0.5" in out["plans"]
    assert "Interpreter backend 'tf' is not usable here" in out["tf_error"]
    from paradis_tf.runtime import LocalRunner

    expected = LocalRunner(tiny_bundle, "2x0.5", num_threads=1).predict(x)
    np.testing.assert_array_equal(np.array(out["litert"], np.float32), expected)
    assert np.array(out["tflm"]).shape == expected.shape
