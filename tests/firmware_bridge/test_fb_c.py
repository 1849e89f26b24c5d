"""The C99 reference (firmware_bridge/c): built with gcc, checked against Python.

Vectors go both ways: frames encoded by Python are parsed by C and frames
encoded by C are decoded by Python, byte for byte; and the C dispatcher,
fed the same request bytes as the Python emulator (both with the same stub
model), must answer the same frames.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cobs import cobs
from fb_reference import StubRuntime

import firmware_bridge
from firmware_bridge import protocol as P
from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
from firmware_bridge.framing import (FLAG_CONT, FLAG_MORE, BadFrame, Frame, FrameDecoder, encode_frame,
                                     frame_bytes)
from firmware_bridge.protocol import MsgType, Tensor, TensorSpec

C_DIR = Path(firmware_bridge.__file__).parent / "c"


def _make(build: Path, *args: str) -> dict[str, Path]:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.fail("gcc and make are needed to test firmware_bridge/c (apt-get install build-essential)")
    r = subprocess.run(["make", "-C", str(C_DIR), f"BUILD={build}", "CC=gcc", *args], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return {name: build / name for name in ("unit", "vectors", "fuzz", "libparadis_link.a")}


@pytest.fixture(scope="module")
def cbin(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("c-build"))


def _run(args, text: str = "", timeout: float = 60) -> str:
    r = subprocess.run([str(a) for a in args], input=text, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
def test_unit_tests_pass(cbin):
    assert re.fullmatch(r"ok \d+ checks\n", _run([cbin["unit"]]))


def test_library_needs_only_string_h_and_stdint_h(cbin):
    for src in C_DIR.glob("*.[ch]"):
        includes = set(re.findall(r'#include\s+[<"]([^>"]+)[>"]', src.read_text()))
        assert includes <= {"string.h", "stdint.h", "paradis_link.h"}, (src.name, includes)
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", src.read_text()), src.name
    nm = _run(["nm", cbin["libparadis_link.a"]])
    undefined = {line.split()[-1] for line in nm.splitlines() if " U " in line}
    external = {s for s in undefined if not s.startswith("pd_")}
    assert external <= {"memcpy", "memmove", "memset", "memcmp", "strlen"}, external


def _random_frames(rnd: random.Random, n: int) -> list[Frame]:
    frames = []
    for i in range(n):
        size = rnd.choice([0, 1, 2, 253, 254, 255, 507, 508, 509, rnd.randrange(2000)])
        kind = rnd.randrange(3)
        payload = (bytes(size) if kind == 0 else b"\x01" * size if kind == 1 else rnd.randbytes(size))
        frames.append(Frame(rnd.randrange(256), rnd.randrange(65536), payload, rnd.randrange(256)))
    return frames


def test_c_encodes_exactly_what_python_encodes(cbin):
    frames = _random_frames(random.Random(1), 400)
    lines = "".join(f"{f.type} {f.flags} {f.seq} {f.payload.hex()}\n" for f in frames)
    out = _run([cbin["vectors"], "encode"], lines).split()
    assert len(out) == len(frames)
    for f, wire_hex in zip(frames, out):
        wire = bytes.fromhex(wire_hex)
        assert wire == encode_frame(f)  # byte for byte
        assert FrameDecoder().feed(wire) == [f]  # and Python decodes what C made


def _damaged(rnd: random.Random) -> bytes:
    """A delimited byte run of one of the bad-frame kinds (or plain garbage)."""
    good = frame_bytes(Frame(rnd.randrange(256), rnd.randrange(65536), rnd.randbytes(rnd.randrange(40))))
    k = rnd.randrange(7)
    if k == 0:  # COBS: a block running past the end
        return bytes([rnd.randrange(20, 255)]) + b"\x01" * rnd.randrange(5) + b"\x00"
    if k == 1:
        return cobs.encode(good[:rnd.randrange(1, 11)]) + b"\x00"
    if k == 2:
        bad = bytearray(good)
        bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
        return cobs.encode(bytes(bad)) + b"\x00"
    if k in (3, 4):  # version or length wrong, CRC right
        body = bytearray(good[:-4])
        if k == 3:
            body[0] = rnd.choice([0, 2, 255])
        else:
            body[5] ^= 1 + rnd.randrange(255)
        return cobs.encode(bytes(body) + P.encode_u32(__import__("zlib").crc32(bytes(body)))) + b"\x00"
    if k == 5:  # no delimiter for too long
        return bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(300, 900))) + b"\x00"
    return rnd.randbytes(rnd.randrange(1, 60)) + b"\x00"


def _events(items) -> list[str]:
    out = []
    for x in items:
        if isinstance(x, BadFrame):
            out.append(f"E {int(x.kind)} {x.seq if x.seq is not None else '-'}")
        else:
            out.append(f"F {x.type} {x.flags} {x.seq} {x.payload.hex()}")
    return out


def test_c_parser_reports_the_same_events_as_python(cbin):
    rnd = random.Random(2)
    max_payload = 256
    stream = b""
    for f in _random_frames(rnd, 300):
        if len(f.payload) <= max_payload + 20:
            stream += encode_frame(f)
        stream += _damaged(rnd)
    stream += encode_frame(Frame(1, 2, bytes(max_payload + 1)))  # encoding fits, payload over the limit
    chunks, pos = [], 0
    while pos < len(stream):
        n = rnd.choice([1, 2, 7, 64, 300, 1000])
        chunks.append(stream[pos:pos + n])
        pos += n
    dec = FrameDecoder(max_payload)
    want = []
    for c in chunks:
        want += _events(dec.feed(c)) + ["."]
    got = _run([cbin["vectors"], "parse", max_payload], "".join(c.hex() + "\n" for c in chunks)).splitlines()
    assert got == want
    kinds = {e.split()[1] for e in want if e.startswith("E")}
    assert kinds == {"1", "2", "3", "4", "5", "6"}  # every kind of bad frame was exercised


# ---------------------------------------------------------------- dispatcher conformance

CONF = dict(max_payload=128, max_message=2048, flash_capacity=4096, arena_capacity=3000)


def _stub_image(rnd: random.Random, size: int, n: int = 8) -> bytes:
    return bytes([n]) + rnd.randbytes(size - 1)


class Transcript:
    """Request bytes for both boards, built as a host would send them."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.seq = 1000

    def req(self, mtype: int, payload: bytes = b"", flags: int = 0, seq: int | None = None) -> None:
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF
        self.chunks.append(encode_frame(Frame(mtype, self.seq if seq is None else seq, payload, flags)))

    def raw(self, data: bytes) -> None:
        self.chunks.append(data)

    def fragmented(self, mtype: int, payload: bytes, size: int = 128) -> None:
        parts = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for i, part in enumerate(parts):
            flags = (FLAG_MORE if i < len(parts) - 1 else 0) | (FLAG_CONT if i else 0)
            self.req(mtype, part, flags)

    def flash(self, name: str, image: bytes, sha: bytes | None = None, chunk: int = 100) -> None:
        self.req(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin(name, len(image), sha or P.sha256(image))))
        for off in range(0, len(image), chunk):
            self.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(off, image[off:off + chunk]))
        self.req(MsgType.FLASH_END)


