"""Message encodings: round trips, exact byte layouts, malformed payloads."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import protocol as P
from firmware_bridge.errors import MessageError
from firmware_bridge.protocol import ErrorCode, Tensor, TensorSpec

INFO = P.Info("board-7", "fw 1.2", "tflm", 1 << 20, 96 << 10, 512, 8192, 1, bytes(range(32)), 1234, "seg0")


def test_info_layout_and_round_trip():
    raw = P.encode_info(INFO)
    assert raw[:1 + 2 + 4 + 4 + 4] == struct.pack("<BHIII", 1, 512, 1 << 20, 96 << 10, 8192)
    assert raw[15:47] == bytes(range(32))
    assert raw[47:51] == struct.pack("<I", 1234)
    assert raw[51:] == b"\x07board-7\x06fw 1.2\x04tflm\x04seg0"
    assert P.decode_info(raw) == INFO
    no_active = P.Info("b", "f", "r", 1, 2, 128, 3)
    assert P.decode_info(P.encode_info(no_active)).active_sha256 is None


def test_small_messages_layouts():
    assert P.encode_hello(4096) == b"\x00\x10"
    assert P.encode_error(ErrorCode.BAD_OFFSET, 300, "expected 300") == b"\x05\x2c\x01\x00\x00\x0cexpected 300"
    sha = bytes(32)
    assert P.encode_flash_begin(P.FlashBegin("m", 5, sha)) == b"\x05\x00\x00\x00" + sha + b"\x01m"
    assert P.encode_flash_chunk(258, b"ab") == b"\x02\x01\x00\x00ab"
    t = Tensor.from_numpy(np.array([[1, -2]], dtype=np.int8), 0.5, -3)
    assert P.encode_tensors([t]) == (b"\x01" + b"\x09\x02" + struct.pack("<II", 1, 2) + struct.pack("<fi", 0.5, -3)
                                     + struct.pack("<I", 2) + b"\x01\xfe")


@given(st.lists(st.tuples(st.sampled_from(["int8", "uint8", "int16", "int32", "float32"]),
                          st.lists(st.integers(0, 5), max_size=4), st.floats(0, 1, width=32),
                          st.integers(-128, 127)), max_size=4))
def test_tensors_round_trip(items):
    tensors = []
    for dtype, shape, scale, zp in items:
        a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
        tensors.append(Tensor.from_numpy(a, scale, zp))
    back = P.decode_tensors(P.encode_tensors(tensors))
    assert back == tensors
    for a, b in zip(tensors, back):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dequantize():
    t = Tensor.from_numpy(np.array([-128, 0, 127], dtype=np.int8), 0.5, 2)
    np.testing.assert_allclose(t.dequantize(), (np.array([-128, 0, 127]) - 2) * 0.5)


def test_activation_round_trip():
    act = P.Activation(4096, (TensorSpec("int8", (1, 28, 28, 1), 0.0039, -128),),
                       (TensorSpec("int8", (1, 10), 0.05, 3), TensorSpec("float32", (2,))))
    assert P.decode_activation(P.encode_activation(act)) == act


VALID = {
    "INFO": (P.encode_info(INFO), P.decode_info),
    "HELLO": (P.encode_hello(1024), P.decode_hello),
    "ERROR": (P.encode_error(3, 1, "x"), P.decode_error),
    "FLASH_BEGIN": (P.encode_flash_begin(P.FlashBegin("name", 9, bytes(32))), P.decode_flash_begin),
    "ACTIVATE": (P.encode_activate(bytes(32)), P.decode_activate),
    "RUN": (P.encode_tensors([Tensor.from_numpy(np.ones((2, 3), np.int8), 0.1, 1)] * 2), P.decode_tensors),
    "ACK(ACTIVATE)": (P.encode_activation(P.Activation(1, (TensorSpec("int8", (3,)),), ())), P.decode_activation),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_truncation_and_extension_is_a_message_error(name):
    raw, decode = VALID[name]
    decode(raw)
    for n in range(len(raw)):
        with pytest.raises(MessageError):
            decode(raw[:n])
    with pytest.raises(MessageError):
        decode(raw + b"\x00")


@given(st.binary(max_size=200))
def test_random_payloads_never_raise_anything_but_message_error(raw):
    for decode in (P.decode_info, P.decode_error, P.decode_flash_begin, P.decode_tensors, P.decode_activation,
                   P.decode_hello, P.decode_activate, P.decode_flash_chunk):
        try:
            decode(raw)
        except MessageError:
            pass


def test_bad_tensor_headers_are_refused():
    good = P.encode_tensors([Tensor.from_numpy(np.zeros(4, np.int8))])
    with pytest.raises(MessageError, match="dtype code 99"):
        P.decode_tensors(good[:1] + b"\x63" + good[2:])
    with pytest.raises(MessageError, match="needs 4"):
        P.decode_tensors(good[:-9] + struct.pack("<I", 3) + good[-4:-1])
    with pytest.raises(MessageError, match="rank"):
        P.decode_tensors(b"\x01\x09\x09" + bytes(60))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="host_max_payload"):
        P.encode_hello(64)
    with pytest.raises(ValueError, match="sha256"):
        P.encode_activate(b"short")
    with pytest.raises(ValueError, match="255"):
        P.encode_flash_begin(P.FlashBegin("x" * 300, 1, bytes(32)))
    with pytest.raises(ValueError, match="data bytes"):
        Tensor(TensorSpec("int8", (2, 2)), b"abc")


def test_firmware_config_header_from_a_manifest(tmp_path):
    import json

    from firmware_bridge.firmware_config import main, op_resolver_method

    assert [op_resolver_method(o) for o in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RELU6", "MEAN",
                                            "AVERAGE_POOL_2D", "L2_NORMALIZATION")] == \
        ["AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected", "AddRelu6", "AddMean", "AddAveragePool2D",
         "AddL2Normalization"]
    with pytest.raises(ValueError, match="CONV_2D"):
        op_resolver_method("conv2d; system()")
    seg = {"index": 0, "file": "switches/4x0.25/device-1/segment-0.tflite", "sha256": "ab" * 32, "size": 9000,
           "tflm": {"arena_bytes": 12345, "ops": ["CONV_2D", "MEAN", "CONV_2D", "FULLY_CONNECTED"],
                    "cc": "switches/4x0.25/device-1/segment-0.cc", "h": "switches/4x0.25/device-1/segment-0.h",
                    "symbol": "g_4x0_25_device_1_segment_0_model_data"}}
    manifest = {"schema": "paradis-bundle", "schema_version": 1,
                "plans": {"4x0.25": {"devices": [{"role": 1, "segments": [seg]}]}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "paradis_model.h"
    assert main([str(tmp_path), "--switch", "4x0.25", "--role", "1", "-o", str(out)]) == 0
    text = out.read_text()
    assert '#include "segment-0.h"' in text
    assert "#define PARADIS_MODEL_DATA g_4x0_25_device_1_segment_0_model_data" in text
    assert "#define PARADIS_ARENA_SIZE 13376" in text  # (12345 + 1024) rounded up to 16
    assert "#define PARADIS_OP_COUNT 3" in text
    assert text.count("(resolver).AddConv2D();") == 1 and "(resolver).AddFullyConnected();" in text
    assert main([str(tmp_path), "--switch", "2x0.5", "--role", "0"]) == 1
