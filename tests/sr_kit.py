"""Super-resolution test helpers (issue 37): a small WDSR and its calibration tiles.

The untrained WDSR's output convolution is zero (the network is then exactly
its bicubic skip branch); `make_sr_model` gives it small random weights so
that every device's partial residual counts.
"""

from __future__ import annotations

import numpy as np

SR_SWITCHES = ("1x1.0", "2x0.5", "0.5+0.25+0.25")
SR_TILE = 24


def make_sr_model(channels: int = 3, switches=SR_SWITCHES, sync_layers=(), seed: int = 0):
    """A WDSR x2 (8 channels, 2 blocks, expansion 2) on 24x24 patches with a small random output convolution."""
    import keras

    from paradis_tf.models import wdsr

    keras.utils.set_random_seed(seed)
    model = wdsr(scale=2, switches=list(switches), channels=8, blocks=2, expansion=2,
                 input_shape=(SR_TILE, SR_TILE, channels), sync_layers=list(sync_layers))
    rng = np.random.default_rng(seed)
    tails = [v for v in model.variables if v.path.split("/")[0] == "tail"]
    assert tails, [v.path for v in model.variables]
    for v in tails:
        v.assign(rng.normal(0.0, 0.005, tuple(v.shape)).astype("float32"))
    return model


def sr_calibration(channels: int = 3, samples: int = 32) -> np.ndarray:
    """Low-resolution 24x24 tiles of three training photographs (uint8)."""
    from paradis_tf.convert import sr_calibration_patches
    from paradis_tf.data.sr import load_skimage_images

    images = load_skimage_images(["rocket", "brick", "motorcycle_left"], channels)
    return sr_calibration_patches(images, 2, (SR_TILE, SR_TILE), samples)