def _scripted(rnd: random.Random) -> Transcript:
    t = Transcript()
    img = _stub_image(rnd, 700)
    other = _stub_image(rnd, 500, n=5)
    t.req(MsgType.HELLO, P.encode_hello(128))
    t.req(MsgType.PING, b"abc")
    t.req(MsgType.PING, b"abc", seq=t.seq)  # duplicate: cached answer
    t.fragmented(MsgType.PING, rnd.randbytes(300))  # fragmented request, long answer
    t.req(MsgType.CONTINUE, P.encode_u32(128))
    t.req(MsgType.CONTINUE, P.encode_u32(256))
    t.req(MsgType.CONTINUE, P.encode_u32(999))
    t.req(MsgType.CONTINUE, P.encode_u32(0))
    t.req(MsgType.RUN, P.encode_tensors([]))  # no partition
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(img)))
    t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, b"x"))
    t.req(MsgType.FLASH_END)
    t.req(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("huge", 5000, bytes(32))))
    t.req(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("m", len(img), P.sha256(img))))
    t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(0, img[:100]))
    t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(50, img[50:100]))  # repeat of staged bytes
    t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(50, b"\x00" * 50))  # conflicting repeat
    t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(300, img[300:400]))  # gap
    t.req(MsgType.FLASH_END)  # incomplete
    t.req(MsgType.FLASH_BEGIN, P.encode_flash_begin(P.FlashBegin("m", len(img), P.sha256(img))))  # resume at 100
    for off in range(100, len(img), 120):
        t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(off, img[off:off + 120]))
    t.req(MsgType.FLASH_CHUNK, P.encode_flash_chunk(len(img), b"more"))
    t.req(MsgType.FLASH_END)
    t.req(MsgType.FLASH_END)
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(img)))
    t.req(MsgType.HELLO, P.encode_hello(200))
    spec_in = TensorSpec("int8", (1, 8), 0.5, 1)
    x = Tensor(spec_in, rnd.randbytes(8))
    t.req(MsgType.RUN, P.encode_tensors([x]))
    t.req(MsgType.RUN, P.encode_tensors([x, x]))
    t.req(MsgType.RUN, P.encode_tensors([Tensor(TensorSpec("int8", (1, 8), 0.5000001, 1), x.data)]))  # within 1e-6
    t.req(MsgType.RUN, P.encode_tensors([Tensor(TensorSpec("int8", (1, 8), 0.51, 1), x.data)]))
    t.req(MsgType.RUN, P.encode_tensors([Tensor(TensorSpec("int8", (8, 1), 0.5, 1), x.data)]))
    t.req(MsgType.RUN, P.encode_tensors([Tensor(TensorSpec("uint8", (1, 8), 0.5, 1), x.data)]))
    t.req(MsgType.RUN, P.encode_tensors([x])[:-1])
    t.req(MsgType.RUN, b"\x01\x09\x02" + bytes(30))
    t.fragmented(MsgType.RUN, P.encode_tensors([x]), 16)
    t.flash("bad-sha", other, sha=P.sha256(img[:500]))
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(other)))
    t.flash("invalid", b"\x00" + other[1:])
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(b"\x00" + other[1:])))
    big = _stub_image(rnd, 1600)
    t.flash("too-big-for-arena", big)
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(big)))
    t.flash("other", other)
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(other)))
    t.req(MsgType.RUN, P.encode_tensors([Tensor(TensorSpec("int8", (1, 5), 0.5, 1), b"\x01\x02\x03\x04\x05")]))
    t.req(MsgType.HELLO, P.encode_hello(128))
    t.req(0x55, b"?")
    t.req(MsgType.INFO, b"")
    t.req(MsgType.PING, b"x", flags=0x80)
    t.req(MsgType.PING, b"x", flags=FLAG_CONT)
    t.req(MsgType.RUN, bytes(128), FLAG_MORE)
    for _ in range(16):
        t.req(MsgType.RUN, bytes(128), FLAG_MORE | FLAG_CONT)  # past max_message
    t.req(MsgType.HELLO, b"\x10")
    t.req(MsgType.HELLO, P.encode_u32(5)[:2] if False else b"\x40\x00")
    t.raw(b"garbage \xff\xfe" + b"\x00")
    t.raw(encode_frame(Frame(MsgType.PING, 7, bytes(129))))  # over max payload
    t.raw(b"\x07" * 5000 + b"\x00")
    raw = bytearray(frame_bytes(Frame(MsgType.PING, 9, b"abc")))
    raw[8] ^= 4
    t.raw(cobs.encode(bytes(raw)) + b"\x00")
    t.req(MsgType.PING, b"after all that")
    return t


