"""Serial boards in the mesh: `paradis bridge` and `paradis flash --serial`.

A mixed mesh: switch 0.5+0.25+0.25 with the 0.5 role on a node daemon and
the two 0.25 roles on two emulated serial boards behind bridges (TensorFlow
blocked in the bridge processes, as on a board) gives exactly the logits of
`LocalRunner` with the tflm backend.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.board import Board
from firmware_bridge.emulated_board import BoardConfig
from paradis_tf.mesh.local import BridgeProcess, NodeProcess

SWITCH = "0.5+0.25+0.25"

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, [SWITCH], width=0.25, depth=2)
    calib = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    out = tmp_path_factory.mktemp("fb-bundle") / "mixed"
    convert_model(model, out, calib, calib_samples=8, sequential=(), tflm=True)
    return out


def _images(n: int) -> np.ndarray:
    raw = np.random.default_rng(1).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    return (raw.astype(np.float32) * np.float32(1 / 255)).astype(np.float32)


@pytest.mark.slow
def test_mixed_mesh_matches_local_runner(bundle, serve, tmp_path):
    from paradis_tf.mesh.coordinator import Coordinator
    from paradis_tf.runtime import LocalRunner

    boards = [serve(BoardConfig(board_id=f"mcu-{i}", max_payload=256, arena_capacity=128 << 10), "pty")
              for i in range(2)]
    node = NodeProcess(tmp_path / "node0", node_id="node0", capacity=0.5, backend="tflm", block_tensorflow=True)
    bridges = [BridgeProcess(tmp_path / f"bridge{i}", b.url, node_id=f"bridge{i}", extra_args=("--timeout", "0.3")) for i, b in enumerate(boards)]
    procs = [node, *bridges]
    try:
        for p in procs:
            p.spawn()
        for p in procs:
            p.wait_ready(60)
        x = _images(12)
        with Coordinator([p.address for p in procs]) as c:
            c.deploy(bundle)
            placement = c.select(SWITCH)
            assert placement.addresses[0] == node.address
            assert set(placement.addresses[1:]) == {b.address for b in bridges}
            logits = c.infer(x)
            status = {s.address: s for s in c.status()}
        want = LocalRunner(bundle, SWITCH, backend="tflm").predict(x)
        np.testing.assert_array_equal(logits, want)
        # the roles really ran on the boards: the right partitions are active there
        manifest = json.loads((bundle / "manifest.json").read_text())
        devices = manifest["plans"][SWITCH]["devices"]
        for b, bridge in zip(boards, bridges):
            role = placement.addresses.index(bridge.address)
            seg = devices[role]["segments"][0]
            assert b.board.active is not None and b.board.active.sha256.hex() == seg["sha256"]
            assert b.board.stats["requests"] >= 12  # one RUN per image, plus flash and activation
        # the coordinator sees the bridges as nodes of their own kind, with the board's arena as memory
        for b in bridges:
            info = status[b.address].info
            assert status[b.address].up and info.kind == "serial-bridge" and info.backend == "serial:tflm-emulator"
            assert info.memory_bytes == 128 << 10 and info.active and info.activation.plan == SWITCH
        assert status[node.address].info.kind == "grpc-node"
        # a restarted bridge restores its role from its store; the board still holds
        # the partition, so nothing is flashed again
        requests = boards[0].board.stats["requests"]
        assert bridges[0].stop() == 0
        bridges[0].start(60)
        assert boards[0].board.staging is None and boards[0].board.stats["requests"] > requests
        with Coordinator([p.address for p in procs]) as c:
            c.select(SWITCH)
            np.testing.assert_array_equal(c.infer(x[:4]), want[:4])
    finally:
        for p in procs:
            if p.alive():
                assert p.stop() == 0
    # the bridges exited cleanly on SIGTERM, without TensorFlow
    for b in bridges:
        log = b.log_path.read_text(errors="replace")
        assert "is blocked" not in log and "Traceback" not in log, log[-2000:]


def _paradis(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    code = ("import argparse, sys\n"
            "from paradis_tf.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_paradis_flash_serial(bundle, serve):
    manifest = json.loads((bundle / "manifest.json").read_text())
    seg = manifest["plans"][SWITCH]["devices"][1]["segments"][0]
    image = (bundle / seg["file"]).read_bytes()
    # refused before anything is sent: the board's arena is smaller than the manifest's
    small = serve(BoardConfig(board_id="tiny", arena_capacity=seg["tflm"]["arena_bytes"] - 16))
    r = _paradis("flash", str(bundle), "--serial", small.url, "--switch", SWITCH, "--role", "1")
    assert r.returncode == 1
    assert r.stderr.startswith("paradis: ") and "tensor arena" in r.stderr and "nothing sent" in r.stderr
    assert small.board.staging is None and small.board.stats["requests"] == 1
    # a board that fits: flashed, verified, activated; a second flash sends nothing
    board = serve(BoardConfig(board_id="mcu-9", max_payload=512))
    r = _paradis("flash", str(bundle), "--serial", board.url, "--switch", SWITCH, "--role", "1", "--baud", "921600")
    assert r.returncode == 0, r.stderr
    assert "the board verified sha256" in r.stdout and "active:" in r.stdout
    assert board.board.active.sha256 == hashlib.sha256(image).digest()
    r = _paradis("flash", str(bundle), "--serial", board.url, "--switch", SWITCH, "--role", "1")
    assert r.returncode == 0 and "already on the board" in r.stdout
    with Board.open(board.url) as b:
        assert b.hello().active_size == len(image)
    r = _paradis("flash", str(bundle), "--serial", board.url, "--switch", SWITCH)
    assert r.returncode == 1 and "--role" in r.stderr


@pytest.mark.slow
def test_a_run_of_the_activation_before_is_stale_on_a_board(bundle, serve, tmp_path):
    """A node daemon keeps the previous activation loaded for requests in flight; a board holds one partition,
    so a Run of the previous activation (another role) is FAILED_PRECONDITION, which the coordinator treats as
    a re-plan race and retries, never INTERNAL."""
    import grpc

    from paradis_tf.bundle import load as load_bundle
    from paradis_tf.mesh import limits, tensors
    from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
    from paradis_tf.mesh.coordinator import Coordinator
    from paradis_tf.mesh.program import model_input_spec
    from paradis_tf.quant import QTensor, convert

    board = serve(BoardConfig(board_id="mcu-0", max_payload=256, arena_capacity=128 << 10), "pty")
    bridge = BridgeProcess(tmp_path / "bridge", board.url, node_id="bridge0", extra_args=("--timeout", "0.3"))
    bridge.start(60)
    try:
        with Coordinator([bridge.address]) as c:
            c.deploy(bundle)
        plan = load_bundle(bundle).plan(SWITCH)
        x = _images(1)
        peers = {0: "127.0.0.1:1", 1: bridge.address, 2: "127.0.0.1:1"}
        with grpc.insecure_channel(bridge.address, options=limits.CHANNEL_OPTIONS) as ch:
            stub = mesh_pb2_grpc.NodeStub(ch)

            def activate(role: int, aid: str) -> None:
                stub.Activate(mesh_pb2.ActivateRequest(bundle="mobilenet_v1", plan=SWITCH, role=role, peers=peers,
                                                       activation_id=aid), timeout=60)

            def run(role: int, aid: str) -> mesh_pb2.RunReply:
                spec = model_input_spec(plan, role)
                t = tensors.encode_qtensor(convert(QTensor.from_float(x), spec.quant))
                return stub.Run(mesh_pb2.RunRequest(request_id=f"r-{aid}", plan=SWITCH, activation_id=aid, input=t),
                                timeout=30)

            activate(1, "first")
            activate(2, "second")
            with pytest.raises(grpc.RpcError) as e:
                run(1, "first")
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "'first' (plan '0.5+0.25+0.25' role 1) is no longer on the board" in e.value.details()
            reply = run(2, "second")  # the current activation runs on the board
            assert reply.role == 2 and len(reply.outputs) == 1 and reply.outputs[0].tensor.data
    finally:
        assert bridge.stop() == 0
