"""Framing: COBS + header + CRC-32, the streaming decoder, resync on garbage."""

from __future__ import annotations

import zlib

import pytest
from cobs import cobs
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.errors import FramingError
from firmware_bridge.framing import (FLAG_MORE, FRAME_OVERHEAD, MAX_PAYLOAD, PROTOCOL_VERSION, BadFrame,
                                     Frame, FrameDecoder, FrameErrorKind, decode_frame, encode_frame,
                                     frame_bytes, max_encoded_size)

frames = st.builds(Frame, type=st.integers(0, 255), seq=st.integers(0, 0xFFFF),
                   payload=st.binary(max_size=600), flags=st.integers(0, 255))


def test_wire_layout_is_the_documented_one():
    f = Frame(0x20, 0x1234, b"\x00\x01\x02", FLAG_MORE)
    raw = frame_bytes(f)
    assert raw[:7] == bytes([PROTOCOL_VERSION, 0x20, FLAG_MORE, 0x34, 0x12, 0x03, 0x00])
    assert raw[7:10] == b"\x00\x01\x02"
    assert int.from_bytes(raw[10:], "little") == zlib.crc32(raw[:10])
    wire = encode_frame(f)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert cobs.decode(wire[:-1]) == raw


def test_crc_is_ieee_crc32():
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the check value the C code is tested against too


@given(frames)
def test_round_trip(frame):
    wire = encode_frame(frame)
    assert len(wire) <= max_encoded_size(len(frame.payload))
    assert decode_frame(wire[:-1]) == frame
    assert FrameDecoder().feed(wire) == [frame]


@given(st.lists(frames, min_size=1, max_size=8), st.lists(st.integers(1, 64), min_size=1), st.randoms())
def test_stream_split_anywhere(frame_list, cuts, rnd):
    wire = b"".join(encode_frame(f) for f in frame_list)
    dec, out, pos = FrameDecoder(), [], 0
    while pos < len(wire):
        n = cuts[rnd.randrange(len(cuts))]
        out += dec.feed(wire[pos:pos + n])
        pos += n
    assert out == frame_list
    assert dec.pending == 0


@given(st.binary(max_size=300), frames)
def test_resyncs_after_garbage(garbage, frame):
    out = FrameDecoder().feed(garbage + b"\x00" + encode_frame(frame))
    assert out[-1] == frame
    assert all(isinstance(x, BadFrame) for x in out[:-1])


def _bad(kind, body):
    with pytest.raises(FramingError) as e:
        decode_frame(body)
    assert e.value.kind == kind
    out = FrameDecoder().feed(body + b"\x00")
    assert len(out) == 1 and out[0].kind == kind


def test_each_error_kind_is_detected():
    good = frame_bytes(Frame(1, 7, b"hello"))
    _bad(FrameErrorKind.COBS, b"\x09abc")
    _bad(FrameErrorKind.SHORT, cobs.encode(good[:FRAME_OVERHEAD - 1]))
    flipped = bytearray(good)
    flipped[8] ^= 0x10
    _bad(FrameErrorKind.CRC, cobs.encode(bytes(flipped)))
    wrong_version = bytes([PROTOCOL_VERSION + 1]) + good[1:-4]
    _bad(FrameErrorKind.VERSION, cobs.encode(wrong_version + zlib.crc32(wrong_version).to_bytes(4, "little")))
    wrong_len = good[:5] + b"\x09\x00" + good[7:-4]
    _bad(FrameErrorKind.LENGTH, cobs.encode(wrong_len + zlib.crc32(wrong_len).to_bytes(4, "little")))


def test_version_and_length_errors_keep_the_sequence_number():
    body = bytes([9, 1, 0, 0x34, 0x12, 0, 0])
    (bad,) = FrameDecoder().feed(cobs.encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00")
    assert bad.kind == FrameErrorKind.VERSION and bad.seq == 0x1234


def test_oversize_is_dropped_up_to_the_next_delimiter():
    dec = FrameDecoder(max_payload=32)
    ok = Frame(2, 1, b"x" * 32)
    out = dec.feed(b"\x01" * 100)
    assert [x.kind for x in out] == [FrameErrorKind.OVERSIZE]
    assert dec.pending == 0  # memory stays bounded
    assert dec.feed(b"\x01" * 10_000) == []  # reported once
    assert dec.feed(b"\x00" + encode_frame(ok)) == [ok]
    dec = FrameDecoder(max_payload=290)
    big = encode_frame(Frame(2, 1, bytes(291)))  # zeros: the encoding fits the buffer, the payload is over
    assert len(big) - 1 <= max_encoded_size(290) - 1
    (bad,) = dec.feed(big)
    assert (bad.kind, bad.seq) == (FrameErrorKind.OVERSIZE, 1)
    assert dec.feed(encode_frame(ok)) == [ok]


def test_empty_frames_are_padding():
    f = Frame(3, 3)
    assert FrameDecoder().feed(b"\x00\x00\x00" + encode_frame(f) + b"\x00\x00") == [f]


def test_frame_fields_are_checked():
    for kw in ({"type": 256, "seq": 0}, {"type": 0, "seq": 70000}, {"type": 0, "seq": 0, "flags": -1}):
        with pytest.raises(ValueError, match="Received"):
            Frame(**kw)
    with pytest.raises(ValueError, match="65535"):
        Frame(0, 0, bytes(MAX_PAYLOAD + 1))
