"""tools/bench_serial.py: flash throughput and RUN round trip against the emulator in its own process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from firmware_bridge import protocol as P
from firmware_bridge.framing import Frame, encode_frame

BAUD = 230400


@pytest.fixture(scope="module")
def bench(tool):
    return tool("bench_serial")


def test_wire_bytes_counts_every_fragment_and_the_acks_between_them(bench):
    def run_frame(n: int) -> int:
        return len(encode_frame(Frame(P.MsgType.RUN, 0, bytes(range(1, n + 1)) if n < 256 else bytes(n))))

    ack = len(encode_frame(Frame(P.MsgType.ACK, 0, bytes(4))))
    payload = bytes(range(1, 201))
    assert bench._wire_bytes(payload, 1024) == run_frame(200)
    assert bench._wire_bytes(payload, 128) == run_frame(128) + run_frame(72) + ack
    assert bench._wire_bytes(b"", 128) == run_frame(0)


def _sine_model() -> bytes:
    """TFLM's own hello-world model (float32 [1, 1] -> [1, 1]), shipped in the tflite_micro wheel."""
    import tflite_micro

    path = os.path.join(os.path.dirname(tflite_micro.__file__), "python", "tflite_micro", "sine_float.tflite")
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.slow
def test_flash_and_run_are_measured_against_a_throttled_line(bench, tmp_path, capsys):
    model = tmp_path / "sine.tflite"
    model.write_bytes(_sine_model())
    assert bench.main(["--baud", str(BAUD), "--image", "8192", "--model", str(model), "--runs", "3", "--json"]) == 0
    flash, run = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # the emulator carries bytes no faster than the UART would: the image (framing aside) cannot beat the line
    assert (flash["baud"], flash["image_bytes"], flash["line_bytes_per_s"]) == (BAUD, 8192, BAUD // 10)
    assert 0 < flash["fraction_of_line"] <= 1.0
    assert (run["baud"], run["model"]) == (BAUD, "sine.tflite")
    one_float = P.encode_tensors([P.Tensor.from_numpy(np.zeros((1, 1), np.float32), 0.0, 0)])
    assert run["wire_bytes"] == 2 * bench._wire_bytes(one_float, 1024)  # the model takes and gives one float
    line_ms = run["wire_bytes"] * 10 / BAUD * 1e3
    assert run["round_trip_ms"] >= 0.95 * line_ms
    assert run["lower_bound_ms"] == pytest.approx(line_ms + run["invoke_ms"], abs=2e-3)
