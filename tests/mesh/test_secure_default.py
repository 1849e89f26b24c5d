"""Secure unless told otherwise: no plaintext off loopback without ``--insecure``.

The refusals run the real command line; the ``--insecure`` daemon is a real
`grpc.aio` node bound to the wildcard address, reached over loopback only.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paradis_tf.cli import main
from paradis_tf.mesh.node import NodeConfig, NodeServicer, serve
from paradis_tf.mesh.security import PlaintextRefused, TlsConfig, check_listen, is_loopback


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("[::]", False), ("10.0.0.2", False), ("192.168.1.20", False), ("pi1", False),
])
def test_loopback_is_told_from_addresses_other_hosts_reach(host, loopback):
    assert is_loopback(host) is loopback


def test_plaintext_off_loopback_needs_tls_or_insecure(tmp_path):
    with pytest.raises(PlaintextRefused) as e:
        check_listen("0.0.0.0:5000", None)
    for named in ("0.0.0.0:5000", "--tls-ca/--tls-cert/--tls-key", "--insecure"):
        assert named in str(e.value)
    assert check_listen("0.0.0.0:5000", None, insecure=True) is True  # served, with warnings
    assert check_listen("0.0.0.0:5000", TlsConfig(tmp_path / "ca", tmp_path / "c", tmp_path / "k")) is False
    assert check_listen("127.0.0.1:0", None) is False and check_listen("[::1]:0", None) is False


def test_node_serve_refuses_plaintext_off_loopback_with_exit_2(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["node", "serve", "--listen", "0.0.0.0:0", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paradis: refusing to serve plaintext on 0.0.0.0:0")
    assert "--tls-ca/--tls-cert/--tls-key" in err and "--insecure" in err and len(err.strip().splitlines()) == 1
    assert not store.exists()  # refused before anything was opened


def test_bridge_refuses_plaintext_off_loopback_before_opening_the_board(tmp_path, capsys):
    # loop:// would open (and then wait for a HELLO answer): the refusal must come first
    assert main(["bridge", "--serial", "loop://", "--listen", "10.0.0.2:5001", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve plaintext on 10.0.0.2:5001" in err and "--insecure" in err


def test_insecure_serves_and_warns_at_start_and_every_interval(tmp_path):
    warnings: list[str] = []

    async def scenario() -> None:
        two_warnings, ready_addr, stop = asyncio.Event(), asyncio.get_running_loop().create_future(), asyncio.Event()

        class Catch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno == logging.WARNING and "PLAINTEXT" in record.getMessage():
                    warnings.append(record.getMessage())
                    if len(warnings) >= 2:
                        two_warnings.set()

        handler = Catch()
        logging.getLogger("paradis.node").addHandler(handler)
        try:
            config = NodeConfig(store=tmp_path / "store", insecure=True, insecure_warning_interval_s=0.05)
            task = asyncio.create_task(serve(NodeServicer(config), "0.0.0.0:0", ready=ready_addr.set_result, stop=stop))
            port = int((await asyncio.wait_for(ready_addr, 60)).rpartition(":")[2])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                assert r.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.wait_for(two_warnings.wait(), 30)
            stop.set()
            await asyncio.wait_for(task, 30)
        finally:
            logging.getLogger("paradis.node").removeHandler(handler)

    asyncio.run(scenario())
    assert len(warnings) >= 2 and "--tls-ca/--tls-cert/--tls-key" in warnings[0]
