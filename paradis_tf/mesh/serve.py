"""`paradis mesh serve`: a long-running coordinator that serves a line's inference over gRPC.

The plant's software calls ``paradis.mesh.v1.Inference/Infer`` with a float32
batch ``[N, *input_shape]`` and receives the fused outputs ``[N, ...]``. The
server owns a `Coordinator`: the nodes (by address or zeroconf), the plan
policy (``auto`` or a pinned plan, set at start), re-plans and retries. So an
application embeds neither the coordinator nor the bundle, and many
applications share one line.

Who may call, with mutual TLS (`INFERENCE_RPC_ROLES`): ``Infer`` runs the
model on the caller's inputs and takes the line's time, as a node's ``Run``
does, so it needs a ``coordinator`` certificate of the fleet CA;
``GetStatus`` and the health service take any certificate of the fleet (an
``observer`` dashboard). The server's own certificate works both ways: the
nodes see it as the coordinator (role ``coordinator``), and the server's
clients check it names the host they dial (issue it with ``--host``). Without
TLS the server listens on loopback only, unless ``insecure``
(`security.check_listen`).

Health (``grpc.health.v1``, for ``""`` and ``paradis.mesh.v1.Inference``):
SERVING while a plan fits the healthy nodes, NOT_SERVING with the reason in
``GetStatus`` when none does (checked every ``health_interval_s`` with the
coordinator's ``status()``, and at once after a request fails), and
NOT_SERVING from the start of a graceful stop (SIGTERM/SIGINT: calls in
flight get ``grace_s``).

Every request passes through `InferenceServicer.Infer` once, which returns
the reply or aborts with one status code (never UNKNOWN): the one place to
count and time requests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from typing import Callable

import grpc
import numpy as np

from paradis_tf.bundle import BundleError
from paradis_tf.mesh import limits, security, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.coordinator import AUTO, Coordinator, NodeStatus
from paradis_tf.mesh.errors import MeshError, NoPlanFitsError, RequestFailedError, TensorError
from paradis_tf.mesh.metrics import MetricsServer, ServeMetrics, check_metrics_listen
from paradis_tf.mesh.placement import NodeCandidate, choose_placement

__all__ = ["ServeConfig", "InferenceServicer", "InferenceRefused", "InferenceClient", "InferenceError", "serve",
           "run_server", "INFERENCE_RPC_ROLES", "HEALTH_SERVICE", "DEFAULT_MAX_BATCH", "DEFAULT_REQUEST_TIMEOUT_S"]

log = logging.getLogger("paradis.serve")

#: the health service name of a serving coordinator (besides "")
HEALTH_SERVICE = "paradis.mesh.v1.Inference"
#: which certificate roles may call each RPC of `paradis.mesh.v1.Inference` (health: any fleet certificate)
INFERENCE_RPC_ROLES: dict[str, tuple[str, ...]] = {
    "Infer": ("coordinator",),
    "GetStatus": security.ROLES,
}
DEFAULT_MAX_BATCH = 256
DEFAULT_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServeConfig:
    """How the server serves (the nodes and the bundle are the `Coordinator`'s).

    Args:
        switch: ``"auto"`` (the best plan that fits the healthy nodes,
            re-chosen as nodes fail and return) or a plan name, pinned
            (`Coordinator.select`).
        max_batch: the largest N one Infer may carry.
        request_timeout_s: the deadline of an Infer call whose caller set
            none (a caller's own deadline is honoured, longer or shorter).
        health_interval_s: how often the nodes are checked for health.
        tls: mutual TLS: this server's certificate (role ``coordinator``,
            naming its host) and the fleet CA; used toward clients and nodes.
        insecure: serve plaintext on a non-loopback address (refused
            otherwise); warns at start and every ``insecure_warning_interval_s``.
        grace_s: how long calls in flight may finish after SIGTERM.
        metrics_listen: ``HOST:PORT`` of the Prometheus endpoint ("": none;
            `paradis_tf.mesh.metrics`): HTTPS with ``tls``, else loopback
            unless ``insecure``.
    """

    switch: str = AUTO
    max_batch: int = DEFAULT_MAX_BATCH
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    health_interval_s: float = 1.0
    tls: "security.TlsConfig | None" = None
    insecure: bool = False
    insecure_warning_interval_s: float = security.INSECURE_WARNING_INTERVAL_S
    grace_s: float = 5.0
    metrics_listen: str = ""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise MeshError(f"max_batch (--max-batch) must be at least 1; received {self.max_batch}")
        for name in ("request_timeout_s", "health_interval_s", "grace_s"):
            if not getattr(self, name) > 0:
                raise MeshError(f"{name} must be a positive number of seconds; received {getattr(self, name)!r}")


class InferenceRefused(MeshError):
    """An Infer or GetStatus call the server answers with ``code`` (not OK) and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> InferenceRefused:
    return InferenceRefused(grpc.StatusCode.INVALID_ARGUMENT, message)


def _unavailable(message: str) -> InferenceRefused:
    return InferenceRefused(grpc.StatusCode.UNAVAILABLE, message)


class InferenceServicer(mesh_pb2_grpc.InferenceServicer):
    """``paradis.mesh.v1.Inference`` over one `Coordinator` (selected by `refresh`).

    Args:
        coordinator: the line's coordinator (its nodes, bundle and TLS).
        config: the serving options.
        metrics: counts every Infer call by status code, and the health and nodes of each check.
    """

    def __init__(self, coordinator: Coordinator, config: ServeConfig, metrics: ServeMetrics | None = None) -> None:
        self.coordinator = coordinator
        self.config = config
        self.metrics = metrics
        #: whether a plan fits the healthy nodes (what health says)
        self.serving = False
        #: why not serving ("" when serving)
        self.reason = "starting: no plan selected yet"
        self.selected = False
        self.stopping = False
        self._nodes: list[NodeStatus] = []
        self._checked_unix_ms = 0
        self._health = None  # grpc_health's HealthServicer, set by `serve`
        self._check_lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # --- the request path -----------------------------------------------------------
    async def Infer(self, request: mesh_pb2.InferRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.InferReply:
        """Every Infer call passes here once: a reply, or an abort with one status code (never UNKNOWN)."""
        t0 = time.perf_counter()
        code, samples = "CANCELLED", 0  # unless it ends otherwise: the caller went away
        try:
            try:
                self._authorize(context, "Infer")
                reply = await self.infer(request, context.time_remaining())
            except InferenceRefused as e:
                code = e.code.name
                await context.abort(e.code, e.message)
            except Exception as e:  # a bug: say so, as INTERNAL, and keep serving
                code = "INTERNAL"
                log.exception("Infer failed unexpectedly")
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in the server: {type(e).__name__}: {e}")
            code, samples = "OK", int(reply.outputs.shape[0]) if reply.outputs.shape else 0
            return reply
        finally:
            if self.metrics is not None:
                self.metrics.infer_done(code, time.perf_counter() - t0, samples)

    async def infer(self, request: mesh_pb2.InferRequest, time_remaining: float | None = None) -> mesh_pb2.InferReply:
        """Checks a request, runs its samples through the coordinator and fuses the reply.

        Args:
            request: the call's message.
            time_remaining: seconds left of the caller's deadline (None: none
                set; `ServeConfig.request_timeout_s` applies).

        Raises:
            InferenceRefused: the status code and message to answer with.
        """
        t0 = time.perf_counter()
        try:
            rid = limits.check_text(request.request_id, "InferRequest.request_id", limits.MAX_ID_CHARS)
        except limits.FieldError as e:
            raise _invalid(str(e)) from None
        x = self._decode(request)
        if self.stopping:
            raise _unavailable("the server is shutting down (SIGTERM); send the request to another server or retry "
                               "once it is back")
        if not self.selected:
            raise _unavailable(f"no plan is active yet: {self.reason}")
        c = self.coordinator
        budget = self.config.request_timeout_s if time_remaining is None else time_remaining
        replans, before = c.stats.replans, c.placement
        futures = []
        try:
            if budget <= 0:  # the caller's deadline has passed already: nothing is sent to the nodes
                raise TimeoutError
            futures = [c.submit(sample) for sample in x]
            rows = await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), budget)
        except (asyncio.TimeoutError, TimeoutError):
            done = sum(f.done() and not f.cancelled() and f.exception() is None for f in futures)
            raise InferenceRefused(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"the deadline ({budget:.3g} s) passed with {done} of {len(x)} samples answered; "
                                   "the others were cancelled (give the call a longer deadline, or send fewer samples)"
                                   ) from None
        except RequestFailedError as e:
            self._wake.set()  # check the nodes now: health may have changed
            raise _unavailable(str(e)) from None
        except MeshError as e:
            raise _unavailable(str(e)) from None
        finally:
            for f in futures:
                f.cancel()  # no-op for the answered ones
        after = c.placement
        placement = after or before
        reply = mesh_pb2.InferReply(
            request_id=rid, plan=placement.plan if placement else "", nodes=placement.addresses if placement else (),
            replanned=c.stats.replans != replans or after != before,
        )
        tensors.encode(np.stack(rows).astype(np.float32, copy=False), out=reply.outputs)
        reply.server_ms = (time.perf_counter() - t0) * 1e3
        return reply

    def _decode(self, request: mesh_pb2.InferRequest) -> np.ndarray:
        """The batch of a request, checked: dtype, shape, batch size, byte length, finite values."""
        bundle = self.coordinator.bundle
        if bundle is None:
            raise _unavailable(f"no bundle manifest yet: {self.reason}")
        shape = tuple(bundle.model.input_shape)
        want = f"[N, {', '.join(map(str, shape))}]"
        if not request.HasField("inputs"):
            raise _invalid(f"InferRequest.inputs is missing: send a float32 tensor of shape {want}")
        t = request.inputs
        if t.dtype != mesh_pb2.DTYPE_FLOAT32:
            raise _invalid(f"InferRequest.inputs.dtype is {tensors.dtype_name(t.dtype)}; send float32 values, "
                           "preprocessed as the bundle's manifest says")
        if t.scale != 0 or t.zero_point != 0:
            raise _invalid(f"InferRequest.inputs.scale/zero_point are {t.scale:g}/{t.zero_point}; float32 inputs are "
                           "not quantized: leave both 0")
        got = [int(d) for d in t.shape]
        if len(got) != len(shape) + 1 or tuple(got[1:]) != shape:
            raise _invalid(f"InferRequest.inputs.shape is {got}; expected {want} (N samples of the model's input "
                           "shape)")
        if got[0] < 1:
            raise _invalid(f"InferRequest.inputs.shape is {got}: the batch is empty; send at least one sample")
        if got[0] > self.config.max_batch:
            raise _invalid(f"InferRequest.inputs.shape[0] is {got[0]}; this server takes at most "
                           f"{self.config.max_batch} samples per Infer (--max-batch): split the batch")
        try:
            return tensors.decode(t, what="InferRequest.inputs", dtype="float32")
        except TensorError as e:
            message = str(e)
            if len(t.data) == 4 * int(np.prod(got)):  # the values, not the length: name the samples
                a = np.frombuffer(t.data, dtype="<f4").reshape(got[0], -1)
                bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
                message += f" (samples {bad[:10].tolist()}{' ...' if bad.size > 10 else ''})"
            raise _invalid(message) from None

    def _authorize(self, context: grpc.aio.ServicerContext, rpc: str) -> None:
        """Refuses a caller whose certificate role `INFERENCE_RPC_ROLES` does not allow for ``rpc``."""
        if self.config.tls is None:
            return
        ident = security.caller_identity(context)
        allowed = INFERENCE_RPC_ROLES[rpc]
        if ident is None or ident.role not in allowed:
            who = "a caller without a certificate" if ident is None else f"the certificate {ident}"
            raise InferenceRefused(grpc.StatusCode.PERMISSION_DENIED,
                                   f"{rpc} needs a {' or '.join(allowed)} certificate of this fleet; {who} may not "
                                   "call it "
                                   f"(issue one with `paradis certs issue DIR --name N --role {allowed[0]}`)")

    # --- status ---------------------------------------------------------------------
    async def GetStatus(self, request: mesh_pb2.InferenceStatusRequest,
                        context: grpc.aio.ServicerContext) -> mesh_pb2.InferenceStatus:
        """The last check's view: no call to the nodes, so a dashboard adds no load to the line."""
        try:
            self._authorize(context, "GetStatus")
        except InferenceRefused as e:
            await context.abort(e.code, e.message)
        return self.status()

    def status(self) -> mesh_pb2.InferenceStatus:
        """What GetStatus answers: health, plan, and the nodes as the last `refresh` saw them."""
        c = self.coordinator
        placement = c.placement
        roles = {a: r for r, a in enumerate(placement.addresses)} if placement else {}
        out = mesh_pb2.InferenceStatus(
            serving=self.serving, reason=self.reason, switch=self.config.switch,
            plan=placement.plan if placement and self.selected else "", max_batch=self.config.max_batch,
            checked_unix_ms=self._checked_unix_ms,
        )
        for n in self._nodes:
            out.nodes.add(address=n.address, node_id=n.info.node_id if n.info is not None else "", up=n.up,
                          role=roles.get(n.address, -1), error=n.error)
        if c.bundle is not None:
            out.bundle = c.bundle.model.name or ""
            out.input_shape.extend(c.bundle.model.input_shape)
            out.labels.extend(c.bundle.model.labels or ())
        return out

    # --- health ---------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Selects the plan if none is active yet, else checks that a plan fits the healthy nodes; sets health.

        Returns:
            Whether the server is serving.
        """
        async with self._check_lock:
            c = self.coordinator
            if not self.selected:
                try:
                    placement = await asyncio.to_thread(c.select, self.config.switch)
                except MeshError as e:  # NoPlanFitsError, no manifest from any node, an activation refused
                    await self._set_serving(False, f"no plan could be selected: {e}")
                else:
                    self.selected = True
                    log.info("plan selected: %s", placement)
            self._nodes = await asyncio.to_thread(c.status)
            self._checked_unix_ms = int(time.time() * 1e3)
            if self.metrics is not None:
                self.metrics.nodes_checked((n.address, n.up) for n in self._nodes)
            if self.selected:
                why = self._why_not_serving(self._nodes)
                await self._set_serving(why is None, why or "")
            return self.serving

    def _why_not_serving(self, rows: list[NodeStatus]) -> str | None:
        """Why no plan fits the nodes that are up (None: one fits), as the coordinator would choose."""
        bundle = self.coordinator.bundle
        if bundle is None:
            return "no bundle manifest"
        nodes = [NodeCandidate.from_info(r.address, r.info) for r in rows if r.up and r.info is not None]
        try:
            choose_placement(bundle.plans, nodes, plan=None if self.config.switch == AUTO else self.config.switch)
        except NoPlanFitsError as e:
            down = "; ".join(f"{r.address}: {r.error or 'down'}" for r in rows if not r.up)
            return f"{e}" + (f" (down: {down})" if down else "")
        return None

    async def _set_serving(self, serving: bool, reason: str) -> None:
        changed = serving != self.serving or reason != self.reason
        self.serving, self.reason = serving, reason
        if self.metrics is not None and not self.stopping:
            self.metrics.set_serving(serving)
        if not changed:
            return
        if serving:
            log.info("serving (plan %s)", self.coordinator.placement)
        else:
            log.warning("not serving: %s", reason)
        if self._health is not None and not self.stopping:
            from grpc_health.v1 import health_pb2

            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", HEALTH_SERVICE):
                await self._health.set(name, status)

    async def watch(self) -> None:
        """Re-checks every ``health_interval_s``, or at once after a failed request."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.health_interval_s)
            except (asyncio.TimeoutError, TimeoutError):
                pass
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher outlives any one failed check
                log.exception("health check of the line failed")


