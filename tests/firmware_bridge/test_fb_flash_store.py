"""Non-volatile flash of the emulated board: resets keep the partition and a staged prefix."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from fb_reference import random_int8, tflm_reference

from firmware_bridge.board import Board
from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
from firmware_bridge.emulator import EmulatorServer
from firmware_bridge.errors import BoardRemoteError, FlashError
from firmware_bridge.fault_proxy import FaultProxy
from firmware_bridge.protocol import Tensor


def _spawn(flash_dir) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.emulator", "--pty", "--flash-dir", str(flash_dir)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


@pytest.mark.slow
def test_sigkilled_board_boots_its_last_partition(tmp_path, models):
    m = models["classifier"]
    x = random_int8((1, 8, 8, 1), 3)
    proc, path = _spawn(tmp_path)
    try:
        with Board.open(path, timeout=1.0) as board:
            board.activate(board.flash("cls", m).sha256)
            before = board.run(x)[0].numpy()
    finally:
        proc.send_signal(signal.SIGKILL)  # a power cut: no clean shutdown
        proc.wait(10)
    proc, path = _spawn(tmp_path)
    try:
        with Board.open(path, timeout=1.0) as board:
            info = board.hello()
            assert info.active_sha256 == hashlib.sha256(m).digest() and info.active_name == "cls"
            board.activate(info.active_sha256)  # already active: answered at once, nothing reloaded
            np.testing.assert_array_equal(board.run(x)[0].numpy(), before)
            np.testing.assert_array_equal(before, tflm_reference(m, [x])[0])
            assert board.flash("cls", m).resumed_from == len(m)  # nothing sent again
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_flash_interrupted_by_a_reset_resumes_from_the_written_bytes(tmp_path, models):
    m = models["features"]
    config = BoardConfig(max_payload=128)
    with EmulatorServer(BoardEmulator(config, flash_dir=tmp_path)) as server:
        with FaultProxy(server.url) as proxy, Board.open(proxy.url, timeout=0.05, retries=2) as board:
            board.hello()
            proxy.sever_after(len(m) // 2)
            with pytest.raises(FlashError) as e:
                board.flash("features", m)
    written = e.value.offset
    assert 0 < written < len(m) and (tmp_path / "staging.img").stat().st_size >= written
    with EmulatorServer(BoardEmulator(config, flash_dir=tmp_path)) as server:  # the board reset
        assert server.board.active is None and len(server.board.staging.buf) >= written
        with Board.open(server.url, timeout=1.0) as board:
            result = board.flash("features", m)
            assert written <= result.resumed_from < len(m)
            board.activate(result.sha256)
            x = random_int8((1, 8, 8, 2), 4)
            np.testing.assert_array_equal(board.run(x)[0].numpy(), tflm_reference(m, [x])[0])
    # the A/B swap: one image file left, named by its sha256, and active.json points at it
    assert sorted(p.name for p in tmp_path.glob("*.img")) == [f"{hashlib.sha256(m).hexdigest()}.img"]
    assert json.loads((tmp_path / "active.json").read_text()) == {"name": "features",
                                                                   "sha256": hashlib.sha256(m).hexdigest()}


@pytest.mark.slow
def test_new_image_replaces_the_old_only_on_activate_and_a_corrupt_one_is_not_booted(tmp_path, models, caplog):
    a, b = models["classifier"], models["features"]
    with EmulatorServer(BoardEmulator(flash_dir=tmp_path)) as server, Board.open(server.url, timeout=1.0) as board:
        board.activate(board.flash("a", a).sha256)
        board.flash("b", b)  # verified in staging, not activated
    with EmulatorServer(BoardEmulator(flash_dir=tmp_path)) as server, Board.open(server.url, timeout=1.0) as board:
        assert board.hello().active_name == "a"  # a reset before ACTIVATE keeps the old partition
        assert server.board.staging.verified and board.flash("b", b).resumed_from == len(b)
        board.activate(hashlib.sha256(b).hexdigest())
    img = tmp_path / f"{hashlib.sha256(b).hexdigest()}.img"
    raw = bytearray(img.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a flipped bit in flash
    img.write_bytes(bytes(raw))
    with EmulatorServer(BoardEmulator(flash_dir=tmp_path)) as server, Board.open(server.url, timeout=1.0) as board:
        assert board.hello().active_sha256 is None
        with pytest.raises(BoardRemoteError, match="no active partition"):
            board.run([Tensor.from_numpy(random_int8((1, 8, 8, 2), 0), 1.0, 0)])
        board.activate(board.flash("a", a).sha256)  # the board is usable: flash again
        assert board.hello().active_name == "a"
    assert "fails its sha256 check" in caplog.text


def test_unusable_flash_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "firmware_bridge.emulator", "--pty", "--flash-dir", str(blocker / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "flash directory" in r.stderr and str(blocker / "d") in r.stderr
