"""Shared by the core tests (a uniquely named module: every test folder has its own conftest)."""

import numpy as np

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
