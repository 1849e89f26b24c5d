import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

SWITCHES = ["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25"]


def randomize_bn(model, seed=0):
    """Non-trivial BN parameters and statistics, so slicing mistakes show."""
    rng = np.random.default_rng(seed)
    for bn in model.body.bn_layers():
        for group in (bn.gammas, bn.betas, bn.moving_means, bn.moving_vars):
            for v in group:
                shape = tuple(v.shape)
                if group is bn.moving_vars:
                    v.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
                elif group is bn.gammas:
                    v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
                else:
                    v.assign(rng.normal(0, 0.3, shape).astype("float32"))
    head = model.body.head
    head.bias.assign(rng.normal(0, 1, tuple(head.bias.shape)).astype("float32"))


@pytest.fixture(scope="session")
def tiny_mobilenet():
    from paradis_tf.models import mobilenet_v1

    m = mobilenet_v1((12, 12, 1), 10, SWITCHES, width=0.25, depth=3)
    randomize_bn(m)
    return m


@pytest.fixture(scope="session")
def images():
    return np.random.default_rng(1).random((6, 12, 12, 1)).astype("float32")
