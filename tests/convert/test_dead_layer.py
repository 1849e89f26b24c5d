"""A layer whose activations are all zero on the calibration set.

XNNPACK refuses to prepare such int8 graphs (a requantization scale out of
its range); the litert backend must fall back to TFLite's builtin kernels and
agree with TFLM, instead of failing the conversion or the node.
"""

import pytest
import numpy as np

from paradis_tf.convert import convert_model
from paradis_tf.models import mobilenet_v1
from paradis_tf.runtime import LocalRunner
from paradis_tf.runtime.backends import load_interpreter


@pytest.mark.slow
def test_dead_layer_converts_and_runs_on_litert_and_tflm(tmp_path):
    calib = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    model = mobilenet_v1((28, 28, 1), 10, ["1x0.25", "2x0.25"], width=0.25, depth=2)
    bn = model.body.blocks[0][3]
    beta = bn.betas[0].numpy()
    beta[:] = -100.0  # every activation after this BN + ReLU6 is 0 under 1x0.25
    bn.betas[0].assign(beta)
    bundle = convert_model(model, tmp_path / "b", calib, calib_samples=8, sequential=(), tflm=True)
    seg = bundle.plan("1x0.25").devices[0].segments[0]
    it = load_interpreter(bundle.path(seg.file), "litert")
    assert it.delegate_fallback, "XNNPACK accepted the graph: this test no longer covers the fallback"
    x = calib[:8].astype(np.float32) / 255
    lit = LocalRunner(tmp_path / "b", "1x0.25").predict(x)
    tflm = LocalRunner(tmp_path / "b", "1x0.25", backend="tflm").predict(x)
    np.testing.assert_array_equal(lit, tflm)
    ref = np.asarray(model.switch_model("1x0.25")(x))
    assert np.abs(lit - ref).max() < 0.1
    # The other switch keeps XNNPACK.
    other = bundle.plan("2x0.25").devices[0].segments[0]
    assert not load_interpreter(bundle.path(other.file), "litert").delegate_fallback
