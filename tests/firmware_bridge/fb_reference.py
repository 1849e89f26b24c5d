"""Reference computations for the firmware_bridge tests (independent of the emulator)."""

from __future__ import annotations

import numpy as np


def tflm_reference(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Runs `model` with TFLM in-process, a generous arena, and returns its outputs."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model, arena_size=1 << 20)
    for i, x in enumerate(inputs):
        interp.set_input(x, i)
    interp.invoke()
    outs = []
    while True:
        try:
            interp.get_output_details(len(outs))
        except IndexError:
            return outs
        outs.append(np.array(interp.get_output(len(outs))))


def random_int8(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int16).astype(np.int8)
