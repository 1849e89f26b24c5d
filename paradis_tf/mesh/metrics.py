"""Prometheus metrics of the node daemon, the bridge and `paradis mesh serve` (``--metrics-listen HOST:PORT``).

Every process keeps its families in its own `prometheus_client.CollectorRegistry`
(never the library's global one) and serves them on its own threads
(`MetricsServer`): a scrape never waits for the gRPC event loop, and a slow or
hostile client never holds it (the TLS handshake and the request each have a
timeout, connections are capped, a failing scrape is answered 500 and logged).

- `NodeMetrics`: a node daemon's or bridge's families. RPCs are counted once,
  by a gRPC server interceptor (`NodeMetrics.interceptor`) that sees every
  handler's status code; exchanges and bytes are read at scrape time from the
  counters GetInfo reports, so nothing is counted twice.
- `BoardCollector`: a bridge's serial line and board state, read at scrape
  time from its `BoardStatus` (GetInfo's ``board``).
- `CoordinatorMetrics`: a `CoordinatorObserver` for a long-running
  coordinator; `ServeMetrics` adds the ``Infer`` RPC of `paradis mesh serve`.

Names follow Prometheus conventions: ``paradis_<component>_<what>_total`` for
counters, ``_seconds`` histograms, ``_bytes_total``, ``_info`` gauges of value
1 whose labels carry the facts. The families and labels are listed in
docs/MESH.md ("Monitoring").

Security (`check_metrics_listen`): with the process's mutual TLS the endpoint
serves HTTPS and requires a client certificate of the fleet CA (any role: a
Prometheus server gets an ``observer`` certificate); without TLS it listens on
loopback only, unless ``insecure``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import socketserver
import ssl
import threading
import time
from typing import Callable, Iterable, Protocol, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from paradis_tf import __version__
from paradis_tf.mesh import security
from paradis_tf.mesh._proto import mesh_pb2
from paradis_tf.mesh.coordinator import CoordinatorObserver
from paradis_tf.mesh.errors import MeshError

__all__ = ["MetricsServer", "check_metrics_listen", "NodeMetrics", "BoardCollector", "CoordinatorMetrics",
           "ServeMetrics", "LATENCY_BUCKETS_S", "BOARD_STATES", "outcome", "FAMILIES", "NodeView"]

log = logging.getLogger("paradis.metrics")

#: histogram buckets of every latency family, seconds: 0.5 ms .. 10 s
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: a bridge's board states (`BoardStatus.state`); `paradis_board_state` has one series per state
BOARD_STATES = ("ok", "unresponsive", "reflashing", "failed")
#: the gRPC methods of `paradis.mesh.v1.Node` that `paradis_node_requests_total` counts
NODE_SERVICE = "/paradis.mesh.v1.Node/"

# Status codes by which a server refuses a request deliberately (the request, the caller or the moment is wrong),
# as opposed to failing at it (INTERNAL, UNKNOWN, CANCELLED, DEADLINE_EXCEEDED, ...).
_REFUSALS = frozenset({"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED",
                       "FAILED_PRECONDITION", "NOT_FOUND", "ALREADY_EXISTS", "OUT_OF_RANGE", "UNAVAILABLE"})

# The endpoint's own limits: a client may take this long for the TLS handshake and for its request, and this
# many connections are served at once (more are closed at once).
_HANDSHAKE_TIMEOUT_S = 5.0
_REQUEST_TIMEOUT_S = 10.0
_MAX_CONNECTIONS = 16

#: every family this module exports (name as exposed, without a histogram's _bucket/_sum/_count), for docs and tests
FAMILIES: dict[str, str] = {}


def _family(name: str, doc: str) -> str:
    FAMILIES[name] = doc
    return name


def outcome(code: str) -> str:
    """``ok``, ``refused`` (a deliberate refusal: bad input, the caller's role, a limit, not now) or ``failed``."""
    if code == "OK":
        return "ok"
    return "refused" if code in _REFUSALS else "failed"


# --- the endpoint -------------------------------------------------------------------------------------------------
def check_metrics_listen(listen: str, tls: "security.TlsConfig | None", insecure: bool = False) -> bool:
    """Checks ``--metrics-listen HOST:PORT``: its format, and plaintext only on loopback unless ``insecure``.

    Returns:
        True when the endpoint will serve plaintext off loopback (``insecure``): the daemon warns.

    Raises:
        MeshError: not ``HOST:PORT``.
        PlaintextRefused: plaintext on a non-loopback address without ``insecure`` (exit code 2).
    """
    _split(listen)
    if tls is not None or security.is_loopback(listen.rpartition(":")[0]):
        return False
    if not insecure:
        raise security.PlaintextRefused(
            f"refusing to serve metrics in plaintext on --metrics-listen {listen}, an address other hosts can reach: "
            "anyone on that network could read the line's request rates, plans and node addresses (give "
            "--tls-ca/--tls-cert/--tls-key: the endpoint then serves HTTPS to clients with a certificate of the fleet "
            "CA; or --insecure to serve plaintext anyway; or listen on 127.0.0.1)"
        )
    return True


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise MeshError(f"--metrics-listen expects HOST:PORT (port 0 picks a free one); received {listen!r}")
    return host.strip("[]"), int(port)


class _QuietHandler(WSGIRequestHandler):
    timeout = _REQUEST_TIMEOUT_S  # a client that sends nothing holds its thread at most this long

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server with a thread per connection, TLS done in that thread, and a cap on connections."""

    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, address, family: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        super().__init__(address, _QuietHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn): a slow resolver would hold the start
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        self.setup_environ()

    def verify_request(self, request, client_address) -> bool:
        return self._slots.acquire(blocking=False)

    def process_request_thread(self, request, client_address) -> None:
        try:
            if self.ssl_context is not None:
                request.settimeout(_HANDSHAKE_TIMEOUT_S)
                request = self.ssl_context.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except (OSError, ssl.SSLError) as e:  # a client without a fleet certificate, a dropped connection
            log.debug("metrics: connection from %s ended: %s", client_address[0], e)
        except Exception:  # noqa: BLE001 - a scrape never takes the daemon down
            log.exception("metrics: serving %s failed", client_address[0])
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.debug("metrics: request from %s failed", client_address[0], exc_info=True)


class MetricsServer:
    """Serves one registry's families over HTTP (``GET /metrics``), or HTTPS with mutual TLS, on its own threads.

    Args:
        registry: what to serve.
        listen: ``HOST:PORT`` (port 0 picks a free one); checked by `check_metrics_listen`.
        tls: the process's certificate and fleet CA: serve HTTPS and require a client certificate of that CA.
        insecure: allow plaintext off loopback (warned once at start).
    """

    def __init__(self, registry: CollectorRegistry, listen: str, tls: "security.TlsConfig | None" = None,
                 insecure: bool = False) -> None:
        self.plaintext_off_loopback = check_metrics_listen(listen, tls, insecure)
        self.registry = registry
        self.listen = listen
        self.tls = tls
        self.address = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http(s)://HOST:PORT/metrics`` once started."""
        return f"{'https' if self.tls is not None else 'http'}://{self.address}/metrics"

    def start(self) -> str:
        """Binds and starts serving; returns the bound ``HOST:PORT``.

        Raises:
            OSError: the address cannot be bound, naming it.
            MeshError: a TLS file cannot be read.
        """
        host, port = _split(self.listen)
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
            server = _Server(sockaddr[:2], family)
        except OSError as e:
            raise OSError(f"cannot serve metrics on --metrics-listen {self.listen!r}: {e.strerror or e}") from None
        if self.tls is not None:
            self.tls.load()  # names an unreadable file
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_REQUIRED  # a client certificate of the fleet CA, any role
            try:
                ctx.load_verify_locations(cafile=str(self.tls.ca))
                ctx.load_cert_chain(certfile=str(self.tls.cert), keyfile=str(self.tls.key))
            except (OSError, ssl.SSLError) as e:
                server.server_close()
                raise MeshError(f"cannot serve metrics over TLS with {self.tls.cert} / {self.tls.key} and CA "
                                f"{self.tls.ca}: {e}") from None
            server.ssl_context = ctx
        server.set_app(make_wsgi_app(self.registry))
        self._server = server
        bound = server.server_address[1]
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="paradis-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on %s%s", self.url, " (client certificate of the fleet CA required)" if self.tls else "")
        if self.plaintext_off_loopback:
            log.warning("serving metrics in PLAINTEXT on %s (--insecure): anyone who reaches this address can read "
                        "them; use --tls-ca/--tls-cert/--tls-key", self.address)
        return self.address

    def close(self) -> None:
        """Stops serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


# --- node daemon and bridge ---------------------------------------------------------------------------------------
class NodeView(Protocol):
    """What `NodeMetrics` reads from a node servicer at scrape time (`paradis_tf.mesh.node.NodeServicer`)."""

    node_id: str
    kind: str
    counters: mesh_pb2.Counters

    @property
    def activation(self) -> mesh_pb2.Activation | None: ...


_REQUESTS = _family("paradis_node_requests_total", "Node RPCs handled, by method and gRPC status code (OK included)")
_RUN_SECONDS = _family("paradis_node_run_seconds", "Latency of Runs answered OK, by plan and role")
_EXCHANGES = _family("paradis_node_exchanges_total", "Feature maps pushed to peers (sent) and accepted from them (received)")
_EXCHANGE_BYTES = _family("paradis_node_exchange_bytes_total", "Tensor bytes of those feature maps, by direction")
_DEPLOYS = _family("paradis_node_deploys_total", "Deploy streams by outcome: ok, refused or failed")
_ACTIVATIONS = _family("paradis_node_activations_total", "Activate calls by outcome: ok, refused or failed")
_ACTIVE = _family("paradis_node_active_info", "The activation a node serves (value 1; absent when none)")
_BUILD = _family("paradis_node_build_info", "The node's software version, id, kind and backend (value 1)")
_SERVING = _family("paradis_node_serving", "1 while the node's health is SERVING, else 0")


class NodeMetrics:
    """The families of one node daemon or bridge, in their own registry.

    Args:
        node: the servicer (`NodeView`), read at scrape time.
        backend: the interpreter backend (a label of ``paradis_node_build_info``).
        collectors: more collectors to register (a bridge's `BoardCollector`).
    """

    def __init__(self, node: NodeView, backend: str = "", collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.node = node
        self.backend = backend
        r = self.registry
        self.requests = Counter(_REQUESTS.removesuffix("_total"), FAMILIES[_REQUESTS], ("method", "code"), registry=r)
        self.run_seconds = Histogram(_RUN_SECONDS, FAMILIES[_RUN_SECONDS], ("plan", "role"),
                                     buckets=LATENCY_BUCKETS_S, registry=r)
        self.deploys = Counter(_DEPLOYS.removesuffix("_total"), FAMILIES[_DEPLOYS], ("outcome",), registry=r)
        self.activations = Counter(_ACTIVATIONS.removesuffix("_total"), FAMILIES[_ACTIVATIONS], ("outcome",), registry=r)
        self.serving = Gauge(_SERVING, FAMILIES[_SERVING], registry=r)
        for o in ("ok", "refused", "failed"):  # every outcome exported from the start, at 0
            self.deploys.labels(o)
            self.activations.labels(o)
        r.register(_NodeCollector(self))
        ProcessCollector(registry=r)
        for c in collectors:
            r.register(c)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """A server interceptor that counts every `paradis.mesh.v1.Node` RPC with its status code."""
        return _NodeInterceptor(self)

    def set_serving(self, serving: bool) -> None:
        self.serving.set(1 if serving else 0)

    def observe(self, method: str, code: str, request, reply, seconds: float) -> None:
        """One RPC ended (called by the interceptor on the event loop; quick, never raises)."""
        try:
            self.requests.labels(method, code).inc()
            if method == "Run":
                if code == "OK" and reply is not None:
                    self.run_seconds.labels(request.plan, str(reply.role)).observe(seconds)
            elif method == "Deploy":
                self.deploys.labels(outcome(code)).inc()
            elif method == "Activate":
                self.activations.labels(outcome(code)).inc()
        except Exception:  # noqa: BLE001 - metrics never fail a call
            log.exception("metrics: could not count a %s call", method)


class _NodeCollector(Collector):
    """The node families read at scrape time: exchanges and bytes (GetInfo's counters), the activation, build info."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []  # collected at scrape time only

    def collect(self):
        node = self.metrics.node
        c = node.counters
        ex = CounterMetricFamily(_EXCHANGES.removesuffix("_total"), FAMILIES[_EXCHANGES], labels=("direction",))
        ex.add_metric(("sent",), c.exchanges_sent)
        ex.add_metric(("received",), c.exchanges_received)
        yield ex
        by = CounterMetricFamily(_EXCHANGE_BYTES.removesuffix("_total"), FAMILIES[_EXCHANGE_BYTES], labels=("direction",))
        by.add_metric(("sent",), c.exchange_bytes_sent)
        by.add_metric(("received",), c.exchange_bytes_received)
        yield by
        active = GaugeMetricFamily(_ACTIVE, FAMILIES[_ACTIVE], labels=("bundle", "version", "plan", "role"))
        a = node.activation
        if a is not None:
            active.add_metric((a.bundle, a.version, a.plan, str(a.role)), 1)
        yield active
        build = GaugeMetricFamily(_BUILD, FAMILIES[_BUILD], labels=("version", "node_id", "kind", "backend"))
        build.add_metric((__version__, node.node_id, node.kind, self.metrics.backend), 1)
        yield build


class _NodeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each Node handler once: its status code (OK, an abort's code, UNKNOWN for an uncaught exception,
    CANCELLED when the caller went away), the request and reply, and the time it took."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or not method.startswith(NODE_SERVICE):
            return handler
        name = method[len(NODE_SERVICE):]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(name, handler.unary_unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(name, handler.stream_unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # the Node service has no server-streaming method

    def _wrap(self, name: str, behavior):
        observe = self.metrics.observe

        async def wrapped(request, context):
            t0 = time.perf_counter()
            reply = None
            code = "UNKNOWN"
            try:
                reply = await behavior(request, context)
                set_code = context.code()
                code = "OK" if set_code is None else set_code.name
                return reply
            except BaseException as e:
                set_code = context.code()
                if set_code is not None:
                    code = set_code.name  # an abort
                elif isinstance(e, asyncio.CancelledError):
                    code = "CANCELLED"
                raise
            finally:
                observe(name, code, None if name == "Deploy" else request, reply, time.perf_counter() - t0)

        return wrapped


class BoardCollector(Collector):
    """A bridge's serial line and board, read at scrape time from its `BoardStatus` (GetInfo's ``board``).

    Args:
        status: returns the board's current `mesh_pb2.BoardStatus`.
    """

    def __init__(self, status: Callable[[], mesh_pb2.BoardStatus]) -> None:
        self.status = status

    def describe(self):
        return []

    def collect(self):
        s = self.status()
        for name, doc, value in (
            (_RETRANSMITS, FAMILIES[_RETRANSMITS], s.frames_retransmitted),
            (_BAD_FRAMES, FAMILIES[_BAD_FRAMES], s.bad_frames),
            (_CRC_ERRORS, FAMILIES[_CRC_ERRORS], s.crc_errors),
            (_NAKS, FAMILIES[_NAKS], s.naks),
            (_REOPENS, FAMILIES[_REOPENS], s.port_reopens),
            (_PROBES_FAILED, FAMILIES[_PROBES_FAILED], s.probes_failed),
            (_REFLASHES, FAMILIES[_REFLASHES], s.reflashes),
        ):
            yield CounterMetricFamily(name.removesuffix("_total"), doc, value=value)
        state = GaugeMetricFamily(_BOARD_STATE, FAMILIES[_BOARD_STATE], labels=("state",))
        for st in dict.fromkeys((*BOARD_STATES, s.state or "unknown")):
            state.add_metric((st,), 1 if st == (s.state or "unknown") else 0)
        yield state
        yield GaugeMetricFamily(_LAST_ANSWER, FAMILIES[_LAST_ANSWER], value=s.last_answer_unix_ms / 1000.0)


_RETRANSMITS = _family("paradis_serial_frames_retransmitted_total",
                       "Request frames sent to the board again (no answer, NAK or a damaged answer)")
_BAD_FRAMES = _family("paradis_serial_bad_frames_total", "Damaged frames received from the board")
_CRC_ERRORS = _family("paradis_serial_crc_errors_total", "Of those, frames whose CRC-32 failed")
_NAKS = _family("paradis_serial_naks_total", "Frames the board received damaged (it answered NAK)")
_REOPENS = _family("paradis_serial_port_reopens_total", "Times the serial port was opened again after it failed")
_PROBES_FAILED = _family("paradis_board_probes_failed_total", "PINGs and HELLOs without a valid answer")
_REFLASHES = _family("paradis_board_reflashes_total", "Partitions flashed again after the board lost them")
_BOARD_STATE = _family("paradis_board_state", "1 for the board's current state (ok, unresponsive, reflashing, failed), "
                                              "0 for the others")
_LAST_ANSWER = _family("paradis_board_last_answer_timestamp_seconds", "Unix time the board last answered (0: never)")


# --- coordinator ---------------------------------------------------------------------------------------------------
_C_REQUESTS = _family("paradis_coordinator_requests_total",
                      "Requests (one sample each) by the plan that answered them (none: failed) and outcome")
_C_REQUEST_SECONDS = _family("paradis_coordinator_request_seconds", "Request latency, retries included, by plan")
_C_ROLE_SECONDS = _family("paradis_coordinator_role_seconds", "Round trip of role calls (Run) answered OK, by plan and role")
_C_ROLE_CALLS = _family("paradis_coordinator_role_calls_total",
                        "Role calls (Run) by node and code: OK, a gRPC status name, or STALLED (missed its stall timeout)")
_C_REPLANS = _family("paradis_coordinator_replans_total", "Placements activated (the first one included)")
_C_SUSPECTED = _family("paradis_coordinator_suspected_total", "Times a node missed its stall timeout and was suspected")
_C_READMITTED = _family("paradis_coordinator_readmitted_total", "Times a down node answered its health check again")
_C_MARKED_DOWN = _family("paradis_coordinator_marked_down_total",
                         "Times a node was marked down (suspected, unreachable, left the network)")
_C_NODES = _family("paradis_coordinator_nodes", "Nodes the coordinator knows")
_C_NODES_UP = _family("paradis_coordinator_nodes_up", "Of those, nodes it serves requests with (not marked down)")
_C_NODE_UP = _family("paradis_coordinator_node_up", "1 while a node is up, 0 while it is marked down")
_C_PLAN = _family("paradis_coordinator_plan_info", "The placement in use (value 1; absent when none)")
_C_BYTES = _family("paradis_coordinator_node_bytes_total",
                   "Tensor bytes sent to nodes (inputs) and received from them (partial outputs)")
_C_RETRIES = _family("paradis_coordinator_retries_total", "Request attempts retried after a failure")
_S_REQUESTS = _family("paradis_serve_requests_total", "Infer calls of `paradis mesh serve` by gRPC status code")
_S_SECONDS = _family("paradis_serve_request_seconds", "Infer call latency (every code), seconds")
_S_SAMPLES = _family("paradis_serve_samples_total", "Samples received in Infer calls answered OK")
_S_SERVING = _family("paradis_serve_serving", "1 while the server's health is SERVING (a plan fits the healthy nodes)")


class CoordinatorMetrics(CoordinatorObserver):
    """Prometheus families of a long-running `Coordinator` (pass it as ``Coordinator(..., observer=...)``).

    Call `attach` with the coordinator once it exists: its stats (bytes, retries) and placement are read at
    scrape time. Events arrive on the coordinator's thread; each one is a counter or histogram update.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.coordinator = None
        self._lock = threading.Lock()
        self._up: dict[str, bool] = {}
        self.requests = Counter(_C_REQUESTS.removesuffix("_total"), FAMILIES[_C_REQUESTS], ("plan", "outcome"), registry=r)
        self.request_seconds = Histogram(_C_REQUEST_SECONDS, FAMILIES[_C_REQUEST_SECONDS], ("plan",),
                                         buckets=LATENCY_BUCKETS_S, registry=r)
        self.role_seconds = Histogram(_C_ROLE_SECONDS, FAMILIES[_C_ROLE_SECONDS], ("plan", "role"),
                                      buckets=LATENCY_BUCKETS_S, registry=r)
        self.role_calls = Counter(_C_ROLE_CALLS.removesuffix("_total"), FAMILIES[_C_ROLE_CALLS], ("node", "code"),
                                  registry=r)
        self.replans = Counter(_C_REPLANS.removesuffix("_total"), FAMILIES[_C_REPLANS], registry=r)
        self.suspected_nodes = Counter(_C_SUSPECTED.removesuffix("_total"), FAMILIES[_C_SUSPECTED], ("node",), registry=r)
        self.readmitted_nodes = Counter(_C_READMITTED.removesuffix("_total"), FAMILIES[_C_READMITTED], ("node",),
                                        registry=r)
        self.marked_down_nodes = Counter(_C_MARKED_DOWN.removesuffix("_total"), FAMILIES[_C_MARKED_DOWN], ("node",),
                                         registry=r)
        r.register(_CoordinatorCollector(self))
        ProcessCollector(registry=r)

    def attach(self, coordinator) -> None:
        """The coordinator whose stats and placement are read at scrape time; its configured nodes count as up."""
        self.coordinator = coordinator
        with self._lock:
            for a in coordinator.addresses:
                self._up.setdefault(a, True)

    def nodes_checked(self, rows: Iterable[tuple[str, bool]]) -> None:
        """The nodes as a status check saw them (address, up): `paradis mesh serve` calls it after each check."""
        with self._lock:
            for address, up in rows:
                self._up[address] = bool(up)

    # CoordinatorObserver (the coordinator's thread; quick, never raise)
    def request_done(self, plan: str, seconds: float, ok: bool) -> None:
        try:
            plan = plan or "none"
            self.requests.labels(plan, "ok" if ok else "failed").inc()
            self.request_seconds.labels(plan).observe(seconds)
        except Exception:  # noqa: BLE001
            log.exception("metrics: request_done")

    def role_done(self, address: str, plan: str, role: int, seconds: float, code: str) -> None:
        try:
            self.role_calls.labels(address, code).inc()
            if code == "OK":
                self.role_seconds.labels(plan, str(role)).observe(seconds)
        except Exception:  # noqa: BLE001
            log.exception("metrics: role_done")

    def replanned(self, placement: str, plan: str) -> None:
        self.replans.inc()

    def suspected(self, address: str, why: str) -> None:
        self.suspected_nodes.labels(address).inc()

    def readmitted(self, address: str) -> None:
        self.readmitted_nodes.labels(address).inc()
        with self._lock:
            self._up[address] = True

    def marked_down(self, address: str, why: str) -> None:
        self.marked_down_nodes.labels(address).inc()
        with self._lock:
            self._up[address] = False


class _CoordinatorCollector(Collector):
    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.metrics
        with m._lock:
            up = dict(m._up)
        yield GaugeMetricFamily(_C_NODES, FAMILIES[_C_NODES], value=len(up))
        yield GaugeMetricFamily(_C_NODES_UP, FAMILIES[_C_NODES_UP], value=sum(up.values()))
        per = GaugeMetricFamily(_C_NODE_UP, FAMILIES[_C_NODE_UP], labels=("node",))
        for address, is_up in sorted(up.items()):
            per.add_metric((address,), 1 if is_up else 0)
        yield per
        c = m.coordinator
        plan = GaugeMetricFamily(_C_PLAN, FAMILIES[_C_PLAN], labels=("plan", "placement"))
        by = CounterMetricFamily(_C_BYTES.removesuffix("_total"), FAMILIES[_C_BYTES], labels=("direction",))
        retries = CounterMetricFamily(_C_RETRIES.removesuffix("_total"), FAMILIES[_C_RETRIES])
        if c is not None:
            placement = c.placement
            if placement is not None:
                plan.add_metric((placement.plan, str(placement)), 1)
            stats = c.stats
            by.add_metric(("sent",), stats.bytes_to_nodes)
            by.add_metric(("received",), stats.bytes_from_nodes)
            retries.add_metric((), stats.retries)
        yield plan
        yield by
        yield retries


class ServeMetrics(CoordinatorMetrics):
    """`CoordinatorMetrics` plus the ``Infer`` RPC and health of `paradis mesh serve`."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.serve_requests = Counter(_S_REQUESTS.removesuffix("_total"), FAMILIES[_S_REQUESTS], ("code",), registry=r)
        self.serve_seconds = Histogram(_S_SECONDS, FAMILIES[_S_SECONDS], buckets=LATENCY_BUCKETS_S, registry=r)
        self.serve_samples = Counter(_S_SAMPLES.removesuffix("_total"), FAMILIES[_S_SAMPLES], registry=r)
        self.serving = Gauge(_S_SERVING, FAMILIES[_S_SERVING], registry=r)

    def infer_done(self, code: str, seconds: float, samples: int = 0) -> None:
        """One Infer call ended with ``code`` ("OK" or a status name); ``samples`` it answered."""
        try:
            self.serve_requests.labels(code).inc()
            self.serve_seconds.observe(seconds)
            if samples:
                self.serve_samples.inc(samples)
        except Exception:  # noqa: BLE001
            log.exception("metrics: infer_done")

    def set_serving(self, serving: bool) -> None:
        self.serving.set(1 if serving else 0)
