"""The one encoding of tensors on the mesh wire (`paradis.mesh.v1.Tensor`).

Row-major, little-endian bytes; quantized tensors carry their scale and zero
point. Decoding checks dtype, shape and byte length against what the
receiver expects and names the first mismatch.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from paradis_tf.mesh import limits
from paradis_tf.mesh._proto import mesh_pb2
from paradis_tf.mesh.errors import TensorError
from paradis_tf.quant import QTensor, QuantError, QuantParams

__all__ = ["encode", "decode", "encode_qtensor", "decode_qtensor", "dtype_name", "DTYPES"]

# numpy dtype name <-> wire enum
DTYPES: dict[str, int] = {
    "int8": mesh_pb2.DTYPE_INT8,
    "uint8": mesh_pb2.DTYPE_UINT8,
    "int16": mesh_pb2.DTYPE_INT16,
    "int32": mesh_pb2.DTYPE_INT32,
    "float32": mesh_pb2.DTYPE_FLOAT32,
}
_BY_ENUM = {v: k for k, v in DTYPES.items()}
_INT64_MAX = 2**63 - 1


def dtype_name(enum_value: int) -> str:
    """Wire dtype enum to numpy dtype name ('int8'); 'unspecified' if unknown."""
    return _BY_ENUM.get(enum_value, "unspecified" if enum_value == 0 else f"unknown({enum_value})")


def encode(array: np.ndarray, scale: float = 0.0, zero_point: int = 0, out: mesh_pb2.Tensor | None = None) -> mesh_pb2.Tensor:
    """Encodes a numpy array (and its quantization) as a wire Tensor.

    Raises:
        TensorError: the dtype has no wire encoding.
    """
    a = np.asarray(array)
    name = a.dtype.name
    if name not in DTYPES:
        raise TensorError(f"Cannot send dtype {name} on the mesh; allowed: {', '.join(DTYPES)}.")
    t = out if out is not None else mesh_pb2.Tensor()
    t.dtype = DTYPES[name]
    del t.shape[:]
    t.shape.extend(int(d) for d in a.shape)
    t.data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    t.scale = float(scale)
    t.zero_point = int(zero_point)
    return t


def decode(
    t: mesh_pb2.Tensor,
    *,
    what: str = "tensor",
    dtype: str | None = None,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Decodes a wire Tensor, checking it against the expected dtype/shape.

    Args:
        t: the message.
        what: how to name the tensor in errors ("input", "feature map from role 1").
        dtype: expected numpy dtype name, or None for any known dtype.
        shape: expected shape, or None for any.

    Returns:
        A read-only numpy array (a view on the message bytes).

    Raises:
        TensorError: unknown/unexpected dtype, unexpected shape (more than
            `limits.MAX_TENSOR_DIMS` dimensions, a negative one, an element
            count that overflows int64), a byte length that does not match
            the shape, or NaN/infinite floats.
    """
    name = _BY_ENUM.get(t.dtype)
    if name is None:
        raise TensorError(f"{what}: dtype {dtype_name(t.dtype)} is not allowed; expected {dtype or ' or '.join(DTYPES)}.")
    if dtype is not None and name != dtype:
        raise TensorError(f"{what}: expected dtype {dtype}, received {name}.")
    if len(t.shape) > limits.MAX_TENSOR_DIMS:
        raise TensorError(f"{what}: shape has {len(t.shape)} dimensions; at most {limits.MAX_TENSOR_DIMS} are allowed.")
    got_shape = tuple(int(d) for d in t.shape)
    if any(d < 0 for d in got_shape):
        raise TensorError(f"{what}: negative dimension in shape {list(got_shape)}.")
    if shape is not None and got_shape != tuple(int(d) for d in shape):
        raise TensorError(f"{what}: expected shape {list(shape)}, received {list(got_shape)}.")
    np_dtype = np.dtype(name).newbyteorder("<")
    # exact integers: an int64 product of a hostile shape can wrap around to the length actually sent
    expected = math.prod(got_shape) * np_dtype.itemsize
    if len(t.data) != expected:
        raise TensorError(
            f"{what}: byte length {len(t.data)} does not match shape {list(got_shape)} of {name} ({expected} bytes)."
        )
    # an empty tensor passes the length check; numpy still refuses a shape whose other dimensions overflow int64
    if math.prod(d for d in got_shape if d) * np_dtype.itemsize > _INT64_MAX:
        raise TensorError(f"{what}: shape {list(got_shape)} of {name} has an element count that overflows int64.")
    a = np.frombuffer(t.data, dtype=np_dtype).reshape(got_shape)
    if np_dtype.kind == "f" and not np.isfinite(a).all():
        raise TensorError(f"{what}: {name} values must be finite; received NaN or infinity.")
    return a.astype(np_dtype.newbyteorder("="), copy=False)


def encode_qtensor(t: QTensor, out: mesh_pb2.Tensor | None = None) -> mesh_pb2.Tensor:
    """Encodes a runtime `QTensor` (data + its quantization)."""
    return encode(t.data, t.params.scale, t.params.zero_point, out=out)


def decode_qtensor(t: mesh_pb2.Tensor, expected, *, what: str = "tensor", batch: int | None = None) -> QTensor:
    """Decodes a wire Tensor as a `QTensor`, checked against a bundle `TensorSpec`.

    The dtype and every dimension but the batch must equal ``expected``'s;
    the batch must be ``batch`` when given (else any N >= 1). The scale and
    zero point are the sender's: the receiver's `DeviceProgram` requantizes
    explicitly when they differ from what its segment expects.

    Raises:
        TensorError: dtype, shape, byte length or quantization is wrong.
    """
    spec_shape = tuple(expected.shape)
    a = decode(t, what=what, dtype=expected.quant.dtype)
    if a.ndim != len(spec_shape) or a.shape[1:] != spec_shape[1:] or a.shape[0] < 1:
        raise TensorError(
            f"{what}: expected shape (N, {', '.join(map(str, spec_shape[1:]))}), received {list(a.shape)}."
        )
    if batch is not None and a.shape[0] != batch:
        raise TensorError(f"{what}: expected a batch of {batch}, received {a.shape[0]}.")
    try:
        params = QuantParams(expected.quant.dtype, t.scale, t.zero_point) if not expected.quant.is_float else expected.quant
    except QuantError as e:
        raise TensorError(f"{what}: {e}") from None
    return QTensor(a, params)
