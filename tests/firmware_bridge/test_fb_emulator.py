"""The board emulator as a byte machine: state machine, budgets, bad input."""

from __future__ import annotations

import random
import signal
import subprocess
import sys

import numpy as np
import pytest
from cobs import cobs
from fb_reference import random_int8, tflm_reference

from firmware_bridge import protocol as P
from firmware_bridge.board import Board
from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
from firmware_bridge.emulator import EmulatorServer
from firmware_bridge.framing import (FLAG_CONT, FLAG_MORE, Frame, FrameDecoder, FrameErrorKind,
                                     encode_frame, frame_bytes)
from firmware_bridge.protocol import ErrorCode, MsgType, Tensor


class Host:
    """Drives a BoardEmulator frame by frame, as the protocol's host would."""

    def __init__(self, emu: BoardEmulator) -> None:
        self.emu = emu
        self.seq = 100

    def send(self, mtype: int, payload: bytes = b"", flags: int = 0, seq: int | None = None) -> Frame:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.emu.handle(Frame(mtype, seq, payload, flags))

    def ok(self, mtype: int, payload: bytes = b"", expect: int = MsgType.ACK) -> Frame:
        r = self.send(mtype, payload)
        assert r.type == expect, P.decode_error(r.payload) if r.type == MsgType.ERROR else r
        return r

    def error(self, mtype: int, payload: bytes = b"") -> tuple:
        r = self.send(mtype, payload)
        assert r.type == MsgType.ERROR, r
        return P.decode_error(r.payload)

    def flash(self, name: str, data: bytes, chunk: int = 200, sha: bytes | None = None) -> Frame:
        self.ok(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin(name, len(data), sha or P.sha256(data))))
        for off in range(0, len(data), chunk):
            self.ok(MsgType.FLASH_CHUNK, P.encode_flash_chunk(off, data[off:off + chunk]))
        return self.send(MsgType.FLASH_END)


@pytest.fixture
def host():
    return Host(BoardEmulator(BoardConfig(max_payload=256, flash_capacity=64 << 10, arena_capacity=64 << 10)))


def test_hello_reports_config_and_active_partition(host, models):
    info = P.decode_info(host.ok(MsgType.HELLO, P.encode_hello(4096), MsgType.INFO).payload)
    assert (info.board_id, info.runtime, info.max_payload, info.flash_capacity, info.active_sha256) == \
        ("emu-0", "tflm-emulator", 256, 64 << 10, None)
    m = models["classifier"]
    assert host.flash("cls", m).type == MsgType.ACK
    host.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(m)))
    info = P.decode_info(host.ok(MsgType.HELLO, P.encode_hello(4096), MsgType.INFO).payload)
    assert (info.active_sha256, info.active_size, info.active_name) == (P.sha256(m), len(m), "cls")


def test_flash_activate_run_matches_tflm(host, models):
    m = models["classifier"]
    host.flash("cls", m)
    act = P.decode_activation(host.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(m))).payload)
    assert 0 < act.arena_used <= 64 << 10
    x = random_int8((1, 8, 8, 1), 3)
    (spec,) = act.inputs
    r = host.ok(MsgType.RUN, P.encode_tensors([Tensor.from_numpy(x, spec.scale, spec.zero_point)]), MsgType.RESULT)
    (out,) = P.decode_tensors(r.payload)
    np.testing.assert_array_equal(out.numpy(), tflm_reference(m, [x])[0])
    assert out.spec == act.outputs[0]


def test_chunks_out_of_order_duplicated_or_past_the_end(host):
    data = bytes(range(256)) * 4
    host.ok(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("x", len(data), P.sha256(data))))
    assert host.error(MsgType.FLASH_CHUNK, P.encode_flash_chunk(100, data[100:200]))[:2] == (ErrorCode.BAD_OFFSET, 0)
    host.ok(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, data[:200]))
    # a repeated chunk (new sequence number: the host lost the ACK and restarted) is harmless
    assert P.decode_u32(host.ok(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, data[:200])).payload, "") == 200
    # ... but different bytes for an offset already written are not
    assert host.error(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, b"\xff" * 200))[:2] == (ErrorCode.BAD_OFFSET, 200)
    host.ok(MsgType.FLASH_CHUNK, P.encode_flash_chunk(200, data[200:]))
    assert host.error(MsgType.FLASH_CHUNK, P.encode_flash_chunk(len(data), b"more"))[0] == ErrorCode.TOO_LARGE
    host.ok(MsgType.FLASH_END)


