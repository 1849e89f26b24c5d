"""Board emulator: the board side of the serial protocol, with real TFLM.

`BoardEmulator` is the protocol as a pure byte machine (`receive(bytes) ->
bytes`), the reference a firmware author compares against. `serve` moves
bytes between it and a pty master or a TCP socket, optionally throttled to
a baud rate. From a shell:

    python -m firmware_bridge.emulator --pty            # prints /dev/pts/N
    python -m firmware_bridge.emulator --tcp 7777       # socket://127.0.0.1:7777

Budgets are enforced like a board would: `flash_capacity` bounds the image
(one slot of an A/B pair), `arena_capacity` is the tensor arena the model
must really allocate in (measured with TFLM), `max_payload` bounds every
received frame and `max_message` every request reassembled from fragments.
Flash writes go to the staging slot; FLASH_END verifies its sha256, and
only ACTIVATE of a verified image whose model loads switches the active
partition, so a failed or corrupted flash leaves the old one running.
Nothing a host sends crashes it: bad frames get NAK, bad requests ERROR.

With a flash directory (`--flash-dir`, `BoardEmulator(flash_dir=...)`) the
flash is non-volatile like a board's: `FlashStore` keeps the active image,
the staging slot and its verified flag in files, so a reset (the process
killed and started again) boots the last activated partition, and an
interrupted flash resumes from the bytes already written.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import socket
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from firmware_bridge import protocol as P
from firmware_bridge.framing import (FLAG_CONT, FLAG_MORE, KNOWN_FLAGS, BadFrame, Frame, FrameDecoder,
                                     encode_frame)
from firmware_bridge.protocol import ErrorCode, MsgType, Tensor, TensorSpec
from firmware_bridge.stop_signals import StopSignals
from paradis_tf.files import atomic_write_json, fsync_dir

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


@dataclass
class Staging:
    """The staging flash slot, filled by FLASH_CHUNK in order."""

    name: str
    size: int
    sha256: bytes
    buf: bytearray = field(default_factory=bytearray)
    verified: bool = False


class FlashStore:
    """The non-volatile flash of an emulated board, kept in a directory.

    Files: ``staging.json`` (name, size, sha256, verified) and
    ``staging.img`` (written chunk by chunk) for the staging slot;
    ``<sha256>.img`` for the active image and ``active.json`` naming it.
    Activation renames the staged image to ``<sha256>.img`` and then
    replaces ``active.json`` atomically, so a reset at any point boots
    either the old partition or the new one, never a mix. At boot the
    active image's sha256 is checked (a bootloader's integrity check); a
    corrupt one is not run.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise ValueError(f"flash directory {self.path!r} cannot be created ({e.strerror}); "
                             "pass a writable directory") from None
        self._staging_file = None

    def _p(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _write_json(self, name: str, value: dict) -> None:
        atomic_write_json(self._p(name), value, indent=None)

    def _read_json(self, name: str) -> dict | None:
        try:
            with open(self._p(name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("flash: %s is unreadable (%s); ignored", self._p(name), e)
            return None

    def boot(self) -> tuple[tuple[str, bytes, bytes] | None, Staging | None]:
        """Reads the flash after a reset: ((name, sha256, image) or None, staging or None)."""
        active = None
        meta = self._read_json("active.json")
        if meta is not None:
            try:
                sha = bytes.fromhex(meta["sha256"])
                with open(self._p(f"{meta['sha256']}.img"), "rb") as f:
                    data = f.read()
                if P.sha256(data) != sha:
                    log.error("flash: active image %s (%s) fails its sha256 check; booting without a partition",
                              meta.get("name"), meta["sha256"][:16])
                else:
                    active = (str(meta["name"]), sha, data)
            except (OSError, KeyError, ValueError) as e:
                log.error("flash: active image unreadable (%s); booting without a partition", e)
        staging = None
        meta = self._read_json("staging.json")
        if meta is not None:
            try:
                with open(self._p("staging.img"), "rb") as f:
                    buf = bytearray(f.read(int(meta["size"])))
                staging = Staging(str(meta["name"]), int(meta["size"]), bytes.fromhex(meta["sha256"]), buf)
                if meta.get("verified"):
                    staging.verified = len(buf) == staging.size and P.sha256(bytes(buf)) == staging.sha256
                    if not staging.verified:
                        log.error("flash: staged image %s fails its sha256 check; discarded", staging.name)
                        staging = None
            except (OSError, KeyError, ValueError) as e:
                log.error("flash: staging slot unreadable (%s); discarded", e)
                staging = None
        return active, staging

    def begin(self, s: Staging) -> None:
        """Erases the staging slot for a new image."""
        self.close()
        # erase first: a reset between the two steps leaves an empty slot, never
        # the old image's bytes under the new image's name
        self._staging_file = open(self._p("staging.img"), "wb")
        os.fsync(self._staging_file.fileno())
        self._write_staging_meta(s, verified=False)

    def append(self, offset: int, data: bytes) -> None:
        """Programs ``data`` at ``offset``, the end of the staged bytes (durable once this returns)."""
        if self._staging_file is None:  # the first write after a reset: go on where the staged bytes end
            self._staging_file = open(self._p("staging.img"), "r+b")
            self._staging_file.truncate(offset)
            self._staging_file.seek(offset)
        self._staging_file.write(data)
        self._staging_file.flush()
        os.fsync(self._staging_file.fileno())

    def verified(self, s: Staging) -> None:
        self.close()
        self._write_staging_meta(s, verified=True)

    def _write_staging_meta(self, s: Staging, verified: bool) -> None:
        self._write_json("staging.json", {"name": s.name, "size": s.size, "sha256": s.sha256.hex(),
                                          "verified": verified})

    def discard(self) -> None:
        """Drops the staging slot (a failed verification)."""
        self.close()
        for name in ("staging.json", "staging.img"):
            try:
                os.remove(self._p(name))
            except FileNotFoundError:
                pass

    def activate(self, s: Staging) -> None:
        """Makes the verified staged image the active one (the A/B swap)."""
        self.close()
        sha = s.sha256.hex()
        os.replace(self._p("staging.img"), self._p(f"{sha}.img"))
        fsync_dir(self.path)
        self._write_json("active.json", {"name": s.name, "sha256": sha})
        self.discard()
        for name in os.listdir(self.path):  # the previous image: its slot is the next staging slot
            if name.endswith(".img") and name != f"{sha}.img" and name != "staging.img":
                os.remove(self._p(name))

    def close(self) -> None:
        if self._staging_file is not None:
            self._staging_file.close()
            self._staging_file = None


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


# ---------------------------------------------------------------- transports


class Link(Protocol):
    """A byte stream the emulator serves on."""

    def read(self, timeout: float) -> bytes | None: ...  # b"" on timeout, None when closed

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class FdLink:
    """A file descriptor: the master side of a pty, or one end of a socketpair."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return b""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # pty with no slave open right now: keep serving
                time.sleep(min(timeout, 0.05))
                return b""
            return None
        return data if data else None

    def write(self, data: bytes, timeout: float = 2.0) -> None:
        """Writes `data`; what the line does not take within `timeout` is lost,
        as on a UART nobody reads (the emulator never blocks for good)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            _, w, _ = select.select([], [self.fd], [], remaining)
            if not w:
                continue
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class SocketLink:
    """A connected TCP socket (pyserial `socket://`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return b""
        try:
            data = self.sock.recv(65536)
        except OSError:
            return None
        return data if data else None

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class PtyPair:
    """A pseudo-terminal: the emulator serves the master, hosts open `path`.

    The slave stays open here too, so the master keeps working while no host
    has the port open, and it is raw, so every byte passes unchanged.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class LineClock:
    """Delays bytes to the rate of a UART at `baudrate` (8N1: 10 bits a byte)."""

    def __init__(self, baudrate: int | None) -> None:
        self.byte_time = 10.0 / baudrate if baudrate else 0.0
        self._free = 0.0  # when the line is next idle

    def wait(self, nbytes: int) -> None:
        """Sleeps until `nbytes` sent from now (or after the line frees) have crossed it."""
        if not self.byte_time:
            return
        now = time.perf_counter()
        self._free = max(self._free, now) + nbytes * self.byte_time
        delay = self._free - now
        if delay > 0:
            time.sleep(delay)


def serve(board: BoardEmulator, link: Link, stop: threading.Event, baudrate: int | None = None) -> None:
    """Moves bytes between `link` and `board` until `stop` is set or the link closes.

    With `baudrate`, received bytes reach the board and answers leave it no
    faster than a UART at that rate would carry them, each direction apart.
    """
    rx, tx = LineClock(baudrate), LineClock(baudrate)
    while not stop.is_set():
        data = link.read(0.05)
        if data is None:
            return
        if not data:
            continue
        rx.wait(len(data))
        try:
            out = board.receive(data)
        except Exception:  # noqa: BLE001 - a bug must not take the board down
            log.exception("board emulator failed on %d received bytes", len(data))
            continue
        if out:
            tx.wait(len(out))
            try:
                link.write(out)
            except OSError:
                return


class EmulatorServer:
    """Serves a `BoardEmulator` on a pty or a TCP port from a background thread.

    Use as a context manager; `url` is what to pass to `serial_for_url`
    (a /dev/pts path, or socket://127.0.0.1:PORT).

    Args:
        board: the emulator to serve.
        transport: "pty" or "tcp".
        baudrate: throttle to this UART rate, or None for full speed.
        port: TCP port (0: any free one).
    """

    def __init__(self, board: BoardEmulator, transport: str = "pty", baudrate: int | None = None,
                 port: int = 0, host: str = "127.0.0.1") -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"Expected transport 'pty' or 'tcp'. Received transport={transport!r}.")
        self.board = board
        self.baudrate = baudrate
        self._stop = threading.Event()
        self._pty: PtyPair | None = None
        self._listener: socket.socket | None = None
        if transport == "pty":
            self._pty = PtyPair()
            self.url = self._pty.path
        else:
            self._listener = socket.create_server((host, port))
            self._listener.settimeout(0.1)
            self.url = f"socket://{host}:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, name="board-emulator", daemon=True)

    def start(self) -> "EmulatorServer":
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._pty is not None:
            serve(self.board, FdLink(self._pty.master), self._stop, self.baudrate)
            return
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = SocketLink(conn)
            try:
                serve(self.board, link, self._stop, self.baudrate)
            finally:
                link.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self.board.flash is not None:
            self.board.flash.close()
        if self._pty is not None:
            self._pty.close()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- command line


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 256K, 1M)") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.emulator",
                                description="Emulate a TFLM serial board (firmware_bridge protocol).")
    where = p.add_argument_group("where to serve").add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal; prints its path")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (socket://); 0: any")
    board = p.add_argument_group("board")
    board.add_argument("--board-id", default="emu-0", help="name INFO reports (default: %(default)s)")
    board.add_argument("--flash", type=_size, default=1 << 20, help="flash slot bytes (default: %(default)s)")
    board.add_argument("--arena", type=_size, default=256 << 10, help="TFLM arena bytes (default: %(default)s)")
    board.add_argument("--max-payload", type=int, default=1024,
                       help="largest frame payload received (default: %(default)s)")
    board.add_argument("--max-message", type=_size, default=64 << 10,
                       help="largest reassembled request (default: %(default)s)")
    board.add_argument("--baud", type=int, default=None, help="throttle to this UART baud rate (default: off)")
    board.add_argument("--flash-dir", default=None, metavar="DIR",
                       help="keep the flash in DIR, so a restart boots the last activated partition and "
                            "resumes an interrupted flash (default: flash in memory, blank at start)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = BoardConfig(args.board_id, args.flash, args.arena, args.max_payload, args.max_message)
    except ValueError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    try:
        board = BoardEmulator(config, flash_dir=args.flash_dir)
    except ValueError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    server = EmulatorServer(board, "pty" if args.pty else "tcp", args.baud, port=args.tcp or 0)
    stop = StopSignals().install()
    print(server.url, flush=True)
    with server:
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
