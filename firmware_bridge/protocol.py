"""Messages of the serial protocol and their compact little-endian encodings.

Every message is a `Frame` payload (see framing.py). The host is the only
initiator: it sends one request frame and waits for the one response frame
with the same sequence number (stop-and-wait); PROTOCOL.md has the byte
layouts, the state machine, timeouts and retransmission rules.

Encodings are `struct` layouts an MCU can read in place: fixed fields first,
then strings as (u8 length, UTF-8 bytes), then variable data. No JSON.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from firmware_bridge.errors import MessageError
from firmware_bridge.framing import MAX_PAYLOAD, PROTOCOL_VERSION

# The smallest max_payload a board may announce: INFO, ERROR and the
# FLASH_BEGIN request always fit in one frame.
MIN_PAYLOAD = 128
SHA256_SIZE = 32
MAX_STRING = 255
MAX_RANK = 8
MAX_TENSORS = 16


class MsgType(enum.IntEnum):
    """Message type byte. 0x01-0x0F link and session, 0x10-0x1F flash, 0x20-0x2F inference."""

    HELLO = 0x01  # host -> board: u16 host_max_payload
    INFO = 0x02  # board -> host: `Info`
    PING = 0x03  # host -> board: any bytes
    PONG = 0x04  # board -> host: the same bytes
    ACK = 0x05  # board -> host: success; payload depends on the request
    NAK = 0x06  # board -> host: a frame arrived damaged; u8 reason (FrameErrorKind)
    ERROR = 0x07  # board -> host: u8 code, u32 detail, str text
    CONTINUE = 0x08  # host -> board: u32 offset; next fragment of a long response
    FLASH_BEGIN = 0x10  # host -> board: u32 size, sha256[32], str name
    FLASH_CHUNK = 0x11  # host -> board: u32 offset, data
    FLASH_END = 0x12  # host -> board: empty
    ACTIVATE = 0x13  # host -> board: sha256[32]
    RUN = 0x20  # host -> board: tensors
    RESULT = 0x21  # board -> host: tensors


REQUESTS = frozenset({MsgType.HELLO, MsgType.PING, MsgType.CONTINUE, MsgType.FLASH_BEGIN,
                      MsgType.FLASH_CHUNK, MsgType.FLASH_END, MsgType.ACTIVATE, MsgType.RUN})
RESPONSES = frozenset({MsgType.INFO, MsgType.PONG, MsgType.ACK, MsgType.NAK, MsgType.ERROR,
                       MsgType.RESULT})


class ErrorCode(enum.IntEnum):
    """Code of an ERROR message; `detail` meaning in brackets."""

    UNKNOWN_TYPE = 1  # a request type the board does not know [the type]
    BAD_PAYLOAD = 2  # payload malformed for its type [0]
    BAD_STATE = 3  # not allowed now, e.g. FLASH_CHUNK without FLASH_BEGIN [0]
    TOO_LARGE = 4  # image larger than flash, message larger than max_message [the limit]
    BAD_OFFSET = 5  # FLASH_CHUNK / CONTINUE offset not the expected one [the expected offset]
    SHA_MISMATCH = 6  # FLASH_END: staged image does not hash to the announced sha256 [0]
    ARENA_TOO_SMALL = 7  # ACTIVATE: the model does not fit the tensor arena [arena capacity]
    MODEL_INVALID = 8  # ACTIVATE: the runtime rejects the model [0]
    NO_PARTITION = 9  # ACTIVATE of an unknown image, RUN with none active [0]
    BAD_TENSOR = 10  # RUN: count, dtype, shape or quantization mismatch [input index]
    INVOKE_FAILED = 11  # RUN: the interpreter failed [0]
    INTERNAL = 12  # a bug on the board; it stays up [0]


# TFLite schema TensorType numbering (tensorflow/lite/schema/schema.fbs), as
# stored in .tflite files. TFLM's runtime TfLiteType enum agrees for int8 (9),
# uint8, int16, int32 but not float32 (TfLiteType 1): README.md has the map.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("<i4"), 3: np.dtype("u1"),
    4: np.dtype("<i8"), 6: np.dtype("?"), 7: np.dtype("<i2"), 9: np.dtype("i1"),
    10: np.dtype("<f8"), 12: np.dtype("<u8"), 15: np.dtype("<u4"), 16: np.dtype("<u2"),
}
DTYPE_CODES: dict[str, int] = {dt.name: code for code, dt in DTYPES.items()}

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ERROR = struct.Struct("<BI")
_INFO = struct.Struct("<BHIII32sI")
_FLASH_BEGIN = struct.Struct("<I32s")
_SPEC = struct.Struct("<BB")
_QUANT = struct.Struct("<fi")


class _Reader:
    """Cursor over a payload; every short read is a MessageError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MessageError(f"{self.what}: needs {n} more bytes at offset {self.pos}, "
                               f"payload has {len(self.data)}")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def string(self) -> str:
        (n,) = self.unpack(_U8)
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError(f"{self.what}: string at offset {self.pos - n} is not UTF-8") from None

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MessageError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