def test_flash_resume_point(host):
    data = bytes(1000)
    begin = P.encode_flash_begin(P.FlashBegin("x", len(data), P.sha256(data)))
    host.ok(MsgType.FLASH_BEGIN, begin)
    host.ok(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, data[:300]))
    assert P.decode_u32(host.ok(MsgType.FLASH_BEGIN, begin).payload, "") == 300  # same image: resume
    other = P.encode_flash_begin(P.FlashBegin("y", len(data), P.sha256(data)))
    assert P.decode_u32(host.ok(MsgType.FLASH_BEGIN, other).payload, "") == 0  # another image: restart


def test_flash_budget_and_states(host):
    code, detail, _ = host.error(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("big", 65537, bytes(32))))
    assert (code, detail) == (ErrorCode.TOO_LARGE, 64 << 10)
    assert host.error(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, b"x"))[0] == ErrorCode.BAD_STATE
    assert host.error(MsgType.FLASH_END)[0] == ErrorCode.BAD_STATE
    host.ok(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("x", 10, bytes(32))))
    host.ok(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, b"12345"))
    assert host.error(MsgType.FLASH_END)[:2] == (ErrorCode.BAD_STATE, 5)  # incomplete


def test_corrupt_image_never_replaces_the_active_partition(host, models):
    good, other = models["classifier"], models["features"]
    host.flash("good", good)
    host.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(good)))
    # an image whose bytes do not hash to the announced sha256 (corrupted on the way)
    bad = bytearray(other)
    bad[500] ^= 1
    r = host.flash("other", bytes(bad), sha=P.sha256(other))
    assert P.decode_error(r.payload)[0] == ErrorCode.SHA_MISMATCH
    assert host.error(MsgType.ACTIVATE, P.encode_activate(P.sha256(other)))[0] == ErrorCode.NO_PARTITION
    # an image that is no model at all, correctly transferred
    junk = bytes(random.Random(1).randbytes(3000))
    assert host.flash("junk", junk).type == MsgType.ACK
    assert host.error(MsgType.ACTIVATE, P.encode_activate(P.sha256(junk)))[0] == ErrorCode.MODEL_INVALID
    # the good partition still runs
    assert host.emu.active.sha256 == P.sha256(good)
    x = random_int8((1, 8, 8, 1), 4)
    r = host.ok(MsgType.RUN, P.encode_tensors([Tensor.from_numpy(x, *_quant(host, good))]), MsgType.RESULT)
    np.testing.assert_array_equal(P.decode_tensors(r.payload)[0].numpy(), tflm_reference(good, [x])[0])


def _quant(host, model):
    act = P.decode_activation(host.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(model))).payload)
    return act.inputs[0].scale, act.inputs[0].zero_point


@pytest.mark.slow
def test_arena_budget_is_measured_with_tflm(models):
    m = models["classifier"]
    roomy = Host(BoardEmulator(BoardConfig(arena_capacity=64 << 10)))
    roomy.flash("cls", m)
    needed = P.decode_activation(roomy.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(m))).payload).arena_used
    tight = Host(BoardEmulator(BoardConfig(arena_capacity=needed - 16)))
    tight.flash("cls", m)
    code, detail, text = tight.error(MsgType.ACTIVATE, P.encode_activate(P.sha256(m)))
    assert (code, detail) == (ErrorCode.ARENA_TOO_SMALL, needed), text
    assert tight.emu.active is None
    exact = Host(BoardEmulator(BoardConfig(arena_capacity=needed)))
    exact.flash("cls", m)
    exact.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(m)))
    x = random_int8((1, 8, 8, 1), 5)
    spec = exact.emu.active.model.inputs[0]
    r = exact.ok(MsgType.RUN, P.encode_tensors([Tensor.from_numpy(x, spec.scale, spec.zero_point)]), MsgType.RESULT)
    np.testing.assert_array_equal(P.decode_tensors(r.payload)[0].numpy(), tflm_reference(m, [x])[0])


