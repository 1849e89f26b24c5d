"""Reads what the kit needs from a .tflite flatbuffer, without TensorFlow.

The bundle loader checks every partition's input and output tensors against
the manifest, the converter lists the operators a TFLM firmware must register
and counts MACs and parameters. All of it comes from the flatbuffer itself
through the generated TFLite schema that `ai_edge_litert` and `tflite_micro`
ship (TensorFlow's copy is the last resort, as importing it is slow).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from paradis_tf.errors import ParaDiSError
from paradis_tf.quant import QuantParams

__all__ = ["TfliteFileError", "TensorInfo", "OperatorInfo", "TfliteInfo", "read_tflite", "tflm_resolver_method"]

_SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)


class TfliteFileError(ParaDiSError, ValueError):
    """A .tflite file that cannot be read."""


@lru_cache(maxsize=1)
def _schema():
    errors = []
    for name in _SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise TfliteFileError(
        "Cannot read .tflite files: no TFLite schema module is importable (install ai-edge-litert); tried "
        + "; ".join(errors)
    )


@lru_cache(maxsize=1)
def _enum_names(enum_name: str) -> dict[int, str]:
    enum = getattr(_schema(), enum_name)
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    """One subgraph input or output tensor of a .tflite file."""

    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    quant: QuantParams


@dataclass(frozen=True)
class OperatorInfo:
    """One operator: its builtin name and the shapes of its tensors."""

    name: str
    input_shapes: tuple[tuple[int, ...] | None, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    constant_inputs: tuple[bool, ...]


@dataclass(frozen=True)
class TfliteInfo:
    """What the kit reads from a .tflite file (first subgraph)."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]

    @property
    def ops(self) -> tuple[str, ...]:
        """Sorted names of the builtin operators the model uses."""
        return tuple(sorted({op.name for op in self.operators}))

    def macs_and_params(self) -> tuple[int, int]:
        """Multiply-accumulates per sample and weight count of MAC operators.

        Counts convolutions, depthwise convolutions and fully connected
        layers (the rules in `_MAC_RULES`); batch norm is folded by then.
        """
        macs = params = 0
        for op in self.operators:
            rule = _MAC_RULES.get(op.name)
            if rule is None:
                continue
            macs += rule(op)
            params += sum(
                int(np.prod(s)) for s, const in zip(op.input_shapes, op.constant_inputs) if const and s is not None
            )
        return macs, params


def _per_sample(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))


def _conv_macs(op: OperatorInfo) -> int:
    # filter (Cout, kh, kw, Cin_per_group); every output element costs kh*kw*Cin_per_group.
    kh, kw, cin = op.input_shapes[1][1:]
    return _per_sample(op.output_shapes[0]) * kh * kw * cin


def _depthwise_macs(op: OperatorInfo) -> int:
    _, kh, kw, _ = op.input_shapes[1]
    return _per_sample(op.output_shapes[0]) * kh * kw


def _fully_connected_macs(op: OperatorInfo) -> int:
    # weights (units, in_features)
    return _per_sample(op.output_shapes[0]) * op.input_shapes[1][1]


_MAC_RULES: dict[str, Callable[[OperatorInfo], int]] = {
    "CONV_2D": _conv_macs,
    "DEPTHWISE_CONV_2D": _depthwise_macs,
    "FULLY_CONNECTED": _fully_connected_macs,
}


def _tensor_quant(tensor, dtype: str) -> QuantParams:
    if dtype == "float32":
        return QuantParams("float32")
    q = tensor.Quantization()
    scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
    zps = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else None
    if scales is None or len(scales) != 1:
        raise TfliteFileError(
            f"tensor '{tensor.Name().decode()}' has {0 if scales is None else len(scales)} scales; "
            "expected per-tensor quantization (one scale)"
        )
    return QuantParams(dtype, float(scales[0]), int(zps[0]) if zps is not None else 0)


_NP_TYPES = {"FLOAT32": "float32", "INT8": "int8", "UINT8": "uint8", "INT16": "int16", "INT32": "int32"}


def read_tflite(data: bytes, what: str = "model") -> TfliteInfo:
    """Parses the first subgraph of a .tflite flatbuffer.

    Args:
        data: the file's bytes.
        what: how to name the file in error messages.

    Raises:
        TfliteFileError: not a TFLite flatbuffer, or an I/O tensor of an
            unsupported type.
    """
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TfliteFileError(f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise TfliteFileError(f"{what} has no subgraph")
        sub = model.Subgraphs(0)
        type_names = _enum_names("TensorType")
        op_names = _enum_names("BuiltinOperator")
        opcodes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            opcodes.append(op_names.get(code, f"BUILTIN_{code}") if code != 32 else "CUSTOM")

        def shape_of(t) -> tuple[int, ...]:
            return tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()

        def io(index: int) -> TensorInfo:
            t = sub.Tensors(index)
            tname = type_names.get(t.Type(), str(t.Type()))
            if tname not in _NP_TYPES:
                raise TfliteFileError(f"{what}: tensor '{t.Name().decode()}' has unsupported type {tname}")
            sig = tuple(int(v) for v in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape_of(t)
            return TensorInfo(t.Name().decode(), shape_of(t), sig, _tensor_quant(t, _NP_TYPES[tname]))

        def is_const(t) -> bool:
            b = t.Buffer()
            if b <= 0 or b >= model.BuffersLength():
                return False
            buf = model.Buffers(b)
            return buf.DataLength() > 0 or buf.Size() > 0

        operators = []
        for i in range(sub.OperatorsLength()):
            op = sub.Operators(i)
            ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
            operators.append(
                OperatorInfo(
                    name=opcodes[op.OpcodeIndex()],
                    input_shapes=tuple(shape_of(sub.Tensors(j)) if j >= 0 else None for j in ins),
                    output_shapes=tuple(shape_of(sub.Tensors(j)) for j in outs),
                    constant_inputs=tuple(j >= 0 and is_const(sub.Tensors(j)) for j in ins),
                )
            )
        inputs = tuple(io(int(i)) for i in sub.InputsAsNumpy()) if sub.InputsLength() else ()
        outputs = tuple(io(int(i)) for i in sub.OutputsAsNumpy()) if sub.OutputsLength() else ()
    except TfliteFileError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer raises anything from struct to IndexError
        raise TfliteFileError(f"{what} is not a readable TFLite flatbuffer ({type(e).__name__}: {e})") from None
    return TfliteInfo(inputs, outputs, tuple(operators))


def tflm_resolver_method(op: str) -> str:
    """Name of the `MicroMutableOpResolver` method that registers `op`.

    ``CONV_2D`` -> ``AddConv2D``, ``DEPTHWISE_CONV_2D`` ->
    ``AddDepthwiseConv2D``, ``FULLY_CONNECTED`` -> ``AddFullyConnected``.
    """
    parts = []
    for p in op.split("_"):
        parts.append(p.upper() if p[:1].isdigit() else p[:1].upper() + p[1:].lower())
    return "Add" + "".join(parts)
