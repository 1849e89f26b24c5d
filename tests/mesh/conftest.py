"""Fixtures of the mesh tests: bundles made once per session by the real
converter from tiny ParaDiS MobileNets, and node daemons as subprocesses on
loopback (TensorFlow blocked in them, as on a board)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from paradis_tf.mesh.local import LocalMesh

FAILOVER_SWITCHES = ("1x0.25", "2x0.25", "3x0.25", "4x0.25")


def _calibration(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


@pytest.fixture(scope="session")
def bundle4(tmp_path_factory):
    """Switches 1x0.25 ... 4x0.25 of one network: a fleet of equal small devices."""
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, list(FAILOVER_SWITCHES), width=0.25, depth=2)
    out = tmp_path_factory.mktemp("bundles") / "tiny4"
    convert_model(model, out, _calibration(), calib_samples=8, sequential=(), tflm=False)
    return out


@pytest.fixture(scope="session")
def bundle_sync(tmp_path_factory):
    """A network with a sync layer (2x0.5: two segments per device) and the seq-2 baseline."""
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, ["1x1.0", "2x0.5"], width=0.25, depth=3, sync_layers=[1])
    out = tmp_path_factory.mktemp("bundles") / "tinysync"
    convert_model(model, out, _calibration(), calib_samples=8, sequential=(2,), tflm=False)
    return out


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """200 test images, preprocessed (raw / 255) as the bundle's manifest says."""
    raw = np.random.default_rng(1).integers(0, 256, (200, 28, 28, 1), dtype=np.uint8)
    return (raw.astype(np.float32) * np.float32(1 / 255)).astype(np.float32)


@pytest.fixture(scope="session")
def mesh4(tmp_path_factory):
    """Four node daemons of capacity 0.25, shared by the tests that do not kill nodes."""
    with LocalMesh(4, tmp_path_factory.mktemp("mesh4"), capacity=0.25, block_tensorflow=True) as mesh:
        yield mesh


@pytest.fixture(scope="session")
def mesh2(tmp_path_factory):
    """Two full-capacity node daemons."""
    with LocalMesh(2, tmp_path_factory.mktemp("mesh2"), capacity=1.0, block_tensorflow=True) as mesh:
        yield mesh


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def wait_for():
    """``wait_for(predicate, timeout_s, what)``: polls until true, else fails naming ``what``."""
    return _wait_until
