"""Prometheus metrics (`--metrics-listen`): real node daemons, a bridge with an emulated board and `paradis mesh
serve` on loopback port 0, requests sent through a real `Coordinator` or `InferenceClient`, the endpoints scraped
over real HTTP(S) with urllib and parsed with `prometheus_client`'s parser; the counts must be exactly what was sent.
Also: refusals under their status code, the TLS rule (a fleet client certificate or nothing), plaintext off loopback
refused with exit 2, `mesh status --watch`, and the Grafana dashboard naming only exported families."""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paradis_tf.bundle import SegmentRef
from paradis_tf.bundle import load as load_bundle
from paradis_tf.mesh import security
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.coordinator import Coordinator
from paradis_tf.mesh.local import BridgeProcess, NodeProcess, boot_command, node_tls_args
from paradis_tf.mesh.metrics import BOARD_STATES, FAMILIES, LATENCY_BUCKETS_S
from paradis_tf.mesh.serve import InferenceClient, InferenceError

ROOT = Path(__file__).resolve().parents[2]
PLAN = "2x0.5"  # bundle_sync: a sync layer, so the two roles exchange feature maps


# --- scraping ---------------------------------------------------------------------------------------------------
class Scrape:
    """One scrape of an endpoint: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def exposed(self, prefix: str = "paradis_") -> set[str]:
        """Family names as exposed (counters with their ``_total``; not the ``_created`` series of the text format)."""
        return {name + "_total" if f.type == "counter" else name for name, f in self.families.items()
                if name.startswith(prefix) and not name.endswith("_created")}

    def value(self, sample: str, **labels: str) -> float:
        """The sum of the samples named ``sample`` whose labels include ``labels`` (0 when there are none)."""
        return sum(s.value for f in self.families.values() for s in f.samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    def labels(self, sample: str) -> list[dict[str, str]]:
        return [s.labels for f in self.families.values() for s in f.samples if s.name == sample]


def scrape(address: str, context: ssl.SSLContext | None = None) -> Scrape:
    scheme = "https" if context is not None else "http"
    with urllib.request.urlopen(f"{scheme}://{address}/metrics", timeout=10, context=context) as r:
        assert r.status == 200
        return Scrape(r.read().decode())


def scrape_once_counted(address: str, before: Scrape, calls: int, timeout: float = 10.0) -> Scrape:
    """A scrape once ``calls`` more RPCs than in ``before`` are counted: an aborted call's status reaches the
    client before the node's handler wrapper has counted it, so the count may trail the client by a moment."""
    import time

    end = time.monotonic() + timeout
    while True:
        s = scrape(address)
        got = s.value("paradis_node_requests_total") - before.value("paradis_node_requests_total")
        if got >= calls or time.monotonic() > end:
            return s
        time.sleep(0.02)


def _metrics_address(path: Path) -> str:
    address = path.read_text().strip()
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0, address  # port 0 asked: the bound one is written
    return address


class Daemon:
    """A node daemon or bridge process with its metrics endpoint (``--metrics-listen 127.0.0.1:0``)."""

    def __init__(self, proc: NodeProcess, ready: Path) -> None:
        self.proc, self.ready = proc, ready
        self.metrics = ""

    def started(self) -> "Daemon":
        self.metrics = _metrics_address(self.ready)  # written before the "listening on" line
        return self

    @property
    def address(self) -> str:
        return self.proc.address


