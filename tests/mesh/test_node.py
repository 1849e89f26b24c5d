"""One real node daemon (a subprocess, TensorFlow blocked) driven by raw gRPC calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paradis_tf.mesh import limits, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.coordinator import Coordinator, _manifest_files
from paradis_tf.mesh.local import NodeProcess
from paradis_tf.runtime import LocalRunner
from paradis_tf.quant import QTensor, convert


def _stub(address: str):
    ch = grpc.insecure_channel(address, options=limits.CHANNEL_OPTIONS)
    return ch, mesh_pb2_grpc.NodeStub(ch)


def _activate(stub, req, timeout: float = 60):
    """Activate as the coordinator does: a node that just loaded several activations (the module's node serves
    every test here) answers RESOURCE_EXHAUSTED for a moment; wait and ask again."""
    import time

    end = time.monotonic() + 20
    while True:
        try:
            return stub.Activate(req, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > end:
                raise
            time.sleep(0.25)


def _deploy_messages(bundle_dir: Path, *, corrupt: str | None = None, stop_after_chunks: int | None = None, commit: bool = True):
    from paradis_tf.bundle import load

    files = _manifest_files(load(bundle_dir))
    manifest_sha = next(h for p, _, h in files if p == "manifest.json")
    yield mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(
        bundle="tiny", manifest_sha256=manifest_sha, files=[mesh_pb2.FileEntry(path=p, size=s, sha256=h) for p, s, h in files]))
    sent = 0
    for i, (path, _, _) in enumerate(files):
        data = (bundle_dir / path).read_bytes()
        if corrupt == path:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        for off in range(0, len(data), 4096):
            if stop_after_chunks is not None and sent >= stop_after_chunks:
                return
            yield mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=i, offset=off, data=data[off:off + 4096]))
            sent += 1
    if commit:
        yield mesh_pb2.DeployRequest(commit=mesh_pb2.DeployCommit())


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProcess(tmp_path_factory.mktemp("node") / "store", node_id="solo", capacity=0.5, block_tensorflow=True)
    n.start()
    yield n
    n.kill()


def _stored_versions(stub) -> dict[str, list[str]]:
    info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
    return {b.name: [v.version for v in b.versions] for b in info.bundles}


def test_info_and_health(node):
    ch, stub = _stub(node.address)
    with ch:
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
        assert info.node_id == "solo" and info.backend == "litert" and info.kind == "grpc-node"
        assert info.capacity == 0.5 and info.cores >= 1 and info.speed_score > 0
        assert info.software_version and info.memory_bytes > 0
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "paradis.mesh.v1.Node"):
            r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_run_is_refused_and_the_node_keeps_serving(node, bundle4, images):
    ch, stub = _stub(node.address)
    with ch:
        x = images[:1]

        def run(plan="1x0.25", tensor=None, rid="r1"):
            return stub.Run(mesh_pb2.RunRequest(request_id=rid, plan=plan, input=tensor), timeout=5)

        with pytest.raises(grpc.RpcError) as e:  # before any Activate
            run(tensor=tensors.encode(np.zeros((1, 28, 28, 1), np.int8), 0.004, -128))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no plan is active" in e.value.details()

        stub.Deploy(_deploy_messages(bundle4), timeout=60)
        _activate(stub, mesh_pb2.ActivateRequest(bundle="tiny", plan="1x0.25", role=0, peers={0: node.address}))
        runner = LocalRunner(bundle4, "1x0.25")
        good_spec = runner.plan.devices[0].segments[0].inputs[0].tensor
        q = convert(QTensor.from_float(x), good_spec.quant)
        good = tensors.encode_qtensor(q)

        cases = {
            "wrong dtype": (tensors.encode(x, good.scale, good.zero_point), grpc.StatusCode.INVALID_ARGUMENT, "expected dtype int8, received float32"),
            "wrong shape": (tensors.encode(np.zeros((1, 27, 28, 1), np.int8), good.scale, good.zero_point), grpc.StatusCode.INVALID_ARGUMENT, "expected shape (N, 28, 28, 1), received [1, 27, 28, 1]"),
            "short bytes": (mesh_pb2.Tensor(dtype=good.dtype, shape=good.shape, data=good.data[:-5], scale=good.scale, zero_point=good.zero_point), grpc.StatusCode.INVALID_ARGUMENT, "byte length 779 does not match shape [1, 28, 28, 1]"),
            "zero scale": (mesh_pb2.Tensor(dtype=good.dtype, shape=good.shape, data=good.data, scale=0.0), grpc.StatusCode.INVALID_ARGUMENT, "scale"),
            # 2**62 * 28 * 28 elements wrap to 0 in int64: the empty payload must not pass for that shape
            "overflowing shape": (mesh_pb2.Tensor(dtype=good.dtype, shape=[2**62, 28, 28, 1], data=b"", scale=good.scale, zero_point=good.zero_point), grpc.StatusCode.INVALID_ARGUMENT, "byte length 0 does not match shape [4611686018427387904, 28, 28, 1]"),
        }
        for name, (tensor, code, text) in cases.items():
            with pytest.raises(grpc.RpcError) as e:
                run(tensor=tensor)
            assert e.value.code() == code, name
            assert text in e.value.details(), (name, e.value.details())
        with pytest.raises(grpc.RpcError) as e:
            run(plan="9x0.1", tensor=good)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "plan '9x0.1' is not active on this node (active: plan '1x0.25' role 0" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            run(tensor=good, rid="")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty request_id" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Run(mesh_pb2.RunRequest(request_id="r", plan="1x0.25"), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no input tensor" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Activate(mesh_pb2.ActivateRequest(bundle="tiny", plan="7x0.1", role=0), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "7x0.1" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Activate(mesh_pb2.ActivateRequest(bundle="nope", plan="1x0.25", role=0), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "bundle 'nope' is not stored" in e.value.details()

        # still serving, and the answer is the local one, bit for bit
        reply = run(tensor=good)
        out = tensors.decode_qtensor(reply.outputs[0].tensor, runner.plan.devices[0].segments[0].output)
        from paradis_tf.runtime.program import fuse
        from paradis_tf.bundle import SegmentRef

        assert np.array_equal(fuse(runner.plan, {SegmentRef(0, 0): out}), runner.predict(x))
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
        assert info.counters.runs >= 1 and info.counters.run_errors >= 7


def test_malformed_deploy_never_replaces_a_version(node, bundle4, bundle_sync):
    ch, stub = _stub(node.address)
    with ch:
        stub.Deploy(_deploy_messages(bundle4), timeout=60)
        before = _stored_versions(stub)
        seg = next(p for p, _, _ in _manifest_files(__import__("paradis_tf.bundle").bundle.load(bundle_sync)) if p.endswith(".tflite"))
        bad = [
            (dict(corrupt=seg), "sha256 mismatch for"),
            (dict(stop_after_chunks=3), "truncated deploy stream"),
            (dict(commit=False), "truncated deploy stream"),
        ]
        for kwargs, text in bad:
            with pytest.raises(grpc.RpcError) as e:
                stub.Deploy(_deploy_messages(bundle_sync, **kwargs), timeout=60)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kwargs
            assert text in e.value.details(), (kwargs, e.value.details())
        header = mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(
            bundle="tiny", manifest_sha256="0" * 64, files=[mesh_pb2.FileEntry(path="../../etc/x", size=1, sha256="0" * 64)]))
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(iter([header]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "file path in bundle '../../etc/x' must be relative" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(iter([mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(data=b"x"))]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "FileChunk before DeployBegin" in e.value.details()
        assert _stored_versions(stub) == before
        assert not any((node.store / "tmp").iterdir())
        # a good upload of the same content after all that
        r = stub.Deploy(_deploy_messages(bundle_sync), timeout=60)
        assert r.bundle == "tiny" and not r.already_present and r.versions[0] == r.version and len(r.versions) == 2
        again = stub.Deploy(_deploy_messages(bundle_sync), timeout=60)
        assert again.already_present and again.version == r.version


def test_previous_version_is_restorable(node, bundle4, bundle_sync, images):
    ch, stub = _stub(node.address)
    with ch:
        old = stub.Deploy(_deploy_messages(bundle4), timeout=60).version
        new = stub.Deploy(_deploy_messages(bundle_sync), timeout=60)
        assert new.versions[0] == new.version != old and old in new.versions  # newest first, previous kept
    with Coordinator([node.address], bundle=f"tiny@{old}") as c:  # roll back to the previous version
        assert c.select("1x0.25").plan == "1x0.25"
        assert c.status()[0].info.activation.version == old
        np.testing.assert_array_equal(c.infer(images[:4]), LocalRunner(bundle4, "1x0.25").predict(images[:4]))


def test_repeating_the_current_activation_is_a_cheap_no_op(node, bundle4):
    ch, stub = _stub(node.address)
    with ch:
        stub.Deploy(_deploy_messages(bundle4), timeout=60)
        req = mesh_pb2.ActivateRequest(bundle="tiny", plan="1x0.25", role=0, peers={0: node.address}, activation_id="same")
        first = _activate(stub, req)
        before = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).counters.activations
        for _ in range(20):
            again = stub.Activate(req, timeout=60)
            assert again.activation == first.activation and again.role_latency_ms == first.role_latency_ms  # not re-measured
        assert stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).counters.activations == before  # nothing reloaded
        moved = mesh_pb2.ActivateRequest(bundle="tiny", plan="1x0.25", role=0, peers={0: node.address, 1: "127.0.0.1:1"},
                                         activation_id="same")
        _activate(stub, moved)  # the same id with other peers is a new activation: loaded again
        assert stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).counters.activations == before + 1


def test_sigterm_and_restart_restore_the_activation(node, bundle4, images):
    ch, stub = _stub(node.address)
    with ch:
        stub.Deploy(_deploy_messages(bundle4), timeout=60)
        act = _activate(stub, mesh_pb2.ActivateRequest(bundle="tiny", plan="1x0.25", role=0, peers={0: node.address}, activation_id="a-42"))
        assert act.activation.plan == "1x0.25" and act.role_latency_ms > 0
    assert node.stop() == 0  # SIGTERM: graceful, exit code 0
    node.start()  # same store, same port
    with Coordinator([node.address]) as c:
        info = c.status()[0].info
        assert info.active and info.activation.plan == "1x0.25" and info.activation.activation_id == "a-42"
        assert c.select("1x0.25").plan == "1x0.25"
        assert np.array_equal(c.infer(images[:5]), LocalRunner(bundle4, "1x0.25").predict(images[:5]))


def test_node_and_runtime_import_without_tensorflow():
    code = """
import sys
from paradis_tf.mesh.local import _BLOCKER, BLOCKED_MODULES
exec(_BLOCKER.format(block=True, blocked=BLOCKED_MODULES))
try:
    import tensorflow
    raise SystemExit("tensorflow was importable")
except ImportError:
    pass
import paradis_tf.runtime, paradis_tf.bundle, paradis_tf.mesh.node, paradis_tf.mesh.coordinator, paradis_tf.mesh.discovery
import zeroconf
from paradis_tf.runtime import LocalRunner, DeviceProgram
from paradis_tf.cli import cmd_node
assert not any(m.split(".")[0] in BLOCKED_MODULES for m in sys.modules), [m for m in sys.modules if "tensorflow" in m]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
