"""Roles in certificates: real node daemons serving mutual TLS on loopback,
certificates made by `paradis certs` with a role each, and raw gRPC calls of
every kind from every role (`paradis_tf.mesh.security.RPC_ROLES`)."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import numpy as np
import pytest

from paradis_tf.cli import main
from paradis_tf.mesh import Coordinator, limits, security
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.errors import MeshError
from paradis_tf.mesh.local import LocalMesh, NodeProcess, node_tls_args
from paradis_tf.mesh.node import NodeConfig, NodeServicer
from paradis_tf.mesh.security import TlsConfig, issue, make_ca
from paradis_tf.runtime import LocalRunner


def _cfg(d, name) -> TlsConfig:
    return TlsConfig(d / "ca.pem", d / f"{name}.pem", d / f"{name}.key")


def _flags(d, name) -> list[str]:
    return ["--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / f"{name}.pem"), "--tls-key", str(d / f"{name}.key")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    assert main(["certs", "init", str(d)]) == 0
    assert main(["certs", "issue", str(d), "--name", "coordinator", "--role", "coordinator"]) == 0
    assert main(["certs", "issue", str(d), "--name", "watcher", "--role", "observer"]) == 0
    # a node certificate of the fleet that no activation names: a board taken over, or a spare
    issue(d, "intruder", ["127.0.0.1"], role="node")
    return d


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, pki, bundle_sync):
    """Two TLS nodes running the sync plan 2x0.5 (feature maps go node to node), and their coordinator."""
    with LocalMesh(2, tmp_path_factory.mktemp("roles"), capacity=0.5, block_tensorflow=True, pki=pki) as mesh:
        with Coordinator(mesh.addresses, tls=_cfg(pki, "coordinator")) as c:
            c.deploy(bundle_sync)
            assert c.select("2x0.5").plan == "2x0.5"
            yield mesh, c


def _call(address: str, tls: TlsConfig, method: str, request, timeout: float = 10.0):
    """One unary call (or a one-message Deploy stream) with ``tls``; returns (status code, details)."""

    async def go():
        async with security.channel(address, tls, limits.CHANNEL_OPTIONS) as ch:
            stub = mesh_pb2_grpc.NodeStub(ch)
            try:
                if method == "Deploy":
                    async def stream():
                        yield request
                    await stub.Deploy(stream(), timeout=timeout)
                else:
                    await getattr(stub, method)(request, timeout=timeout)
                return grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details()

    return asyncio.run(go())


def _requests(node: mesh_pb2.NodeInfo) -> dict:
    a = node.activation
    t = mesh_pb2.Tensor(dtype=mesh_pb2.DTYPE_INT8, shape=[1, 28, 28, 1], data=bytes(784), scale=1 / 255, zero_point=-128)
    return {
        "Deploy": mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(bundle="evil", manifest_sha256="0" * 64)),
        "Activate": mesh_pb2.ActivateRequest(bundle=a.bundle, version=a.version, plan="1x1.0", role=0,
                                             activation_id="evil"),
        "Run": mesh_pb2.RunRequest(request_id="r1", plan=a.plan, activation_id=a.activation_id, input=t),
        "Exchange": mesh_pb2.ExchangeRequest(request_id="r1", plan=a.plan, activation_id=a.activation_id,
                                             producer_role=1 - a.role, producer_segment=0, tensor=t),
    }


def _infos(c: Coordinator) -> list[mesh_pb2.NodeInfo]:
    return [s.info for s in c.status()]


def test_certificates_carry_their_role(pki):
    assert _cfg(pki, "coordinator").identity() == security.Identity("coordinator", "coordinator")
    assert _cfg(pki, "watcher").identity() == security.Identity("watcher", "observer")
    assert _cfg(pki, "intruder").identity() == security.Identity("intruder", "node")
    pem = (pki / "watcher.pem").read_bytes()
    from cryptography import x509

    subject = x509.load_pem_x509_certificate(pem).subject.rfc4514_string()
    assert "OU=paradis-observer" in subject and "CN=watcher" in subject


def test_a_node_certificate_cannot_deploy_activate_or_run(fleet, pki, images, bundle_sync):
    mesh, c = fleet
    before = _infos(c)
    requests = _requests(before[0])
    for method in ("Deploy", "Activate", "Run"):
        code, details = _call(mesh.addresses[0], _cfg(pki, "intruder"), method, requests[method])
        assert code == grpc.StatusCode.PERMISSION_DENIED, (method, code, details)
        assert f"{method} needs a coordinator certificate" in details and "'intruder' (role node)" in details
    after = _infos(c)
    assert [i.activation for i in after] == [i.activation for i in before]
    assert [list(i.bundles) for i in after] == [list(i.bundles) for i in before]
    x = images[:8]
    np.testing.assert_array_equal(c.infer(x), LocalRunner(bundle_sync, "2x0.5").predict(x))


def test_an_observer_reads_status_and_nothing_else(fleet, pki, capsys):
    mesh, c = fleet
    requests = _requests(_infos(c)[0])
    watcher = _cfg(pki, "watcher")
    for method in ("Deploy", "Activate", "Run", "Exchange"):
        code, details = _call(mesh.addresses[1], watcher, method, requests[method])
        assert code == grpc.StatusCode.PERMISSION_DENIED, (method, code, details)
        assert "'watcher' (role observer)" in details
    assert _call(mesh.addresses[1], watcher, "GetManifest", mesh_pb2.GetManifestRequest())[0] == grpc.StatusCode.OK
    assert main(["mesh", "status", "--nodes", ",".join(mesh.addresses), *_flags(pki, "watcher")]) == 0
    out = capsys.readouterr().out
    assert all(a in out for a in mesh.addresses) and out.count("2x0.5 role") == 2
    with Coordinator(mesh.addresses, tls=watcher) as w:
        info = w.status()[0].info
        assert info.tls_role == "observer" and info.node_id == "node0"


def test_exchange_only_from_the_named_peers_and_a_flood_does_not_stop_the_plan(fleet, pki, images, bundle_sync):
    mesh, c = fleet
    infos = _infos(c)
    # the coordinator's own certificate may not push feature maps either
    code, details = _call(mesh.addresses[0], _cfg(pki, "coordinator"), "Exchange", _requests(infos[0])["Exchange"])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "Exchange needs a node certificate" in details

    async def flood(n: int) -> dict:
        seen: dict = {}
        async with security.channel(mesh.addresses[0], _cfg(pki, "intruder"), limits.CHANNEL_OPTIONS) as ch:
            stub = mesh_pb2_grpc.NodeStub(ch)
            req = _requests(infos[0])["Exchange"]

            async def one(i: int):
                r = mesh_pb2.ExchangeRequest()
                r.CopyFrom(req)
                r.request_id = f"flood-{i}"
                try:
                    await stub.Exchange(r, timeout=20)
                    seen["OK"] = seen.get("OK", 0) + 1
                except grpc.aio.AioRpcError as e:
                    seen[e.code().name] = seen.get(e.code().name, 0) + 1
                    seen["details"] = e.details()

            await asyncio.gather(*(one(i) for i in range(n)))
        return seen

    async def serve_while_flooded():
        flooding = asyncio.ensure_future(flood(1100))
        outs = [await asyncio.to_thread(c.infer, images[i:i + 4]) for i in range(0, 80, 4)]
        return await flooding, outs

    seen, outs = asyncio.run(serve_while_flooded())
    # every push refused, none accepted (on a loaded host gRPC may cancel a few of the 1,100 streams in flight)
    assert set(seen) - {"details"} <= {"PERMISSION_DENIED", "CANCELLED"} and seen.get("PERMISSION_DENIED", 0) >= 1090, seen
    assert "must come from node 'node1'" in seen["details"] and "'intruder' (role node)" in seen["details"]
    np.testing.assert_array_equal(np.concatenate(outs), LocalRunner(bundle_sync, "2x0.5").predict(images[:80]))
    assert c.stats.failed == 0


def test_activate_with_tls_needs_peer_node_ids_and_a_node_dials_only_the_named_peer(tmp_path, pki, bundle_sync, images):
    with LocalMesh(2, tmp_path, capacity=0.5, block_tensorflow=True, pki=pki) as mesh:
        with Coordinator(mesh.addresses, tls=_cfg(pki, "coordinator")) as c:
            c.deploy(bundle_sync)
            c.select("2x0.5")
            a = c.status()[0].info.activation
            assert dict(a.peer_node_ids) == {0: "node0", 1: "node1"} or dict(a.peer_node_ids) == {0: "node1", 1: "node0"}
            coord = _cfg(pki, "coordinator")
            peers = dict(enumerate(mesh.addresses))
            base = dict(bundle=a.bundle, version=a.version, plan="2x0.5", peers=peers)
            code, details = _call(mesh.addresses[0], coord, "Activate", mesh_pb2.ActivateRequest(role=0, activation_id="x", **base))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "no peer node id for them (peer_node_ids)" in details
            # ids swapped: each node's peer is named as someone else than who answers at that address
            aid = f"swapped-{uuid.uuid4().hex[:6]}"
            swapped = {0: "node1", 1: "node0"}
            for role in (0, 1):
                req = mesh_pb2.ActivateRequest(role=role, activation_id=aid, peer_node_ids=swapped, **base)
                assert _call(mesh.addresses[role], coord, "Activate", req)[0] == grpc.StatusCode.OK
            x = mesh_pb2.Tensor(dtype=mesh_pb2.DTYPE_INT8, shape=[1, 28, 28, 1], data=bytes(784), scale=1 / 255, zero_point=-128)
            run = mesh_pb2.RunRequest(request_id="r-swapped", plan="2x0.5", activation_id=aid, input=x)

            async def both():
                return await asyncio.gather(*(asyncio.to_thread(_call, addr, coord, "Run", run, 5.0) for addr in mesh.addresses))

            received = [i.counters.exchanges_received for i in _infos(c)]
            results = asyncio.run(both())
            # neither push got through the handshake: each node waited for the other's feature map in vain
            assert all(code == grpc.StatusCode.ABORTED and "did not arrive" in d for code, d in results), results
            assert [i.counters.exchanges_received for i in _infos(c)] == received
            # the coordinator's own activation is still loaded and answers
            np.testing.assert_array_equal(c.infer(images[:4]), LocalRunner(bundle_sync, "2x0.5").predict(images[:4]))


def test_a_node_serves_only_with_a_node_certificate_naming_its_id(tmp_path, pki):
    with pytest.raises(MeshError, match=r"names 'coordinator' \(role coordinator\); a node serves with a node certificate"):
        NodeServicer(NodeConfig(tmp_path / "a", tls=_cfg(pki, "coordinator")), speed_score=1.0)
    with pytest.raises(MeshError, match=r"--node-id 'pi7' disagrees with the certificate .*issued to 'intruder'"):
        NodeServicer(NodeConfig(tmp_path / "b", node_id="pi7", tls=_cfg(pki, "intruder")), speed_score=1.0)
    assert NodeServicer(NodeConfig(tmp_path / "c", tls=_cfg(pki, "intruder")), speed_score=1.0).node_id == "intruder"


def test_discovery_without_tls_needs_insecure():
    with pytest.raises(MeshError, match=r"refusing zeroconf discovery without TLS.*--insecure"):
        Coordinator([], discovery=True, fleet="f", discovery_wait_s=0.1)
    assert main(["mesh", "status", "--discover", "--discover-wait", "0.1"]) == 1


@pytest.mark.slow
def test_the_identity_handshake_with_a_grpc_server_does_not_wait_for_its_close_notify(pki):
    """A graceful TLS close waits for the peer's close_notify, which a gRPC server may not send: asyncio then
    waits out its 30 s SSL shutdown timeout and discovery misses the node (seen on a loaded CI host)."""
    issue(pki, "node5", ["127.0.0.1"], role="node")

    async def go():
        server = grpc.aio.server()
        port = security.add_port(server, "127.0.0.1:0", _cfg(pki, "node5"))
        await server.start()
        try:
            # three handshakes in a row, each far below the 30 s shutdown timeout
            return [await asyncio.wait_for(security.fetch_peer_identity(f"127.0.0.1:{port}", _cfg(pki, "coordinator")), 10)
                    for _ in range(3)]
        finally:
            await server.stop(None)

    assert asyncio.run(go()) == [security.Identity("node5", "node")] * 3


def test_a_discovered_node_joins_only_with_a_node_certificate_of_the_fleet(tmp_path, pki):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    advert = ["--advertise", "--fleet", fleet, "--advertise-interface", "127.0.0.1"]
    other = tmp_path / "other-ca"
    make_ca(other)
    good = NodeProcess(tmp_path / "good", node_id="node0", block_tensorflow=True, extra_args=[*advert, *node_tls_args(pki, "node0")])
    # a rogue serving plaintext, and one with a node certificate of another CA, both claiming the fleet
    plain = NodeProcess(tmp_path / "plain", node_id="rogue", block_tensorflow=True, extra_args=advert)
    foreign = NodeProcess(tmp_path / "foreign", node_id="node9", block_tensorflow=True,
                          extra_args=[*advert, *node_tls_args(other, "node9")])
    procs = [good, plain, foreign]
    try:
        for p in procs:
            p.spawn()
        for p in procs:
            p.wait_ready()
        with Coordinator([], discovery=True, fleet=fleet, discovery_interfaces=["127.0.0.1"], discovery_wait_s=30,
                         expect_nodes=3, tls=_cfg(pki, "coordinator")) as c:
            # the browser may count an announcement before its handshake has run: await both refusals
            end = time.monotonic() + 30
            while len(dict(c.refused)) < 2 and time.monotonic() < end:
                time.sleep(0.05)
            assert c.addresses == [good.address]
            refused = dict(c.refused)
            assert set(refused) == {plain.address, foreign.address}
            assert all("not adopted: TLS handshake with" in why for why in refused.values())
    finally:
        for p in procs:
            p.kill()
