"""Board liveness behind `paradis bridge`: a board that stops answering is noticed, planned around, and welcomed back.

The board is the emulator in its own process (on a real pty, or on TCP to
restart it on the same address); the bridge and two plain node daemons are
real `paradis` processes on loopback (TensorFlow blocked, as on a board), and
a real `Coordinator` serves a stream of requests through them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from firmware_bridge import liveness
from firmware_bridge.board import Board
from firmware_bridge.emulated_board import BoardConfig
from firmware_bridge.fault_proxy import FaultProxy
from paradis_tf.mesh import limits
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.local import BridgeProcess, NodeProcess

SWITCHES = ("1x0.25", "2x0.25", "3x0.25")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Switches 1x0.25 ... 3x0.25 of one tiny network, with TFLM arenas: every role fits a board."""
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, list(SWITCHES), width=0.25, depth=2)
    calib = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    out = tmp_path_factory.mktemp("liveness-bundle") / "tiny3"
    convert_model(model, out, calib, calib_samples=8, sequential=(), tflm=True)
    return out


def _images(n: int) -> np.ndarray:
    raw = np.random.default_rng(1).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    return (raw.astype(np.float32) * np.float32(1 / 255)).astype(np.float32)


def _await(predicate, timeout: float, what: str, step: float = 0.02) -> float:
    """Polls ``predicate`` until true; returns the seconds it took, fails naming ``what`` after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


class _Emulator:
    """``python -m firmware_bridge.emulator`` in a child process (SIGSTOP/SIGCONT/SIGKILL it like a board)."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.emulator", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        self.url = self.proc.stdout.readline().decode().strip()
        assert self.url.startswith(("/dev/", "socket://")), self.url

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


class _Bridge:
    """Health and GetInfo of a bridge, over gRPC."""

    def __init__(self, address: str) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.channel = grpc.insecure_channel(address)
        self.node = mesh_pb2_grpc.NodeStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._request = health_pb2.HealthCheckRequest(service=limits.HEALTH_SERVICE)
        self._serving = health_pb2.HealthCheckResponse.SERVING

    def serving(self) -> bool:
        return self._health.Check(self._request, timeout=2).status == self._serving

    def board(self) -> mesh_pb2.BoardStatus:
        return self.node.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).board

    def close(self) -> None:
        self.channel.close()


class _Stream:
    """Requests through the coordinator from a thread, one after another, until stopped; counts the outcomes."""

    def __init__(self, coordinator, x: np.ndarray) -> None:
        self.c, self.x = coordinator, x
        self.answered = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                out = self.c.infer(self.x[n % len(self.x)])
                assert out.shape == (10,) and np.isfinite(out).all()
                self.answered += 1
            except Exception as e:  # noqa: BLE001 - counted and reported by the test
                self.failures.append(f"{type(e).__name__}: {e}")
            self.slowest = max(self.slowest, time.monotonic() - t0)
            n += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _fleet(tmp_path: Path, serial_url: str):
    nodes = [NodeProcess(tmp_path / f"node{i}", node_id=f"node{i}", capacity=0.25, backend="tflm",
                         block_tensorflow=True) for i in range(2)]
    bridge = BridgeProcess(tmp_path / "bridge", serial_url, node_id="bridge0", capacity=0.25,
                           extra_args=("--ping-interval", "0.5"))
    procs = [*nodes, bridge]
    for p in procs:
        p.spawn()
    for p in procs:
        p.wait_ready(60)
    return nodes, bridge


def _stop_all(procs) -> None:
    for p in procs:
        if p.alive():
            assert p.stop() == 0


