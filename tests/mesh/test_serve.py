"""`paradis mesh serve`: a real server process (TensorFlow blocked in it, as on a line's computer) in front of
real node daemons on loopback, called over gRPC like the plant's software calls it; outputs compared with
`LocalRunner`'s, bad inputs, a node killed, no node left, plaintext off loopback, and certificate roles."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paradis_tf.mesh import Coordinator, security, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.local import LocalMesh, boot_command
from paradis_tf.mesh.serve import (HEALTH_SERVICE, InferenceClient, InferenceError, InferenceRefused,
                                    InferenceServicer, ServeConfig)
from paradis_tf.runtime import LocalRunner

pytestmark = pytest.mark.slow  # every test runs daemons

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServeProcess:
    """`paradis mesh serve` in a child process on 127.0.0.1 port 0; the port comes from ``--ready-file``."""

    def __init__(self, workdir: Path, *argv: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file = workdir / "serve.ready"
        self.log_path = workdir / "serve.log"
        self.argv = ["--listen", "127.0.0.1:0", "--ready-file", str(self.ready_file), *argv]
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, wait_for, timeout: float = 120.0) -> str:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(boot_command(("mesh", "serve"), self.argv, block_tensorflow=True),
                                         stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env)
        wait_for(lambda: self.ready_file.exists() or self.proc.poll() is not None, timeout, "the server's ready file")
        assert self.proc.poll() is None, f"mesh serve exited with {self.proc.returncode}:\n{self.log()}"
        self.address = self.ready_file.read_text().strip()
        return self.address

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM; the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mesh serve did not stop within {timeout} s of SIGTERM:\n{self.log()}") from None


def _health(address: str, tls: security.TlsConfig | None = None, service: str = "") -> int:
    channel = (grpc.insecure_channel(address) if tls is None
               else grpc.secure_channel(address, tls.channel_credentials()))
    with channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def _raw_infer(address: str, request: mesh_pb2.InferRequest) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(address) as channel:
        try:
            mesh_pb2_grpc.InferenceStub(channel).Infer(request, timeout=30)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()


def _request(x: np.ndarray, **fields) -> mesh_pb2.InferRequest:
    r = mesh_pb2.InferRequest(**fields)
    tensors.encode(np.asarray(x), out=r.inputs)
    return r


@pytest.fixture(scope="module")
def line(tmp_path_factory, bundle4, wait_for):
    """Two nodes of capacity 0.25 (auto plan: 2x0.25) behind one `mesh serve` taking at most 16 samples per call."""
    root = tmp_path_factory.mktemp("serve-line")
    with LocalMesh(2, root, capacity=0.25, block_tensorflow=True) as mesh:
        server = ServeProcess(root / "server", "--nodes", ",".join(mesh.addresses), "--bundle", str(bundle4),
                              "--max-batch", "16")
        try:
            server.start(wait_for)
            yield mesh, server
        finally:
            assert server.stop() == 0, server.log()


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def wait_for():
    """conftest's ``wait_for`` for module-scoped fixtures: polls a condition until true, else fails naming it."""
    return _wait_until


def test_outputs_equal_local_runner_and_status_names_the_plan(line, bundle4, images):
    mesh, server = line
    assert mesh_pb2.DESCRIPTOR.services_by_name["Inference"].full_name == HEALTH_SERVICE == "paradis.mesh.v1.Inference"
    assert _health(server.address) == SERVING and _health(server.address, service=HEALTH_SERVICE) == SERVING
    want = LocalRunner(bundle4, "2x0.25").predict(images[:16])
    with InferenceClient(server.address) as client:
        reply = client.call(images[:8], request_id="batch-1")
        assert reply.request_id == "batch-1" and reply.plan == "2x0.25" and not reply.replanned
        assert sorted(reply.nodes) == sorted(mesh.addresses) and reply.server_ms > 0
        out = tensors.decode(reply.outputs, dtype="float32")
        assert out.shape == (8, 10)
        np.testing.assert_array_equal(out, want[:8])
        np.testing.assert_array_equal(client.infer(images[8:16]), want[8:16])
        np.testing.assert_array_equal(client.infer(images[3:4]), want[3:4])  # a batch of one
        status = client.status()
    assert status.serving and status.reason == "" and status.switch == "auto" and status.plan == "2x0.25"
    assert list(status.input_shape) == [28, 28, 1] and status.max_batch == 16
    assert sorted(n.address for n in status.nodes) == sorted(mesh.addresses)
    assert all(n.up for n in status.nodes) and sorted(n.role for n in status.nodes) == [0, 1]
    assert {n.node_id for n in status.nodes} == {"node0", "node1"}


