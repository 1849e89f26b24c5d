"""Fixtures of the firmware_bridge tests: tiny int8 models, served emulators."""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
import pytest


def _int8_tflite(build, input_shape, seed: int) -> bytes:
    """Converts a Keras model to a full-integer int8 .tflite (int8 in and out)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, batch_size=1)
    model = keras.Model(inp, build(keras.layers, inp))
    with tempfile.TemporaryDirectory() as d:
        # from_keras_model is unreliable under Keras 3; a SavedModel is not.
        model.export(d, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(d)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(seed)
        conv.representative_dataset = lambda: ([rng.random((1, *input_shape), dtype=np.float32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        return conv.convert()


@pytest.fixture(scope="session")
def models() -> dict[str, bytes]:
    """Two different tiny int8 models.

    "classifier": 8x8x1 image -> conv -> GAP -> dense -> 3 logits (small output).
    "features": 8x8x2 image -> conv 8 channels: a 512-byte output, longer
    than a small board's max payload.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return {
        "classifier": _int8_tflite(
            lambda L, x: L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same", activation="relu")(x))),
            (8, 8, 1), seed=1),
        "features": _int8_tflite(lambda L, x: L.Conv2D(8, 3, padding="same", activation="relu")(x),
                                 (8, 8, 2), seed=2),
    }


@pytest.fixture
def serve():
    """serve(config=..., transport="pty"|"tcp", baudrate=None) -> EmulatorServer, stopped at teardown."""
    from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
    from firmware_bridge.emulator import EmulatorServer

    with contextlib.ExitStack() as stack:

        def start(config: BoardConfig = BoardConfig(), transport: str = "pty", baudrate: int | None = None,
                  runtime=None) -> EmulatorServer:
            return stack.enter_context(EmulatorServer(BoardEmulator(config, runtime), transport, baudrate))

        yield start