def test_run_refuses_wrong_tensors(host, models):
    m = models["classifier"]
    assert host.error(MsgType.RUN, P.encode_tensors([]))[0] == ErrorCode.NO_PARTITION
    host.flash("cls", m)
    scale, zp = _quant(host, m)
    x = random_int8((1, 8, 8, 1), 6)
    cases = [
        [],
        [Tensor.from_numpy(x, scale, zp)] * 2,
        [Tensor.from_numpy(x[..., :0], scale, zp)],
        [Tensor.from_numpy(x.astype(np.int16), scale, zp)],
        [Tensor.from_numpy(x, scale * 2, zp)],
        [Tensor.from_numpy(x, scale, zp + 1)],
    ]
    for tensors in cases:
        assert host.error(MsgType.RUN, P.encode_tensors(tensors))[0] == ErrorCode.BAD_TENSOR
    assert host.error(MsgType.RUN, b"\x01\x09")[0] == ErrorCode.BAD_PAYLOAD


def test_duplicate_request_is_answered_from_cache_not_executed_twice(host):
    data = bytes(300)
    host.ok(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("x", len(data), P.sha256(data))))
    first = host.send(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, data[:200]), seq=7)
    again = host.send(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, data[:200]), seq=7)
    assert first == again and host.emu.stats["duplicates"] == 1
    assert len(host.emu.staging.buf) == 200


def test_fragmented_request_and_long_answer(host):
    host.ok(MsgType.HELLO, P.encode_hello(128), MsgType.INFO)
    data = bytes(random.Random(2).randbytes(700))
    parts = [data[:256], data[256:512], data[512:]]
    r = host.send(MsgType.PING, parts[0], FLAG_MORE)
    assert (r.type, P.decode_u32(r.payload, "")) == (MsgType.ACK, 256)
    r = host.send(MsgType.PING, parts[1], FLAG_MORE | FLAG_CONT)
    assert P.decode_u32(r.payload, "") == 512
    r = host.send(MsgType.PING, parts[2], FLAG_CONT)
    got = r.payload
    assert r.type == MsgType.PONG and r.flags == FLAG_MORE and len(got) == 128  # the host takes 128
    while r.flags & FLAG_MORE:
        r = host.send(MsgType.CONTINUE, P.encode_u32(len(got)))
        assert r.type == MsgType.PONG and r.flags & FLAG_CONT
        got += r.payload
    assert got == data
    assert host.error(MsgType.CONTINUE, P.encode_u32(5000))[0] == ErrorCode.BAD_OFFSET
    host.ok(MsgType.PING, b"", MsgType.PONG)
    assert host.error(MsgType.CONTINUE, P.encode_u32(128))[0] == ErrorCode.BAD_STATE
    assert P.decode_error(host.send(MsgType.PING, b"x", FLAG_CONT).payload)[0] == ErrorCode.BAD_STATE


def test_max_message_is_enforced():
    h = Host(BoardEmulator(BoardConfig(max_payload=128, max_message=300)))
    h.send(MsgType.RUN, bytes(128), FLAG_MORE)
    h.send(MsgType.RUN, bytes(128), FLAG_MORE | FLAG_CONT)
    r = h.send(MsgType.RUN, bytes(128), FLAG_CONT)
    assert P.decode_error(r.payload)[:2] == (ErrorCode.TOO_LARGE, 300)


def test_damaged_frames_get_nak_and_oversize_is_bounded():
    emu = BoardEmulator(BoardConfig(max_payload=128))
    dec = FrameDecoder()
    raw = bytearray(frame_bytes(Frame(MsgType.PING, 1, b"abc")))
    raw[8] ^= 0x40
    (nak,) = dec.feed(emu.receive(cobs.encode(bytes(raw)) + b"\x00"))
    assert nak.type == MsgType.NAK and nak.payload[0] == FrameErrorKind.CRC
    (nak,) = dec.feed(emu.receive(encode_frame(Frame(MsgType.PING, 2, bytes(129)))))
    assert nak.payload[0] == FrameErrorKind.OVERSIZE
    assert dec.feed(emu.receive(b"\x07" * 100_000))[0].payload[0] == FrameErrorKind.OVERSIZE
    assert emu.decoder.pending == 0
    (pong,) = dec.feed(emu.receive(b"\x00" + encode_frame(Frame(MsgType.PING, 3, b"ok"))))
    assert (pong.type, pong.seq, pong.payload) == (MsgType.PONG, 3, b"ok")