def test_concurrent_callers_each_get_their_own_outputs(line, bundle4, images):
    _, server = line
    want = LocalRunner(bundle4, "2x0.25").predict(images[:48])

    async def caller(k: int) -> list[tuple[int, np.ndarray, str]]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = mesh_pb2_grpc.InferenceStub(channel)
            out = []
            for j in range(4):
                lo = (4 * k + j) * 3 % 45
                reply = await stub.Infer(_request(images[lo:lo + 3], request_id=f"c{k}-{j}"), timeout=60)
                out.append((lo, tensors.decode(reply.outputs, dtype="float32"), reply.request_id))
            return out

    async def all_callers():
        return await asyncio.gather(*(caller(k) for k in range(6)))

    results = [r for rows in asyncio.run(all_callers()) for r in rows]
    assert len(results) == 24 and len({rid for _, _, rid in results}) == 24
    for lo, out, _ in results:
        np.testing.assert_array_equal(out, want[lo:lo + 3])


def test_bad_inputs_are_refused_naming_the_field_and_the_server_keeps_serving(line, bundle4, images):
    _, server = line
    x = images[:2]
    nan = x.copy()
    nan[1, 3, 4, 0] = np.nan
    short = _request(x)
    short.inputs.data = short.inputs.data[:-4]
    quantized = _request(x)
    quantized.inputs.scale = 0.5
    cases = [
        (mesh_pb2.InferRequest(request_id="r"), "InferRequest.inputs is missing"),
        (_request(np.zeros(x.shape, np.int8)), "InferRequest.inputs.dtype is int8"),
        (_request(x[..., 0]), "InferRequest.inputs.shape is [2, 28, 28]; expected [N, 28, 28, 1]"),
        (_request(np.zeros((2, 28, 28, 3), np.float32)), "InferRequest.inputs.shape is [2, 28, 28, 3]"),
        (_request(np.zeros((0, 28, 28, 1), np.float32)), "the batch is empty"),
        (_request(images[:17]), "InferRequest.inputs.shape[0] is 17; this server takes at most 16"),
        (short, "InferRequest.inputs: byte length 6268 does not match shape [2, 28, 28, 1]"),
        (_request(nan), "InferRequest.inputs: float32 values must be finite"),
        (quantized, "InferRequest.inputs.scale/zero_point"),
        (_request(x, request_id="a\x00b"), "InferRequest.request_id"),
        (_request(x, request_id="r" * 129), "InferRequest.request_id is 129 characters long"),
    ]
    for request, named in cases:
        code, details = _raw_infer(server.address, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details, (named, code, details)
    assert "(samples [1])" in _raw_infer(server.address, _request(nan))[1]
    assert server.proc.poll() is None and _health(server.address) == SERVING
    with InferenceClient(server.address) as client:
        np.testing.assert_array_equal(client.infer(x), LocalRunner(bundle4, "2x0.25").predict(x))


def test_a_passed_deadline_cancels_the_samples_and_says_how_many_were_answered(mesh2, bundle4, images):
    """In-process servicer over a real coordinator: the deadline the caller has left bounds the request."""

    async def scenario():
        with Coordinator(mesh2.addresses, bundle=bundle4) as c:
            servicer = InferenceServicer(c, ServeConfig())
            assert await servicer.refresh() and servicer.selected and c.placement.plan == "2x0.25"
            with pytest.raises(InferenceRefused) as e:
                await servicer.infer(_request(images[:8]), time_remaining=0.0)
            assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "passed with 0 of 8 samples answered" in e.value.message
            reply = await servicer.infer(_request(images[:8], request_id="after"), time_remaining=30.0)
            assert reply.request_id == "after" and reply.plan == "2x0.25"
            return tensors.decode(reply.outputs, dtype="float32")

    np.testing.assert_array_equal(asyncio.run(scenario()), LocalRunner(bundle4, "2x0.25").predict(images[:8]))


def test_a_killed_node_is_planned_around_and_no_node_left_is_not_serving(tmp_path, bundle4, images, wait_for):
    with LocalMesh(2, tmp_path, capacity=0.25, block_tensorflow=True) as mesh:
        server = ServeProcess(tmp_path / "server", "--nodes", ",".join(mesh.addresses), "--bundle", str(bundle4),
                              "--health-interval", "0.2")
        try:
            server.start(wait_for)
            with InferenceClient(server.address) as client:
                assert client.call(images[:4]).plan == "2x0.25"
                mesh.nodes[0].kill()  # SIGKILL: no goodbye
                reply = client.call(images[:4])  # answered: re-planned on the survivor (and retried if it had to)
                assert reply.plan == "1x0.25" and list(reply.nodes) == [mesh.nodes[1].address]
                want = LocalRunner(bundle4, "1x0.25").predict(images[:4])
                np.testing.assert_array_equal(tensors.decode(reply.outputs, dtype="float32"), want)
                np.testing.assert_array_equal(client.infer(images[:4]), want)

                mesh.nodes[1].kill()
                wait_for(lambda: _health(server.address) == NOT_SERVING, 30, "health NOT_SERVING with no node left")
                status = client.status()
                assert not status.serving and "no plan fits the healthy nodes" in status.reason
                assert not any(n.up for n in status.nodes)
                with pytest.raises(InferenceError) as e:
                    client.infer(images[:1])
                assert e.value.code == grpc.StatusCode.UNAVAILABLE and "no plan" in e.value.details

                mesh.nodes[0].spawn()  # back: re-admitted, planned again
                mesh.nodes[0].wait_ready(60)
                wait_for(lambda: _health(server.address) == SERVING, 60, "health SERVING once a node is back")
                reply = client.call(images[:4])
                assert reply.plan == "1x0.25" and list(reply.nodes) == [mesh.nodes[0].address]
                np.testing.assert_array_equal(tensors.decode(reply.outputs, dtype="float32"), want)
        finally:
            assert server.stop() == 0, server.log()


def test_plaintext_off_loopback_exits_2_before_any_node_is_contacted(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ready = tmp_path / "ready"
    r = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "mesh", "serve", "--listen", "0.0.0.0:0",
                        "--nodes", "127.0.0.1:9", "--ready-file", str(ready)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("paradis: refusing to serve plaintext on 0.0.0.0:0") and len(r.stderr.splitlines()) == 1
    assert "--tls-ca/--tls-cert/--tls-key" in r.stderr and "--insecure" in r.stderr
    assert not ready.exists()


def test_with_tls_only_a_coordinator_certificate_may_infer(tmp_path, bundle4, images, wait_for):
    pki = tmp_path / "pki"
    security.make_ca(pki)
    # the server: the nodes' coordinator, and a server to the applications (so it names its host)
    security.issue(pki, "line", ["127.0.0.1"], role="coordinator")
    security.issue(pki, "app", [], role="coordinator")
    security.issue(pki, "dashboard", [], role="observer")
    cfg = lambda name: security.TlsConfig(pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key")  # noqa: E731
    with LocalMesh(2, tmp_path / "nodes", capacity=0.25, block_tensorflow=True, pki=pki) as mesh:
        server = ServeProcess(tmp_path / "server", "--nodes", ",".join(mesh.addresses), "--bundle", str(bundle4),
                              "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "line.pem"),
                              "--tls-key", str(pki / "line.key"))
        try:
            server.start(wait_for)
            want = LocalRunner(bundle4, "2x0.25").predict(images[:4])
            with InferenceClient(server.address, tls=cfg("app")) as app:
                np.testing.assert_array_equal(app.infer(images[:4]), want)
            for name, role in (("node0", "node"), ("dashboard", "observer")):
                with InferenceClient(server.address, tls=cfg(name)) as intruder:
                    with pytest.raises(InferenceError) as e:
                        intruder.infer(images[:4])
                    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
                    assert "Infer needs a coordinator certificate" in e.value.details
                    assert f"'{name}' (role {role})" in e.value.details
            with InferenceClient(server.address, tls=cfg("dashboard")) as dashboard:
                status = dashboard.status()
                assert status.serving and status.plan == "2x0.25"
            assert _health(server.address, cfg("dashboard")) == SERVING
            with InferenceClient(server.address) as plaintext:  # no certificate: the handshake fails
                with pytest.raises(InferenceError) as e:
                    plaintext.infer(images[:4], timeout=5)
                assert e.value.code == grpc.StatusCode.UNAVAILABLE
            with InferenceClient(server.address, tls=cfg("app")) as app:  # and the server still serves
                np.testing.assert_array_equal(app.infer(images[:4]), want)
        finally:
            assert server.stop() == 0, server.log()