async def serve(
    coordinator: Coordinator,
    listen: str,
    config: ServeConfig,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    metrics_ready: Callable[[str], None] | None = None,
) -> None:
    """Serves ``paradis.mesh.v1.Inference`` over ``coordinator`` on ``listen`` (``HOST:PORT``; port 0 picks one).

    With ``config.metrics_listen`` it serves Prometheus metrics there: the
    coordinator's observer, a `ServeMetrics` (``Coordinator(...,
    observer=ServeMetrics())``), which also counts the Infer calls; it calls
    ``metrics_ready("host:port")`` with the bound address before ``ready``.

    Selects the plan (``config.switch``) before calling ``ready("host:port")``;
    when none fits yet, serves NOT_SERVING and keeps trying. Stops gracefully
    (health NOT_SERVING, calls in flight finished within ``config.grace_s``) on
    SIGTERM/SIGINT or when ``stop`` is set. The caller closes ``coordinator``.

    Raises:
        PlaintextRefused: plaintext on a non-loopback address without ``config.insecure``.
        NoPlanFitsError: the pinned plan is not in the bundle.
        MeshError: ``config.metrics_listen`` with a coordinator whose observer is no `ServeMetrics`.
        OSError: the address cannot be bound.
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    host, port = _split_listen(listen)
    plaintext_off_loopback = security.check_listen(listen, config.tls, config.insecure)
    endpoint = metrics = None
    if config.metrics_listen:
        check_metrics_listen(config.metrics_listen, config.tls, config.insecure)
        metrics = coordinator.observer
        if not isinstance(metrics, ServeMetrics):
            raise MeshError(f"metrics_listen {config.metrics_listen!r} needs a coordinator whose observer is a "
                            f"ServeMetrics (Coordinator(..., observer=ServeMetrics())); it has {type(metrics).__name__}")
        metrics.attach(coordinator)
    servicer = InferenceServicer(coordinator, config, metrics)
    server = grpc.aio.server(options=limits.SERVER_OPTIONS)
    mesh_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", HEALTH_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    servicer._health = health_servicer
    bound = security.add_port(server, listen, config.tls)
    if bound == 0:
        raise OSError(f"cannot listen on {listen!r} (address in use or not available)")
    await servicer.refresh()
    if not servicer.selected and config.switch != AUTO and coordinator.bundle is not None:
        try:
            coordinator.bundle.plan(config.switch)
        except BundleError:
            raise NoPlanFitsError(f"--switch {config.switch!r} is not a plan of the bundle (it has "
                                  f"{', '.join(coordinator.bundle.plans)}); name one of them, or 'auto'") from None
    if metrics is not None:  # its own threads: a scrape never waits for this event loop
        endpoint = MetricsServer(metrics.registry, config.metrics_listen, config.tls, config.insecure)
        endpoint.start()
    await server.start()
    address = f"{host}:{bound}"
    log.info("serving inference on %s (%s)", address,
             "serving" if servicer.serving else f"not serving: {servicer.reason}")
    warner = watcher = None
    if plaintext_off_loopback:
        warner = asyncio.create_task(_warn_plaintext(address, config.insecure_warning_interval_s))
    watcher = asyncio.create_task(servicer.watch())
    if endpoint is not None and metrics_ready is not None:
        metrics_ready(endpoint.address)
    if ready is not None:
        ready(address)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    try:
        await stop.wait()
    finally:
        log.info("inference server on %s shutting down", address)
        servicer.stopping = True
        if metrics is not None:
            metrics.set_serving(False)
        await health_servicer.enter_graceful_shutdown()
        for task in (warner, watcher):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (warner, watcher) if t is not None), return_exceptions=True)
        await server.stop(config.grace_s)
        if endpoint is not None:
            await asyncio.to_thread(endpoint.close)


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise MeshError(f"--listen expects HOST:PORT (port 0 picks a free one); received {listen!r}")
    return host, int(port)


async def _warn_plaintext(address: str, interval_s: float) -> None:
    while True:
        log.warning("serving inference in PLAINTEXT on %s (--insecure): anyone who reaches this address can run the "
                    "line's model and read its inputs and outputs; use --tls-ca/--tls-cert/--tls-key", address)
        await asyncio.sleep(interval_s)


def run_server(
    coordinator_factory: Callable[[], Coordinator],
    listen: str,
    config: ServeConfig,
    ready: Callable[[str], None] | None = None,
    metrics_ready: Callable[[str], None] | None = None,
) -> int:
    """Blocking entry point of `paradis mesh serve`.

    Checks ``listen`` and ``config.metrics_listen`` (format, and plaintext
    off loopback) before ``coordinator_factory`` contacts any node; closes
    the coordinator on exit. With ``config.metrics_listen`` the factory gives
    the coordinator a `ServeMetrics` observer (`serve`).
    """
    _split_listen(listen)
    security.check_listen(listen, config.tls, config.insecure)
    if config.metrics_listen:
        check_metrics_listen(config.metrics_listen, config.tls, config.insecure)
    coordinator = coordinator_factory()
    try:
        asyncio.run(serve(coordinator, listen, config, ready=ready, metrics_ready=metrics_ready))
    finally:
        coordinator.close()
    return 0


# --- client -------------------------------------------------------------------------------
class InferenceError(MeshError):
    """An Infer or GetStatus call answered with a status code (kept in ``code`` and ``details``)."""

    def __init__(self, address: str, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"inference server {address}: {method} failed: {code.name}: {details}")
        self.address = address
        self.method = method
        self.code = code
        self.details = details


class InferenceClient:
    """A blocking client of a serving coordinator (`paradis mesh serve`).

    Args:
        address: the server's ``HOST:PORT``.
        tls: mutual TLS (a ``coordinator`` certificate of the fleet CA for
            Infer; any fleet certificate for `status`); None: plaintext.
        timeout: the deadline of each call in seconds.

    Example:
        >>> with InferenceClient("line3:50100", tls=TlsConfig("ca.pem", "app.pem", "app.key")) as client:
        ...     logits = client.infer(images)        # float32 [N, H, W, C] -> [N, classes]
    """

    def __init__(self, address: str, tls: "security.TlsConfig | None" = None,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT_S) -> None:
        self.address = address
        self.timeout = float(timeout)
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=limits.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(address, tls.channel_credentials(), options=limits.CHANNEL_OPTIONS)
        self._stub = mesh_pb2_grpc.InferenceStub(self._channel)

    def call(self, x, request_id: str = "", timeout: float | None = None) -> mesh_pb2.InferReply:
        """One Infer call with a batch ``x`` (float32 ``[N, *input_shape]``); returns the whole reply.

        Raises:
            InferenceError: the server answered with a status code.
        """
        request = mesh_pb2.InferRequest(request_id=request_id)
        tensors.encode(np.asarray(x, dtype=np.float32), out=request.inputs)
        try:
            return self._stub.Infer(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise InferenceError(self.address, "Infer", e.code(), e.details() or "") from None

    def infer(self, x, timeout: float | None = None) -> np.ndarray:
        """The fused outputs of a batch ``x`` (float32 ``[N, *input_shape]``), e.g. logits ``[N, classes]``."""
        return tensors.decode(self.call(x, timeout=timeout).outputs, what="InferReply.outputs", dtype="float32")

    def status(self, timeout: float | None = None) -> mesh_pb2.InferenceStatus:
        """The server's plan, nodes and input shape (GetStatus)."""
        try:
            return self._stub.GetStatus(mesh_pb2.InferenceStatusRequest(),
                                        timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise InferenceError(self.address, "GetStatus", e.code(), e.details() or "") from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "InferenceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