def _fuzzed(rnd: random.Random, n: int) -> Transcript:
    t = Transcript()
    img = _stub_image(rnd, 300)
    t.req(MsgType.HELLO, P.encode_hello(128))
    t.flash("fz", img)
    t.req(MsgType.ACTIVATE, P.encode_activate(P.sha256(img)))
    x = Tensor(TensorSpec("int8", (1, 8), 0.5, 1), bytes(8))
    valid = [P.encode_hello(300), P.encode_flash_begin(P.FlashBegin("fz", 300, P.sha256(img))),
             P.encode_flash_begin(P.FlashBegin("é", 30, bytes(32))), P.encode_flash_chunk(0, img[:50]),
             P.encode_activate(P.sha256(img)), P.encode_u32(128), P.encode_tensors([x]), P.encode_tensors([x, x])]
    types = list(MsgType) + [0x00, 0x7F, 0xFF]
    for i in range(n):
        payload = bytearray(rnd.choice(valid))
        for _ in range(rnd.randrange(4)):
            if payload:
                payload[rnd.randrange(len(payload))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            payload = payload[:rnd.randrange(len(payload) + 1)]
        flags = rnd.choice([0, 0, 0, 0, FLAG_MORE, FLAG_CONT, FLAG_MORE | FLAG_CONT, rnd.randrange(256)])
        mtype = rnd.choice(types)
        seq = t.seq if rnd.random() < 0.05 else None  # sometimes a repeated seq
        if rnd.random() < 0.05:
            t.raw(rnd.randbytes(rnd.randrange(1, 30)) + b"\x00")
        t.req(mtype, bytes(payload[:CONF["max_payload"]]), flags, seq)
    return t


def _answers(board_out: list[bytes]) -> list[list[tuple]]:
    """Decoded answers per chunk; ERROR compared by (code, detail), not its text."""
    dec = FrameDecoder()
    out = []
    for data in board_out:
        items = []
        for f in dec.feed(data):
            assert isinstance(f, Frame), f
            if f.type == MsgType.ERROR:
                code, detail, _ = P.decode_error(f.payload)
                items.append((f.type, f.flags, f.seq, int(code), detail))
            else:
                items.append((f.type, f.flags, f.seq, f.payload.hex()))
        out.append(items)
    return out


@pytest.mark.parametrize("which", ["scripted", "fuzzed"])
def test_c_dispatcher_answers_like_the_python_emulator(cbin, which):
    rnd = random.Random(3)
    t = _scripted(rnd) if which == "scripted" else _fuzzed(rnd, 3000)
    emu = BoardEmulator(BoardConfig("conformance", CONF["flash_capacity"], CONF["arena_capacity"],
                                    CONF["max_payload"], CONF["max_message"], "ref 1"), StubRuntime())
    want = _answers([emu.receive(c) for c in t.chunks])
    got_hex = _run([cbin["vectors"], "board", CONF["max_payload"], CONF["max_message"], CONF["flash_capacity"],
                    CONF["arena_capacity"]], "".join(c.hex() + "\n" for c in t.chunks)).split("\n")[:-1]
    assert len(got_hex) == len(t.chunks)
    got = _answers([bytes.fromhex(h) for h in got_hex])
    for i, (w, g) in enumerate(zip(want, got)):
        assert g == w, f"chunk {i}: request {t.chunks[i][:40].hex()}..."
    answered = [a for chunk in want for a in chunk]
    types = {a[0] for a in answered}
    if which == "scripted":
        codes = {a[3] for a in answered if a[0] == MsgType.ERROR}
        assert codes >= {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, codes
        assert {MsgType.INFO, MsgType.PONG, MsgType.ACK, MsgType.NAK, MsgType.RESULT} <= types
        assert emu.active is not None and emu.active.name == "other"
    else:
        assert len(answered) >= 3000 and MsgType.ERROR in types and MsgType.ACK in types


@pytest.mark.slow
def test_c_fuzz_under_sanitizers(tmp_path):
    """The C parser and dispatcher under AddressSanitizer + UBSan."""
    b = _make(tmp_path / "asan", "SANITIZE=1")
    out = _run([b["fuzz"], 20000, 7], timeout=120)
    m = re.fullmatch(r"sequences=20000 bad_frames=(\d+) frames_in_garbage=\d+ bytes=\d+\n", out)
    assert m and int(m.group(1)) > 10000
    t = _fuzzed(random.Random(4), 2000)
    got = _run([b["vectors"], "board", CONF["max_payload"], CONF["max_message"], CONF["flash_capacity"],
                CONF["arena_capacity"]], "".join(c.hex() + "\n" for c in t.chunks), timeout=120)
    assert got.count("\n") == len(t.chunks)
