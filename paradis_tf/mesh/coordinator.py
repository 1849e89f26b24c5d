"""The coordinator: deploys a bundle to node daemons, picks a plan for the
healthy nodes, serves inference across them and re-plans when a node fails
or comes back.

All gRPC I/O runs on one asyncio loop in a background thread that the
coordinator owns, so the blocking API (`infer`, `deploy`, `select`) and the
async API (`infer_async`, `submit`) can be used from any thread or loop.

Failure handling: a Run call that fails with UNAVAILABLE or DEADLINE_EXCEEDED
marks its node down; the coordinator re-plans on the remaining nodes and
retries the request (``retries`` times, default once). A node that stalls
(a hung process, a SIGSTOP, a cable pulled without a reset) is found the same
way without waiting for the request's deadline: every role call gets a
timeout from that node's recent round trips for the role (`StallPolicy`:
a high percentile times a factor plus a margin, floored and capped); a call
that misses it gets its node health-checked, and a node that does not answer
that either is suspected (marked down, counted in ``stats.suspected``). A node that reports it
could not exchange a feature map with a peer (ABORTED + the peer's role in
trailing metadata) gets that peer probed rather than being blamed itself. A
background watcher probes down nodes; one that answers again is re-admitted
and the coordinator re-plans. Every request ends with logits or a
`RequestFailedError` that says why; none is dropped.

What a re-plan may choose depends on how the plan was selected:

- automatic (``select()`` or ``select("auto")``): the best plan that fits
  the healthy nodes (`paradis_tf.mesh.placement`), another switch of the same
  network when a node is lost (no retraining), and the best plan again when
  nodes come back;
- pinned (``select("2x0.5")``): that plan and no other. When a node is lost,
  the same plan is placed again on the healthy nodes if it fits them;
  otherwise requests fail with a `RequestFailedError` naming the plan, why it
  does not fit and which plans do, until enough nodes are back (the watcher
  then places the pinned plan again). ``select()`` itself never returns
  another plan: it raises `NoPlanFitsError` instead.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import itertools
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterable, Sequence

import grpc
import numpy as np

from paradis_tf.mesh import limits, security, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.errors import InputError
from paradis_tf.bundle import Bundle, Plan, SegmentRef, TensorSpec
from paradis_tf.bundle import load as load_bundle
from paradis_tf.mesh.errors import DeployError, MeshError, NodeError, NoPlanFitsError, RequestFailedError, TensorError
from paradis_tf.runtime.program import fuse
from paradis_tf.quant import QTensor, convert
from paradis_tf.mesh.placement import NodeCandidate, Objective, Placement, choose_by_objective, choose_placement, fastest_assignment
from paradis_tf.mesh.predict import Link, NodeModel, Prediction, predict_plan
from paradis_tf.mesh.program import model_input_spec
from paradis_tf.mesh.signing import SIGNATURE_FILE

__all__ = ["Coordinator", "CoordinatorObserver", "NodeStatus", "CoordinatorStats", "StallPolicy", "parse_addresses"]

log = logging.getLogger("paradis.coordinator")

_NODE_DOWN_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# select(AUTO) and select(None): automatic choice
AUTO = "auto"
#: a named plan under a latency objective moves to another assignment of its roles only when that one is
#: predicted this much faster than the one serving it (predictions of equal nodes differ by their noise)
REASSIGN_GAIN = 0.10


def parse_addresses(addresses: str | Iterable[str], allow_empty: bool = False) -> list[str]:
    """``"h1:5000,h2:5000"`` or a list -> list of ``host:port`` (checked)."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    out = []
    for a in (str(i).strip() for i in items):
        if not a:
            continue
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise MeshError(f"invalid node address {a!r} (expected HOST:PORT)")
        if a in out:
            raise MeshError(f"node address {a!r} is listed twice")
        out.append(a)
    if not out and not allow_empty:
        raise MeshError("no node addresses given (expected HOST:PORT,...; or discover nodes with zeroconf)")
    return out


def _manifest_files(bundle: Bundle) -> list[tuple[str, int, str]]:
    """Files a node needs: manifest.json, its signature (``manifest.sig``, when
    the bundle is signed) and every int8 segment file.

    C arrays and float partitions stay behind: boards with a node daemon run
    the .tflite files, and uploads to them are slow.
    """
    raw = (bundle.root / "manifest.json").read_bytes()
    files = {"manifest.json": (len(raw), hashlib.sha256(raw).hexdigest())}
    sig = bundle.root / SIGNATURE_FILE
    if sig.is_file():
        data = sig.read_bytes()
        files[SIGNATURE_FILE] = (len(data), hashlib.sha256(data).hexdigest())
    for plan in bundle.plans.values():
        for dev in plan.devices:
            for seg in dev.segments:
                files[seg.file] = (seg.size, seg.sha256)
    return [(p, s, h) for p, (s, h) in files.items()]


def _bundle_from_manifest(raw: bytes) -> Bundle:
    """A `Bundle` view of a manifest alone (its files stay on the nodes)."""
    with tempfile.TemporaryDirectory(prefix="paradis-manifest-") as tmp:
        Path(tmp, "manifest.json").write_bytes(raw)
        return load_bundle(tmp, verify=False)


@dataclass(frozen=True)
class NodeStatus:
    """What `Coordinator.status()` knows about one node."""

    address: str
    up: bool
    info: mesh_pb2.NodeInfo | None
    error: str = ""
    role: int | None = None  # role in the current placement


@dataclass
class CoordinatorStats:
    requests: int = 0
    answered: int = 0
    failed: int = 0
    retries: int = 0
    replans: int = 0  # activations, the first `select` included
    bytes_to_nodes: int = 0
    bytes_from_nodes: int = 0
    node_compute_ms: float = 0.0  # sum over answered requests of the slowest role's interpreter time
    plans: list[tuple[float, str]] = field(default_factory=list)  # (unix time, placement text)
    answered_by_plan: dict[str, int] = field(default_factory=dict)  # plan name -> requests it answered
    suspected: int = 0  # nodes marked down because a role call missed its stall timeout
    readmitted: int = 0  # down nodes that answered their health check again


@dataclass(frozen=True)
class StallPolicy:
    """How long one role's Run may take before its node is suspected of stalling.

    The timeout of a call is ``clamp(factor * p + margin_s, floor_s, cap)``,
    where ``p`` is the ``percentile`` of the last ``window`` round trips of
    that node for that (plan, role), and ``cap`` is ``cap_s`` (default: the
    coordinator's ``run_timeout_s``), never past the request's deadline. Until
    ``min_samples`` round trips are known the node's own measure from its
    activation stands in (``ActivateReply.role_latency_ms``), times the
    requests in flight (they queue on a node), times ``factor``, plus
    ``warmup_margin_s``. A call past its stall timeout is not cancelled: its
    node gets a health check of at most ``probe_s``; a node that does not
    answer it is suspected (marked down, the request re-planned and retried),
    one that answers is slow, not stalled, and its call keeps the request's
    deadline (the probe's time is the node's percentile round trip where
    that is longer, at most 1 s: a loaded host answers everything slower).
    ``StallPolicy(enabled=False)``: only the request deadline.
    """

    percentile: float = 99.0
    factor: float = 3.0
    margin_s: float = 0.05
    floor_s: float = 0.1
    cap_s: float | None = None
    window: int = 256
    min_samples: int = 20
    warmup_margin_s: float = 2.0
    probe_s: float = 0.15
    enabled: bool = True