@pytest.mark.slow
def test_stopped_board_is_planned_around_and_back(bundle, tmp_path, capsys):
    from paradis_tf.cli import main as paradis
    from paradis_tf.mesh.coordinator import Coordinator

    emu = _Emulator(tmp_path / "emu.log", "--pty", "--board-id", "mcu-live")
    nodes, bridge = _fleet(tmp_path, emu.url)
    b = _Bridge(bridge.address)
    x = _images(8)
    try:
        with Coordinator([n.address for n in nodes] + [bridge.address]) as c:
            c.deploy(bundle)
            assert c.select().plan == "3x0.25" and bridge.address in c.placement.addresses
            assert b.serving() and b.board().state == "ok"
            stream = _Stream(c, x)
            _await(lambda: stream.answered >= 10, 30, "10 requests through the 3-node plan")

            # the board stops answering, in the middle of the stream
            t_stop = time.time()
            emu.signal(signal.SIGSTOP)
            took = _await(lambda: not b.serving(), 2.0, "the bridge's health to go NOT_SERVING")
            assert took < 2.0
            board = b.board()
            assert board.state == "unresponsive" and "no valid answer" in board.error, board
            assert board.since_unix_ms >= t_stop * 1000 - 50 and board.board_id == "mcu-live"
            assert 0 < board.last_answer_unix_ms <= board.since_unix_ms
            # a Run or an Activate at the bridge is refused at once, saying why
            for call, req in ((b.node.Run, mesh_pb2.RunRequest(request_id="direct", plan="3x0.25")),
                              (b.node.Activate, mesh_pb2.ActivateRequest(bundle="tiny3", plan="1x0.25", role=0))):
                t0 = time.monotonic()
                with pytest.raises(grpc.RpcError) as e:
                    call(req, timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "unresponsive" in e.value.details()
                assert time.monotonic() - t0 < 0.5
            # the coordinator plans without it and keeps answering
            _await(lambda: c.placement.plan == "2x0.25" and bridge.address not in c.placement.addresses, 10,
                   "the coordinator to re-plan on the two nodes")
            before = stream.answered
            _await(lambda: stream.answered >= before + 10, 30, "10 requests through the 2-node plan")
            # mesh status shows the board's state (and exits 1: a board is down)
            capsys.readouterr()
            assert paradis(["mesh", "status", "--nodes", bridge.address]) == 1
            out = capsys.readouterr().out
            assert "unresponsive" in out and "board mcu-live on " in out and "no valid answer" in out, out

            # the board answers again: SERVING, and the coordinator plans with it again
            emu.signal(signal.SIGCONT)
            _await(b.serving, 10, "the bridge's health to be SERVING again")
            board = b.board()
            assert board.state == "ok" and board.error == "" and board.reflashes == 0, board
            _await(lambda: c.placement.plan == "3x0.25" and bridge.address in c.placement.addresses, 15,
                   "the coordinator to plan with the bridge again")
            before = stream.answered
            _await(lambda: stream.answered >= before + 10, 30, "10 requests through the 3-node plan again")
            stream.stop()
            assert stream.failures == [], stream.failures[:3]
            plans = [p.split(" ")[0] for _, p in c.stats.plans]
            assert plans[-3:] == ["3x0.25", "2x0.25", "3x0.25"], c.stats.plans
            assert stream.slowest < 5.0  # nobody waited for a serial timeout schedule (8 retries: ~25 s)

            # idle, no Run to notice it: the PINGs do
            probes = b.board().probes_failed
            emu.signal(signal.SIGSTOP)
            assert _await(lambda: not b.serving(), 2.0, "NOT_SERVING with no request in flight") < 2.0
            board = b.board()
            assert "no valid answer to PING" in board.error and board.probes_failed == probes + 1, board
            emu.signal(signal.SIGCONT)
            _await(b.serving, 10, "the bridge's health to be SERVING again")
        log = bridge.log_path.read_text(errors="replace")
        assert "board mcu-live on " in log and "is unresponsive: no valid answer" in log, log[-2000:]  # a warning
    finally:
        b.close()
        _stop_all([*nodes, bridge])
        emu.stop()


@pytest.mark.slow
def test_board_restarted_with_empty_flash_is_reflashed(bundle, tmp_path):
    from paradis_tf.mesh.coordinator import Coordinator
    from paradis_tf.runtime import LocalRunner

    emu = _Emulator(tmp_path / "emu.log", "--tcp", "0", "--board-id", "mcu-tcp")
    port = emu.url.rsplit(":", 1)[1]
    nodes, bridge = _fleet(tmp_path, emu.url)
    b = _Bridge(bridge.address)
    x = _images(6)
    try:
        with Coordinator([n.address for n in nodes] + [bridge.address]) as c:
            c.deploy(bundle)
            assert c.select("3x0.25").plan == "3x0.25"
            want = LocalRunner(bundle, "3x0.25", backend="tflm").predict(x)
            np.testing.assert_array_equal(c.infer(x), want)

            # the board dies (its link with it) and comes back blank on the same address
            emu.stop()
            _await(lambda: not b.serving(), 2.0, "the bridge's health to go NOT_SERVING")
            assert b.board().state == "unresponsive"
            emu = _Emulator(tmp_path / "emu2.log", "--tcp", port, "--board-id", "mcu-tcp")
            _await(b.serving, 20, "the bridge's health to be SERVING again")
            board = b.board()
            assert board.state == "ok" and board.reflashes == 1 and board.port_reopens >= 1, board
            # the pinned plan is placed with the bridge again, and the re-flashed board answers bit for bit
            _await(lambda: bridge.address in c.placement.addresses, 15, "the coordinator to use the bridge again")
            np.testing.assert_array_equal(c.infer(x), want)
        log = bridge.log_path.read_text(errors="replace")
        assert "is reflashing: board 'mcu-tcp' runs no partition" in log, log[-2000:]
    finally:
        b.close()
        _stop_all([*nodes, bridge])
        emu.stop()


def test_monitor_severed_line_and_lost_partition(serve, models):
    """`BoardMonitor` on an emulated board behind a line that can be cut: bounded detection, recovery, re-flash."""
    import hashlib

    server = serve(BoardConfig(board_id="mcu-unit", max_payload=256))
    image = models["classifier"]
    sha = hashlib.sha256(image).digest()
    changes: list[str] = []
    with FaultProxy(server.url) as proxy, Board.open(proxy.url, timeout=0.2) as board:
        board.hello()
        monitor = liveness.BoardMonitor(board, budget_s=0.6, on_change=lambda s: changes.append(s.state))

        def reinstall() -> None:
            board.flash("classifier", image)
            board.activate(sha)

        reinstall()
        assert monitor.probe(sha, reinstall) == liveness.OK and monitor.ok
        x = np.zeros(board.activation.inputs[0].shape, np.int8)
        assert monitor.run_within() is None  # the partition's RUN time is not known yet

        # a cut line: the PING gives up within the budget, and RUNs are refused without touching it
        proxy.sever()
        t0 = time.monotonic()
        assert monitor.probe(sha, reinstall) == liveness.UNRESPONSIVE
        assert time.monotonic() - t0 < 0.6 + 0.2
        assert "no valid answer to PING" in monitor.why() and monitor.snapshot().probes_failed == 1
        with pytest.raises(liveness.BoardUnavailableError, match="unresponsive"):
            monitor.check()
        proxy.restore()
        assert monitor.probe(sha, reinstall) == liveness.OK  # a HELLO: same partition, nothing flashed
        assert monitor.snapshot().reflashes == 0 and server.board.stats["requests"] > 0

        # the board lost its partition (a reset with a blank flash): a RUN says NO_PARTITION
        server.board.active = None
        with pytest.raises(Exception) as e:
            board.run(x)
        monitor.failed(e.value)
        assert monitor.state == liveness.REFLASHING and "lost its partition" in monitor.why()
        assert monitor.probe(sha, reinstall) == liveness.OK
        assert server.board.active is not None and server.board.active.sha256 == sha
        assert monitor.snapshot().reflashes == 1
        t0 = time.monotonic()
        board.run(x)
        monitor.run_succeeded(time.monotonic() - t0)
        assert 0.6 < monitor.run_within() < 0.6 + 1.0
    assert changes == ["unresponsive", "ok", "reflashing", "ok"]
