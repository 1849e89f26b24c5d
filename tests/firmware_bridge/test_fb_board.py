"""The host client over real ports: pty, socket://, loop://, scripted boards."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
import serial
from fb_reference import random_int8, tflm_reference

from firmware_bridge.board import Board
from firmware_bridge.emulated_board import BoardConfig
from firmware_bridge.errors import (BoardProtocolError, BoardRemoteError, BoardTimeoutError, FlashError, PortError,
                                    SerialBridgeError)
from firmware_bridge.fault_proxy import FaultProxy
from firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from firmware_bridge.links import FdLink, PtyPair
from firmware_bridge.protocol import ErrorCode, MsgType, Tensor
from paradis_tf.errors import ParaDiSError


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.slow
def test_flash_activate_run(serve, models, transport):
    server = serve(BoardConfig(max_payload=128), transport)
    m = models["features"]  # 128-byte input, 512-byte output: both directions fragment
    seen = []
    with Board.open(server.url, timeout=0.5) as board:
        info = board.hello()
        assert info.max_payload == 128 and info.active_sha256 is None
        assert board.ping(b"p" * 300) < 1.0
        result = board.flash("features", m, progress=lambda done, total: seen.append((done, total)))
        assert result.sha256 == hashlib.sha256(m).hexdigest() and result.resumed_from == 0
        assert seen[0] == (0, len(m)) and seen[-1] == (len(m), len(m))
        assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
        act = board.activate(result.sha256)
        assert act.inputs[0].shape == (1, 8, 8, 2) and act.outputs[0].shape == (1, 8, 8, 8)
        for seed in range(3):
            x = random_int8((1, 8, 8, 2), seed)
            (out,) = board.run(x)
            np.testing.assert_array_equal(out.numpy(), tflm_reference(m, [x])[0])
        assert board.hello().active_sha256 == hashlib.sha256(m).digest()
    assert server.board.stats["naks"] == 0


def test_flash_is_skipped_when_the_image_is_active_and_resumed_when_staged(serve, models):
    server = serve()
    m = models["classifier"]
    with Board.open(server.url) as board:
        board.flash("cls", m)
        again = board.flash("cls", m)  # verified in staging: nothing left to send
        assert again.resumed_from == len(m)
        board.activate(hashlib.sha256(m).digest())
        before = server.board.stats["requests"]
        assert board.flash("cls", m).resumed_from == len(m)
        assert server.board.stats["requests"] == before  # nothing sent at all
        assert board.flash("cls", m, force=True).resumed_from == 0


def test_refuses_before_sending_anything(serve, models):
    server = serve(BoardConfig(flash_capacity=1000, arena_capacity=4096))
    with Board.open(server.url) as board:
        board.hello()
        with pytest.raises(FlashError, match=r"holds 1000 \(nothing sent\)"):
            board.flash("cls", models["classifier"])
        with pytest.raises(FlashError, match=r"needs a 8192-byte tensor arena.*has 4096"):
            board.flash("small", b"x" * 100, arena_bytes=8192)
    assert server.board.stats["requests"] == 1  # the HELLO
    assert server.board.staging is None


def test_board_errors_surface_with_their_code(serve):
    server = serve()
    with Board.open(server.url) as board:
        with pytest.raises(BoardRemoteError) as e:
            board.activate(bytes(32))
        assert e.value.code == ErrorCode.NO_PARTITION and "ACTIVATE" in str(e.value)
        with pytest.raises(BoardRemoteError, match="NO_PARTITION"):
            board.run(Tensor.from_numpy(np.zeros(3, np.int8)))
        assert board.ping() < 1.0  # the session goes on


def test_flash_interrupted_then_resumed(serve, models):
    server = serve(BoardConfig(max_payload=128))
    m = models["features"]
    with FaultProxy(server.url) as proxy, Board.open(proxy.url, timeout=0.05, retries=2) as board:
        board.hello()
        proxy.sever_after(len(m) // 2)
        start = time.monotonic()
        with pytest.raises(FlashError, match="flash again to resume") as e:
            board.flash("features", m)
        assert time.monotonic() - start < 10.0  # bounded by timeout, backoff and retries (slack: loaded CI)
        assert 0 < e.value.offset < len(m)
        assert server.board.staging is not None and len(server.board.staging.buf) >= e.value.offset
        proxy.restore()
        result = board.flash("features", m)
        assert e.value.offset <= result.resumed_from < len(m)
        assert server.board.staging.verified and bytes(server.board.staging.buf) == m
        board.activate(result.sha256)
        x = random_int8((1, 8, 8, 2), 9)
        np.testing.assert_array_equal(board.run(x)[0].numpy(), tflm_reference(m, [x])[0])


@pytest.mark.slow
def test_silent_board_times_out_within_its_budget():
    pty = PtyPair()
    try:
        with Board.open(pty.path, timeout=0.1, retries=2, backoff=2.0) as board:
            start = time.monotonic()
            with pytest.raises(BoardTimeoutError, match="after 3 attempts") as e:
                board.hello()
            elapsed = time.monotonic() - start
        line = 3 * (1100 * 10 / 115200)  # line time budgeted for a request and its answer
        assert 0.7 <= elapsed < 0.7 + line + 2.0  # slack for a loaded machine; a hang would take far longer
        assert isinstance(e.value, (SerialBridgeError, ParaDiSError, TimeoutError))
    finally:
        pty.close()


def test_loop_port_echo_is_a_protocol_error_not_a_hang():
    with Board.open("loop://", timeout=0.2) as board:
        with pytest.raises(BoardProtocolError, match="answered HELLO to HELLO"):
            board.hello()


def test_port_errors_and_write_timeout():
    with pytest.raises(PortError, match="cannot open serial port '/nonexistent/tty'"):
        Board.open("/nonexistent/tty")
    with Board.open("loop://") as board:
        assert board._port.write_timeout == 2.0
    port = serial.serial_for_url("loop://")
    assert port.write_timeout is None
    Board(port).close()
    assert port.write_timeout is not None


class ScriptedBoard:
    """A board on a pty that answers each request with what `script` returns."""

    def __init__(self, script) -> None:
        self.pty = PtyPair()
        self.link = FdLink(self.pty.master)
        self.script = script
        self.requests: list[Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        dec = FrameDecoder()
        while not self._stop.is_set():
            data = self.link.read(0.02)
            for f in dec.feed(data or b""):
                if isinstance(f, Frame):
                    self.requests.append(f)
                    out = self.script(f, len(self.requests))
                    if out:
                        self.link.write(out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pty.close()


def _pong(f: Frame, payload: bytes | None = None) -> bytes:
    return encode_frame(Frame(MsgType.PONG, f.seq, f.payload if payload is None else payload))


@pytest.mark.parametrize("scenario", ["garbage_first", "stale_then_right", "nak_then_right", "damaged_then_right",
                                      "silent_then_right"])
def test_client_recovers(scenario):
    def script(f, n):
        if scenario == "garbage_first":
            return b"\x13\x37 boot log line\r\n\xff\xfe" + b"\x00" + _pong(f)
        if scenario == "stale_then_right":
            return encode_frame(Frame(MsgType.PONG, (f.seq - 1) & 0xFFFF, b"old")) + _pong(f)
        first = n == 1
        if scenario == "nak_then_right":
            return encode_frame(Frame(MsgType.NAK, 0, b"\x03")) if first else _pong(f)
        if scenario == "damaged_then_right":
            w = bytearray(_pong(f))
            w[len(w) // 2] ^= 0x08
            return bytes(w) if first else _pong(f)
        return None if first else _pong(f)

    sb = ScriptedBoard(script)
    try:
        with Board.open(sb.pty.path, timeout=0.5, retries=2) as board:
            start = time.monotonic()
            board.ping(b"hello")
            elapsed = time.monotonic() - start
            time.sleep(0.05)  # let a spurious retransmission reach the board
        retried = scenario not in ("garbage_first", "stale_then_right")
        assert len(sb.requests) == (2 if retried else 1)
        assert sb.requests[0] == sb.requests[-1]  # a retransmission is the very same frame
        # NAK and damaged answers are retried before the timeout, silence after it
        if scenario == "silent_then_right":
            assert elapsed >= 0.5
        else:
            assert elapsed < 0.3
    finally:
        sb.close()


def test_other_protocol_version_is_reported_at_once():
    import zlib

    from cobs import cobs

    def script(f, n):
        body = bytes([2, MsgType.PONG, 0]) + f.seq.to_bytes(2, "little") + b"\x00\x00"
        return cobs.encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"

    sb = ScriptedBoard(script)
    try:
        with Board.open(sb.pty.path, timeout=0.2, retries=5) as board:
            with pytest.raises(BoardProtocolError, match="another protocol version"):
                board.ping()
        assert len(sb.requests) == 1
    finally:
        sb.close()


def test_wrong_answers_are_protocol_errors():
    sb = ScriptedBoard(lambda f, n: _pong(f, b"not what was sent"))
    try:
        with Board.open(sb.pty.path, timeout=0.2) as board:
            with pytest.raises(BoardProtocolError, match="differ"):
                board.ping(b"abc")
    finally:
        sb.close()


def test_flash_follows_the_board_when_its_staging_was_reset(serve, models):
    """The board lost its staged bytes mid-flash (another host, a reset):
    it answers BAD_OFFSET with what it holds and the client continues there."""
    from firmware_bridge import protocol as P
    from firmware_bridge.framing import Frame

    server = serve(BoardConfig(max_payload=256))
    m = models["classifier"]
    emu = server.board
    done = []

    def meddle(offset, total):
        done.append(offset)
        if len(done) == 3:  # after two chunks: staging restarted from zero behind the client's back
            emu.handle(Frame(MsgType.FLASH_BEGIN, 1, P.encode_flash_begin(P.FlashBegin("other", 10, bytes(32)))))
            emu.handle(Frame(MsgType.FLASH_BEGIN, 2, P.encode_flash_begin(P.FlashBegin("cls", len(m), P.sha256(m)))))

    with Board.open(server.url) as board:
        result = board.flash("cls", m, progress=meddle)
        assert board.stats["flash_resyncs"] == 1
        assert done[3] < done[2]  # progress went back to what the board really holds
    assert result.sha256 == hashlib.sha256(m).hexdigest()
    assert emu.staging.verified and bytes(emu.staging.buf) == m
