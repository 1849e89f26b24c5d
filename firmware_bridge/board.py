"""Host-side client of a serial board (real tty, pty, `loop://`, `socket://`).

    with Board.open("/dev/ttyACM0", baudrate=921600) as board:
        info = board.hello()
        board.flash("segment-0", image, progress=print)
        board.activate(hashlib.sha256(image).digest())
        (logits,) = board.run([Tensor.from_numpy(x_q, scale, zero_point)])

Stop-and-wait: one request frame, then its answer (same sequence number)
within a timeout. No answer, a NAK or a damaged answer: the request is
sent again, with the timeout growing by `backoff` each time, up to
`retries` retransmissions (or until `within` seconds, where a call gives
that bound: `ping`, `hello`, `run`); the board answers a repeated request
from its cache, so a retransmission never executes anything twice. Requests longer
than the board's max payload go as fragments; long answers are fetched
with CONTINUE. Every wait is bounded: the client never hangs past its
timeouts, and every failure is a `firmware_bridge.errors.BoardError`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import serial

from firmware_bridge import protocol as P
from firmware_bridge.errors import (BoardError, BoardProtocolError, BoardRemoteError, BoardTimeoutError,
                                    FlashError, PortError)
from firmware_bridge.framing import (DELIMITER, FLAG_CONT, FLAG_MORE, MAX_PAYLOAD, BadFrame, Frame,
                                     FrameDecoder, FrameErrorKind, encode_frame, max_encoded_size)
from firmware_bridge.protocol import ErrorCode, MsgType, Tensor

DEFAULT_BAUDRATE = 115200
DEFAULT_WRITE_TIMEOUT = 2.0
_READ_SLICE = 0.02  # port read timeout; the deadline is checked between reads


@dataclass(frozen=True)
class FlashResult:
    """What `Board.flash` did.

    Attributes:
        name, size, sha256: the image (sha256 as hex).
        resumed_from: the offset the board already held (0: a fresh flash).
        seconds: wall time of the whole flash.
    """

    name: str
    size: int
    sha256: str
    resumed_from: int
    seconds: float

    @property
    def throughput(self) -> float:
        """Image bytes sent per second."""
        return (self.size - self.resumed_from) / self.seconds if self.seconds > 0 else float("inf")


class Board:
    """A serial board speaking the firmware_bridge protocol.

    Args:
        port: an open pyserial port (`serial.serial_for_url(...)`); its
            `write_timeout` is set if it has none, and its read `timeout`
            becomes a short slice (the client keeps its own deadlines).
        baudrate: the line rate used to budget transmission time in
            timeouts (default: the port's).
        timeout: base seconds to wait for an answer, on top of the time the
            bytes need on the line.
        retries: retransmissions of one frame before giving up.
        backoff: factor the wait grows by at each retransmission.
        max_timeout: cap of one wait, before transmission time.
        host_max_payload: the largest answer payload this host accepts.
        owns_port: close the port on `close()`.
    """

    def __init__(self, port: serial.SerialBase, *, baudrate: int | None = None, timeout: float = 0.5,
                 retries: int = 8, backoff: float = 1.5, max_timeout: float = 5.0,
                 host_max_payload: int = MAX_PAYLOAD, owns_port: bool = True) -> None:
        if timeout <= 0:
            raise ValueError(f"Expected a positive timeout. Received timeout={timeout!r}.")
        if retries < 0:
            raise ValueError(f"Expected retries >= 0. Received retries={retries!r}.")
        if backoff < 1.0:
            raise ValueError(f"Expected backoff >= 1.0. Received backoff={backoff!r}.")
        self._port = port
        if port.write_timeout is None:
            port.write_timeout = DEFAULT_WRITE_TIMEOUT
        port.timeout = _READ_SLICE
        self.baudrate = baudrate or getattr(port, "baudrate", None) or DEFAULT_BAUDRATE
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_timeout = max_timeout
        self.host_max_payload = host_max_payload
        self.owns_port = owns_port
        self.info: P.Info | None = None
        self.activation: P.Activation | None = None
        self._flashed: dict[bytes, tuple[str, int]] = {}  # sha256 -> (name, size) of verified images
        self._decoder = FrameDecoder(host_max_payload)
        self._inbox: collections.deque = collections.deque()
        self._seq = random.randrange(0x10000)
        self._lock = threading.RLock()
        self._reopen: Callable[[], serial.SerialBase] | None = None  # set by `open`
        # retransmits, naks (frames the board got damaged), bad_frames (damaged answers), crc_errors
        # (those of them whose CRC-32 failed), stale, write_timeouts, flash_resyncs, reopens
        self.stats = collections.Counter()

    @classmethod
    def open(cls, url: str, baudrate: int = DEFAULT_BAUDRATE, *, write_timeout: float = DEFAULT_WRITE_TIMEOUT,
             **kwargs) -> "Board":
        """Opens `url` (a tty path, `loop://`, `socket://host:port`, ...) and wraps it (`reopen` opens it again)."""

        def open_port() -> serial.SerialBase:
            try:
                return serial.serial_for_url(url, baudrate=baudrate, timeout=_READ_SLICE, write_timeout=write_timeout)
            except (serial.SerialException, ValueError, OSError) as e:
                raise PortError(f"cannot open serial port {url!r}: {e}") from e

        board = cls(open_port(), baudrate=baudrate, **kwargs)
        board._reopen = open_port
        return board

    def reopen(self) -> None:
        """Closes the port and opens it again: after the board was reset or unplugged (a USB CDC port goes
        away with it) or its TCP link dropped. Call `hello` next: the board may have restarted.

        Raises:
            PortError: the port cannot be opened (yet), or this board was not made by `open`.
        """
        with self._lock:
            if self._reopen is None:
                raise PortError(f"cannot reopen {self.port}: the board was given an open port, not made by Board.open")
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass  # it is being replaced
            port = self._reopen()
            port.timeout = _READ_SLICE
            self._port = port
            self._inbox.clear()
            self._decoder.reset()
            self.stats["reopens"] += 1

    @property
    def port(self) -> str:
        return str(getattr(self._port, "port", None) or self._port)

    def close(self) -> None:
        if self.owns_port:
            self._port.close()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ operations

    def hello(self, *, within: float | None = None) -> P.Info:
        """Starts a session: tells the board this host's limits, returns its INFO.

        Args:
            within: give up after this many seconds (default: after `retries` retransmissions).
        """
        with self._lock:
            self._inbox.clear()
            self._decoder.reset()
            frame = self._transact(MsgType.HELLO, P.encode_hello(self.host_max_payload), within=within)
            self._expect(frame, MsgType.INFO, "HELLO")
            info = self._decode(P.decode_info, frame.payload, "INFO")
            if info.max_payload < P.MIN_PAYLOAD:
                raise BoardProtocolError(f"board announces max payload {info.max_payload}, "
                                         f"the protocol requires at least {P.MIN_PAYLOAD}")
            self.info = info
            return info

    def ping(self, data: bytes = b"", *, within: float | None = None) -> float:
        """Sends PING with `data`; returns the round trip in seconds.

        Args:
            within: give up after this many seconds (default: after `retries` retransmissions).
        """
        start = time.perf_counter()
        frame = self._transact(MsgType.PING, bytes(data), within=within)
        self._expect(frame, MsgType.PONG, "PING")
        if frame.payload != bytes(data):
            raise BoardProtocolError(f"PONG carries {len(frame.payload)} bytes that differ from the PING")
        return time.perf_counter() - start

    def flash(self, name: str, data: bytes, progress: Callable[[int, int], None] | None = None, *,
              arena_bytes: int | None = None, chunk_size: int | None = None, force: bool = False) -> FlashResult:
        """Writes `data` into the board's staging slot and has the board verify it.

        Checks the image against the board's flash (and `arena_bytes`, the
        arena the model needs, against its arena) before sending anything.
        If the board already holds a prefix of this same image (an earlier
        flash was interrupted), it resumes after the last acknowledged byte.
        The board checks the sha256 at the end; the image becomes the running
        one only with `activate`.

        Args:
            name: partition name (at most 255 UTF-8 bytes).
            data: the image, e.g. a .tflite file's bytes.
            progress: called as progress(bytes_acknowledged, total).
            arena_bytes: the tensor arena the model needs (manifest
                `tflm.arena_bytes`), checked against the board's.
            chunk_size: image bytes per FLASH_CHUNK (default: as many as fit).
            force: send the image even if it is the board's active partition
                already (otherwise nothing is sent and `resumed_from` is the size).

        Raises:
            FlashError: refused before sending, or interrupted (`.offset`
                says how far the board got; flash again to resume).
        """
        data = bytes(data)
        with self._lock:
            info = self.info or self.hello()
            if not data:
                raise FlashError("refusing to flash an empty image")
            if len(data) > info.flash_capacity:
                raise FlashError(f"image {name!r} is {len(data)} bytes, board {info.board_id!r} flash slot "
                                 f"holds {info.flash_capacity} (nothing sent)")
            if arena_bytes is not None and arena_bytes > info.arena_capacity:
                raise FlashError(f"image {name!r} needs a {arena_bytes}-byte tensor arena, board "
                                 f"{info.board_id!r} has {info.arena_capacity} (nothing sent)")
            room = info.max_payload - 4
            chunk = min(chunk_size or room, room)
            if chunk <= 0:
                raise ValueError(f"Expected a positive chunk_size. Received chunk_size={chunk_size!r}.")
            digest = hashlib.sha256(data).digest()
            start = time.perf_counter()
            if info.active_sha256 == digest and not force:
                if progress:
                    progress(len(data), len(data))
                return FlashResult(name, len(data), digest.hex(), len(data), time.perf_counter() - start)
            offset = 0
            try:
                frame = self._transact(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin(name, len(data), digest)))
                self._expect(frame, MsgType.ACK, "FLASH_BEGIN")
                offset = resumed = self._ack_offset(frame, len(data), "FLASH_BEGIN")
                resyncs = 0
                if progress:
                    progress(offset, len(data))
                while offset < len(data):
                    piece = data[offset:offset + chunk]
                    try:
                        frame = self._transact(MsgType.FLASH_CHUNK, P.encode_flash_chunk(offset, piece))
                    except BoardRemoteError as e:
                        # The board holds another prefix: go on from there (a
                        # board that keeps moving the offset is refused).
                        if e.code == ErrorCode.BAD_OFFSET and e.detail <= len(data) and resyncs < 3:
                            offset = e.detail
                            resyncs += 1
                            self.stats["flash_resyncs"] += 1
                            continue
                        raise
                    resyncs = 0
                    self._expect(frame, MsgType.ACK, "FLASH_CHUNK")
                    acked = self._ack_offset(frame, len(data), "FLASH_CHUNK")
                    if acked < offset + len(piece):
                        raise BoardProtocolError(f"FLASH_CHUNK at {offset} acknowledged only up to {acked}")
                    offset = acked
                    if progress:
                        progress(offset, len(data))
                frame = self._transact(MsgType.FLASH_END, b"")
                self._expect(frame, MsgType.ACK, "FLASH_END")
            except BoardRemoteError as e:
                raise FlashError(f"board {info.board_id!r} refused image {name!r}: {e}", offset) from e
            except BoardTimeoutError as e:
                raise FlashError(f"flashing {name!r} interrupted after {offset} of {len(data)} bytes: {e} "
                                 f"(flash again to resume from byte {offset})", offset) from e
            self._flashed[digest] = (name, len(data))
            return FlashResult(name, len(data), digest.hex(), resumed, time.perf_counter() - start)

    def activate(self, sha256: bytes | str, *, work: float = 2.0) -> P.Activation:
        """Makes the verified staged image (or the active one) with this sha256 run.

        Args:
            sha256: raw 32 bytes or 64 hex characters.
            work: seconds the board may spend loading the model before the
                first retransmission (a board still busy answers the repeat
                from its cache, so a short value only costs traffic).

        Returns:
            The arena the model uses and its input/output specs.

        Raises:
            BoardRemoteError: NO_PARTITION, ARENA_TOO_SMALL, MODEL_INVALID (the
                previous partition keeps running).
        """
        sha = bytes.fromhex(sha256) if isinstance(sha256, str) else bytes(sha256)
        with self._lock:
            frame = self._transact(MsgType.ACTIVATE, P.encode_activate(sha), work=work)
            self._expect(frame, MsgType.ACK, "ACTIVATE")
            self.activation = self._decode(P.decode_activation, frame.payload, "ACK(ACTIVATE)")
            if self.info is not None and self.info.active_sha256 != sha:
                name, size = self._flashed.get(sha, ("", 0))
                self.info = dataclasses.replace(self.info, active_sha256=sha, active_size=size, active_name=name)
            return self.activation

    def run(self, inputs: Sequence[Tensor | np.ndarray] | Tensor | np.ndarray, *,
            work: float = 0.0, within: float | None = None) -> list[Tensor]:
        """Runs the active partition on `inputs`; returns its output tensors.

        NumPy arrays get the quantization of the activated model's inputs
        (known after `activate`); `Tensor`s are sent as they are and the board
        refuses a dtype, shape or quantization that differs from its model.

        Args:
            inputs: one tensor/array or a sequence of them, in model order.
            work: seconds the board may spend on the inference before the
                first retransmission (e.g. its measured inference time).
            within: give up after this many seconds, fragments and the
                answer's continuations included (default: after `retries`
                retransmissions of each frame).
        """
        if isinstance(inputs, (Tensor, np.ndarray)):
            inputs = [inputs]
        tensors = []
        for i, x in enumerate(inputs):
            if isinstance(x, Tensor):
                tensors.append(x)
                continue
            specs = self.activation.inputs if self.activation else ()
            if i >= len(specs):
                raise BoardError("run() with NumPy arrays needs the model's input quantization: "
                                 "call activate() first or pass Tensor objects")
            tensors.append(Tensor.from_numpy(np.asarray(x, dtype=specs[i].dtype), specs[i].scale,
                                             specs[i].zero_point))
        payload = P.encode_tensors(tensors)
        with self._lock:
            limit = self.info.max_message if self.info else None
            if limit is not None and len(payload) > limit:
                raise BoardError(f"RUN request is {len(payload)} bytes, board takes at most {limit}")
            frame = self._transact(MsgType.RUN, payload, work=work, within=within)
            self._expect(frame, MsgType.RESULT, "RUN")
            return self._decode(P.decode_tensors, frame.payload, "RESULT")

    # ------------------------------------------------------------ transactions

    def _transact(self, mtype: MsgType, payload: bytes, work: float = 0.0, within: float | None = None) -> Frame:
        """Sends one request (fragmented if needed); returns its whole answer.

        ERROR answers raise BoardRemoteError. With `within`, every frame of
        the transaction is abandoned once that many seconds have passed.
        """
        give_up = None if within is None else time.monotonic() + within
        with self._lock:
            limit = self.info.max_payload if self.info else P.MIN_PAYLOAD
            if len(payload) > limit:
                sent = 0
                while len(payload) - sent > limit:
                    piece = payload[sent:sent + limit]
                    flags = FLAG_MORE | (FLAG_CONT if sent else 0)
                    frame = self._exchange(Frame(mtype, self._next_seq(), piece, flags), mtype, give_up=give_up)
                    self._raise_error(frame, mtype)
                    self._expect(frame, MsgType.ACK, f"{mtype.name} fragment")
                    got = self._decode(lambda p: P.decode_u32(p, "ACK"), frame.payload, "ACK")
                    sent += len(piece)
                    if got != sent:
                        raise BoardProtocolError(f"board holds {got} bytes of the {mtype.name} request, sent {sent}")
                request = Frame(mtype, self._next_seq(), payload[sent:], FLAG_CONT)
            else:
                request = Frame(mtype, self._next_seq(), payload)
            frame = self._exchange(request, mtype, work, give_up)
            self._raise_error(frame, mtype)
            if not frame.flags & FLAG_MORE:
                return frame
            parts, rtype = [frame.payload], frame.type
            received = len(frame.payload)
            while frame.flags & FLAG_MORE:
                if received > 0xFFFFFFFF or not frame.payload:
                    raise BoardProtocolError("long answer without progress")
                frame = self._exchange(Frame(MsgType.CONTINUE, self._next_seq(), P.encode_u32(received)),
                                       MsgType.CONTINUE, give_up=give_up)
                self._raise_error(frame, mtype)
                if frame.type != rtype or not frame.flags & FLAG_CONT:
                    raise BoardProtocolError(f"fragment of a {_type_name(rtype)} answer continued by "
                                             f"{_type_name(frame.type)}")
                parts.append(frame.payload)
                received += len(frame.payload)
            return Frame(rtype, request.seq, b"".join(parts))

    def _exchange(self, request: Frame, what: MsgType, work: float = 0.0, give_up: float | None = None) -> Frame:
        """Stop-and-wait for one frame: (re)send until the answer with its seq arrives.

        `give_up` (a `time.monotonic()` value) ends the retransmissions
        early: no wait runs past it (the first send always happens).
        """
        wire = encode_frame(request)
        # Line time of the answer: at most the board's max payload; before
        # HELLO the answer is INFO, NAK or ERROR, all under 1 KiB.
        rx_bound = max_encoded_size(min(self.host_max_payload, self.info.max_payload if self.info else 1024))
        line = (len(wire) + 1 + rx_bound) * 10.0 / self.baudrate
        naks = damaged = attempts = 0
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            if attempt and give_up is not None and time.monotonic() >= give_up:
                break
            attempts += 1
            if attempt:
                self.stats["retransmits"] += 1
            # A leading delimiter ends any garbage the board holds, so the
            # request is not glued to it.
            self._write(DELIMITER + wire if attempt else wire)
            wait = min(self.timeout * self.backoff ** attempt, self.max_timeout) + line + work
            deadline = time.monotonic() + wait
            if give_up is not None:
                deadline = min(deadline, give_up)
            outcome = self._await(request.seq, deadline, grace=0.01 + rx_bound * 10.0 / self.baudrate)
            if isinstance(outcome, Frame):
                return outcome
            if outcome == "nak":
                naks += 1
            elif outcome == "damaged":
                damaged += 1
        raise BoardTimeoutError(
            f"no valid answer to {what.name} from board on {self.port} after {attempts} attempts in "
            f"{time.monotonic() - started:.1f} s ({naks} NAK, {damaged} damaged answers); check the "
            f"port, the baud rate and that the board runs the firmware_bridge protocol")

    def _await(self, seq: int, deadline: float, grace: float) -> Frame | str:
        """Reads until the answer to `seq`, a NAK, or the deadline.

        After a damaged frame the wait shrinks to `grace` (one answer's line
        time): if the damage was noise before the answer, the answer follows
        at once; if it was the answer, a retransmission brings it again
        sooner than the full timeout would.
        """
        damaged = False
        while True:
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, BadFrame):
                    self.stats["bad_frames"] += 1
                    if item.kind == FrameErrorKind.CRC:
                        self.stats["crc_errors"] += 1
                    if item.kind == FrameErrorKind.VERSION:
                        raise BoardProtocolError(f"board on {self.port} speaks another protocol version: {item.reason}")
                    damaged = True
                    deadline = min(deadline, time.monotonic() + grace)
                    continue
                if item.type == MsgType.NAK:
                    # A NAK's seq is only known when the damaged frame's
                    # header survived; any NAK means "send it again".
                    self.stats["naks"] += 1
                    return "nak"
                if item.seq != seq:
                    self.stats["stale"] += 1  # an answer to an earlier attempt
                    continue
                return item
            if time.monotonic() >= deadline:
                return "damaged" if damaged else "timeout"
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError) as e:
                raise PortError(f"cannot read serial port {self.port}: {e}") from e
            if data:
                self._inbox.extend(self._decoder.feed(data))

    def _write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except serial.SerialTimeoutException:
            self.stats["write_timeouts"] += 1  # the line is stuck; the retry loop bounds this
        except (serial.SerialException, OSError) as e:
            raise PortError(f"cannot write serial port {self.port}: {e}") from e

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _raise_error(frame: Frame, request: MsgType) -> None:
        if frame.type == MsgType.ERROR:
            try:
                code, detail, text = P.decode_error(frame.payload)
            except P.MessageError as e:
                raise BoardProtocolError(f"malformed ERROR answer to {request.name}: {e}") from None
            raise BoardRemoteError(code, detail, text, request.name)

    @staticmethod
    def _expect(frame: Frame, mtype: MsgType, request: str) -> None:
        if frame.type != mtype:
            raise BoardProtocolError(f"board answered {_type_name(frame.type)} to {request}, expected {mtype.name}")

    @staticmethod
    def _decode(fn, payload: bytes, what: str):
        try:
            return fn(payload)
        except (P.MessageError, ValueError) as e:
            raise BoardProtocolError(f"malformed {what} from board: {e}") from None

    def _ack_offset(self, frame: Frame, size: int, what: str) -> int:
        offset = self._decode(lambda p: P.decode_u32(p, f"ACK({what})"), frame.payload, f"ACK({what})")
        if offset > size:
            raise BoardProtocolError(f"board acknowledged offset {offset} of a {size}-byte image")
        return offset


def _type_name(t: int) -> str:
    try:
        return MsgType(t).name
    except ValueError:
        return f"type 0x{t:02x}"
