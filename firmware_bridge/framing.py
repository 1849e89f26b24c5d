"""Frames of the serial protocol: pure bytes in, bytes out.

A frame on the wire is the COBS encoding of

    offset  size  field
    0       1     version   protocol version, `PROTOCOL_VERSION`
    1       1     type      message type (`firmware_bridge.protocol.MsgType`)
    2       1     flags     `FLAG_MORE` | `FLAG_CONT` (fragmentation)
    3       2     seq       sequence number, little-endian u16
    5       2     length    payload length, little-endian u16
    7       N     payload
    7+N     4     crc       CRC-32 (zlib / IEEE 802.3) of bytes [0, 7+N), LE

followed by one 0x00 delimiter. COBS guarantees the encoded bytes hold no
0x00, so a receiver that loses sync (noise, a reset board, a half-written
frame) finds the next frame boundary at the next 0x00. Empty frames (two
delimiters in a row) are legal padding and ignored, so a sender may send a
0x00 first to terminate whatever garbage the receiver holds.

Nothing here touches a port: `encode_frame` makes bytes, `FrameDecoder.feed`
turns any byte stream into frames and `BadFrame` events, and never raises.
See PROTOCOL.md for the whole specification.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from cobs import cobs

from firmware_bridge.errors import FramingError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBBHH")
CRC = struct.Struct("<I")
HEADER_SIZE = HEADER.size  # 7
CRC_SIZE = CRC.size  # 4
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE  # 11 bytes around the payload, before COBS
MAX_PAYLOAD = 0xFFFF
DELIMITER = b"\x00"

FLAG_MORE = 0x01  # more fragments of this message follow
FLAG_CONT = 0x02  # this frame continues a message begun by an earlier fragment
KNOWN_FLAGS = FLAG_MORE | FLAG_CONT


class FrameErrorKind(enum.IntEnum):
    """Why bytes between two delimiters are not a frame (also the NAK reason)."""

    COBS = 1  # not a valid COBS encoding
    SHORT = 2  # decodes to fewer bytes than header + CRC
    CRC = 3  # CRC-32 mismatch
    VERSION = 4  # CRC fine, but a protocol version this side does not speak
    LENGTH = 5  # CRC fine, but the length field disagrees with the frame size
    OVERSIZE = 6  # more bytes than the receiver's buffer before a delimiter


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        type: message type byte.
        seq: sequence number, 0..65535.
        payload: message payload, at most `MAX_PAYLOAD` bytes.
        flags: `FLAG_MORE` / `FLAG_CONT` bits.
        version: protocol version byte.
    """

    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for name, value, hi in (("type", self.type, 0xFF), ("seq", self.seq, 0xFFFF),
                                ("flags", self.flags, 0xFF), ("version", self.version, 0xFF)):
            if not isinstance(value, int) or not 0 <= value <= hi:
                raise ValueError(f"Expected an integer in [0, {hi}]. Received {name}={value!r}.")
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"Expected bytes. Received payload of type {type(self.payload).__name__}.")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"Expected a payload of at most {MAX_PAYLOAD} bytes. Received {len(self.payload)}.")
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))


@dataclass(frozen=True)
class BadFrame:
    """An event of `FrameDecoder.feed`: bytes that were not a frame.

    Attributes:
        kind: what was wrong.
        reason: a sentence for logs.
        size: how many bytes were discarded.
        seq: the frame's sequence number when the header could be trusted
            (VERSION and LENGTH errors pass the CRC), else None.
    """

    kind: FrameErrorKind
    reason: str
    size: int
    seq: int | None = None


def frame_bytes(frame: Frame) -> bytes:
    """Returns header + payload + CRC of `frame`, before COBS."""
    body = HEADER.pack(frame.version, frame.type, frame.flags, frame.seq, len(frame.payload)) + frame.payload
    return body + CRC.pack(zlib.crc32(body))


def encode_frame(frame: Frame) -> bytes:
    """Returns the bytes to put on the wire for `frame`, delimiter included."""
    return cobs.encode(frame_bytes(frame)) + DELIMITER


def max_encoded_size(payload_len: int) -> int:
    """Worst-case wire size of a frame with `payload_len` payload bytes, delimiter included."""
    n = payload_len + FRAME_OVERHEAD
    return n + n // 254 + 1 + 1


