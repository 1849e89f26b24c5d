import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from core_reference import SWITCHES, randomize_bn  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_mobilenet():
    from paradis_tf.models import mobilenet_v1

    m = mobilenet_v1((12, 12, 1), 10, SWITCHES, width=0.25, depth=3)
    randomize_bn(m)
    return m


@pytest.fixture(scope="session")
def images():
    return np.random.default_rng(1).random((6, 12, 12, 1)).astype("float32")
