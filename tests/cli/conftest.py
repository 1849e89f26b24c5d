"""Fixtures of the command-line tests: small saved ParaDiS models, PNG files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory):
    """``saved_model(switches)``: an untrained ParaDiS MobileNet (28x28x1, Fashion-MNIST's 10 labels) saved as .keras."""
    made = {}

    def make(*switches: str):
        if switches not in made:
            from paradis_tf.data import FASHION_MNIST_LABELS
            from paradis_tf.models import mobilenet_v1

            model = mobilenet_v1((28, 28, 1), 10, list(switches), width=0.25, depth=1,
                                 labels=list(FASHION_MNIST_LABELS))
            path = tmp_path_factory.mktemp("models") / f"{'_'.join(switches).replace('+', 'p')}.keras"
            model.save(path)
            made[switches] = path
        return made[switches]

    return make


@pytest.fixture
def png():
    """``png(path, array)``: writes a uint8 (H, W, C) array as a PNG file."""

    def write(path, array):
        import tensorflow as tf

        path.parent.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(path), tf.io.encode_png(array))
        return path

    return write
