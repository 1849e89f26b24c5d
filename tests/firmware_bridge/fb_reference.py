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


class StubRuntime:
    """A model runtime whose behaviour the C test harness copies exactly
    (firmware_bridge/c/tests/vectors.c, stub_activate / stub_invoke).

    image[0] = n (0: not a model); the arena it needs is 2 * len(image);
    input int8 [1, n] (scale 0.5, zp 1), output int8 [1, n] (scale 0.25,
    zp -2); out[i] = in[i] ^ image[i % len(image)].
    """

    name = "stub"

    def load(self, model: bytes, arena_size: int):
        from firmware_bridge.protocol import ErrorCode, Tensor, TensorSpec
        from firmware_bridge.tflm import ModelLoadError

        if model[0] == 0:
            raise ModelLoadError(ErrorCode.MODEL_INVALID, 0, "not a stub model")
        if 2 * len(model) > arena_size:
            raise ModelLoadError(ErrorCode.ARENA_TOO_SMALL, 2 * len(model), "arena too small")

        class Model:
            inputs = (TensorSpec("int8", (1, model[0]), 0.5, 1),)
            outputs = (TensorSpec("int8", (1, model[0]), 0.25, -2),)
            arena_used = 2 * len(model)

            def invoke(self, tensors):
                data = bytes(b ^ model[i % len(model)] for i, b in enumerate(tensors[0].data))
                return [Tensor(self.outputs[0], data)]

        return Model()
