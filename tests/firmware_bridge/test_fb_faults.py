"""A lossy line (bytes dropped, flipped, duplicated) between host and board.

Invariants: a flash either completes with the right sha256 or fails with a
FlashError; a corrupted image is never activated; a RUN result is exactly
the TFLM result or an error.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from fb_reference import random_int8, tflm_reference

from firmware_bridge.board import Board
from firmware_bridge.emulated_board import BoardConfig
from firmware_bridge.errors import BoardError, FlashError
from firmware_bridge.fault_proxy import FaultProxy, FaultRates


def _inputs(shape, n):
    return [random_int8(shape, 100 + i) for i in range(n)]


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.slow
def test_moderate_noise_everything_completes(serve, models, transport):
    """About 1 frame in 4 is damaged: retransmission hides it completely."""
    server = serve(BoardConfig(max_payload=256), transport)
    rates = FaultRates(drop=3e-4, flip=3e-4, duplicate=3e-4)
    with FaultProxy(server.url, rates, seed=11) as proxy, Board.open(proxy.url, timeout=0.05) as board:
        for name in ("classifier", "features", "classifier"):
            m = models[name]
            result = board.flash(name, m, force=True)
            assert result.sha256 == hashlib.sha256(m).hexdigest()
            act = board.activate(result.sha256)
            assert server.board.active.data == m
            shape = act.inputs[0].shape
            xs = _inputs(shape, 15)
            for x, want in zip(xs, (tflm_reference(m, [x])[0] for x in xs)):
                np.testing.assert_array_equal(board.run(x)[0].numpy(), want)
    damaged = proxy.counts["dropped"] + proxy.counts["flipped"] + proxy.counts["duplicated"]
    assert damaged >= 5, proxy.counts  # the line really was noisy
    assert board.stats["retransmits"] >= 3


@pytest.mark.slow
def test_heavy_noise_never_corrupts(serve, models):
    """Half the frames are damaged and retries are few: operations may fail,
    but only with a BoardError, and nothing wrong is ever flashed, activated
    or returned."""
    server = serve(BoardConfig(max_payload=256))
    legit = {hashlib.sha256(m).digest(): m for m in models.values()}
    refs = {}
    outcomes = {"flash_ok": 0, "flash_failed": 0, "run_ok": 0, "run_failed": 0}
    rates = FaultRates(drop=1e-3, flip=1.5e-3, duplicate=1e-3)
    with FaultProxy(server.url, rates, seed=12) as proxy, \
            Board.open(proxy.url, timeout=0.03, retries=3, backoff=1.2) as board:
        for round_ in range(6):
            name = ("classifier", "features")[round_ % 2]
            m = models[name]
            try:
                result = board.flash(name, m, force=True)
                assert result.sha256 == hashlib.sha256(m).hexdigest()
                board.activate(result.sha256)
                outcomes["flash_ok"] += 1
            except FlashError as e:
                assert "interrupted" in str(e) or "refused" in str(e)
                outcomes["flash_failed"] += 1
            except BoardError:
                outcomes["flash_failed"] += 1  # the ACTIVATE exchange itself was lost
            active = server.board.active
            if active is not None:
                assert active.sha256 in legit and active.data == legit[active.sha256]
                assert hashlib.sha256(active.data).digest() == active.sha256
            if server.board.staging is not None and server.board.staging.verified:
                assert bytes(server.board.staging.buf) in legit.values()
            if board.activation is None or active is None:
                continue
            shape = board.activation.inputs[0].shape
            for x in _inputs(shape, 8):
                key = (active.sha256, x.tobytes())
                try:
                    out = board.run(x)[0].numpy()
                except BoardError:
                    outcomes["run_failed"] += 1
                    continue
                if key not in refs:
                    refs[key] = tflm_reference(legit[active.sha256], [x])[0]
                np.testing.assert_array_equal(out, refs[key])
                outcomes["run_ok"] += 1
    assert proxy.counts["flipped"] >= 20, proxy.counts
    assert outcomes["flash_ok"] + outcomes["flash_failed"] == 6
    assert outcomes["run_ok"] > 0, outcomes
