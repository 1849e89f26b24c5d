"""Quantization arithmetic: the one implementation every caller uses.

The converter, the in-process runner, the mesh node daemon and the serial
bridge all move int8 tensors between devices. Each tensor carries its affine
quantization ``real = scale * (q - zero_point)``; whoever receives a tensor
whose (scale, zero point) differ from what its segment expects requantizes it
explicitly with `requantize` (or `convert`, which also handles float).

Rounding is half away from zero, as TFLite's QUANTIZE reference kernel
(``std::round``) does, not numpy's half-to-even.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from paradis_tf.errors import ParaDiSError

__all__ = [
    "QuantError",
    "QuantParams",
    "QTensor",
    "FLOAT32",
    "quantize",
    "dequantize",
    "requantize",
    "convert",
    "round_half_away",
]

# Integer dtypes a quantized tensor may have, with their value range.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
}
_FLOAT_DTYPES = ("float32",)


class QuantError(ParaDiSError, ValueError):
    """Quantization parameters or tensors that do not fit together."""


@dataclass(frozen=True)
class QuantParams:
    """How a tensor is stored: dtype and, for integer dtypes, the affine map.

    Args:
        dtype: ``"int8"``, ``"uint8"``, ``"int16"`` or ``"float32"``.
        scale: real value of one integer step; 0.0 for float tensors.
        zero_point: integer that represents real 0.0; 0 for float tensors.

    Raises:
        QuantError: unknown dtype, non-positive scale for an integer dtype,
            or a zero point outside the dtype's range.
    """

    dtype: str = "int8"
    scale: float = 0.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        dtype = str(np.dtype(self.dtype)) if not isinstance(self.dtype, str) else self.dtype
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "zero_point", int(self.zero_point))
        if dtype in _FLOAT_DTYPES:
            return
        if dtype not in _INT_RANGES:
            raise QuantError(
                f"Expected dtype one of {sorted(_INT_RANGES) + list(_FLOAT_DTYPES)}. Received dtype={self.dtype!r}."
            )
        if not (self.scale > 0.0) or not math.isfinite(self.scale):
            raise QuantError(f"Expected a strictly positive, finite scale for {dtype}. Received scale={self.scale!r}.")
        lo, hi = _INT_RANGES[dtype]
        if not lo <= self.zero_point <= hi:
            raise QuantError(f"Expected a zero point in [{lo}, {hi}] for {dtype}. Received zero_point={self.zero_point}.")

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def same_as(self, other: "QuantParams", rtol: float = 1e-6) -> bool:
        """True when both describe the same storage (scales compared with `rtol`)."""
        if self.dtype != other.dtype:
            return False
        if self.is_float:
            return True
        return self.zero_point == other.zero_point and math.isclose(self.scale, other.scale, rel_tol=rtol, abs_tol=0.0)

    def __str__(self) -> str:
        if self.is_float:
            return self.dtype
        return f"{self.dtype}(scale={self.scale:.6g}, zero_point={self.zero_point})"


FLOAT32 = QuantParams("float32")


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Rounds half away from zero (``std::round``), elementwise."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """Real values -> integers: ``clip(round(x / scale) + zero_point)``.

    The division is done in float32, as TFLite's QUANTIZE kernel does.
    A float `params` returns `x` as float32.
    """
    x = np.asarray(x, dtype=np.float32)
    if params.is_float:
        return x
    lo, hi = _INT_RANGES[params.dtype]
    v = x / np.float32(params.scale)
    # round_half_away(v) + zero_point, clipped, in place: one temporary instead of six (the mesh quantizes every
    # request's input with it)
    q = np.abs(v)
    q += np.float32(0.5)
    np.floor(q, out=q)
    np.copysign(q, v, out=q)
    q += np.float32(params.zero_point)
    np.clip(q, lo, hi, out=q)
    return q.astype(params.np_dtype)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """Integers -> real values as float32: ``scale * (q - zero_point)``."""
    if params.is_float:
        return np.asarray(q, dtype=np.float32)
    q = np.asarray(q)
    return ((q.astype(np.int32) - params.zero_point) * np.float32(params.scale)).astype(np.float32)


def requantize(q: np.ndarray, src: QuantParams, dst: QuantParams) -> np.ndarray:
    """Moves integers from one affine map to another.

    ``q_out = clip(round((q_in - z_in) * s_in / s_out) + z_out)``, in float64
    with half-away rounding. Returns `q` unchanged (same object) when both
    maps are the same.
    """
    if src.is_float or dst.is_float:
        raise QuantError(f"requantize() maps integer tensors; received {src} -> {dst} (use convert()).")
    if src.same_as(dst, rtol=0.0):
        return np.asarray(q)
    lo, hi = _INT_RANGES[dst.dtype]
    real_steps = (np.asarray(q).astype(np.int64) - src.zero_point) * (src.scale / dst.scale)
    out = round_half_away(real_steps) + dst.zero_point
    return np.clip(out, lo, hi).astype(dst.np_dtype)


@dataclass(frozen=True, eq=False)
class QTensor:
    """A tensor together with how it is stored (what crosses devices).

    Args:
        data: the stored values (integers for quantized tensors).
        params: dtype, scale and zero point of `data`.
    """

    data: np.ndarray
    params: QuantParams

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.dtype != self.params.np_dtype:
            raise QuantError(f"Tensor data has dtype {data.dtype}, but its parameters say {self.params}.")
        object.__setattr__(self, "data", data)

    @classmethod
    def from_float(cls, x: np.ndarray) -> "QTensor":
        return cls(np.asarray(x, dtype=np.float32), FLOAT32)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def dequantize(self) -> np.ndarray:
        return dequantize(self.data, self.params)

    def to(self, params: QuantParams) -> "QTensor":
        return convert(self, params)


def convert(t: QTensor, params: QuantParams) -> QTensor:
    """Stores `t` as `params` asks: quantize, dequantize, requantize or keep.

    Returns `t` itself when it is already stored that way.
    """
    src = t.params
    if src.same_as(params, rtol=0.0):
        return t
    if src.is_float:
        return QTensor(quantize(t.data, params), params)
    if params.is_float:
        return QTensor(dequantize(t.data, src), params)
    return QTensor(requantize(t.data, src, params), params)