def decode_frame(body: bytes) -> Frame:
    """Decodes the bytes between two delimiters (delimiter excluded).

    Raises:
        FramingError: with `.kind` saying what is wrong.
    """
    try:
        raw = cobs.decode(body)
    except cobs.DecodeError as e:
        raise FramingError(FrameErrorKind.COBS, f"not COBS: {e}") from None
    if len(raw) < FRAME_OVERHEAD:
        raise FramingError(FrameErrorKind.SHORT,
                           f"{len(raw)} bytes, a frame has at least {FRAME_OVERHEAD}")
    (crc,) = CRC.unpack_from(raw, len(raw) - CRC_SIZE)
    computed = zlib.crc32(memoryview(raw)[:-CRC_SIZE])
    if crc != computed:
        raise FramingError(FrameErrorKind.CRC, f"CRC-32 {crc:08x} != computed {computed:08x}")
    version, type_, flags, seq, length = HEADER.unpack_from(raw)
    if version != PROTOCOL_VERSION:
        e = FramingError(FrameErrorKind.VERSION,
                         f"protocol version {version}, this side speaks {PROTOCOL_VERSION}")
        e.seq = seq
        raise e
    if length != len(raw) - FRAME_OVERHEAD:
        e = FramingError(FrameErrorKind.LENGTH,
                         f"length field {length} but {len(raw) - FRAME_OVERHEAD} payload bytes")
        e.seq = seq
        raise e
    return Frame(type_, seq, bytes(raw[HEADER_SIZE:-CRC_SIZE]), flags, version)


class FrameDecoder:
    """Streaming decoder: feed any bytes, get frames and `BadFrame` events.

    It never raises on input and holds at most `max_encoded_size(max_payload)`
    bytes: a longer run without a delimiter is reported once as OVERSIZE and
    dropped up to the next 0x00, where decoding resumes.

    Args:
        max_payload: the largest payload this receiver accepts.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"Expected max_payload in [0, {MAX_PAYLOAD}]. Received max_payload={max_payload}.")
        self.max_payload = max_payload
        self._limit = max_encoded_size(max_payload) - 1  # the delimiter is not buffered
        self._buf = bytearray()
        self._discarding = False
        self.frames = 0
        self.errors = 0
        self.bytes_discarded = 0

    def reset(self) -> None:
        """Forgets any partial frame."""
        self.bytes_discarded += len(self._buf)
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet delimited."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        """Consumes `data`; returns the frames and errors it completes, in order."""
        out: list[Frame | BadFrame] = []
        data = bytes(data)
        start = 0
        n = len(data)
        while start < n:
            end = data.find(0, start)
            if end < 0:
                rest = n - start
                if self._discarding:
                    self.bytes_discarded += rest
                elif len(self._buf) + rest > self._limit:
                    size = len(self._buf) + rest
                    self.bytes_discarded += size
                    self._buf.clear()
                    self._discarding = True
                    out.append(self._error(FrameErrorKind.OVERSIZE,
                                           f"over {self._limit} bytes without a delimiter", size))
                else:
                    self._buf += data[start:]
                break
            if self._discarding:
                self.bytes_discarded += end - start
                self._discarding = False
            else:
                if self._buf:
                    self._buf += data[start:end]
                    body = bytes(self._buf)
                    self._buf.clear()
                else:
                    body = data[start:end]
                if len(body) > self._limit:
                    self.bytes_discarded += len(body)
                    out.append(self._error(FrameErrorKind.OVERSIZE,
                                           f"{len(body)} bytes, the limit is {self._limit}", len(body)))
                elif body:
                    out.append(self._decode(body))
            start = end + 1
        return out

    def _decode(self, body: bytes) -> Frame | BadFrame:
        try:
            frame = decode_frame(body)
        except FramingError as e:
            self.bytes_discarded += len(body)
            return self._error(e.kind, str(e), len(body), getattr(e, "seq", None))
        if len(frame.payload) > self.max_payload:
            self.bytes_discarded += len(body)
            return self._error(FrameErrorKind.OVERSIZE,
                               f"payload of {len(frame.payload)} bytes, the limit is {self.max_payload}",
                               len(body), frame.seq)
        self.frames += 1
        return frame

    def _error(self, kind: FrameErrorKind, reason: str, size: int, seq: int | None = None) -> BadFrame:
        self.errors += 1
        return BadFrame(kind, reason, size, seq)
