"""tools/fuzz_framing.py: the frame decoder fuzzer (the Python decoder; the C one is run by test_fb_c.py)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="module")
def fuzz(tool):
    return tool("fuzz_framing")


@pytest.mark.slow
def test_fuzz_decoder_20k(fuzz):
    start = time.monotonic()
    counts = fuzz.fuzz_decoder(20_000, seed=5)
    assert counts["bad_frames"] > 10_000  # the garbage really was garbage
    assert time.monotonic() - start < 30  # and the decoder never stalls on it


def test_command_line_fuzzes_the_python_decoder(fuzz, capsys):
    assert fuzz.main(["--only", "python", "--count", "2000", "--seed", "3"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:3] == ["python", "ok", "2,000"]
