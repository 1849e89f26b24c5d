"""Running bundles: interpreter backends, quantization, plan semantics.

Imports without TensorFlow: node daemons and the serial bridge use it on
boards that only have `ai_edge_litert` or `tflite_micro`.

Backends:
    `load_interpreter`, `BACKENDS`, `available_backends`, `Interpreter`,
    `BackendError`.
Quantization (the one implementation every caller uses):
    `QuantParams`, `QTensor`, `quantize`, `dequantize`, `requantize`, `convert`.
Plans:
    `DeviceProgram` (what one device does for a request), `fuse`,
    `LocalRunner` (a whole plan in-process).
"""

from paradis_tf.runtime.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendError,
    Interpreter,
    available_backends,
    load_interpreter,
    tflm_arena_bytes,
)
from paradis_tf.runtime.quant import QTensor, QuantParams, convert, dequantize, quantize, requantize

# The plan classes import paradis_tf.bundle, which imports runtime.quant:
# resolve them lazily so either package can be imported first.
_LAZY = {
    "LocalRunner": "paradis_tf.runtime.local",
    "PRECISIONS": "paradis_tf.runtime.program",
    "DeviceProgram": "paradis_tf.runtime.program",
    "fuse": "paradis_tf.runtime.program",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'paradis_tf.runtime' has no attribute {name!r}")

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "BackendError",
    "Interpreter",
    "available_backends",
    "load_interpreter",
    "tflm_arena_bytes",
    "LocalRunner",
    "PRECISIONS",
    "DeviceProgram",
    "fuse",
    "QTensor",
    "QuantParams",
    "convert",
    "dequantize",
    "quantize",
    "requantize",
]
