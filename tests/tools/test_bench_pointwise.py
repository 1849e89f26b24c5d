"""The grouped-pointwise benchmark: the model's layer shapes, its refusals, a real tiny run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = "bench_pointwise"  # the `bench` fixture loads it


def test_layer_shapes_follow_the_benchmark_network(bench):
    shapes = bench.layer_shapes(0.5, 7)
    assert [(s["size"], s["in"], s["out"]) for s in shapes] == [
        (28, 16, 32), (14, 32, 64), (14, 64, 64), (7, 64, 128), (7, 128, 128), (4, 128, 256), (4, 256, 256)]


# Run in a fresh process: the grouped way's gradient needs oneDNN, which the tool turns on before TensorFlow
# loads (in this process TensorFlow may already run without it).
EVERY_WAY = """
import sys
import numpy as np
sys.path.insert(0, "tools")
import bench_pointwise as bench
import tensorflow as tf

groups = int(sys.argv[1])
x = tf.random.stateless_normal((2, 3, 3, 8), seed=(1, 2))
w = tf.random.stateless_normal((8, 12), seed=(3, 4))
mask = np.kron(np.eye(groups), np.ones((8 // groups, 12 // groups)))
want = np.einsum("bhwc,cd->bhwd", x.numpy(), w.numpy() * mask)  # NumPy: block-diagonal by construction
grads = {}
for way, fn in bench.ways(groups, 8, 12).items():
    with tf.GradientTape() as tape:
        tape.watch(w)
        y = fn(x, w)
        loss = tf.reduce_sum(y * y)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5, err_msg=way)
    grads[way] = tape.gradient(loss, w).numpy()
    assert np.all(grads[way][mask == 0] == 0), way  # the zero blocks get no gradient
np.testing.assert_allclose(grads["per_device"], grads["masked"], rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(grads["grouped"], grads["masked"], rtol=1e-4, atol=1e-4)
print("ways:", sorted(grads))
"""


@pytest.mark.parametrize("groups", [2, 4])
@pytest.mark.slow
def test_every_way_computes_the_masked_product_and_its_gradients(groups):
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    run = subprocess.run([sys.executable, "-c", EVERY_WAY, str(groups)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ways: ['grouped', 'masked', 'per_device']" in run.stdout


def test_the_conv_kernel_variant_of_the_pointwise_layers_computes_the_same(bench):
    """`use_conv_kernels` (the variant `bench_train_time --conv-pointwise` times) changes every 1x1 stride-1
    ParaDiS convolution, and only those, and the model computes what it computed with matmuls."""
    import numpy as np

    from paradis_tf.layers import ParaDiSConv2D
    from paradis_tf.models import mobilenet_v1

    m = mobilenet_v1((12, 12, 1), 10, ["1x1.0", "0.5+0.25+0.25"], width=0.25, depth=3, sync_layers=[1])
    x = np.random.default_rng(0).random((3, 12, 12, 1)).astype("float32")
    want = {(s, d): np.asarray(m.forward(s, x, per_device=d)) for s in ("1x1.0", "0.5+0.25+0.25") for d in (False, True)}
    assert sorted(bench.use_conv_kernels(m)) == ["block0_pw", "block1_pw", "block2_pw"]
    assert m.body.stem_conv._conv.__func__ is ParaDiSConv2D._conv  # the 3x3 stem keeps the product's way
    assert m.body.blocks[0][2]._conv.__func__ is not ParaDiSConv2D._conv
    for (s, d), y in want.items():
        np.testing.assert_allclose(np.asarray(m.forward(s, x, per_device=d)), y, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{s} per_device={d}")


@pytest.mark.parametrize("argv, message", [
    (["--groups", "1"], "--groups 1: pass 2 or more devices"),
    (["--rounds", "0"], "--rounds must be at least 1. Received 0"),
])
def test_bad_options_are_named(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(argv)


@pytest.mark.slow
def test_a_real_run_records_every_layer_and_way(run_tool, tmp_path):
    out = tmp_path / "pw.json"
    run = run_tool("bench_pointwise", "--depth", "14", "--out", str(out))
    assert run.returncode != 0 and "--width 0.5 --depth 14: Expected 1 <= depth <= 13. Received depth=14" in run.stderr
    run = run_tool("bench_pointwise", "--groups", "2", "3", "--depth", "3", "--batch-size", "4", "--rounds", "2",
                   "--steps", "1", "--out", str(out))
    assert run.returncode != 0 and "--groups 3: layer block0_pw has 16 -> 32 channels" in run.stderr
    assert not out.exists()
    run = run_tool("bench_pointwise", "--groups", "2", "4", "--depth", "3", "--batch-size", "4", "--rounds", "2",
                   "--steps", "1", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    assert [s["layer"] for s in got["layers"]] == ["block0_pw", "block1_pw", "block2_pw"]
    for g in ("2", "4"):
        r = got["groups"][g]
        assert set(r["cpu_ms_per_layer"]) == {"block0_pw", "block1_pw", "block2_pw"}
        assert all(v[w] > 0 for v in r["cpu_ms_per_layer"].values() for w in ("masked", "per_device", "grouped"))
        assert r["over_masked"]["masked"] == 1.0
        assert r["cpu_ms_best_per_layer"] <= min(r["cpu_ms_total"].values()) + 1e-9
        assert f"{g} devices: masked" in run.stdout