class CoordinatorObserver:
    """What a coordinator reports as it serves (no-ops here; `paradis_tf.mesh.metrics` exports them).

    Calls come from the coordinator's event loop thread; an implementation
    must be quick and must not raise.
    """

    def request_done(self, plan: str, seconds: float, ok: bool) -> None:
        """One request (one sample) ended: the plan that answered it ("" if none did), its latency."""

    def role_done(self, address: str, plan: str, role: int, seconds: float, code: str) -> None:
        """One Run call ended: ``code`` is "OK", a gRPC status name, or "STALLED" (its stall timeout passed)."""

    def replanned(self, placement: str, plan: str) -> None:
        """A placement was activated (the first one included)."""

    def suspected(self, address: str, why: str) -> None:
        """A node missed its stall timeout and is marked down until its health check answers."""

    def readmitted(self, address: str) -> None:
        """A down node answered its health check again."""

    def marked_down(self, address: str, why: str) -> None:
        """A node was marked down (suspected, unreachable, left the network...)."""


@dataclass
class _Node:
    address: str
    channel: grpc.aio.Channel
    stub: mesh_pb2_grpc.NodeStub
    up: bool = True
    info: mesh_pb2.NodeInfo | None = None
    error: str = ""


@dataclass(frozen=True)
class _Active:
    placement: Placement
    plan: Plan
    activation_id: str
    generation: int
    input_specs: tuple[TensorSpec | None, ...]  # per role
    role_latency_s: tuple[float, ...] = ()  # per role, each node's measure at activation
    waits_for_peers: tuple[bool, ...] = ()  # per role: takes a feature map from another role
    feeds_peers: tuple[bool, ...] = ()  # per role: pushes a feature map to another role before it answers


class _RoundTrips:
    """The last round trips of one node for one (plan, role).

    A percentile is computed again after every `REFRESH` new samples, not on
    every call: every role call of every request asks for it.
    """

    REFRESH = 8
    __slots__ = ("samples", "_cached", "_fresh")

    def __init__(self, window: int) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=window)
        self._cached: dict[float, float] = {}
        self._fresh = 0  # samples added since the cache was filled

    def append(self, seconds: float) -> None:
        self.samples.append(seconds)
        self._fresh += 1
        if self._fresh >= self.REFRESH:
            self._cached.clear()

    def percentile(self, q: float) -> float:
        got = self._cached.get(q)
        if got is None:
            if not self._cached:
                self._fresh = 0
            got = self._cached[q] = float(np.percentile(np.fromiter(self.samples, dtype=np.float64), q))
        return got


_KEEP = object()  # `_replan`: keep the current pin


class _AttemptError(Exception):
    def __init__(self, message: str, down: Sequence[str] = (), suspects: Sequence[str] = (), stale: bool = False, fatal: bool = False):
        super().__init__(message)
        self.down = tuple(down)
        self.suspects = tuple(suspects)
        self.stale = stale
        self.fatal = fatal


