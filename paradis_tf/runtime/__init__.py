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
Images (super-resolution bundles):
    `upscale_image` (a photograph through a plan, tile by tile),
    `depth_to_space`.
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
from paradis_tf.quant import QTensor, QuantParams, convert, dequantize, quantize, requantize
from paradis_tf.runtime.image import depth_to_space, upscale_image
from paradis_tf.runtime.local import LocalRunner
from paradis_tf.runtime.program import PRECISIONS, DeviceProgram, fuse

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "BackendError",
    "Interpreter",
    "available_backends",
    "load_interpreter",
    "tflm_arena_bytes",
    "LocalRunner",
    "depth_to_space",
    "upscale_image",
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