def _metrics_args(ready: Path) -> tuple[str, ...]:
    return ("--metrics-listen", "127.0.0.1:0", "--metrics-ready-file", str(ready))


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Two node daemons of capacity 1.0 (TensorFlow blocked), each with a metrics endpoint."""
    root = tmp_path_factory.mktemp("metrics-nodes")
    daemons = [Daemon(NodeProcess(root / f"node{i}", node_id=f"node{i}", capacity=1.0, block_tensorflow=True,
                                  extra_args=_metrics_args(root / f"node{i}.metrics")), root / f"node{i}.metrics")
               for i in range(2)]
    try:
        for d in daemons:
            d.proc.spawn()
        for d in daemons:
            d.proc.wait_ready(60)
            d.started()
        yield daemons
    finally:
        for d in daemons:
            if d.proc.alive():
                assert d.proc.stop() == 0


def _tensor_bytes(spec) -> int:
    return int(np.prod(spec.shape)) * np.dtype(spec.quant.np_dtype).itemsize


def _exchanges_per_request(plan, role: int) -> tuple[int, int]:
    """(feature maps role ``role`` pushes to peers, bytes of them) for one request of batch 1."""
    n = size = 0
    for seg in plan.devices[role].segments:
        for consumer, _ in plan.consumers(SegmentRef(role, seg.index)):
            if consumer.device != role:
                n += 1
                size += _tensor_bytes(seg.output)
    return n, size


# --- node daemons -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_node_counts_match_the_requests_sent(nodes, bundle_sync, images):
    n = 24
    before = [scrape(d.metrics) for d in nodes]
    with Coordinator([d.address for d in nodes], bundle=bundle_sync) as c:
        c.deploy(bundle_sync)
        placement = c.select(PLAN)
        c.infer(images[:n])  # n requests, each a Run on both roles
        assert c.stats.answered == n and c.stats.failed == 0
    after = [scrape(d.metrics) for d in nodes]
    plan = load_bundle(bundle_sync).plan(PLAN)

    for i, d in enumerate(nodes):
        b, a = before[i], after[i]
        role = placement.addresses.index(d.address)

        def delta(sample: str, **labels: str) -> float:
            return a.value(sample, **labels) - b.value(sample, **labels)

        assert delta("paradis_node_requests_total", method="Run", code="OK") == n
        assert delta("paradis_node_requests_total", method="Run") == n  # nothing refused
        assert delta("paradis_node_run_seconds_count", plan=PLAN, role=str(role)) == n
        assert delta("paradis_node_run_seconds_count") == n
        assert 0 < delta("paradis_node_run_seconds_sum") < 10 * n
        assert delta("paradis_node_run_seconds_bucket", plan=PLAN, role=str(role), le="+Inf") == n
        assert delta("paradis_node_requests_total", method="Deploy", code="OK") == 1
        assert delta("paradis_node_deploys_total", outcome="ok") == 1
        assert delta("paradis_node_requests_total", method="Activate", code="OK") == 1
        assert delta("paradis_node_activations_total", outcome="ok") == 1
        assert delta("paradis_node_requests_total", method="GetInfo", code="OK") >= 1
        # every feature map this role pushed, and the bytes of them; its peer received as many
        sent, size = _exchanges_per_request(plan, role)
        peer = 1 - role
        got, got_size = _exchanges_per_request(plan, peer)
        assert sent >= 1  # the sync layer
        assert delta("paradis_node_exchanges_total", direction="sent") == n * sent
        assert delta("paradis_node_exchange_bytes_total", direction="sent") == n * size
        assert delta("paradis_node_exchanges_total", direction="received") == n * got
        assert delta("paradis_node_exchange_bytes_total", direction="received") == n * got_size
        # the activation it serves, its identity and health
        active = a.labels("paradis_node_active_info")
        assert len(active) == 1 and active[0]["plan"] == PLAN and active[0]["role"] == str(role), active
        assert active[0]["bundle"] and active[0]["version"]
        assert a.value("paradis_node_build_info", node_id=f"node{i}", kind="grpc-node", backend="litert") == 1
        assert a.value("paradis_node_serving") == 1
        # the histogram's buckets are the documented ones, in seconds
        les = sorted({float(s["le"]) for s in a.labels("paradis_node_run_seconds_bucket")})
        assert les == [*LATENCY_BUCKETS_S, math.inf]
        # every node family is exported, and nothing else of ours
        assert a.exposed() == {f for f in FAMILIES if f.startswith("paradis_node_")}, a.exposed() ^ set(FAMILIES)
        assert a.value("process_cpu_seconds_total") > 0


@pytest.mark.slow
def test_node_refusals_are_counted_under_their_code(nodes, bundle_sync):
    d = nodes[0]
    before = scrape(d.metrics)
    with grpc.insecure_channel(d.address) as ch:
        stub = mesh_pb2_grpc.NodeStub(ch)
        refusals = {
            "INVALID_ARGUMENT": mesh_pb2.RunRequest(request_id="", plan=PLAN),
            "FAILED_PRECONDITION": mesh_pb2.RunRequest(request_id="r1", plan="no-such-plan"),
        }
        for code, request in refusals.items():
            with pytest.raises(grpc.RpcError) as e:
                stub.Run(request, timeout=10)
            assert e.value.code().name == code
        with pytest.raises(grpc.RpcError) as e:
            stub.Activate(mesh_pb2.ActivateRequest(bundle="nothing-here", plan=PLAN, role=0), timeout=10)
        activate_code = e.value.code().name
        with pytest.raises(grpc.RpcError) as e:
            stub.GetManifest(mesh_pb2.GetManifestRequest(bundle="nothing-here"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    after = scrape_once_counted(d.metrics, before, calls=4)

    def delta(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    for code in refusals:
        assert delta("paradis_node_requests_total", method="Run", code=code) == 1
    assert delta("paradis_node_requests_total", method="Run", code="OK") == 0
    assert delta("paradis_node_run_seconds_count") == 0  # only answered Runs are timed
    assert delta("paradis_node_requests_total", method="Activate", code=activate_code) == 1
    assert delta("paradis_node_activations_total", outcome="refused") == 1
    assert delta("paradis_node_requests_total", method="GetManifest", code="NOT_FOUND") == 1
    assert delta("paradis_node_requests_total", code="UNKNOWN") == 0


# --- TLS ----------------------------------------------------------------------------------------------------
def _client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.mark.slow
def test_tls_endpoint_needs_a_fleet_certificate(tmp_path):
    pki, other = tmp_path / "pki", tmp_path / "other"
    security.make_ca(pki)
    security.make_ca(other, common_name="another fleet")
    prom_cert, prom_key = security.issue(pki, "prometheus", [], role="observer")
    stranger_cert, stranger_key = security.issue(other, "stranger", [], role="observer")
    ready = tmp_path / "node.metrics"
    node = NodeProcess(tmp_path / "node", node_id="node-tls", block_tensorflow=True,
                       extra_args=(*node_tls_args(pki, "node-tls"), *_metrics_args(ready)))
    node.start(60)
    try:
        address = _metrics_address(ready)
        ca = pki / "ca.pem"
        # no client certificate, or one of another CA: refused
        for ctx in (_client_context(ca), _client_context(ca, stranger_cert, stranger_key)):
            with pytest.raises(OSError):
                scrape(address, ctx)
        # a client that connects and never speaks does not hold the endpoint
        idle = socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])))
        try:
            t0 = time.monotonic()
            s = scrape(address, _client_context(ca, prom_cert, prom_key))
            assert time.monotonic() - t0 < 3
        finally:
            idle.close()
        assert s.value("paradis_node_build_info", node_id="node-tls") == 1 and s.value("paradis_node_serving") == 1
        # the refusals left the node serving, and the endpoint too
        assert scrape(address, _client_context(ca, prom_cert, prom_key)).value("paradis_node_serving") == 1
    finally:
        assert node.stop() == 0


# --- plaintext off loopback ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["node", "serve", "--listen", "127.0.0.1:0", "--store", "{tmp}/store"],
    ["bridge", "--serial", "{tmp}/no-such-tty", "--listen", "127.0.0.1:0", "--store", "{tmp}/store"],
    ["mesh", "serve", "--listen", "127.0.0.1:0", "--nodes", "127.0.0.1:9"],
], ids=["node-serve", "bridge", "mesh-serve"])
def test_plaintext_metrics_off_loopback_exit_2(argv, tmp_path, capsys):
    from paradis_tf.cli import main as paradis

    argv = [a.format(tmp=tmp_path) for a in argv]
    assert paradis([*argv, "--metrics-listen", "0.0.0.0:0"]) == 2
    err = capsys.readouterr().err
    assert "--metrics-listen 0.0.0.0:0" in err and "--tls-ca/--tls-cert/--tls-key" in err and "--insecure" in err, err
    assert not (tmp_path / "store").exists()  # refused before anything was opened
    assert paradis([*argv, "--metrics-listen", "no-port"]) == 1
    assert "--metrics-listen expects HOST:PORT" in capsys.readouterr().err


# --- bridge -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bridge_exports_node_and_board_families(bundle4, images, tmp_path, wait_for):
    from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
    from firmware_bridge.emulator import EmulatorServer
    from firmware_bridge.fault_proxy import FaultProxy

    n = 6
    ready = tmp_path / "bridge.metrics"
    with EmulatorServer(BoardEmulator(BoardConfig(board_id="mcu-m", max_payload=256)), "pty") as board, \
            FaultProxy(board.url) as line:
        bridge = Daemon(BridgeProcess(tmp_path / "bridge", line.url, node_id="bridge0", capacity=0.25,
                                      extra_args=("--ping-interval", "0.2", *_metrics_args(ready))), ready)
        bridge.proc.start(60)
        try:
            bridge.started()
            with Coordinator([bridge.address]) as c:
                c.deploy(bundle4)
                assert c.select("1x0.25").addresses == (bridge.address,)
                c.infer(images[:n])
            s = scrape(bridge.metrics)
            assert s.value("paradis_node_requests_total", method="Run", code="OK") == n
            assert s.value("paradis_node_run_seconds_count", plan="1x0.25", role="0") == n
            assert s.value("paradis_node_build_info", kind="serial-bridge", node_id="bridge0") == 1
            assert s.exposed() == {f for f in FAMILIES if f.startswith(("paradis_node_", "paradis_serial_", "paradis_board_"))}
            assert s.value("paradis_board_state", state="ok") == 1
            assert sum(s.value("paradis_board_state", state=st) for st in BOARD_STATES) == 1
            # the line's counters are the ones GetInfo reports
            with grpc.insecure_channel(bridge.address) as ch:
                info = mesh_pb2_grpc.NodeStub(ch).GetInfo(mesh_pb2.GetInfoRequest(), timeout=10).board
            s = scrape(bridge.metrics)
            for sample, value in (("paradis_serial_frames_retransmitted_total", info.frames_retransmitted),
                                  ("paradis_serial_crc_errors_total", info.crc_errors),
                                  ("paradis_serial_bad_frames_total", info.bad_frames),
                                  ("paradis_serial_naks_total", info.naks),
                                  ("paradis_serial_port_reopens_total", info.port_reopens),
                                  ("paradis_board_reflashes_total", info.reflashes)):
                assert s.value(sample) == value, sample
            assert s.value("paradis_board_last_answer_timestamp_seconds") >= info.last_answer_unix_ms / 1000

            # the line is cut: the state and health show it, and the failed probes and retransmissions count
            line.sever()
            wait_for(lambda: scrape(bridge.metrics).value("paradis_board_state", state="unresponsive") == 1, 5,
                     "paradis_board_state{state=unresponsive} to be 1")
            s = scrape(bridge.metrics)
            assert s.value("paradis_board_state", state="ok") == 0 and s.value("paradis_node_serving") == 0
            assert s.value("paradis_board_probes_failed_total") >= 1
            assert s.value("paradis_serial_frames_retransmitted_total") > info.frames_retransmitted
            line.restore()
            wait_for(lambda: scrape(bridge.metrics).value("paradis_board_state", state="ok") == 1, 10,
                     "paradis_board_state{state=ok} to be 1 again")
            wait_for(lambda: scrape(bridge.metrics).value("paradis_node_serving") == 1, 5, "paradis_node_serving 1")
        finally:
            assert bridge.proc.stop() == 0


# --- mesh serve ---------------------------------------------------------------------------------------------
class ServeProcess:
    """`paradis mesh serve` on 127.0.0.1 port 0 with a metrics endpoint (ready files give both ports)."""

    def __init__(self, workdir: Path, *argv: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready, self.metrics_ready = workdir / "serve.ready", workdir / "serve.metrics"
        self.log_path = workdir / "serve.log"
        self.argv = ["--listen", "127.0.0.1:0", "--ready-file", str(self.ready), *_metrics_args(self.metrics_ready),
                     *argv]
        self.proc: subprocess.Popen | None = None

    def start(self, wait_for) -> tuple[str, str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(boot_command(("mesh", "serve"), self.argv, block_tensorflow=True),
                                         stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env)
        wait_for(lambda: self.ready.exists() or self.proc.poll() is not None, 120, "the server's ready file")
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
        return self.ready.read_text().strip(), _metrics_address(self.metrics_ready)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.mark.slow
def test_mesh_serve_exports_coordinator_families(nodes, bundle_sync, images, tmp_path, wait_for):
    calls, per_call = 4, 5
    server = ServeProcess(tmp_path / "server", "--nodes", ",".join(d.address for d in nodes), "--bundle",
                          str(bundle_sync), "--switch", PLAN)
    address, metrics = server.start(wait_for)
    try:
        with InferenceClient(address) as client:
            for k in range(calls):
                reply = client.call(images[k * per_call:(k + 1) * per_call])
                assert reply.plan == PLAN
            with pytest.raises(InferenceError) as e:
                client.call(np.zeros((2, 3), np.float32))  # not the model's input shape
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        placement = reply.nodes
        s = scrape(metrics)
    finally:
        assert server.stop() == 0
    samples = calls * per_call
    assert s.value("paradis_serve_requests_total", code="OK") == calls
    assert s.value("paradis_serve_requests_total", code="INVALID_ARGUMENT") == 1
    assert s.value("paradis_serve_requests_total") == calls + 1
    assert s.value("paradis_serve_request_seconds_count") == calls + 1
    assert s.value("paradis_serve_samples_total") == samples
    assert s.value("paradis_serve_serving") == 1
    assert s.value("paradis_coordinator_requests_total", plan=PLAN, outcome="ok") == samples
    assert s.value("paradis_coordinator_requests_total") == samples
    assert s.value("paradis_coordinator_request_seconds_count", plan=PLAN) == samples
    for role, node in enumerate(placement):
        assert s.value("paradis_coordinator_role_seconds_count", plan=PLAN, role=str(role)) == samples
        assert s.value("paradis_coordinator_role_calls_total", node=node, code="OK") == samples
        assert s.value("paradis_coordinator_node_up", node=node) == 1
    assert s.value("paradis_coordinator_role_calls_total") == samples * len(placement)
    assert s.value("paradis_coordinator_replans_total") == 1
    assert s.value("paradis_coordinator_nodes") == 2 and s.value("paradis_coordinator_nodes_up") == 2
    assert s.value("paradis_coordinator_suspected_total") == 0 and s.value("paradis_coordinator_retries_total") == 0
    (info,) = s.labels("paradis_coordinator_plan_info")
    assert info["plan"] == PLAN and all(node in info["placement"] for node in placement), info
    # the bytes the coordinator sent (each role's input) and received (each role's partial output)
    plan = load_bundle(bundle_sync).plan(PLAN)
    from paradis_tf.mesh.program import model_input_spec

    sent = sum(_tensor_bytes(spec) for r in range(len(plan.devices)) if (spec := model_input_spec(plan, r)))
    received = sum(_tensor_bytes(plan.segment(ref).output) for ref in plan.fusion.outputs)
    assert s.value("paradis_coordinator_node_bytes_total", direction="sent") == samples * sent
    assert s.value("paradis_coordinator_node_bytes_total", direction="received") == samples * received
    assert s.exposed() == {f for f in FAMILIES if f.startswith(("paradis_coordinator_", "paradis_serve_"))}, \
        s.exposed() ^ {f for f in FAMILIES if f.startswith(("paradis_coordinator_", "paradis_serve_"))}


# --- mesh status --watch --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mesh_status_watch_redraws_until_ctrl_c(nodes):
    master, slave = pty.openpty()  # a real terminal: the table is cleared and redrawn in place
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys\nfrom paradis_tf.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "mesh", "status", "--watch", "0.2", "--nodes",
                             ",".join(d.address for d in nodes)], stdout=slave, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while out.count(b"\x1b[H\x1b[2J") < 3 and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                out += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        proc.stderr.close()
    text = out.decode(errors="replace")
    frames = text.split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 3, text[-2000:]
    for frame in frames[:2]:
        assert "every 0.2 s, Ctrl-C to stop" in frame
        assert all(d.address in frame for d in nodes) and frame.count(" yes ") == 2, frame


# --- the dashboard --------------------------------------------------------------------------------------------
def test_grafana_dashboard_names_only_exported_families():
    dashboard = json.loads((ROOT / "tools" / "grafana_dashboard.json").read_text())
    variables = dashboard["templating"]["list"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in variables), variables
    exported = set(FAMILIES)
    histograms = {f for f in FAMILIES if f.endswith("_seconds")}
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) >= 8
    named = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\bparadis_[a-z0-9_]+", target["expr"]):
                family = re.sub(r"_(bucket|count|sum)$", "", name) if name.endswith(("_bucket", "_count", "_sum")) else name
                assert family in exported, f"panel {panel['title']!r}: {name} is not exported"
                if family != name:
                    assert family in histograms, f"panel {panel['title']!r}: {name} of no histogram"
                named.add(family)
            if "histogram_quantile" in target["expr"]:
                assert "_bucket" in target["expr"] and "le" in target["expr"], target["expr"]
    # the panels the dashboard promises
    for family in ("paradis_coordinator_requests_total", "paradis_serve_requests_total",
                   "paradis_coordinator_request_seconds", "paradis_coordinator_role_seconds",
                   "paradis_node_run_seconds", "paradis_coordinator_replans_total",
                   "paradis_coordinator_suspected_total", "paradis_coordinator_readmitted_total",
                   "paradis_coordinator_nodes_up", "paradis_serial_crc_errors_total",
                   "paradis_serial_frames_retransmitted_total", "paradis_board_state"):
        assert family in named, family