def _string(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_STRING:
        raise ValueError(f"Expected {what} of at most {MAX_STRING} UTF-8 bytes. Received {len(raw)}.")
    return _U8.pack(len(raw)) + raw


def _sha(value: bytes, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != SHA256_SIZE:
        raise ValueError(f"Expected {what} as {SHA256_SIZE} raw bytes. Received {value!r}.")
    return bytes(value)


# ---------------------------------------------------------------- session


def encode_hello(host_max_payload: int = MAX_PAYLOAD) -> bytes:
    """HELLO payload: u16 the largest response payload the host accepts."""
    if not MIN_PAYLOAD <= host_max_payload <= MAX_PAYLOAD:
        raise ValueError(f"Expected host_max_payload in [{MIN_PAYLOAD}, {MAX_PAYLOAD}]. "
                         f"Received host_max_payload={host_max_payload}.")
    return _U16.pack(host_max_payload)


def decode_hello(payload: bytes) -> int:
    r = _Reader(payload, "HELLO")
    (n,) = r.unpack(_U16)
    r.end()
    return n


@dataclass(frozen=True)
class Info:
    """What a board is and can hold (the INFO message).

    Attributes:
        board_id: a stable name of the board (serial number, MAC).
        firmware_version: the firmware's version text.
        runtime: the inference runtime, e.g. "tflm" or "tflm-emulator".
        flash_capacity: the largest image the board accepts (one slot), bytes.
        arena_capacity: the TFLM tensor arena, bytes.
        max_payload: the largest frame payload the board receives.
        max_message: the largest request the board reassembles from
            fragments (RUN inputs), bytes.
        protocol_version: the protocol version the board speaks.
        active_sha256: sha256 of the active partition, or None.
        active_size: its size in bytes (0 if none).
        active_name: its name ("" if none).
    """

    board_id: str
    firmware_version: str
    runtime: str
    flash_capacity: int
    arena_capacity: int
    max_payload: int
    max_message: int
    protocol_version: int = PROTOCOL_VERSION
    active_sha256: bytes | None = None
    active_size: int = 0
    active_name: str = ""


def encode_info(info: Info) -> bytes:
    """INFO payload: u8 version, u16 max_payload, u32 flash, u32 arena, u32 max_message,
    sha256[32] active (zeros: none), u32 active size, str board_id, str firmware,
    str runtime, str active name."""
    sha = info.active_sha256 if info.active_sha256 is not None else bytes(SHA256_SIZE)
    return (_INFO.pack(info.protocol_version, info.max_payload, info.flash_capacity, info.arena_capacity,
                       info.max_message, _sha(sha, "active_sha256"), info.active_size)
            + _string(info.board_id, "board_id") + _string(info.firmware_version, "firmware_version")
            + _string(info.runtime, "runtime") + _string(info.active_name, "active_name"))


def decode_info(payload: bytes) -> Info:
    r = _Reader(payload, "INFO")
    version, max_payload, flash, arena, max_message, sha, size = r.unpack(_INFO)
    board_id, firmware, runtime, name = r.string(), r.string(), r.string(), r.string()
    r.end()
    return Info(board_id, firmware, runtime, flash, arena, max_payload, max_message, version,
                None if sha == bytes(SHA256_SIZE) else sha, size, name)


def encode_error(code: int, detail: int = 0, text: str = "") -> bytes:
    """ERROR payload: u8 code, u32 detail, str text (truncated to 255 UTF-8 bytes)."""
    raw = text.encode("utf-8")[:MAX_STRING].decode("utf-8", "ignore").encode("utf-8")
    return _ERROR.pack(int(code), detail & 0xFFFFFFFF) + _U8.pack(len(raw)) + raw


def decode_error(payload: bytes) -> tuple[ErrorCode | int, int, str]:
    """Returns (code, detail, text); an unknown code stays an int."""
    r = _Reader(payload, "ERROR")
    code, detail = r.unpack(_ERROR)
    text = r.string()
    r.end()
    try:
        code = ErrorCode(code)
    except ValueError:
        pass
    return code, detail, text


def encode_u32(value: int) -> bytes:
    """A u32 payload: ACK of FLASH_BEGIN/FLASH_CHUNK/fragments, CONTINUE."""
    return _U32.pack(value)


def decode_u32(payload: bytes, what: str) -> int:
    r = _Reader(payload, what)
    (v,) = r.unpack(_U32)
    r.end()
    return v


def encode_nak(reason: int) -> bytes:
    return _U8.pack(int(reason))


# ---------------------------------------------------------------- flash


@dataclass(frozen=True)
class FlashBegin:
    """FLASH_BEGIN: announce an image of `size` bytes hashing to `sha256`."""

    name: str
    size: int
    sha256: bytes


def encode_flash_begin(msg: FlashBegin) -> bytes:
    """FLASH_BEGIN payload: u32 size, sha256[32], str name."""
    return _FLASH_BEGIN.pack(msg.size, _sha(msg.sha256, "sha256")) + _string(msg.name, "name")


def decode_flash_begin(payload: bytes) -> FlashBegin:
    r = _Reader(payload, "FLASH_BEGIN")
    size, sha = r.unpack(_FLASH_BEGIN)
    name = r.string()
    r.end()
    return FlashBegin(name, size, sha)


def encode_flash_chunk(offset: int, data: bytes) -> bytes:
    """FLASH_CHUNK payload: u32 offset, then the data to its end."""
    return _U32.pack(offset) + bytes(data)


def decode_flash_chunk(payload: bytes) -> tuple[int, bytes]:
    r = _Reader(payload, "FLASH_CHUNK")
    (offset,) = r.unpack(_U32)
    return offset, r.rest()


def encode_activate(sha256: bytes) -> bytes:
    """ACTIVATE payload: sha256[32] of the image to make active."""
    return _sha(sha256, "sha256")


def decode_activate(payload: bytes) -> bytes:
    r = _Reader(payload, "ACTIVATE")
    sha = r.take(SHA256_SIZE)
    r.end()
    return sha


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorSpec:
    """dtype, shape and (per-tensor) quantization of a tensor, without data."""

    dtype: str
    shape: tuple[int, ...]
    scale: float = 0.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        if np.dtype(self.dtype).name not in DTYPE_CODES:
            raise ValueError(f"Expected a dtype in {sorted(DTYPE_CODES)}. Received dtype={self.dtype!r}.")
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        shape = tuple(int(d) for d in self.shape)
        if len(shape) > MAX_RANK or any(d < 0 or d > 0xFFFFFFFF for d in shape):
            raise ValueError(f"Expected a shape of at most {MAX_RANK} non-negative dims. Received shape={self.shape!r}.")
        object.__setattr__(self, "shape", shape)
        # Scales travel as float32 (as TFLite stores them): hold what the wire holds.
        object.__setattr__(self, "scale", float(np.float32(self.scale)))
        object.__setattr__(self, "zero_point", int(self.zero_point))
        if not -(1 << 31) <= self.zero_point < (1 << 31):
            raise ValueError(f"Expected an int32 zero point. Received zero_point={self.zero_point}.")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def matches(self, other: "TensorSpec", rtol: float = 1e-6) -> bool:
        """True if dtype, shape, zero point equal and scales agree to `rtol`."""
        return (self.dtype == other.dtype and self.shape == other.shape
                and self.zero_point == other.zero_point
                and math.isclose(self.scale, other.scale, rel_tol=rtol, abs_tol=0.0))


@dataclass(frozen=True)
class Tensor:
    """A tensor on the wire: spec + raw little-endian bytes in C order."""

    spec: TensorSpec
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.data) != self.spec.nbytes:
            raise ValueError(f"Expected {self.spec.nbytes} data bytes for {self.spec}. Received {len(self.data)}.")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    @classmethod
    def from_numpy(cls, array: np.ndarray, scale: float = 0.0, zero_point: int = 0) -> "Tensor":
        """Wraps a NumPy array (int8 for quantized partitions) with its quantization."""
        array = np.asarray(array)
        spec = TensorSpec(array.dtype.name, array.shape, float(scale), int(zero_point))
        return cls(spec, np.ascontiguousarray(array, dtype=DTYPES[DTYPE_CODES[spec.dtype]]).tobytes())

    def numpy(self) -> np.ndarray:
        dt = DTYPES[DTYPE_CODES[self.spec.dtype]]
        return np.frombuffer(self.data, dtype=dt).reshape(self.spec.shape).astype(dt.newbyteorder("="))

    def dequantize(self) -> np.ndarray:
        """float32 values: (q - zero_point) * scale (or the values if scale is 0)."""
        q = self.numpy()
        if self.spec.scale == 0.0:
            return q.astype(np.float32)
        return ((q.astype(np.float32) - self.spec.zero_point) * np.float32(self.spec.scale)).astype(np.float32)


def _encode_spec(spec: TensorSpec) -> bytes:
    return (_SPEC.pack(DTYPE_CODES[spec.dtype], len(spec.shape))
            + struct.pack(f"<{len(spec.shape)}I", *spec.shape)
            + _QUANT.pack(spec.scale, spec.zero_point))


def _decode_spec(r: _Reader) -> TensorSpec:
    code, rank = r.unpack(_SPEC)
    if code not in DTYPES:
        raise MessageError(f"{r.what}: unknown dtype code {code}")
    if rank > MAX_RANK:
        raise MessageError(f"{r.what}: rank {rank} exceeds {MAX_RANK}")
    shape = struct.unpack(f"<{rank}I", r.take(4 * rank))
    scale, zp = r.unpack(_QUANT)
    return TensorSpec(DTYPES[code].name, shape, scale, zp)


def encode_tensors(tensors: Sequence[Tensor]) -> bytes:
    """RUN / RESULT payload: u8 count, then per tensor: u8 dtype (TFLite code),
    u8 rank, u32 dims[rank], f32 scale, i32 zero_point, u32 nbytes, data."""
    if len(tensors) > MAX_TENSORS:
        raise ValueError(f"Expected at most {MAX_TENSORS} tensors. Received {len(tensors)}.")
    parts = [_U8.pack(len(tensors))]
    for t in tensors:
        parts += [_encode_spec(t.spec), _U32.pack(len(t.data)), t.data]
    return b"".join(parts)


def decode_tensors(payload: bytes, what: str = "RUN") -> list[Tensor]:
    r = _Reader(payload, what)
    (count,) = r.unpack(_U8)
    if count > MAX_TENSORS:
        raise MessageError(f"{what}: {count} tensors, at most {MAX_TENSORS}")
    out = []
    for i in range(count):
        spec = _decode_spec(r)
        (nbytes,) = r.unpack(_U32)
        if nbytes != spec.nbytes:
            raise MessageError(f"{what}: tensor {i} has {nbytes} data bytes, its shape {spec.shape} "
                               f"of {spec.dtype} needs {spec.nbytes}")
        out.append(Tensor(spec, r.take(nbytes)))
    r.end()
    return out


def encode_specs(specs: Sequence[TensorSpec]) -> bytes:
    return _U8.pack(len(specs)) + b"".join(_encode_spec(s) for s in specs)


def _decode_specs(r: _Reader) -> list[TensorSpec]:
    (count,) = r.unpack(_U8)
    if count > MAX_TENSORS:
        raise MessageError(f"{r.what}: {count} tensors, at most {MAX_TENSORS}")
    return [_decode_spec(r) for _ in range(count)]


@dataclass(frozen=True)
class Activation:
    """ACK of ACTIVATE: the partition now running and its I/O."""

    arena_used: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def encode_activation(act: Activation) -> bytes:
    """ACK of ACTIVATE payload: u32 arena_used, u8 n_in, specs, u8 n_out, specs;
    spec = u8 dtype, u8 rank, u32 dims[rank], f32 scale, i32 zero_point."""
    return _U32.pack(act.arena_used) + encode_specs(act.inputs) + encode_specs(act.outputs)


def decode_activation(payload: bytes) -> Activation:
    r = _Reader(payload, "ACK(ACTIVATE)")
    (arena,) = r.unpack(_U32)
    inputs = _decode_specs(r)
    outputs = _decode_specs(r)
    r.end()
    return Activation(arena, tuple(inputs), tuple(outputs))
