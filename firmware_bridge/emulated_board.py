"""The emulated board: the board side of the serial protocol as a state machine.

`BoardEmulator` is the protocol as a pure byte machine (`receive(bytes) ->
bytes`), the reference a firmware author compares against; `emulator.py`
serves it on a pty or a TCP port.

Budgets are enforced like a board would: `flash_capacity` bounds the image
(one slot of an A/B pair), `arena_capacity` is the tensor arena the model
must really allocate in (measured with TFLM), `max_payload` bounds every
received frame and `max_message` every request reassembled from fragments.
Flash writes go to the staging slot; FLASH_END verifies its sha256, and
only ACTIVATE of a verified image whose model loads switches the active
partition, so a failed or corrupted flash leaves the old one running.
Nothing a host sends crashes it: bad frames get NAK, bad requests ERROR.

With a flash directory (`BoardEmulator(flash_dir=...)`) the flash is
non-volatile like a board's (`flash_store.FlashStore`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from firmware_bridge import protocol as P
from firmware_bridge.flash_store import FlashStore, Staging
from firmware_bridge.framing import (FLAG_CONT, FLAG_MORE, KNOWN_FLAGS, BadFrame, Frame, FrameDecoder,
                                     encode_frame)
from firmware_bridge.protocol import ErrorCode, MsgType, Tensor, TensorSpec

FIRMWARE_VERSION = "paradis-emu 0.1.0"

log = logging.getLogger("paradis.emulator")


@dataclass(frozen=True)
class BoardConfig:
    """What the emulated board is and holds.

    Attributes:
        board_id: the name INFO reports.
        flash_capacity: the largest image accepted (one flash slot), bytes.
        arena_capacity: the TFLM tensor arena, bytes.
        max_payload: the largest frame payload received (the UART buffer).
        max_message: the largest request reassembled from fragments, bytes.
        firmware_version: the version text INFO reports.
    """

    board_id: str = "emu-0"
    flash_capacity: int = 1 << 20
    arena_capacity: int = 256 << 10
    max_payload: int = 1024
    max_message: int = 64 << 10
    firmware_version: str = FIRMWARE_VERSION

    def __post_init__(self) -> None:
        for name in ("flash_capacity", "arena_capacity", "max_message"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 < v <= 0xFFFFFFFF:
                raise ValueError(f"Expected an integer in [1, 2**32-1]. Received {name}={v!r}.")
        if not P.MIN_PAYLOAD <= self.max_payload <= 0xFFFF:
            raise ValueError(f"Expected max_payload in [{P.MIN_PAYLOAD}, 65535]. "
                             f"Received max_payload={self.max_payload!r}.")


class LoadedModel(Protocol):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    arena_used: int

    def invoke(self, inputs: Sequence[Tensor]) -> list[Tensor]: ...


class Runtime(Protocol):
    """Loads a verified image; raises `firmware_bridge.tflm.ModelLoadError`."""

    name: str

    def load(self, model: bytes, arena_size: int) -> LoadedModel: ...


@dataclass
class Partition:
    """The active flash slot: an image and the model loaded from it."""

    name: str
    sha256: bytes
    data: bytes
    model: LoadedModel



class _Reply(Exception):
    """Raised inside a handler to answer ERROR."""

    def __init__(self, code: ErrorCode, text: str, detail: int = 0) -> None:
        super().__init__(text)
        self.code, self.detail, self.text = code, detail, text


class BoardEmulator:
    """The board side of the protocol, bytes in and bytes out.

    Args:
        config: budgets and identity.
        runtime: loads models; default the real TFLM kernels
            (`firmware_bridge.tflm.TflmRuntime`).
    """

    def __init__(self, config: BoardConfig = BoardConfig(), runtime: Runtime | None = None,
                 flash_dir: str | os.PathLike | None = None) -> None:
        if runtime is None:
            from firmware_bridge.tflm import TflmRuntime

            runtime = TflmRuntime()
        self.config = config
        self.runtime = runtime
        self.decoder = FrameDecoder(config.max_payload)
        self.active: Partition | None = None
        self.staging: Staging | None = None
        self.flash = FlashStore(flash_dir) if flash_dir is not None else None
        if self.flash is not None:
            self._boot()
        self._host_max_payload = 0xFFFF
        self._last: tuple[tuple, Frame] | None = None  # (request key, response) for duplicates
        self._assembly: tuple[int, bytearray] | None = None  # (type, bytes) of a fragmented request
        self._pending: tuple[int, bytes] | None = None  # (type, payload) of a long response
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "duplicates": 0, "naks": 0, "errors": 0}

    def _boot(self) -> None:
        from firmware_bridge.tflm import ModelLoadError

        active, self.staging = self.flash.boot()
        if self.staging is not None and self.staging.size > self.config.flash_capacity:
            self.staging = None
        if active is not None:
            name, sha, data = active
            try:
                self.active = Partition(name, sha, data, self.runtime.load(data, self.config.arena_capacity))
                log.info("flash: booted partition %s (%s)", name, sha.hex()[:16])
            except ModelLoadError as e:
                log.error("flash: active partition %s does not load (%s); booting without one", name, e)

    # ------------------------------------------------------------ bytes

    def receive(self, data: bytes) -> bytes:
        """Consumes wire bytes from the host; returns the wire bytes to send back."""
        out = []
        with self._lock:
            for item in self.decoder.feed(data):
                if isinstance(item, BadFrame):
                    self.stats["naks"] += 1
                    seq = item.seq if item.seq is not None else 0
                    out.append(encode_frame(Frame(MsgType.NAK, seq, P.encode_nak(item.kind))))
                else:
                    out.append(encode_frame(self._handle(item)))
        return b"".join(out)

    def handle(self, frame: Frame) -> Frame:
        """Answers one decoded request frame (duplicates get the cached answer)."""
        with self._lock:
            return self._handle(frame)

    def _handle(self, frame: Frame) -> Frame:
        key = (frame.seq, frame.type, frame.flags, frame.payload)
        if self._last is not None and self._last[0] == key:
            self.stats["duplicates"] += 1
            return self._last[1]
        self.stats["requests"] += 1
        try:
            response = self._dispatch(frame)
        except _Reply as e:
            response = self._error(frame.seq, e.code, e.text, e.detail)
        except Exception as e:  # noqa: BLE001 - the board must stay up whatever it is sent
            response = self._error(frame.seq, ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
        self._last = (key, response)
        return response

    def _error(self, seq: int, code: ErrorCode, text: str, detail: int = 0) -> Frame:
        self.stats["errors"] += 1
        self._assembly = None
        # ERROR is never fragmented: cut the text to fit one answer frame.
        room = min(self._host_max_payload, self.config.max_payload) - 6
        text = text.encode("utf-8")[:room].decode("utf-8", "ignore")
        return Frame(MsgType.ERROR, seq, P.encode_error(code, detail, text))

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, frame: Frame) -> Frame:
        if frame.flags & ~KNOWN_FLAGS:
            raise _Reply(ErrorCode.BAD_PAYLOAD, f"unknown flags 0x{frame.flags:02x}")
        if frame.type == MsgType.CONTINUE:
            return self._continue(frame)
        self._pending = None
        if frame.flags & (FLAG_MORE | FLAG_CONT):
            if not frame.flags & FLAG_CONT:
                self._assembly = (frame.type, bytearray())
            elif self._assembly is None or self._assembly[0] != frame.type:
                raise _Reply(ErrorCode.BAD_STATE, "continuation fragment without a first fragment")
            buf = self._assembly[1]
            if len(buf) + len(frame.payload) > self.config.max_message:
                raise _Reply(ErrorCode.TOO_LARGE, f"request over {self.config.max_message} bytes",
                             self.config.max_message)
            buf += frame.payload
            if frame.flags & FLAG_MORE:
                return Frame(MsgType.ACK, frame.seq, P.encode_u32(len(buf)))
            payload = bytes(buf)
            self._assembly = None
        else:
            self._assembly = None
            payload = frame.payload
        handler = self._HANDLERS.get(frame.type)
        if handler is None:
            raise _Reply(ErrorCode.UNKNOWN_TYPE, f"unknown request type 0x{frame.type:02x}", frame.type)
        try:
            rtype, rpayload = handler(self, payload)
        except P.MessageError as e:
            raise _Reply(ErrorCode.BAD_PAYLOAD, str(e)) from None
        return self._respond(frame.seq, rtype, rpayload)

    def _respond(self, seq: int, rtype: int, payload: bytes) -> Frame:
        limit = min(self._host_max_payload, self.config.max_payload)
        if len(payload) <= limit:
            return Frame(rtype, seq, payload)
        self._pending = (rtype, payload)
        return Frame(rtype, seq, payload[:limit], FLAG_MORE)

    def _continue(self, frame: Frame) -> Frame:
        offset = P.decode_u32(frame.payload, "CONTINUE") if len(frame.payload) == 4 else -1
        if offset < 0:
            raise _Reply(ErrorCode.BAD_PAYLOAD, "CONTINUE carries a u32 offset")
        if self._pending is None:
            raise _Reply(ErrorCode.BAD_STATE, "no long response to continue")
        rtype, payload = self._pending
        if not 0 < offset < len(payload):
            raise _Reply(ErrorCode.BAD_OFFSET, f"offset {offset} outside the {len(payload)}-byte response",
                         len(payload))
        limit = min(self._host_max_payload, self.config.max_payload)
        part = payload[offset:offset + limit]
        more = FLAG_MORE if offset + limit < len(payload) else 0
        return Frame(rtype, frame.seq, part, FLAG_CONT | more)

    # ------------------------------------------------------------ messages

    def info(self) -> P.Info:
        c, a = self.config, self.active
        return P.Info(c.board_id, c.firmware_version, self.runtime.name, c.flash_capacity,
                      c.arena_capacity, c.max_payload, c.max_message,
                      active_sha256=a.sha256 if a else None, active_size=len(a.data) if a else 0,
                      active_name=a.name if a else "")

    def _hello(self, payload: bytes) -> tuple[int, bytes]:
        host_max = P.decode_hello(payload)
        if host_max < P.MIN_PAYLOAD:
            raise _Reply(ErrorCode.BAD_PAYLOAD, f"host max payload {host_max} below {P.MIN_PAYLOAD}")
        self._host_max_payload = host_max
        return MsgType.INFO, P.encode_info(self.info())

    def _ping(self, payload: bytes) -> tuple[int, bytes]:
        return MsgType.PONG, payload

    def _flash_begin(self, payload: bytes) -> tuple[int, bytes]:
        msg = P.decode_flash_begin(payload)
        if msg.size == 0:
            raise _Reply(ErrorCode.BAD_PAYLOAD, "an image of 0 bytes")
        if msg.size > self.config.flash_capacity:
            raise _Reply(ErrorCode.TOO_LARGE, f"image of {msg.size} bytes, flash slot holds "
                         f"{self.config.flash_capacity}", self.config.flash_capacity)
        s = self.staging
        if s is None or (s.name, s.size, s.sha256) != (msg.name, msg.size, msg.sha256):
            self.staging = s = Staging(msg.name, msg.size, msg.sha256)
            if self.flash is not None:
                self._nv(self.flash.begin, s)
        return MsgType.ACK, P.encode_u32(len(s.buf))  # resume point

    def _flash_chunk(self, payload: bytes) -> tuple[int, bytes]:
        offset, data = P.decode_flash_chunk(payload)
        s = self.staging
        if s is None:
            raise _Reply(ErrorCode.BAD_STATE, "FLASH_CHUNK without FLASH_BEGIN")
        have = len(s.buf)
        if offset == have:
            if have + len(data) > s.size:
                raise _Reply(ErrorCode.TOO_LARGE, f"chunk ends at {have + len(data)}, image is {s.size} bytes",
                             s.size)
            if self.flash is not None:
                self._nv(self.flash.append, have, data)
            s.buf += data
        elif not (offset + len(data) <= have and s.buf[offset:offset + len(data)] == data):
            raise _Reply(ErrorCode.BAD_OFFSET, f"chunk at {offset}, expected {have}", have)
        return MsgType.ACK, P.encode_u32(len(s.buf))

    def _flash_end(self, payload: bytes) -> tuple[int, bytes]:
        if payload:
            raise _Reply(ErrorCode.BAD_PAYLOAD, "FLASH_END carries no payload")
        s = self.staging
        if s is None:
            raise _Reply(ErrorCode.BAD_STATE, "FLASH_END without FLASH_BEGIN")
        if len(s.buf) != s.size:
            raise _Reply(ErrorCode.BAD_STATE, f"{len(s.buf)} of {s.size} bytes received", len(s.buf))
        if P.sha256(bytes(s.buf)) != s.sha256:
            self.staging = None
            if self.flash is not None:
                self._nv(self.flash.discard)
            raise _Reply(ErrorCode.SHA_MISMATCH, "staged image does not match its sha256; discarded")
        if self.flash is not None:
            self._nv(self.flash.verified, s)
        s.verified = True
        return MsgType.ACK, b""

    def _activate(self, payload: bytes) -> tuple[int, bytes]:
        from firmware_bridge.tflm import ModelLoadError

        sha = P.decode_activate(payload)
        a, s = self.active, self.staging
        if a is not None and a.sha256 == sha:
            return MsgType.ACK, self._activation(a)
        if s is None or not s.verified or s.sha256 != sha:
            raise _Reply(ErrorCode.NO_PARTITION, f"no verified image {sha.hex()[:16]}")
        data = bytes(s.buf)
        try:
            model = self.runtime.load(data, self.config.arena_capacity)
        except ModelLoadError as e:
            raise _Reply(e.code, str(e), e.detail) from None
        if self.flash is not None:
            self._nv(self.flash.activate, s)
        self.active = Partition(s.name, s.sha256, data, model)
        self.staging = None
        return MsgType.ACK, self._activation(self.active)

    @staticmethod
    def _nv(op, *args) -> None:
        """A flash operation; a failed write is an ERROR answer, never a crash."""
        try:
            op(*args)
        except OSError as e:
            raise _Reply(ErrorCode.INTERNAL, f"flash write failed: {e.strerror or e}") from None

    @staticmethod
    def _activation(p: Partition) -> bytes:
        m = p.model
        return P.encode_activation(P.Activation(m.arena_used, tuple(m.inputs), tuple(m.outputs)))

    def _run(self, payload: bytes) -> tuple[int, bytes]:
        if self.active is None:
            raise _Reply(ErrorCode.NO_PARTITION, "no active partition")
        tensors = P.decode_tensors(payload, "RUN")
        model = self.active.model
        if len(tensors) != len(model.inputs):
            raise _Reply(ErrorCode.BAD_TENSOR, f"{len(tensors)} tensors, the model takes {len(model.inputs)}",
                         len(tensors))
        for i, (t, want) in enumerate(zip(tensors, model.inputs)):
            if not t.spec.matches(want):
                raise _Reply(ErrorCode.BAD_TENSOR, f"input {i} is {_fmt(t.spec)}, the model takes {_fmt(want)}", i)
        try:
            outputs = model.invoke(tensors)
        except Exception as e:  # noqa: BLE001
            raise _Reply(ErrorCode.INVOKE_FAILED, f"{type(e).__name__}: {e}") from None
        return MsgType.RESULT, P.encode_tensors(outputs)

    _HANDLERS: dict[int, Callable[["BoardEmulator", bytes], tuple[int, bytes]]] = {
        MsgType.HELLO: _hello,
        MsgType.PING: _ping,
        MsgType.FLASH_BEGIN: _flash_begin,
        MsgType.FLASH_CHUNK: _flash_chunk,
        MsgType.FLASH_END: _flash_end,
        MsgType.ACTIVATE: _activate,
        MsgType.RUN: _run,
    }


def _fmt(s: TensorSpec) -> str:
    return f"{s.dtype}{list(s.shape)} scale={s.scale:.6g} zero_point={s.zero_point}"
