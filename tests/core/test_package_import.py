"""`import paradis_tf` stays TensorFlow-free, yet a saved ParaDiS model loads once Keras is imported."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from paradis_tf.models import mobilenet_v1

SWITCHES = ["1x1.0", "2x0.5"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_import_paradis_tf_loads_neither_tensorflow_nor_keras():
    run = _run("""
        import sys
        import paradis_tf
        print(sorted(m for m in ("tensorflow", "keras", "paradis_tf.models") if m in sys.modules))
        """)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("first", ["paradis_tf.layers", "paradis_tf.models", "paradis_tf.training", "paradis_tf.convert"])
@pytest.mark.slow
def test_any_keras_side_module_imports_first_without_a_cycle(first):
    """The import hook fires while that module's own `import keras` runs; it must not re-enter it half-built."""
    run = _run(f"""
        import {first}
        import keras
        from paradis_tf.layers import ParaDiSConv2D
        print(keras.saving.get_registered_object("paradis_tf>ParaDiSConv2D") is ParaDiSConv2D)
        """)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.slow
def test_a_saved_model_loads_after_import_paradis_tf_then_keras(tmp_path):
    m = mobilenet_v1((12, 12, 1), 10, SWITCHES, width=0.25, depth=2, labels=[f"c{i}" for i in range(10)])
    x = np.random.default_rng(0).random((3, 12, 12, 1)).astype("float32")
    path = tmp_path / "model.keras"
    m.save(path)
    np.save(tmp_path / "x.npy", x)
    want = [np.asarray(y) for y in m(x)]
    for imports in ("import paradis_tf; import keras", "import keras; import paradis_tf"):
        run = _run(f"""
            import json, sys
            import numpy as np
            {imports}
            m = keras.saving.load_model({str(path)!r})
            x = np.load({str(tmp_path / "x.npy")!r})
            print(json.dumps({{"class": type(m).__name__, "switches": [str(s) for s in m.switches],
                              "logits": [np.asarray(y).tolist() for y in m(x)]}}))
            """)
        assert run.returncode == 0, (imports, run.stderr[-3000:])
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert got["class"] == "ParaDiSModel" and got["switches"] == SWITCHES, imports
        for a, b in zip(got["logits"], want):
            np.testing.assert_allclose(np.array(a), b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_without_paradis_tf_keras_cannot_find_the_class(tmp_path):
    """The registration is what loads the model: plain Keras fails on the same file (the check above can fail)."""
    m = mobilenet_v1((12, 12, 1), 10, SWITCHES, width=0.25, depth=2)
    path = tmp_path / "model.keras"
    m.save(path)
    run = _run(f"import keras; keras.saving.load_model({str(path)!r})")
    assert run.returncode != 0 and "ParaDiSModel" in run.stderr
