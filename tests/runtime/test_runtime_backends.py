"""The interpreter backends agree on int8 outputs, and fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from paradis_tf.runtime import BACKENDS, BackendError, load_interpreter
from paradis_tf.runtime.backends import _import_backend, tflm_arena_bytes


def _int8_inputs(interp, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (n,) + d.shape[1:]).astype(np.int8) for d in interp.inputs]


def _segment_files(bundle):
    for plan in bundle.plans.values():
        for d in plan.devices:
            for s in d.segments:
                yield plan.name, d.role, s


def test_backends_agree_on_every_int8_segment_within_the_documented_bounds(tiny_bundle, sync_bundle):
    """litert and tf run the same XNNPACK kernels: bit-exact. TFLM's reference
    kernels round some requantizations differently (docs/BUNDLE.md, "Backend
    agreement"): at most a couple of LSB after a few layers, mostly identical."""
    checked = 0
    for bundle in (tiny_bundle, sync_bundle):
        for plan, role, seg in _segment_files(bundle):
            where = f"{plan} device {role} segment {seg.index}"
            path = bundle.path(seg.file)
            ref_it = load_interpreter(path, "litert", num_threads=1)
            x = _int8_inputs(ref_it, 16)
            ref = ref_it.run(x)[0]
            np.testing.assert_array_equal(load_interpreter(path, "tf", num_threads=1).run(x)[0], ref, err_msg=where)
            tflm = load_interpreter(path, "tflm", arena_size=seg.tflm.arena_bytes).run(x)[0]
            kernels_ref = load_interpreter(path, "litert", num_threads=1, reference_kernels=True).run(x)[0]
            assert tflm.dtype == np.int8 and tflm.shape == ref.shape
            diff = np.abs(tflm.astype(int) - ref.astype(int))
            assert diff.max() <= 3 and (diff == 0).mean() >= 0.8, where
            assert np.abs(tflm.astype(int) - kernels_ref.astype(int)).max() <= 1, where
            checked += 1
    assert checked >= 12


def _single_op_model(kind: str):
    import keras

    shapes = {"CONV_2D": (6, 6, 4), "DEPTHWISE_CONV_2D": (6, 6, 8), "MEAN": (7, 7, 16), "FULLY_CONNECTED": (16,),
              "ADD": (6, 6, 4), "CONCATENATION": (6, 6, 4), "AVERAGE_POOL_2D": (6, 6, 4)}
    layers = {
        "CONV_2D": lambda x: keras.layers.Conv2D(4, 3, padding="same")(x),
        "DEPTHWISE_CONV_2D": lambda x: keras.layers.DepthwiseConv2D(3, padding="same")(x),
        "MEAN": lambda x: keras.layers.GlobalAveragePooling2D()(x),
        "FULLY_CONNECTED": lambda x: keras.layers.Dense(10)(x),
        "ADD": lambda x: keras.layers.Add()([x, keras.layers.Conv2D(4, 1)(x)]),
        "CONCATENATION": lambda x: keras.layers.Concatenate()([x, keras.layers.Conv2D(4, 1)(x)]),
        "AVERAGE_POOL_2D": lambda x: keras.layers.AveragePooling2D(2)(x),
    }
    keras.utils.set_random_seed(0)
    x = keras.Input(shapes[kind])
    return keras.Model(x, layers[kind](x)), shapes[kind]


# Per kernel, the largest |difference| in LSB against TFLM (the microcontroller kernels),
# for litert's default (XNNPACK) and for TFLite's reference kernels (BUILTIN_REF).
KERNEL_BOUNDS = {
    "CONV_2D": (1, 0),
    "DEPTHWISE_CONV_2D": (1, 0),
    "MEAN": (1, 0),
    "FULLY_CONNECTED": (1, 1),
    "ADD": (1, 0),
    "CONCATENATION": (1, 0),
    "AVERAGE_POOL_2D": (0, 0),
}


@pytest.mark.parametrize("kind", sorted(KERNEL_BOUNDS))
def test_which_kernels_differ_between_litert_and_tflm_and_by_how_much(kind):
    from paradis_tf.convert.tflite import keras_to_tflite
    from paradis_tf.tflite_file import read_tflite

    model, shape = _single_op_model(kind)
    rng = np.random.default_rng(0)
    cal = rng.normal(size=(32,) + shape).astype(np.float32)
    data = keras_to_tflite(model, lambda: ([cal[i : i + 1]] for i in range(32)))
    assert kind in read_tflite(data).ops
    x = [rng.integers(-128, 128, (128,) + shape).astype(np.int8)]
    tflm = load_interpreter(data, "tflm").run(x)[0].astype(int)
    xnn_bound, ref_bound = KERNEL_BOUNDS[kind]
    xnn = load_interpreter(data, "litert", num_threads=1).run(x)[0].astype(int)
    ref = load_interpreter(data, "litert", num_threads=1, reference_kernels=True).run(x)[0].astype(int)
    assert np.abs(xnn - tflm).max() <= xnn_bound
    assert np.abs(ref - tflm).max() <= ref_bound


def test_tflite_runtime_backend_works_or_says_how_to_install_it(tiny_bundle):
    seg = tiny_bundle.plan("1x1.0").devices[0].segments[0]
    try:
        _import_backend("tflite_runtime")
    except BackendError as e:
        assert "tflite-runtime" in str(e) and "litert" in str(e)
        with pytest.raises(BackendError, match="tflite_runtime"):
            load_interpreter(tiny_bundle.path(seg.file), "tflite_runtime")
        return
    it = load_interpreter(tiny_bundle.path(seg.file), "tflite_runtime")
    ref = load_interpreter(tiny_bundle.path(seg.file), "litert")
    x = _int8_inputs(ref, 3)
    np.testing.assert_array_equal(it.run(x)[0], ref.run(x)[0])


@pytest.mark.parametrize("backend", ["litert", "tflm"])
def test_a_batch_equals_its_samples_one_by_one(tiny_bundle, backend):
    seg = tiny_bundle.plan("2x0.5").devices[1].segments[0]
    it = load_interpreter(tiny_bundle.path(seg.file), backend, num_threads=1)
    x = _int8_inputs(it, 5, seed=2)
    batch = it.run(x)[0]
    one_by_one = np.concatenate([it.run([a[i : i + 1] for a in x])[0] for i in range(5)])
    assert batch.shape == (5,) + seg.output.shape[1:]
    np.testing.assert_array_equal(batch, one_by_one)
    assert it.resizable == (backend != "tflm")


def test_wrong_inputs_are_refused_naming_what_is_expected(tiny_bundle):
    seg = tiny_bundle.plan("1x1.0").devices[0].segments[0]
    it = load_interpreter(tiny_bundle.path(seg.file), "litert")
    with pytest.raises(BackendError, match=r"expects int8 of shape \(N, 8, 8, 1\); received float32"):
        it.run([np.zeros((1, 8, 8, 1), np.float32)])
    with pytest.raises(BackendError, match="takes 1 input"):
        it.run([])


def test_unknown_backend_and_unreadable_model_are_clear_errors(tmp_path):
    with pytest.raises(BackendError, match="Unknown interpreter backend 'onnx'"):
        load_interpreter(b"", "onnx")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(BackendError, match="bad.tflite"):
        load_interpreter(bad, "litert")
    with pytest.raises(Exception, match="not a TFLite flatbuffer"):
        load_interpreter(bad, "tflm")
    assert set(BACKENDS) == {"litert", "tflite_runtime", "tf", "tflm"}


def test_tflm_arena_is_the_smallest_that_allocates(tiny_bundle):
    seg = tiny_bundle.plan("2x0.5").devices[0].segments[0]
    data = tiny_bundle.read_bytes(seg.file)
    arena = tflm_arena_bytes(data)
    assert arena == seg.tflm.arena_bytes and arena % 16 == 0
    it = load_interpreter(data, "tflm", arena_size=arena)  # exactly the recorded arena is enough
    assert it.run(_int8_inputs(it, 1))[0].shape == (1, 4)
    with pytest.raises(BackendError, match=f"arena of {arena - 16} bytes"):
        load_interpreter(data, "tflm", arena_size=arena - 16)