def test_fuzzed_requests_never_crash_the_board(models):
    """Random types, flags and payloads, and mutations of valid requests."""
    emu = BoardEmulator(BoardConfig(max_payload=256))
    h = Host(emu)
    m = models["classifier"]
    h.flash("cls", m)
    h.ok(MsgType.ACTIVATE, P.encode_activate(P.sha256(m)))
    valid = [P.encode_hello(1024), P.encode_flash_begin(P.FlashBegin("a", 10, bytes(32))),
             P.encode_flash_chunk(0, b"abc"), P.encode_activate(P.sha256(m)), P.encode_u32(4),
             P.encode_tensors([Tensor.from_numpy(np.zeros((1, 8, 8, 1), np.int8), 0.1, 0)])]
    rnd = random.Random(3)
    seen = set()
    for i in range(3000):
        if i % 2:
            payload = bytearray(rnd.choice(valid))
            for _ in range(rnd.randrange(1, 4)):
                if payload:
                    payload[rnd.randrange(len(payload))] = rnd.randrange(256)
            payload = bytes(payload[:rnd.randrange(len(payload) + 1)])
        else:
            payload = rnd.randbytes(rnd.randrange(64))
        mtype = rnd.choice([t for t in MsgType if t != MsgType.ACTIVATE] + [rnd.randrange(256)])
        r = h.send(mtype, payload, rnd.choice([0, 0, 0, FLAG_MORE, FLAG_CONT, rnd.randrange(256)]))
        assert r.type in P.RESPONSES
        seen.add(r.type)
    assert {MsgType.ERROR, MsgType.ACK, MsgType.PONG} <= seen
    assert emu.stats["errors"] > 1000
    # whatever it was sent, the active partition is intact and runs
    assert emu.active is not None and emu.active.sha256 == P.sha256(m)
    h.ok(MsgType.HELLO, P.encode_hello(1024), MsgType.INFO)
    x = random_int8((1, 8, 8, 1), 7)
    s = emu.active.model.inputs[0]
    r = h.ok(MsgType.RUN, P.encode_tensors([Tensor.from_numpy(x, s.scale, s.zero_point)]), MsgType.RESULT)
    np.testing.assert_array_equal(P.decode_tensors(r.payload)[0].numpy(), tflm_reference(m, [x])[0])


def test_command_line_serves_a_pty():
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.emulator", "--pty", "--board-id", "cli-board",
                             "--max-payload", "300"], stdout=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with Board.open(path, timeout=1.0) as board:
            info = board.hello()
        assert (info.board_id, info.max_payload) == ("cli-board", 300)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("module", ["firmware_bridge.emulator", "firmware_bridge.fault_proxy"])
@pytest.mark.slow
def test_command_line_stops_cleanly_on_a_signal_sent_at_once(module):
    """SIGTERM or SIGINT as soon as the address is printed: exit 0, every time (no kill, no hang)."""
    with EmulatorServer(BoardEmulator(BoardConfig("proxied")), "tcp") as target:
        args = ["--pty"] if module.endswith("emulator") else [target.url]
        for i in range(12):
            proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            try:
                assert proc.stdout.readline().startswith("/dev/")
                proc.send_signal(signal.SIGTERM if i % 2 else signal.SIGINT)
                assert proc.wait(timeout=20) == 0, f"{module} run {i}"
            finally:
                proc.kill()
                proc.wait()


def test_command_line_rejects_bad_sizes():
    r = subprocess.run([sys.executable, "-m", "firmware_bridge.emulator", "--pty", "--max-payload", "12"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "max_payload" in r.stderr