class Coordinator:
    """Serves one bundle across a set of node daemons.

    Args:
        addresses: node addresses, ``["host:port", ...]`` or ``"h:p,h:p"``.
        bundle: a local bundle directory (its manifest is read here), or the
            name of a bundle already stored on the nodes (``"name"`` for
            its newest version, ``"name@version"`` for a kept one, e.g. to
            roll back), or None (the bundle active on, or the only one
            stored on, the first node that answers). `deploy` sets it.
        run_timeout_s: deadline of a request (one sample), its retries
            included.
        retries: how many times a failed request is retried after a re-plan.
        stall: per-call timeouts from each node's recent round trips
            (`StallPolicy`; ``StallPolicy(enabled=False)`` for none).
        observer: told about requests, role calls, re-plans and suspected
            nodes (`CoordinatorObserver`; e.g. Prometheus metrics).
        objective: what an automatic choice optimizes (`Objective`, or its
            text: ``accuracy``, the default; ``latency``; a budget such as
            ``20ms``). The latency objectives predict every fitting plan from
            the links (`measure_links`, at the first such choice) and each
            node's measured compute (`paradis_tf.mesh.predict`).
        probe_interval_s: how often down nodes are probed for re-admission.
        link_refresh_s: once links are measured, each up node's link is
            probed again when its measure is this old (one node per watcher
            tick; None: never). Between probes the per-call cost measured
            from live calls follows a link that slows down.
        auto_replan: re-plan on failures and re-admissions (else fail requests).
        max_concurrency: requests in flight at once.
        discovery: also find nodes with zeroconf (``_paradis._tcp``, nodes
            started with ``paradis node serve --advertise``); ``addresses``
            may then be empty. Nodes that announce themselves later are
            admitted and the coordinator re-plans up; a node's goodbye marks
            it down at once.
        fleet: with ``discovery``, only nodes announcing this fleet.
        discovery_interfaces: IPv4 interface addresses to browse on
            (default: all).
        discovery_wait_s: how long the constructor collects announcements.
        expect_nodes: stop waiting once this many nodes are seen.
        tls: mutual TLS (`paradis_tf.mesh.security.TlsConfig`): this
            coordinator's certificate and the fleet CA; nodes must serve TLS
            with a certificate naming the host in their address. With
            ``discovery``, an announced node joins only after a TLS handshake
            shows a ``node`` certificate of the fleet CA issued to the node id
            it announced.
        insecure: allow ``discovery`` without ``tls``: any host on the
            network that announces itself would then be adopted, given a role
            and sent the bundle and real inputs (refused otherwise).

    Example:
        >>> with Coordinator(["10.0.0.2:5000", "10.0.0.3:5000"]) as c:
        ...     c.deploy("bundle/")
        ...     c.select()
        ...     logits = c.infer(images)
    """

    def __init__(
        self,
        addresses: str | Iterable[str],
        *,
        bundle: str | os.PathLike | None = None,
        run_timeout_s: float = limits.RUN_TIMEOUT_S,
        retries: int = 1,
        probe_interval_s: float = 0.5,
        auto_replan: bool = True,
        max_concurrency: int = 64,
        discovery: bool = False,
        fleet: str = "default",
        discovery_interfaces: Sequence[str] | None = None,
        discovery_wait_s: float = 2.0,
        expect_nodes: int | None = None,
        tls: "security.TlsConfig | None" = None,
        insecure: bool = False,
        stall: StallPolicy | None = None,
        observer: CoordinatorObserver | None = None,
        objective: Objective | str | None = None,
        link_refresh_s: float | None = 300.0,
    ) -> None:
        if link_refresh_s is not None and not link_refresh_s > 0:
            raise ValueError(f"link_refresh_s={link_refresh_s!r}: give seconds > 0, or None to never probe links again")
        if discovery and tls is None and not insecure:
            raise MeshError(
                "refusing zeroconf discovery without TLS: any host that announces itself would be adopted, given a "
                "role and sent the bundle and real inputs (give --tls-ca/--tls-cert/--tls-key, so that only nodes with "
                "a node certificate of the fleet CA join; or --insecure on a closed test network)"
            )
        self.tls = tls
        #: discovered nodes refused because their certificate did not prove them (address, reason)
        self.refused: list[tuple[str, str]] = []
        self.addresses = parse_addresses(addresses, allow_empty=discovery)
        self.run_timeout_s = float(run_timeout_s)
        self.retries = int(retries)
        self.probe_interval_s = float(probe_interval_s)
        self.auto_replan = bool(auto_replan)
        self.max_concurrency = int(max_concurrency)
        self.stats = CoordinatorStats()
        self.stall = stall or StallPolicy()
        self.observer = observer or CoordinatorObserver()
        self._round_trips: dict[tuple[str, str, int], _RoundTrips] = {}
        self._in_flight = 0
        self._probing: dict[str, asyncio.Future] = {}
        self.objective = Objective.parse(objective) if isinstance(objective, str) else (objective or Objective())
        #: measured links (`measure_links`), by node address
        self.links: dict[str, Link] = {}
        self.link_refresh_s = link_refresh_s
        self._links_at: dict[str, float] = {}  # monotonic time each link was last measured
        # compute time (s) per (address, plan, role): the activation's measure, then live RunReply.compute_ms
        self._compute: dict[tuple[str, str, int], collections.deque[float]] = {}
        # per Run call: round trip - compute - peer wait - link time (the software cost of a call), by (address,
        # roles of the plan): the coordinator sends and takes a plan's calls one after another, so a call of a
        # four-role plan costs more than one of a single-role plan
        self._overhead: dict[tuple[str, int], collections.deque[float]] = {}
        self._id = uuid.uuid4().hex[:8]
        self._seq = itertools.count()
        self._bundle: Bundle | None = None
        self._bundle_dir: Path | None = None
        self._bundle_name: str | None = None
        self._version: str = ""
        self._manifest: dict | None = None
        self._pinned: str | None = None
        # whether select() succeeded once; until then infer/submit select automatically
        self._selected = False
        self._active: _Active | None = None
        self._generation = 0
        self._last_plan_error: str = ""
        self._watcher: asyncio.Task | None = None
        self._closed = False
        if bundle is not None:
            p = Path(bundle)
            if (p / "manifest.json").is_file():
                self._set_local_bundle(p)
            else:
                # "name" or "name@version" (a stored version, e.g. to roll back)
                self._bundle_name, _, self._version = str(bundle).partition("@")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="paradis-coordinator", daemon=True)
        self._thread.start()
        self._call(self._init_nodes())
        self._browser = None
        if discovery:
            self._start_discovery(fleet, discovery_interfaces, discovery_wait_s, expect_nodes)

    # --- plumbing -----------------------------------------------------------
    def _channel(self, address: str) -> grpc.aio.Channel:
        return security.channel(address, self.tls, limits.CHANNEL_OPTIONS)

    def _call(self, coro, timeout: float | None = None):
        if self._closed:
            coro.close()
            raise MeshError("the coordinator is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _init_nodes(self) -> None:
        self._nodes: dict[str, _Node] = {}
        for a in self.addresses:
            ch = self._channel(a)
            self._nodes[a] = _Node(a, ch, mesh_pb2_grpc.NodeStub(ch))
        self._plan_lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._watcher = asyncio.create_task(self._watch())

    def close(self) -> None:
        """Stops the watcher and closes every channel (idempotent)."""
        if self._closed:
            return
        if self._browser is not None:
            self._browser.close()
            self._browser = None

        async def shutdown():
            # requests still in flight (their callers gave up) and the watcher
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            for n in self._nodes.values():
                await n.channel.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- nodes joining and leaving -------------------------------------------
    def add_node(self, address: str) -> bool:
        """Adds a node at run time (a board that joined the mesh).

        The node is admitted like a node coming back: once its health check
        answers, it gets the bundle (when the bundle directory is here) and
        the coordinator re-plans up. Returns False if it was already known.
        """
        (address,) = parse_addresses([address])
        return self._call(self._add_node(address, admitted=False))

    async def _add_node(self, address: str, admitted: bool) -> bool:
        if address in self._nodes:
            if address not in self.addresses:
                self.addresses.append(address)
                return True
            return False
        ch = self._channel(address)
        # Not admitted yet: the watcher probes it, deploys the bundle and re-plans up.
        self._nodes[address] = _Node(address, ch, mesh_pb2_grpc.NodeStub(ch), up=admitted,
                                     error="" if admitted else "joined; waiting for its health check")
        self.addresses.append(address)
        log.info("node %s added", address)
        return True

    def _start_discovery(self, fleet: str, interfaces, wait_s: float, expect: int | None) -> None:
        from paradis_tf.mesh.discovery import NodeBrowser

        initial = threading.Event()
        pending: list[concurrent.futures.Future] = []

        def added(node) -> None:
            # Nodes seen during the initial wait count as configured nodes;
            # later ones join through the watcher (health, bundle, re-plan up).
            fut = asyncio.run_coroutine_threadsafe(self._add_discovered(node, admitted=not initial.is_set()), self._loop)
            fut.add_done_callback(lambda f: f.exception())
            if not initial.is_set():
                pending.append(fut)

        def removed(node) -> None:
            def mark() -> None:
                if node.address in self._nodes:
                    self._mark_down(node.address, f"node {node.node_id or node.name} left the network (zeroconf goodbye)")
            self._loop.call_soon_threadsafe(mark)

        self._browser = NodeBrowser(fleet, on_add=added, on_remove=removed, interfaces=interfaces)
        end = time.monotonic() + max(0.0, float(wait_s))
        # count the adds handed over, not the browser's list: it lists a node just before calling on_add
        while time.monotonic() < end and (expect is None or len(pending) < expect):
            time.sleep(0.05)
        settle = time.monotonic() + 1.0
        while len(pending) < len(self._browser.nodes()) and time.monotonic() < settle:
            time.sleep(0.01)
        initial.set()
        # the adds scheduled so far (and their TLS handshakes) have run once this returns
        concurrent.futures.wait(list(pending), timeout=limits.INFO_TIMEOUT_S + 1)
        self._call(asyncio.sleep(0))
        if not self.addresses:
            refused = "; ".join(why for _, why in self.refused)
            self.close()
            if refused:
                raise MeshError(f"zeroconf found no node of fleet {fleet!r} that proved itself within {wait_s:g} s: "
                                f"{refused} (issue node certificates with `paradis certs issue DIR --name NODE_ID --role node`)")
            raise MeshError(
                f"zeroconf found no node of fleet {fleet!r} within {wait_s:g} s; start nodes with "
                "`paradis node serve --advertise`, check that multicast reaches them, or list them with --nodes"
            )

    async def _add_discovered(self, node, admitted: bool) -> bool:
        """Adds an announced node; with TLS only once its certificate proves it is the node it announced."""
        if self.tls is not None:
            try:
                ident = await security.fetch_peer_identity(node.address, self.tls, timeout=limits.INFO_TIMEOUT_S)
                if ident.role != "node" or ident.name != node.node_id:
                    raise MeshError(f"its certificate names {ident}, not node {node.node_id!r}")
            except MeshError as e:
                why = f"announced node {node.node_id!r} at {node.address} not adopted: {e}"
                log.warning("%s", why)
                self.refused.append((node.address, why))
                return False
        return await self._add_node(node.address, admitted)

    def _set_local_bundle(self, bundle_dir: Path, name: str | None = None) -> None:
        bundle = load_bundle(bundle_dir)  # validates files and sha256 before anything is sent
        raw = (bundle_dir / "manifest.json").read_bytes()
        self._bundle, self._bundle_dir, self._manifest = bundle, bundle_dir, bundle.manifest
        self._bundle_name = name or bundle.model.name or bundle_dir.name
        self._version = hashlib.sha256(raw).hexdigest()[:16]

    # --- status -------------------------------------------------------------
    async def _get_info(self, node: _Node, timeout: float = limits.INFO_TIMEOUT_S) -> mesh_pb2.NodeInfo | None:
        """GetInfo; a node that does not answer is marked down.

        An answer never marks a down node up: a node in its SIGTERM grace
        period still answers GetInfo. Only the watcher re-admits a node,
        after a SERVING health check, and then deploys and re-plans up.
        """
        try:
            info = await node.stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            node.up, node.info, node.error = False, None, f"{e.code().name}: {e.details()}"
            return None
        node.info = info
        if node.up:
            node.error = ""
        act = info.activation
        if (info.active and info.role_latency_ms > 0 and act.bundle == self._bundle_name and act.version == self._version
                and (node.address, act.plan, act.role) not in self._compute):
            # what the node measured when it activated: the latency model's first sample of that role there
            self._record_compute(node.address, act.plan, act.role, info.role_latency_ms / 1000)
        return info

    def status(self, timeout: float = limits.INFO_TIMEOUT_S) -> list[NodeStatus]:
        """Asks every node for its info (concurrently).

        ``up`` is whether the node serves requests: a node that answers but
        has not been re-admitted yet (after a failure, or while it shuts
        down) is reported with its info and ``up=False``.
        """

        async def go():
            await asyncio.gather(*(self._get_info(n, timeout) for n in self._nodes.values()))
            roles = {a: r for r, a in enumerate(self._active.placement.addresses)} if self._active else {}
            return [NodeStatus(n.address, n.up, n.info, n.error, roles.get(n.address)) for n in self._nodes.values()]

        return self._call(go())

    @property
    def placement(self) -> Placement | None:
        """The plan and role->node assignment in use (None before `select`)."""
        a = self._active
        return a.placement if a else None

    @property
    def manifest(self) -> dict | None:
        """The bundle's manifest (after `deploy`, `select` or with ``bundle=``)."""
        return self._manifest

    @property
    def bundle(self) -> Bundle | None:
        """The bundle (a manifest-only view when it was fetched from a node)."""
        return self._bundle

    # --- deploy -------------------------------------------------------------
    def deploy(self, bundle_dir: str | os.PathLike, name: str | None = None, nodes: Sequence[str] | None = None) -> dict[str, mesh_pb2.DeployReply]:
        """Uploads a bundle to every node concurrently (`paradis flash`).

        Returns:
            address -> DeployReply (name, version, bytes, versions kept).

        Raises:
            DeployError: the bundle is not readable, or a node refused or
                could not be reached (all nodes are tried; the message lists
                every failure).
        """
        bundle_dir = Path(bundle_dir)
        self._set_local_bundle(bundle_dir, name)
        files = _manifest_files(self._bundle)
        targets = list(nodes) if nodes is not None else self.addresses
        return self._call(self._deploy(bundle_dir, files, targets))

    async def _deploy(self, bundle_dir: Path, files, targets: Sequence[str]) -> dict[str, mesh_pb2.DeployReply]:
        manifest_sha = next(h for p, _, h in files if p == "manifest.json")

        async def stream() -> AsyncIterator[mesh_pb2.DeployRequest]:
            yield mesh_pb2.DeployRequest(
                begin=mesh_pb2.DeployBegin(
                    bundle=self._bundle_name, manifest_sha256=manifest_sha,
                    files=[mesh_pb2.FileEntry(path=p, size=s, sha256=h) for p, s, h in files],
                )
            )
            for i, (path, _, _) in enumerate(files):
                with open(bundle_dir / path, "rb") as fh:
                    offset = 0
                    while True:
                        data = fh.read(limits.DEPLOY_CHUNK_BYTES)
                        if not data:
                            break
                        yield mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=i, offset=offset, data=data))
                        offset += len(data)
            yield mesh_pb2.DeployRequest(commit=mesh_pb2.DeployCommit())

        async def one(address: str):
            node = self._nodes.get(address)
            if node is None:
                ch = self._channel(address)
                node = _Node(address, ch, mesh_pb2_grpc.NodeStub(ch))
                self._nodes[address] = node
            try:
                return await node.stub.Deploy(stream(), timeout=limits.DEPLOY_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                return NodeError(address, "Deploy", e.code().name, e.details() or "")

        results = await asyncio.gather(*(one(a) for a in targets))
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise DeployError("deploy failed on " + "; ".join(str(f) for f in failures))
        return dict(zip(targets, results))

    # --- selection ----------------------------------------------------------
    async def _ensure_manifest(self) -> dict:
        if self._manifest is not None:
            return self._manifest
        last = ""
        for node in self._nodes.values():
            try:
                r = await node.stub.GetManifest(
                    mesh_pb2.GetManifestRequest(bundle=self._bundle_name or "", version=self._version), timeout=limits.INFO_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as e:
                last = f"{node.address}: {e.code().name}: {e.details()}"
                continue
            self._bundle = _bundle_from_manifest(r.manifest_json)
            self._manifest = self._bundle.manifest
            self._bundle_name, self._version = r.bundle, r.version
            return self._manifest
        raise MeshError(f"no node could give the bundle manifest ({last}); deploy a bundle first or pass bundle=")

    def select(self, plan: str | None = None) -> Placement:
        """Chooses and activates a plan on the healthy nodes.

        Args:
            plan: ``None`` or ``"auto"``: the best ParaDiS plan whose roles
                fit the healthy nodes (`paradis_tf.mesh.placement`), re-chosen
                whenever nodes fail or come back. A plan name (``"2x0.5"``,
                ``"seq-2"``): exactly that plan, pinned; re-planning only
                places it again, never switches to another (module doc).
                Under a latency objective its roles go where the planner
                predicts the plan fastest; else by capacity.

        Returns:
            The placement now serving: always of the named plan when one is
            named.

        Raises:
            NoPlanFitsError: the named plan is not in the bundle or does not
                fit the healthy nodes (the message says why and lists the
                plans that fit), or in automatic mode nothing fits. The
                coordinator keeps serving what it served before.
        """
        pin = None if plan is None or str(plan) == AUTO else str(plan)
        return self._call(self._replan(force=True, pin=pin)).placement

    def _has_bundle(self, info: mesh_pb2.NodeInfo) -> bool:
        return any(b.name == self._bundle_name and any(v.version == self._version for v in b.versions) for b in info.bundles)

    async def _candidates(self) -> list[NodeCandidate]:
        """Healthy nodes that hold the bundle (deploying it where it is missing
        and the bundle directory is here; skipping those nodes otherwise)."""
        # only nodes that are up: a down one (a stalled one too) would hold the re-plan for the timeout;
        # the watcher re-admits down nodes
        nodes = [n for n in self._nodes.values() if n.address in self.addresses and n.up]
        infos = await asyncio.gather(*(self._get_info(n, limits.REPLAN_INFO_TIMEOUT_S) for n in nodes))
        missing = [n for n, info in zip(nodes, infos) if info is not None and n.up and not self._has_bundle(info)]
        if missing:
            await asyncio.gather(*(self._ensure_bundle(n) for n in missing))
        out = []
        for n, info in zip(nodes, infos):
            if info is None or not n.up:
                continue
            if not self._has_bundle(info) and n not in missing:
                continue
            if n in missing and (self._bundle_dir is None or not n.up):
                log.info("node %s lacks bundle %s/%s; not used", n.address, self._bundle_name, self._version)
                continue
            out.append(NodeCandidate.from_info(n.address, info))
        return out

    async def _replan(
        self, force: bool = False, from_generation: int | None = None, upgrade_only: bool = False, pin: "str | None | object" = _KEEP
    ) -> _Active:
        """Chooses a placement and activates it.

        Args:
            force: activate even if the placement did not change.
            from_generation: a request that failed on this activation asks;
                nothing happens if another re-plan came first.
            upgrade_only: nodes came back; keep the plan in use if the
                choice is the same plan.
            pin: `select`'s choice (None: automatic; a name: that plan), made
                the coordinator's only once it is activated; `_KEEP`: the
                current one.
        """
        selecting = pin is not _KEEP
        pinned = pin if selecting else self._pinned
        async with self._plan_lock:
            if from_generation is not None and self._generation != from_generation and self._active is not None:
                return self._active
            await self._ensure_manifest()
            for _ in range(len(self._nodes) + 1):
                nodes = await self._candidates()
                try:
                    by_latency = self.objective.kind != "accuracy"
                    if by_latency and any(n.address not in self.links for n in nodes):
                        await self._measure_links([n.address for n in nodes if n.address not in self.links])
                    if pinned is None and by_latency:
                        placement = choose_by_objective(self._bundle.plans, nodes, self.objective, self._predict)[0]
                    else:
                        placement = choose_placement(self._bundle.plans, nodes, plan=pinned)
                        if by_latency:  # a named plan: its roles where they are predicted fastest
                            placement = self._fastest_placement(placement, nodes)
                except NoPlanFitsError as e:
                    if not selecting:  # a select() that fails leaves the plan in use alone
                        self._active = None
                    self._last_plan_error = str(e)
                    raise
                cur = self._active
                if upgrade_only and cur is not None and placement.plan == cur.placement.plan:
                    return cur
                if not force and cur is not None and cur.placement == placement and from_generation is None:
                    return cur
                try:
                    active = await self._activate(placement)
                except _AttemptError as e:
                    for a in e.down:
                        self._mark_down(a, str(e))
                    log.warning("activation of %s failed (%s); re-planning", placement, e)
                    if e.fatal:
                        raise MeshError(str(e)) from None
                    continue
                self._active = active
                if selecting:
                    self._pinned = None if pinned is None else placement.plan
                    self._selected = True
                self.stats.replans += 1
                self.stats.plans.append((time.time(), str(placement)))
                self.observer.replanned(str(placement), placement.plan)
                log.info("plan: %s", placement)
                return active
            raise NoPlanFitsError("nodes kept failing while activating a plan")

    def _fastest_placement(self, placement: Placement, nodes: list[NodeCandidate]) -> Placement:
        """``placement``'s plan on the assignment predicted fastest; the one serving it now is kept unless
        another is predicted `REASSIGN_GAIN` faster (equal nodes do not swap roles on every select)."""
        plan = self._bundle.plans[placement.plan]
        got = fastest_assignment(plan, nodes, self._predict)
        if got is None or math.isnan(got[1]):
            return placement
        cur = self._active.placement if self._active is not None else None
        if cur is not None and cur.plan == placement.plan and set(cur.addresses) <= {n.address for n in nodes}:
            now = self._predict(plan, tuple(cur.addresses))
            if now is not None and now <= got[1] * (1 + REASSIGN_GAIN):
                return Placement(cur.plan, tuple(cur.addresses), placement.accuracy, now * 1000)
        return Placement(placement.plan, got[0], placement.accuracy, got[1] * 1000)

    async def _activate(self, placement: Placement) -> _Active:
        aid = f"{self._id}-{uuid.uuid4().hex[:8]}"
        peers = dict(enumerate(placement.addresses))
        # with mutual TLS, nodes check each other's certificates against these ids
        node_ids = {r: self._nodes[a].info.node_id for r, a in peers.items() if self._nodes[a].info is not None}

        async def one(role: int, address: str):
            req = mesh_pb2.ActivateRequest(
                bundle=self._bundle_name or "", version=self._version, plan=placement.plan, role=role, peers=peers,
                activation_id=aid, peer_node_ids=node_ids,
            )
            # a node that activated often just now (limits.ACTIVATION_BURST) answers RESOURCE_EXHAUSTED: wait, retry
            give_up, pause = time.monotonic() + limits.ACTIVATE_RETRY_S, 0.25
            while True:
                try:
                    reply = await self._nodes[address].stub.Activate(req, timeout=limits.ACTIVATE_TIMEOUT_S)
                    latency_s[role] = max(0.0, reply.role_latency_ms) / 1000.0
                    if reply.role_latency_ms > 0:
                        self._record_compute(address, placement.plan, role, latency_s[role])
                    return None
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() + pause > give_up:
                        return (address, e)
                    log.info("node %s: %s; retrying in %.2f s", address, e.details(), pause)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 2.0)

        latency_s = [0.0] * len(placement.addresses)
        errors = [e for e in await asyncio.gather(*(one(r, a) for r, a in enumerate(placement.addresses))) if e]
        if errors:
            down = [a for a, e in errors if e.code() in _NODE_DOWN_CODES]
            msg = "; ".join(f"{a}: Activate: {e.code().name}: {e.details()}" for a, e in errors)
            raise _AttemptError(msg, down=down, fatal=not down)
        plan_obj = self._bundle.plan(placement.plan)
        specs = tuple(model_input_spec(plan_obj, r) for r in range(len(placement.addresses)))
        waits = tuple(
            any(i.source is not None and i.source.device != d.role for seg in d.segments for i in seg.inputs) for d in plan_obj.devices
        )
        feeds = tuple(
            any(i.source is not None and i.source.device == r for d in plan_obj.devices if d.role != r
                for seg in d.segments for i in seg.inputs) for r in range(len(plan_obj.devices))
        )
        self._generation += 1
        return _Active(placement, plan_obj, aid, self._generation, specs, tuple(latency_s), waits, feeds)

    def _mark_down(self, address: str, why: str) -> None:
        node = self._nodes[address]
        if node.up:
            log.warning("node %s marked down: %s", address, why)
            self.observer.marked_down(address, why)
        node.up, node.error = False, why

    async def _current(self) -> _Active:
        active = self._active
        if active is not None and all(self._nodes[a].up for a in active.placement.addresses):
            return active
        if not self.auto_replan and active is not None:
            return active
        try:
            return await self._replan(from_generation=active.generation if active else None)
        except NoPlanFitsError as e:
            raise RequestFailedError(f"no plan to serve the request: {e}") from None

    # --- the latency model ----------------------------------------------------
    def measure_links(self, addresses: Sequence[str] | None = None, probe_bytes: int = 256 << 10) -> dict[str, Link]:
        """Measures each node's link with `Probe` calls (one node at a time): round trip, then bytes/s each way.

        The round trip is the fastest of 5 empty probes; each direction's rate
        is ``probe_bytes`` over the best of 3 probes' time beyond the round
        trip; the link's rate is the slower direction. Results go to ``links``.
        """
        return self._call(self._measure_links(addresses, probe_bytes))

    async def _measure_links(self, addresses: Sequence[str] | None = None, probe_bytes: int = 256 << 10) -> dict[str, Link]:
        probe_bytes = max(1, min(int(probe_bytes), limits.MAX_PROBE_BYTES))
        out: dict[str, Link] = {}
        for address in (addresses if addresses is not None else [a for a in self.addresses if self._nodes[a].up]):
            stub = self._nodes[address].stub

            async def timed(req: mesh_pb2.ProbeRequest) -> float:
                t0 = time.perf_counter()
                await stub.Probe(req, timeout=limits.INFO_TIMEOUT_S)
                return time.perf_counter() - t0

            try:
                rtt = min([await timed(mesh_pb2.ProbeRequest()) for _ in range(5)])
                up = min([await timed(mesh_pb2.ProbeRequest(payload=bytes(probe_bytes))) for _ in range(3)])
                down = min([await timed(mesh_pb2.ProbeRequest(reply_bytes=probe_bytes)) for _ in range(3)])
            except grpc.aio.AioRpcError as e:
                log.warning("link probe of %s failed: %s: %s", address, e.code().name, e.details())
                self._links_at[address] = time.monotonic()  # tried: the refresh waits its period before the next try
                continue
            rate = probe_bytes / max(max(up, down) - rtt, 1e-6)
            out[address] = self.links[address] = Link(rate_bytes_per_s=rate, rtt_s=rtt)
            self._links_at[address] = time.monotonic()
            log.info("link %s: round trip %.2f ms, %.1f Mbit/s", address, rtt * 1000, rate * 8 / 1e6)
        return out

    def _record_compute(self, address: str, plan: str, role: int, seconds: float) -> None:
        key = (address, plan, role)
        q = self._compute.get(key)
        if q is None:
            q = self._compute[key] = collections.deque(maxlen=64)
        q.append(seconds)

    def _record_run(self, address: str, plan: str, role: int, seconds: float, reply: mesh_pb2.RunReply, active: _Active) -> None:
        if reply.compute_ms > 0:
            self._record_compute(address, plan, role, reply.compute_ms / 1000)
        link = self.links.get(address)
        # a role that feeds peers answers after its pushes: its round trip holds an exchange, not only a call
        if link is not None and not (role < len(active.feeds_peers) and active.feeds_peers[role]):
            spec = active.input_specs[role]
            nbytes = (spec.nbytes if spec is not None else 0) + sum(len(o.tensor.data) for o in reply.outputs)
            net = link.one_way_s(nbytes) + link.rtt_s / 2
            key = (address, len(active.placement.addresses))
            q = self._overhead.get(key)
            if q is None:
                q = self._overhead[key] = collections.deque(maxlen=256)
            q.append(max(0.0, seconds - (reply.compute_ms + reply.wait_ms) / 1000 - net))

    def _rpc_overhead_s(self, address: str | None = None, roles: int | None = None) -> float:
        """The software cost of one call beyond compute and link time, measured live (median; 1 ms before any).

        The samples of ``address`` in plans of ``roles`` roles where there are
        8 or more, else that node's at any plan size, else every node's.
        """
        def median(qs) -> float | None:
            values = [v for q in qs for v in q]
            return float(np.median(values)) if len(values) >= 8 else None

        for pick in ((lambda a, n: a == address and n == roles), (lambda a, n: a == address), (lambda a, n: True)):
            got = median(q for (a, n), q in self._overhead.items() if pick(a, n))
            if got is not None:
                return got
        return 0.001

    def _node_model(self, address: str, roles: int | None = None) -> NodeModel:
        compute = {(p, r): float(np.median(q)) for (a, p, r), q in self._compute.items() if a == address and q}
        per_mac = []
        if self._bundle is not None:
            for (p, r), t in compute.items():
                if p in self._bundle.plans and self._bundle.plans[p].devices[r].macs > 0:
                    per_mac.append(t / self._bundle.plans[p].devices[r].macs)
        if per_mac:
            spm = float(np.median(per_mac))
        else:
            info = self._nodes[address].info
            spm = 2.0 / (max(info.speed_score, 1e-6) * 1e9) if info is not None and info.speed_score > 0 else None
        return NodeModel(address, self.links.get(address, Link()), compute, spm, self._rpc_overhead_s(address, roles))

    def _prediction(self, plan: Plan, addresses: tuple[str, ...]) -> tuple[Prediction | None, dict[str, NodeModel]]:
        """The prediction of ``plan`` on ``addresses`` and the node models it was made from."""
        models = {a: self._node_model(a, len(addresses)) for a in set(addresses)}
        return predict_plan(plan, addresses, models, rpc_overhead_s=self._rpc_overhead_s(roles=len(addresses))), models

    def _predict(self, plan: Plan, addresses: tuple[str, ...]) -> float | None:
        got = self._prediction(plan, addresses)[0]
        return None if got is None else got.latency_s

    def predictions(self) -> list[Placement]:
        """Every plan that fits the healthy nodes, best-ranked first, each on its fastest predicted assignment.

        Measures the links not measured yet. ``predicted_ms`` is None where a
        role's compute cannot be estimated.
        """
        async def go() -> list[Placement]:
            await self._ensure_manifest()
            nodes = await self._candidates()
            missing = [n.address for n in nodes if n.address not in self.links]
            if missing:
                await self._measure_links(missing)
            return choose_by_objective(self._bundle.plans, nodes, Objective("accuracy"), self._predict,
                                       kinds=("paradis", "sequential"))[1]

        return self._call(go())

    # --- inference ----------------------------------------------------------
    def _stall_timeout(self, active: _Active, role: int, address: str) -> float:
        """The time one role's Run may take before its node is suspected (`StallPolicy`)."""
        p = self.stall
        cap = self.run_timeout_s if p.cap_s is None else p.cap_s
        rt = self._round_trips.get((address, active.placement.plan, role))
        if rt is not None and len(rt.samples) >= p.min_samples:
            t = p.factor * rt.percentile(p.percentile) + p.margin_s
        else:
            prior = active.role_latency_s[role] if role < len(active.role_latency_s) else 0.0
            t = p.factor * prior * max(1, self._in_flight) + p.warmup_margin_s
        return min(cap, max(p.floor_s, t))

    def _stall_basis(self, active: _Active, role: int) -> str:
        p = self.stall
        rt = self._round_trips.get((active.placement.addresses[role], active.placement.plan, role))
        if rt is not None and len(rt.samples) >= p.min_samples:
            return f"{p.factor:g} x p{p.percentile:g} {rt.percentile(p.percentile) * 1000:.1f} ms of {len(rt.samples)} calls + {p.margin_s * 1000:.0f} ms"
        prior = active.role_latency_s[role] if role < len(active.role_latency_s) else 0.0
        return f"warm-up: {p.factor:g} x {prior * 1000:.1f} ms measured at activation x {max(1, self._in_flight)} in flight + {p.warmup_margin_s * 1000:.0f} ms"

    def _record_round_trip(self, address: str, plan: str, role: int, seconds: float) -> None:
        key = (address, plan, role)
        rt = self._round_trips.get(key)
        if rt is None:
            rt = self._round_trips[key] = _RoundTrips(self.stall.window)
        rt.append(seconds)

    async def _answers_health(self, address: str, timeout: float = 0.25) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            r = await health_pb2_grpc.HealthStub(self._nodes[address].channel).Check(
                health_pb2.HealthCheckRequest(service=limits.HEALTH_SERVICE), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return r.status == health_pb2.HealthCheckResponse.SERVING

    def _probe_timeout(self, active: _Active, role: int) -> float:
        """``probe_s``, or the node's own percentile round trip when that is longer (a loaded host answers
        everything slower), at most 1 s."""
        rt = self._round_trips.get((active.placement.addresses[role], active.placement.plan, role))
        p = rt.percentile(self.stall.percentile) if rt is not None and len(rt.samples) >= self.stall.min_samples else 0.0
        return min(1.0, max(self.stall.probe_s, p))

    async def _probe(self, address: str, timeout: float) -> bool:
        """One short health probe of a node, shared by every request that finds it overdue at the same time."""
        fut = self._probing.get(address)
        if fut is None:
            fut = self._probing[address] = asyncio.ensure_future(self._answers_health(address, timeout))
            fut.add_done_callback(lambda f, a=address: self._probing.pop(a, None))
        return await asyncio.shield(fut)

    async def _attempt(self, active: _Active, x: np.ndarray, rid: str, deadline: float) -> np.ndarray:
        plan = active.placement.plan
        addresses = active.placement.addresses
        cache: dict[TensorSpec, mesh_pb2.Tensor] = {}
        xq = QTensor.from_float(x[None])
        calls: dict[asyncio.Task, int] = {}
        overdue_at: dict[asyncio.Task, float] = {}  # monotonic time its stall timeout passes (before the deadline)
        limit: dict[asyncio.Task, float] = {}
        ended: dict[asyncio.Task, float] = {}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _AttemptError(f"request deadline of {self.run_timeout_s:g} s passed before an attempt", fatal=True)
        t0, m0 = time.perf_counter(), time.monotonic()
        for role, address in enumerate(addresses):
            req = mesh_pb2.RunRequest(request_id=rid, plan=plan, activation_id=active.activation_id)
            spec = active.input_specs[role]
            if spec is not None:
                t = cache.get(spec)
                if t is None:
                    t = cache[spec] = tensors.encode_qtensor(convert(xq, spec.quant))
                req.input.CopyFrom(t)
                self.stats.bytes_to_nodes += len(t.data)
            task = asyncio.ensure_future(self._nodes[address].stub.Run(req, timeout=remaining))
            task.add_done_callback(lambda t: ended.__setitem__(t, time.perf_counter()))
            calls[task] = role
            if self.stall.enabled:
                stall_s = self._stall_timeout(active, role, address)
                if stall_s < remaining:
                    overdue_at[task], limit[task] = m0 + stall_s, stall_s
        replies: dict[int, mesh_pb2.RunReply] = {}
        suspects: list[str] = []
        soft: list[str] = []
        pending = set(calls)
        probes: dict[asyncio.Future, asyncio.Task] = {}  # health probe -> the overdue call it checks
        try:
            while pending:
                armed = [overdue_at[t] for t in pending if t in overdue_at]
                timeout = max(0.0, min(armed) - time.monotonic()) if armed else None
                done, _ = await asyncio.wait(pending | set(probes), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                silent: list[asyncio.Task] = []
                for p in [p for p in done if p in probes]:
                    task = probes.pop(p)
                    if task in pending and not p.result():
                        silent.append(task)
                if silent:
                    why = "; ".join(
                        f"{addresses[calls[t]]} (role {calls[t]}): no answer to Run within {limit[t] * 1000:.0f} ms "
                        f"(its stall timeout: {self._stall_basis(active, calls[t])}) nor to a health check within "
                        f"{self._probe_timeout(active, calls[t]) * 1000:.0f} ms" for t in silent
                    )
                    for t in silent:
                        self.stats.suspected += 1
                        self.observer.role_done(addresses[calls[t]], plan, calls[t], time.perf_counter() - t0, "STALLED")
                        self.observer.suspected(addresses[calls[t]], why)
                    raise _AttemptError(f"stalled: {why}", down=sorted({addresses[calls[t]] for t in silent}))
                for task in [t for t in done if t in calls]:
                    pending.discard(task)
                    role = calls[task]
                    address = addresses[role]
                    seconds = ended.get(task, time.perf_counter()) - t0
                    exc = task.exception()
                    if exc is None:
                        replies[role] = task.result()
                        self._record_round_trip(address, plan, role, seconds)
                        self._record_run(address, plan, role, seconds, replies[role], active)
                        self.observer.role_done(address, plan, role, seconds, "OK")
                        continue
                    if not isinstance(exc, grpc.aio.AioRpcError):
                        raise exc
                    code, details = exc.code(), exc.details() or ""
                    self.observer.role_done(address, plan, role, seconds, code.name)
                    text = f"{address} (role {role}): Run: {code.name}: {details}"
                    if code in _NODE_DOWN_CODES:
                        raise _AttemptError(text, down=[address])
                    if code == grpc.StatusCode.ABORTED:
                        peer = _peer_role(exc)
                        if peer is not None and 0 <= peer < len(addresses):
                            suspects.append(addresses[peer])
                        soft.append(text)
                    elif code == grpc.StatusCode.FAILED_PRECONDITION:
                        raise _AttemptError(text, stale=True)
                    elif code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED):
                        soft.append(text)
                    else:
                        raise _AttemptError(text, fatal=True)
                # calls past their stall timeout: probe their node (the call goes on meanwhile); one that answers
                # the probe is slow, not stalled, and its call keeps the request's deadline
                now = time.monotonic()
                for task in [t for t in pending if t in overdue_at and overdue_at[t] <= now]:
                    del overdue_at[task]
                    r = calls[task]
                    probes[asyncio.ensure_future(self._probe(addresses[r], self._probe_timeout(active, r)))] = task
        finally:
            for task in pending:
                task.cancel()
            for p in probes:
                p.cancel()
            for task in calls:  # retrieve every outcome, so none is reported as lost
                if task.done() and not task.cancelled():
                    task.exception()
        if soft:
            raise _AttemptError("; ".join(soft), suspects=suspects)
        self.stats.node_compute_ms += max(r.compute_ms for r in replies.values())
        outputs: dict[SegmentRef, QTensor] = {}
        for ref in active.plan.fusion.outputs:
            address = active.placement.addresses[ref.device]
            out = next((o for o in replies[ref.device].outputs if o.segment == ref.segment), None)
            if out is None:
                raise _AttemptError(f"{address} (role {ref.device}) returned no output for segment {ref.segment}", fatal=True)
            try:
                outputs[ref] = tensors.decode_qtensor(
                    out.tensor, active.plan.segment(ref).output, what=f"output of role {ref.device} segment {ref.segment}", batch=1
                )
            except TensorError as e:
                raise _AttemptError(f"{address}: {e}", fatal=True) from None
            self.stats.bytes_from_nodes += len(out.tensor.data)
        return fuse(active.plan, outputs)[0]

    async def _infer_one(self, x: np.ndarray) -> np.ndarray:
        rid = f"{self._id}-{next(self._seq)}"
        self.stats.requests += 1
        errors: list[str] = []
        async with self._sem:
            self._in_flight += 1
            t0 = time.perf_counter()
            try:
                return await self._serve_one(x, rid, errors, t0)
            except RequestFailedError:
                self.observer.request_done("", time.perf_counter() - t0, False)
                raise
            finally:
                self._in_flight -= 1

    async def _serve_one(self, x: np.ndarray, rid: str, errors: list[str], t0: float) -> np.ndarray:
        deadline = time.monotonic() + self.run_timeout_s
        failures = 0  # attempts that failed on the plan they were sent to (a plan changed under one is free)
        while failures <= self.retries and time.monotonic() < deadline:
            if failures:
                self.stats.retries += 1
            try:
                active = await self._current()
            except (MeshError, grpc.aio.AioRpcError) as e:
                errors.append(str(e))
                break
            try:
                logits = await self._attempt(active, x, rid, deadline)
            except _AttemptError as e:
                errors.append(str(e))
                if e.fatal:
                    break
                if not (e.stale and self._generation != active.generation):
                    failures += 1
                if not self.auto_replan:
                    continue
                for a in e.down:
                    self._mark_down(a, str(e))
                for a in e.suspects:  # a short health probe, as for a stalled call
                    if self._nodes[a].up and not await self._answers_health(a):
                        self.stats.suspected += 1
                        why = "peer of a failed exchange that did not answer a health check within 0.25 s"
                        self.observer.suspected(a, why)
                        self._mark_down(a, why)
                if e.stale or e.down or any(not self._nodes[a].up for a in e.suspects):
                    try:
                        await self._replan(from_generation=active.generation)
                    except MeshError as pe:
                        errors.append(str(pe))
                        break
                continue
            self.stats.answered += 1
            plan = active.placement.plan
            self.stats.answered_by_plan[plan] = self.stats.answered_by_plan.get(plan, 0) + 1
            self.observer.request_done(plan, time.perf_counter() - t0, True)
            return logits
        if time.monotonic() >= deadline and not any("deadline" in e for e in errors[-1:]):
            errors.append(f"request deadline of {self.run_timeout_s:g} s passed")
        self.stats.failed += 1
        raise RequestFailedError(f"request {rid} failed: " + " | then: ".join(errors))

    @staticmethod
    def _check_finite(batch: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
        if bad.size:
            raise InputError(f"input samples {bad[:10].tolist()} hold NaN or infinite values; pass finite floats "
                             "(the images as the bundle's preprocessing makes them)")

    def _prepare(self, x) -> tuple[np.ndarray, bool]:
        if self._manifest is None:
            self._call(self._ensure_manifest())
        shape = tuple(self._manifest["model"]["input_shape"])
        x = np.asarray(x, dtype=np.float32)
        single = x.shape == shape
        if not single and x.shape[1:] != shape:
            raise MeshError(f"expected input of shape (N, {', '.join(map(str, shape))}) or {shape}; received {x.shape}")
        batch = x[None] if single else x
        self._check_finite(batch)
        return batch, single

    def infer(self, x, timeout: float | None = None) -> np.ndarray:
        """Logits for a float batch ``(N,) + input_shape`` (or one sample).

        The samples run concurrently (up to ``max_concurrency`` in flight),
        each as its own Run of batch 1: a batch of any size stays within every
        node's ``max_batch`` (GetInfo), and the nodes take turns between
        callers one segment at a time.

        Raises:
            RequestFailedError: a sample could not be answered (the first
                such error; the others are counted in ``stats``).
        """
        if not self._selected:
            self.select()
        batch, single = self._prepare(x)

        async def go():
            return await asyncio.gather(*(self._infer_one(s) for s in batch))

        out = np.stack(self._call(go(), timeout))
        return out[0] if single else out

    def submit(self, x) -> concurrent.futures.Future:
        """Starts one sample (``input_shape``); the future resolves to its logits."""
        if not self._selected:
            self.select()
        batch, single = self._prepare(x)
        if not single:
            raise MeshError("submit() takes one sample; use infer() for a batch")
        return asyncio.run_coroutine_threadsafe(self._infer_one(batch[0]), self._loop)

    async def infer_async(self, x) -> np.ndarray:
        """`submit` for asyncio code running on any loop."""
        return await asyncio.wrap_future(self.submit(x))

    # --- watcher ------------------------------------------------------------
    async def _watch(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._probe_down_nodes(health_pb2, health_pb2_grpc)
                await self._refresh_a_link()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad probe
                log.exception("node watcher: probe failed")

    async def _refresh_a_link(self) -> None:
        """Probes again the up node whose link measure is oldest, once it is `link_refresh_s` old."""
        if self.link_refresh_s is None or not self.links:
            return
        now = time.monotonic()
        stale = [(at, a) for a, at in self._links_at.items()
                 if now - at >= self.link_refresh_s and a in self._nodes and self._nodes[a].up]
        if stale:
            await self._measure_links([min(stale)[1]])

    async def _probe_down_nodes(self, health_pb2, health_pb2_grpc) -> None:
        """Re-admits down nodes that answer their health check again; re-plans up."""
        back = []
        for node in list(self._nodes.values()):
            if node.up:
                continue
            try:
                r = await health_pb2_grpc.HealthStub(node.channel).Check(
                    health_pb2.HealthCheckRequest(service=limits.HEALTH_SERVICE), timeout=0.5
                )
            except grpc.aio.AioRpcError:
                continue
            if r.status == health_pb2.HealthCheckResponse.SERVING and await self._get_info(node, 1.0) is not None:
                node.up, node.error = True, ""
                self.stats.readmitted += 1
                self.observer.readmitted(node.address)
                back.append(node)
        if not back or self._manifest is None or not self.auto_replan:
            return
        for node in back:
            log.info("node %s is back", node.address)
            await self._ensure_bundle(node)
        try:
            await self._replan(upgrade_only=True)
        except (MeshError, grpc.aio.AioRpcError) as e:
            log.warning("re-plan after re-admission failed: %s", e)

    async def _ensure_bundle(self, node: _Node) -> None:
        """Deploys the bundle to a node that lacks it (when the bundle directory is here)."""
        info = node.info
        if info is None or self._bundle_dir is None or self._has_bundle(info):
            return
        log.info("deploying %s/%s to %s, which lacks it", self._bundle_name, self._version, node.address)
        try:
            await self._deploy(self._bundle_dir, _manifest_files(self._bundle), [node.address])
        except DeployError as e:
            self._mark_down(node.address, str(e))


def _peer_role(exc: grpc.aio.AioRpcError) -> int | None:
    for k, v in exc.trailing_metadata() or ():
        if k == limits.PEER_ROLE_KEY:
            try:
                return int(v)
            except ValueError:
                return None
    return None
