"""The node daemon: serves `paradis.mesh.v1.Node` on `grpc.aio`.

`NodeServicer` holds everything a node does; `serve()` wraps it in a server
with the standard health service, bounded message sizes and SIGTERM handling.
The serial bridge reuses `NodeServicer` by overriding `load_program` (what
runs a role: a board instead of a local interpreter) and `kind`.

Interpreter work runs on one worker thread, off the event loop, so the loop
keeps answering GetInfo, health checks and peers' Exchange while a segment
runs; waiting for a peer's feature map happens on the loop and never holds
the worker.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import statistics
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import numpy as np
from prometheus_client.registry import Collector

from paradis_tf import __version__
from paradis_tf.mesh import limits, security, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.errors import DeployError, MeshError, ProgramReplacedError, TensorError
from paradis_tf.mesh.mailbox import Mailbox, MailboxFull
from paradis_tf.mesh.metrics import MetricsServer, NodeMetrics, check_metrics_listen
from paradis_tf.mesh.signing import SignatureError
from paradis_tf.mesh import signing
from paradis_tf.mesh.scheduler import FairScheduler, TokenBucket
from paradis_tf.bundle import BundleError, SegmentRef, TensorSpec
from paradis_tf.bundle import load as load_bundle
from paradis_tf.mesh.program import RoleProgram, load_role_program, model_input_spec
from paradis_tf.mesh.store import BundleStore, StoreQuotaError, Upload, VersionInfo, check_name
from paradis_tf.quant import QTensor
from paradis_tf.runtime.backends import BackendError, load_interpreter
from paradis_tf.tflite_file import TfliteFileError

__all__ = ["NodeServicer", "NodeConfig", "serve", "run_node", "measure_speed_score"]

log = logging.getLogger("paradis.node")

# How many activations a node keeps loaded: the current one and the one
# before, so requests already in flight when the coordinator re-plans finish
# on the plan they started with.
_KEEP_ACTIVATIONS = 2

# Callers of the interpreter thread that are no remote peer (`FairScheduler`
# turns): loading and measuring a role (Activate, restore), anything else.
_ACTIVATE_CALLER = "(activate)"
_LOCAL_CALLER = "(local)"

# String fields every handler checks (`limits.check_text`): name -> longest allowed
_ID, _NAME = limits.MAX_ID_CHARS, limits.MAX_NAME_CHARS
_RUN_FIELDS = (("request_id", _ID), ("plan", _NAME), ("activation_id", _ID))
_ACTIVATE_FIELDS = (("bundle", _NAME), ("version", _NAME), ("plan", _NAME), ("activation_id", _ID))
_MANIFEST_FIELDS = (("bundle", _NAME), ("version", _NAME))


def measure_speed_score(seconds: float = 0.15) -> float:
    """GFLOP/s of a float32 matmul loop on one core, measured for ``seconds``.

    A relative speed for choosing which node gets the widest role; not a
    benchmark.
    """
    a = np.random.default_rng(0).standard_normal((128, 128), dtype=np.float32)
    b = a.T.copy()
    n = 0
    t0 = time.perf_counter()
    while True:
        np.dot(a, b)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
    return round(n * 2 * 128**3 / dt / 1e9, 3)


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one node daemon (`paradis node serve` flags)."""

    store: Path
    node_id: str = ""
    backend: str = "litert"
    capacity: float = 1.0
    latency_budget_ms: float = 0.0
    memory_budget_mb: float = 0.0
    threads: int = 1
    keep_versions: int = 3
    # zeroconf: announce this node as _paradis._tcp (optional; docs/MESH.md)
    advertise: bool = False
    fleet: str = "default"
    advertise_interfaces: tuple[str, ...] = ()
    # mutual TLS (paradis_tf.mesh.security): serve TLS, require client certificates, use them towards peers
    tls: "security.TlsConfig | None" = None
    # plaintext off loopback only when asked (`--insecure`), with a warning at start and every interval
    insecure: bool = False
    insecure_warning_interval_s: float = security.INSECURE_WARNING_INTERVAL_S
    # public keys (.pub files, `--trust-key`) a bundle must be signed by to be deployed or activated (empty: not verified)
    trust_keys: tuple[str, ...] = ()
    # largest batch of one Run (`--max-batch`); 0: auto, from the role's measured latency (limits.auto_max_batch)
    max_batch: int = 0
    # MB all stored bundle versions may take (`--store-quota-mb`); None: store.default_quota_bytes; 0: no quota
    store_quota_mb: float | None = None
    # Prometheus endpoint HOST:PORT (`--metrics-listen`; "": none): HTTPS with `tls`, else loopback unless `insecure`
    metrics_listen: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.capacity <= 1.0:
            raise ValueError(f"Expected a capacity in (0, 1]. Received capacity={self.capacity}.")
        if self.latency_budget_ms < 0:
            raise ValueError(f"Expected a non-negative latency budget. Received latency_budget_ms={self.latency_budget_ms}.")
        if self.memory_budget_mb < 0:
            raise ValueError(f"Expected a non-negative memory budget. Received memory_budget_mb={self.memory_budget_mb}.")
        if self.threads < 1:
            raise ValueError(f"Expected at least one interpreter thread. Received threads={self.threads}.")
        if self.max_batch < 0:
            raise ValueError(f"Expected a max batch >= 0 (0: auto). Received max_batch={self.max_batch}.")
        if self.store_quota_mb is not None and not self.store_quota_mb >= 0:
            raise ValueError(f"Expected a store quota >= 0 MB (0: no quota). Received store_quota_mb={self.store_quota_mb}.")
        if self.advertise:
            from paradis_tf.mesh.discovery import check_fleet

            check_fleet(self.fleet)


@dataclass
class _Active:
    activation: mesh_pb2.Activation
    program: RoleProgram
    role_latency_ms: float


class _Abort(Exception):
    """A call refused with a status code and message (raised inside handlers)."""

    def __init__(self, code: grpc.StatusCode, message: str, peer_role: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.peer_role = peer_role


def _node_id(store: BundleStore, given: str, tls: "security.TlsConfig | None" = None) -> str:
    if tls is not None:
        # With mutual TLS a node is who its certificate says: peers and
        # coordinators check the certificate's name, so the id must be it.
        ident = tls.identity()
        if ident.role != "node":
            raise MeshError(
                f"the certificate {str(tls.cert)!r} names {ident}; a node serves with a node certificate "
                f"(paradis certs issue DIR --name NODE_ID --role node --host ...)"
            )
        if given and given != ident.name:
            raise MeshError(
                f"--node-id {given!r} disagrees with the certificate {str(tls.cert)!r}, issued to {ident.name!r}: "
                "with TLS the node id is the certificate's name (drop --node-id or issue a certificate for it)"
            )
        return ident.name
    if given:
        return given
    path = store.root / "node-id"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        nid = f"node-{uuid.uuid4().hex[:8]}"
        path.write_text(nid + "\n", encoding="utf-8")
        return nid


class NodeServicer(mesh_pb2_grpc.NodeServicer):
    """Everything one node does; subclass and override `load_program` for
    hardware that runs roles elsewhere (the serial bridge)."""

    kind = "grpc-node"

    def __init__(self, config: NodeConfig, speed_score: float | None = None):
        self.config = config
        # a bundle is deployed and activated only with a valid signature of one of these keys (`--trust-key`)
        self.trusted_keys = signing.load_trusted_keys(config.trust_keys)
        self.trusted_key_ids = tuple(signing.key_id(k) for k in self.trusted_keys)
        if self.trusted_keys:
            log.info("bundles must be signed by a trusted key: %s", ", ".join(self.trusted_key_ids))
        else:
            log.warning("bundles are not verified: any bundle that reaches this node is deployed and activated, "
                        "signed or not; give --trust-key PUB (a key of `paradis keys new`) to accept only signed ones")
        quota = None if config.store_quota_mb is None else int(config.store_quota_mb * 1024 * 1024)
        self.store = BundleStore(config.store, keep=config.keep_versions, quota_bytes=quota, check_models=self.check_models)
        log.info("bundle store %s: %.1f MB stored, quota %s", self.store.root, self.store.used_bytes() / 1024**2,
                 f"{self.store.quota_bytes / 1024**2:.1f} MB" if self.store.quota_bytes else "none (--store-quota-mb 0)")
        self.node_id = _node_id(self.store, config.node_id, config.tls)
        self.speed_score = measure_speed_score() if speed_score is None else float(speed_score)
        self.started_unix_ms = int(time.time() * 1000)
        self.counters = mesh_pb2.Counters()  # what GetInfo reports, counted in place
        # interpreter work: one thread, callers take turns (scheduler.FairScheduler)
        self._scheduler = FairScheduler(thread_name_prefix="paradis-interp")
        self._activation_tokens = TokenBucket(limits.ACTIVATION_BURST, limits.ACTIVATION_RATE_PER_S)
        self._activations: OrderedDict[str, _Active] = OrderedDict()
        self._current: _Active | None = None
        self._activate_lock = asyncio.Lock()
        self._mailbox = Mailbox()
        self._peers: dict[tuple[str, str], tuple[grpc.aio.Channel, mesh_pb2_grpc.NodeStub]] = {}

    # --- hooks ------------------------------------------------------------
    def load_program(self, bundle: VersionInfo, plan: str, role: int) -> RoleProgram:
        """Loads one role of a plan (blocking; runs on the worker thread).

        Override to run roles elsewhere (the serial bridge returns an object
        whose `run_segment` runs on the board).
        """
        return load_role_program(bundle.path, plan, role, backend=self.config.backend, threads=self.config.threads)

    def check_models(self, models: Sequence[tuple[str, Path]]) -> None:
        """Loads every .tflite of an upload with this node's interpreter before its version is committed
        (`store.ModelCheck`; blocking, off the event loop): LiteRT runs its flatbuffer verifier and
        allocates the tensors, so a file that is no model is refused at Deploy, not at Activate.

        Override where roles run elsewhere (the serial bridge checks with TFLM, the board's runtime).

        Raises:
            DeployError: naming the first file that does not load.
        """
        backend = self.config.backend
        for rel, path in models:
            data = path.read_bytes()
            # TFLM crashes when its persistent allocations do not fit: give it the arena probe's generous size
            arena = min(64 << 20, (16 << 20) + 10 * len(data)) if backend == "tflm" else None
            try:
                load_interpreter(data, backend, num_threads=1, arena_size=arena)
            except (BackendError, TfliteFileError) as e:
                raise DeployError(f"{rel!r} is not a model {backend} can load: {str(e).removeprefix('model: ')}") from None

    def metrics_collectors(self) -> Sequence[Collector]:
        """More Prometheus collectors for this node's ``--metrics-listen`` endpoint (the bridge adds its board's)."""
        return ()

    @property
    def activation(self) -> mesh_pb2.Activation | None:
        """The activation this node serves (None before the first Activate)."""
        current = self._current
        return current.activation if current is not None else None

    def serving_started(self, set_serving: Callable[[bool], Awaitable[None]]) -> None:
        """Called by `serve()` on its event loop once the server answers, its health SERVING.

        ``await set_serving(False)`` makes the health NOT_SERVING (both service names), ``True`` SERVING
        again. Override to report a node that cannot serve for a while (the serial bridge does while its
        board does not answer); the default keeps SERVING until shutdown.
        """

    # --- lifecycle --------------------------------------------------------
    async def restore(self) -> bool:
        """Reloads the last activation recorded in the store (after a restart)."""
        state = self.store.load_state()
        if not state or "activation" not in state:
            return False
        a = state["activation"]
        try:
            await self._activate(
                a["bundle"], a.get("version", ""), a["plan"], int(a["role"]),
                {int(k): v for k, v in a.get("peers", {}).items()}, a.get("activation_id", ""), persist=False,
                peer_node_ids={int(k): v for k, v in a.get("peer_node_ids", {}).items()},
            )
            log.info("restored activation %s role %d of %s/%s", a["plan"], a["role"], a["bundle"], a.get("version"))
            return True
        except (MeshError, OSError, ValueError, KeyError) as e:
            log.warning("could not restore the last activation (%s); waiting for Activate", e)
            return False

    async def close(self) -> None:
        for ch, _ in self._peers.values():
            await ch.close()
        self._peers.clear()
        self._scheduler.close()
        self._activations.clear()

    # --- helpers ----------------------------------------------------------
    async def _in_worker(self, fn: Callable, *args, caller: str = _LOCAL_CALLER):
        """``fn(*args)`` on the interpreter thread, in ``caller``'s turn (`_caller_key`)."""
        return await self._scheduler.run(caller, fn, *args)

    def _max_batch(self, entry: "_Active") -> int:
        """The largest batch one Run of ``entry`` may carry (`--max-batch`, or auto from its latency)."""
        return self.config.max_batch or limits.auto_max_batch(entry.role_latency_ms)

    def _check_batch(self, entry: "_Active", t: QTensor, what: str) -> None:
        limit = self._max_batch(entry)
        if t.shape[0] > limit:
            how = (f"--max-batch {limit}" if self.config.max_batch else
                   f"auto: about {limits.RUN_BATCH_BUDGET_MS:g} ms of work at {entry.role_latency_ms:.3g} ms per sample")
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{what} carries a batch of {t.shape[0]}; this node takes at most {limit} per Run ({how}): "
                         f"split it into Runs of at most {limit} samples (GetInfo reports max_batch)")

    def _peer(self, address: str, node_id: str = "") -> mesh_pb2_grpc.NodeStub:
        """A stub for the peer at ``address``; with TLS its certificate must name ``node_id``."""
        key = (address, node_id if self.config.tls is not None else "")
        entry = self._peers.get(key)
        if entry is None:
            options = limits.CHANNEL_OPTIONS + (security.peer_channel_options(node_id) if key[1] else ())
            ch = security.channel(address, self.config.tls, options)
            entry = (ch, mesh_pb2_grpc.NodeStub(ch))
            self._peers[key] = entry
        return entry[1]

    def _authorize(self, context: grpc.aio.ServicerContext, rpc: str) -> "security.Identity | None":
        """The caller's certificate identity; refuses a role `security.RPC_ROLES` does not allow for ``rpc``.

        Returns None on a plaintext connection (loopback, or ``--insecure``).
        """
        if self.config.tls is None:
            return None
        ident = security.caller_identity(context)
        allowed = security.RPC_ROLES[rpc]
        if ident is None or ident.role not in allowed:
            who = "a caller without a certificate" if ident is None else f"the certificate {ident}"
            raise _Abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{rpc} needs a {' or '.join(allowed)} certificate of this fleet; {who} may not call it "
                f"(issue one with `paradis certs issue DIR --name N --role {allowed[0]}`)",
            )
        return ident

    async def _require(self, context: grpc.aio.ServicerContext, rpc: str) -> "security.Identity | None":
        """`_authorize`, aborting the call with PERMISSION_DENIED when refused."""
        try:
            return self._authorize(context, rpc)
        except _Abort as e:
            await self._abort(context, e)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, e: _Abort):
        md = ((limits.PEER_ROLE_KEY, str(e.peer_role)),) if e.peer_role is not None else ()
        await context.abort(e.code, limits.status_message(e.message), md)

    def _info(self) -> mesh_pb2.NodeInfo:
        info = mesh_pb2.NodeInfo(
            node_id=self.node_id,
            software_version=__version__,
            backend=self.config.backend,
            cores=_cores(),
            speed_score=self.speed_score,
            capacity=self.config.capacity,
            latency_budget_ms=self.config.latency_budget_ms,
            memory_budget_bytes=int(self.config.memory_budget_mb * 1024 * 1024),
            memory_bytes=_available_memory(),
            active=self._current is not None,
            started_unix_ms=self.started_unix_ms,
            kind=self.kind,
            trusted_keys=self.trusted_key_ids,
        )
        for name in self.store.names():
            sb = info.bundles.add(name=name)
            for v in self.store.versions(name):
                sb.versions.add(version=v.version, deployed_unix_ms=v.deployed_unix_ms, bytes=v.bytes, plans=list(v.plans))
                info.store_bytes += v.bytes  # what the quota counts (BundleStore.used_bytes)
        info.store_quota_bytes = self.store.quota_bytes
        if self._current is not None:
            info.activation.CopyFrom(self._current.activation)
            info.role_latency_ms = self._current.role_latency_ms
            info.max_batch = self._max_batch(self._current)
        else:
            info.max_batch = self.config.max_batch  # auto (0) is known once a role is measured
        info.counters.CopyFrom(self.counters)
        return info

    # --- GetInfo ----------------------------------------------------------
    async def GetInfo(self, request: mesh_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.NodeInfo:
        caller = await self._require(context, "GetInfo")
        info = await asyncio.to_thread(self._info)
        if caller is not None:
            info.tls_role = caller.role
        return info

    # --- signatures -------------------------------------------------------
    def _signature_check(self, name: str, version: str) -> Callable[[Path], str] | None:
        """What checks a copy of bundle ``name`` ``version`` against the trusted keys (None: none configured).

        The check raises `SignatureError` naming the bundle and the key ids.
        """
        if not self.trusted_keys:
            return None
        return lambda path: signing.verify_bundle(path, self.trusted_keys, label=f"bundle {name!r} version {version}")

    # --- Deploy -----------------------------------------------------------
    async def _begin_upload(self, b: mesh_pb2.DeployBegin) -> Upload:
        """`BundleStore.begin` off the event loop (it may prune to make room); an upload begun for a caller
        that went away meanwhile is aborted, so its quota reservation is not lost."""
        protect = {a.activation.version for a in self._activations.values() if a.activation.bundle == b.bundle}
        files = [(f.path, f.size, f.sha256) for f in b.files]
        begun = asyncio.ensure_future(asyncio.to_thread(self.store.begin, b.bundle, b.manifest_sha256, files, protect))
        try:
            return await asyncio.shield(begun)
        except asyncio.CancelledError:
            begun.add_done_callback(lambda t: t.cancelled() or t.exception() is not None or t.result().abort())
            raise

    async def Deploy(self, request_iterator: AsyncIterator[mesh_pb2.DeployRequest], context: grpc.aio.ServicerContext) -> mesh_pb2.DeployReply:
        await self._require(context, "Deploy")
        upload = None
        committed = False
        try:
            try:
                async for msg in request_iterator:
                    kind = msg.WhichOneof("kind")
                    if kind == "begin":
                        if upload is not None:
                            raise DeployError("a second DeployBegin in one stream")
                        upload = await self._begin_upload(msg.begin)
                    elif kind == "chunk":
                        if upload is None:
                            raise DeployError("FileChunk before DeployBegin")
                        if committed:
                            raise DeployError("FileChunk after DeployCommit")
                        await asyncio.to_thread(upload.add_chunk, msg.chunk.file_index, msg.chunk.offset, msg.chunk.data)
                    elif kind == "commit":
                        if upload is None:
                            raise DeployError("DeployCommit before DeployBegin")
                        committed = True
                    else:
                        raise DeployError("empty DeployRequest message")
                if upload is None:
                    raise DeployError("empty deploy stream (no DeployBegin)")
                if not committed:
                    missing = [f"{f.path} ({f.received} of {f.size} bytes)" for f in upload.files if f.received != f.size]
                    raise DeployError(
                        "truncated deploy stream: it ended before DeployCommit"
                        + (f"; incomplete files: {', '.join(missing[:5])}" if missing else "")
                    )
                info, present = await asyncio.to_thread(upload.commit, self._signature_check(upload.name, upload.version))
            except SignatureError as e:
                raise _Abort(grpc.StatusCode.PERMISSION_DENIED, f"deploy refused: {e}") from None
            except StoreQuotaError as e:
                raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"deploy refused: {e}") from None
            except DeployError as e:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"deploy refused: {e}") from None
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"deploy failed: the disk under the store "
                                 f"{self.store.root} is full ({e}); free space there or lower --store-quota-mb") from None
                raise _Abort(grpc.StatusCode.INTERNAL, f"deploy failed: {e}") from None
        except _Abort as e:
            if upload is not None:
                upload.abort()
            await self._abort(context, e)
        finally:
            if upload is not None and not committed:
                upload.abort()
        protect = {a.activation.version for a in self._activations.values() if a.activation.bundle == info.name}
        await asyncio.to_thread(self.store.prune, info.name, protect | {info.version})
        self.counters.deploys += 1
        if upload.pruned:
            log.info("removed versions %s of %s first to make room in the store quota", ", ".join(upload.pruned), info.name)
        if upload.repaired:
            log.warning("repaired %s version %s: stored files %s failed their sha256 and were replaced by the verified upload",
                        info.name, info.version, ", ".join(upload.repaired))
        log.info("deployed %s version %s (%d bytes%s)", info.name, info.version, info.bytes, ", already present" if present else "")
        return mesh_pb2.DeployReply(
            bundle=info.name, version=info.version, bytes=info.bytes, already_present=present,
            versions=[v.version for v in self.store.versions(info.name)],
        )

    # --- Activate ---------------------------------------------------------
    async def _activate(self, bundle: str, version: str, plan: str, role: int, peers: dict[int, str], activation_id: str,
                        persist: bool = True, peer_node_ids: dict[int, str] | None = None) -> _Active:
        peer_node_ids = dict(peer_node_ids or {})
        async with self._activate_lock:
            info = self.store.resolve(bundle, version)
            current = self._current
            if activation_id and current is not None and current.activation.activation_id == activation_id:
                a = current.activation
                if (a.bundle, a.version, a.plan, a.role, dict(a.peers), dict(a.peer_node_ids)) == (
                        info.name, info.version, plan, role, peers, peer_node_ids):
                    return current  # a repeated Activate (a retry, or a loop): nothing to reload or re-measure
            if not self._activation_tokens.take():
                cur = "no activation" if current is None else (
                    f"the current activation {current.activation.activation_id!r} (plan {current.activation.plan!r} "
                    f"role {current.activation.role})")
                raise _Abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"activate refused: this node loads at most {limits.ACTIVATION_BURST} activations back to back and "
                    f"{limits.ACTIVATION_RATE_PER_S:g} per second after that; {cur} keeps serving; retry in "
                    f"{self._activation_tokens.wait_s():.1f} s (repeating the current activation is free)",
                )
            check = self._signature_check(info.name, info.version)
            if check is not None:  # its files may have changed on disk, or it was stored before the keys were trusted
                await asyncio.to_thread(check, info.path)
            try:
                loaded = await asyncio.to_thread(load_bundle, info.path, verify=False)
                plan_obj = loaded.plan(plan)
            except BundleError as e:
                raise DeployError(str(e)) from None
            n = len(plan_obj.devices)
            if not 0 <= role < n:
                raise DeployError(f"role {role} does not exist in plan {plan!r} of {n} devices (roles 0..{n - 1})")
            needed = set()
            for seg in plan_obj.devices[role].segments:
                needed |= {i.source.device for i in seg.inputs if i.source is not None and i.source.device != role}
                needed |= {c.device for c, _ in plan_obj.consumers(SegmentRef(role, seg.index)) if c.device != role}
            missing = sorted(r for r in needed if r not in peers)
            if missing:
                raise DeployError(f"plan {plan!r} role {role} exchanges feature maps with roles {missing}, but Activate gave no peer address for them")
            unnamed = sorted(r for r in needed if not peer_node_ids.get(r))
            if self.config.tls is not None and unnamed:
                raise DeployError(
                    f"plan {plan!r} role {role} exchanges feature maps with roles {unnamed}, but Activate gave no peer "
                    "node id for them (peer_node_ids): with mutual TLS a node only talks to the peers it was named"
                )
            program = await self._in_worker(self.load_program, info, plan_obj.name, role, caller=_ACTIVATE_CALLER)
            latency = await self._in_worker(_measure_role_latency, program, caller=_ACTIVATE_CALLER)
            act = mesh_pb2.Activation(bundle=info.name, version=info.version, plan=plan_obj.name, role=role, peers=peers, activation_id=activation_id or uuid.uuid4().hex,
                                     peer_node_ids=peer_node_ids)
            entry = _Active(act, program, latency)
            self._activations.pop(act.activation_id, None)
            self._activations[act.activation_id] = entry
            while len(self._activations) > _KEEP_ACTIVATIONS:
                self._activations.popitem(last=False)
            self._current = entry
            self.counters.activations += 1
            if persist:
                state = {"activation": {"bundle": act.bundle, "version": act.version, "plan": act.plan, "role": act.role,
                                        "peers": {str(k): v for k, v in act.peers.items()}, "activation_id": act.activation_id,
                                        "peer_node_ids": {str(k): v for k, v in act.peer_node_ids.items()}}}
                await asyncio.to_thread(self.store.save_state, state)
            return entry

    async def Activate(self, request: mesh_pb2.ActivateRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.ActivateReply:
        await self._require(context, "Activate")
        try:
            _check_fields("Activate", request, _ACTIVATE_FIELDS)
            try:
                for r, address in request.peers.items():
                    limits.check_text(address, f"Activate.peers[{r}]", limits.MAX_ADDRESS_CHARS)
                for r, node_id in request.peer_node_ids.items():
                    limits.check_text(node_id, f"Activate.peer_node_ids[{r}]", limits.MAX_NAME_CHARS)
            except limits.FieldError as e:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            entry = await self._activate(request.bundle, request.version, request.plan, request.role, dict(request.peers),
                                         request.activation_id, peer_node_ids=dict(request.peer_node_ids))
        except _Abort as e:
            await self._abort(context, e)
        except SignatureError as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, limits.status_message(f"activate refused: {e}"))
        except DeployError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION if "not stored" in str(e) else grpc.StatusCode.INVALID_ARGUMENT, limits.status_message(f"activate refused: {e}"))
        except (MeshError, ValueError, OSError, RuntimeError) as e:
            await context.abort(grpc.StatusCode.INTERNAL, limits.status_message(f"activate failed: {type(e).__name__}: {e}"))
        log.info("activated %s role %d (%s)", request.plan, request.role, entry.activation.activation_id)
        return mesh_pb2.ActivateReply(activation=entry.activation, role_latency_ms=entry.role_latency_ms)

    # --- Run --------------------------------------------------------------
    def _lookup(self, activation_id: str, plan: str) -> _Active:
        if self._current is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "no plan is active on this node; call Activate first")
        entry = self._activations.get(activation_id) if activation_id else self._current
        if entry is None:
            cur = self._current.activation
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"activation {activation_id!r} is not (or no longer) loaded on this node "
                f"(active: {cur.activation_id!r}, plan {cur.plan!r} role {cur.role}); re-plan",
            )
        if plan != entry.activation.plan:
            a = entry.activation
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"plan {plan!r} is not active on this node (active: plan {a.plan!r} role {a.role} of bundle {a.bundle}/{a.version})",
            )
        return entry

    async def Run(self, request: mesh_pb2.RunRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.RunReply:
        try:
            self._authorize(context, "Run")
            return await self._run(request, context)
        except _Abort as e:
            self.counters.run_errors += 1
            await self._abort(context, e)

    async def _run(self, request: mesh_pb2.RunRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.RunReply:
        _check_fields("Run", request, _RUN_FIELDS)
        if not request.request_id:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Run has an empty request_id")
        entry = self._lookup(request.activation_id, request.plan)
        act, program = entry.activation, entry.program
        caller = _caller_key(context)
        remaining = context.time_remaining()
        budget = limits.RUN_TIMEOUT_S if remaining is None else remaining
        # Give up on a peer's feature map a little before the caller's deadline,
        # so the caller hears "role k did not deliver" (ABORTED, naming k) from
        # this node instead of a bare DEADLINE_EXCEEDED that would blame it.
        deadline = time.monotonic() + budget - min(1.0, 0.2 * budget)
        x: QTensor | None = None
        spec = model_input_spec(program.plan, act.role)
        if spec is not None:
            if not request.HasField("input"):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Run has no input tensor, but role {act.role} of plan {act.plan!r} takes the model input")
            x = _decode(request.input, spec, "input")
            self._check_batch(entry, x, "Run.input")
        batch = None if x is None else x.shape[0]
        aid, rid = act.activation_id, request.request_id
        local: dict[int, QTensor] = {}
        pushes: list[asyncio.Task] = []
        reply = mesh_pb2.RunReply(request_id=rid, role=act.role)
        compute = wait = 0.0
        try:
            for j in range(program.num_segments):
                ins = []
                for i, inp in enumerate(program.needs(j)):
                    if inp.source is None:
                        ins.append(x)
                    elif inp.source.device == act.role:
                        ins.append(local[inp.source.segment])
                    else:
                        p, s = inp.source.device, inp.source.segment
                        t0 = time.monotonic()
                        try:
                            t = await self._mailbox.get((aid, rid, p, s), deadline - t0)
                        except MailboxFull as e:  # the coordinator retries RESOURCE_EXHAUSTED
                            raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot wait for the feature map of "
                                         f"role {p} segment {s}: {e}; retry later") from None
                        except asyncio.TimeoutError:
                            raise _Abort(
                                grpc.StatusCode.ABORTED,
                                f"feature map of role {p} segment {s} did not arrive before the request's deadline",
                                peer_role=p,
                            ) from None
                        wait += time.monotonic() - t0
                        if batch is not None and t.shape[0] != batch:
                            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"feature map of role {p} segment {s} has batch {t.shape[0]}, the request {batch}")
                        batch = t.shape[0]
                        ins.append(t)
                t0 = time.perf_counter()
                try:
                    out = await self._in_worker(program.run_segment, j, ins, caller=caller)
                except Exception as e:  # the interpreter's own errors
                    replaced = _cause(e, ProgramReplacedError)
                    if replaced is not None:
                        raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{replaced}; re-plan") from None
                    raise _Abort(grpc.StatusCode.INTERNAL, f"segment {j} failed: {type(e).__name__}: {e}") from None
                compute += time.perf_counter() - t0
                local[j] = out
                consumers = program.remote_consumers(j)
                if consumers:
                    wire = tensors.encode_qtensor(out)
                    for c in consumers:
                        pushes.append(asyncio.create_task(self._push(act, c, rid, j, wire, deadline)))
                if program.is_fusion_output(j):
                    tensors.encode_qtensor(out, out=reply.outputs.add(segment=j).tensor)
            if pushes:
                await asyncio.gather(*pushes)
        finally:
            for task in pushes:
                task.cancel()
            self._mailbox.discard_request(aid, rid)
        self.counters.runs += 1
        reply.compute_ms = compute * 1e3
        reply.wait_ms = wait * 1e3
        return reply

    async def _push(self, act: mesh_pb2.Activation, consumer: int, rid: str, segment: int, t: mesh_pb2.Tensor, deadline: float) -> None:
        address = act.peers[consumer]
        timeout = min(limits.EXCHANGE_TIMEOUT_S, max(0.001, deadline - time.monotonic()))
        req = mesh_pb2.ExchangeRequest(request_id=rid, plan=act.plan, activation_id=act.activation_id, producer_role=act.role, producer_segment=segment, tensor=t)
        try:
            await self._peer(address, act.peer_node_ids.get(consumer, "")).Exchange(req, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise _Abort(
                grpc.StatusCode.ABORTED,
                f"could not push the feature map of segment {segment} to role {consumer} at {address}: {e.code().name}: {e.details()}",
                peer_role=consumer,
            ) from None
        self.counters.exchanges_sent += 1
        self.counters.exchange_bytes_sent += len(t.data)

    # --- Exchange ---------------------------------------------------------
    async def Exchange(self, request: mesh_pb2.ExchangeRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.ExchangeReply:
        try:
            caller = self._authorize(context, "Exchange")
            _check_fields("Exchange", request, _RUN_FIELDS)
            if not request.request_id:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Exchange has an empty request_id")
            entry = self._lookup(request.activation_id, request.plan)
            plan = entry.program.plan
            p, s = request.producer_role, request.producer_segment
            if caller is not None and entry.activation.peer_node_ids.get(p) != caller.name:
                expected = entry.activation.peer_node_ids.get(p)
                raise _Abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"Exchange for role {p} of activation {entry.activation.activation_id!r} must come from "
                    + (f"node {expected!r}, the peer the coordinator named for that role" if expected
                       else "a peer the coordinator named, and it named none for that role")
                    + f"; the certificate {caller} is not it",
                )
            if not 0 <= p < len(plan.devices) or not 0 <= s < len(plan.devices[p].segments):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"plan {request.plan!r} has no segment {s} on role {p}")
            _check_consumed(entry, p, s)
            t = _decode(request.tensor, plan.devices[p].segments[s].output, f"feature map of role {p} segment {s}")
            self._check_batch(entry, t, f"Exchange.tensor (role {p} segment {s})")
            try:
                fresh = self._mailbox.put((entry.activation.activation_id, request.request_id, p, s), t)
            except MailboxFull as e:
                raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"exchange refused: {e}") from None
        except _Abort as e:
            await self._abort(context, e)
        if fresh:
            self.counters.exchanges_received += 1
            self.counters.exchange_bytes_received += len(request.tensor.data)
        return mesh_pb2.ExchangeReply()

    # --- GetManifest ------------------------------------------------------
    async def GetManifest(self, request: mesh_pb2.GetManifestRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.GetManifestReply:
        await self._require(context, "GetManifest")
        try:
            _check_fields("GetManifest", request, _MANIFEST_FIELDS)
            if request.bundle:
                check_name(request.bundle)
        except _Abort as e:
            await self._abort(context, e)
        except DeployError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, limits.status_message(f"GetManifest.bundle: {e}"))
        name, version = request.bundle, request.version
        if not name:
            if self._current is not None:
                name = self._current.activation.bundle
                version = version or self._current.activation.version
            else:
                names = self.store.names()
                if len(names) != 1:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no bundle is active and {len(names)} are stored; name one")
                name = names[0]
        try:
            info = self.store.resolve(name, version)
        except DeployError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, limits.status_message(str(e)))
        data = await asyncio.to_thread((info.path / "manifest.json").read_bytes)
        return mesh_pb2.GetManifestReply(bundle=info.name, version=info.version, manifest_json=data)

    # --- Probe ------------------------------------------------------------
    async def Probe(self, request: mesh_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.ProbeReply:
        """Answers at once with ``reply_bytes`` zero bytes: a coordinator times it to measure the link."""
        await self._require(context, "Probe")
        for name, n in (("payload", len(request.payload)), ("reply_bytes", request.reply_bytes)):
            if n > limits.MAX_PROBE_BYTES:
                await self._abort(context, _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                                                  f"Probe.{name} of {n:,} bytes is over the limit of {limits.MAX_PROBE_BYTES:,}"))
        return mesh_pb2.ProbeReply(payload=bytes(request.reply_bytes))


def _cause(e: BaseException, kind: type) -> BaseException | None:
    """``e`` or the first exception of its ``__cause__`` chain that is a ``kind`` (backends wrap what they raise)."""
    seen = 0
    while e is not None and seen < 16:
        if isinstance(e, kind):
            return e
        e, seen = e.__cause__, seen + 1
    return None


def _caller_key(context: grpc.aio.ServicerContext) -> str:
    """Who a call comes from, for taking turns: its certificate's name, else its host (any port)."""
    names = context.auth_context().get("x509_common_name")
    if names:
        return "cert:" + bytes(names[0]).decode("utf-8", "replace")
    kind, _, rest = (context.peer() or "").partition(":")  # ipv4:127.0.0.1:5000, ipv6:[::1]:5000, unix:...
    if kind in ("ipv4", "ipv6"):
        rest = rest.rpartition(":")[0]
    return f"host:{rest}"


def _check_consumed(entry: _Active, producer: int, segment: int) -> None:
    """Refuses (INVALID_ARGUMENT) a feature map that this node's role does not take from a peer."""
    act, program = entry.activation, entry.program
    taken = sorted({(i.source.device, i.source.segment) for j in range(program.num_segments) for i in program.needs(j)
                    if i.source is not None and i.source.device != act.role})
    if (producer, segment) not in taken:
        takes = ", ".join(f"role {r} segment {g}" for r, g in taken) or "none"
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"role {act.role} of plan {act.plan!r} (activation {act.activation_id!r}) does not take the feature map of "
            f"role {producer} segment {segment} from a peer; the feature maps it takes: {takes}",
        )


def _check_fields(rpc: str, request, fields: tuple[tuple[str, int], ...]) -> None:
    """Refuses with INVALID_ARGUMENT, naming the field, a string too long or with a NUL or control character."""
    try:
        for name, max_chars in fields:
            limits.check_text(getattr(request, name), f"{rpc}.{name}", max_chars)
    except limits.FieldError as e:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None


def _decode(t: mesh_pb2.Tensor, spec: TensorSpec, what: str) -> QTensor:
    try:
        return tensors.decode_qtensor(t, spec, what=what)
    except TensorError as e:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None


def _measure_role_latency(program: RoleProgram, repeats: int = 3) -> float:
    """Median milliseconds to run every segment of the role once (zeros in)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for j in range(program.num_segments):
            ins = [QTensor(np.full(s.shape, s.quant.zero_point, dtype=s.quant.np_dtype), s.quant) for s in program.input_specs(j)]
            program.run_segment(j, ins)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


async def serve(
    servicer: NodeServicer,
    listen: str,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    grace_s: float = 5.0,
    metrics_ready: Callable[[str], None] | None = None,
) -> None:
    """Serves ``servicer`` on ``listen`` (``HOST:PORT``; port 0 picks one).

    Restores the last activation, calls ``ready("host:port")`` once
    listening, and stops gracefully (health NOT_SERVING, in-flight calls
    finished within ``grace_s``) on SIGTERM/SIGINT or when ``stop`` is set.
    With ``config.metrics_listen`` it also serves Prometheus metrics
    (`paradis_tf.mesh.metrics`) and calls ``metrics_ready("host:port")``
    with their bound address before ``ready``.
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    cfg = servicer.config
    metrics = endpoint = None
    if cfg.metrics_listen:
        check_metrics_listen(cfg.metrics_listen, cfg.tls, cfg.insecure)
        metrics = NodeMetrics(servicer, backend=cfg.backend, collectors=servicer.metrics_collectors())
    server = grpc.aio.server(options=limits.SERVER_OPTIONS,
                             interceptors=[metrics.interceptor()] if metrics is not None else None)
    mesh_pb2_grpc.add_NodeServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Expected --listen HOST:PORT. Received {listen!r}.")
    plaintext_off_loopback = security.check_listen(listen, servicer.config.tls, servicer.config.insecure)
    bound = security.add_port(server, listen, servicer.config.tls)
    if bound == 0:
        raise OSError(f"cannot listen on {listen!r} (address in use or not available)")
    if metrics is not None:  # its own threads: a scrape never waits for this event loop
        endpoint = MetricsServer(metrics.registry, cfg.metrics_listen, cfg.tls, cfg.insecure)
        endpoint.start()
    await servicer.restore()
    await server.start()

    async def set_serving(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", limits.HEALTH_SERVICE):
            await health_servicer.set(name, status)  # ignored once shutdown began: NOT_SERVING stays
        if metrics is not None and not stopping:
            metrics.set_serving(serving)

    stopping = False
    await set_serving(True)
    servicer.serving_started(set_serving)
    address = f"{host}:{bound}"
    log.info("node %s listening on %s", servicer.node_id, address)
    if endpoint is not None and metrics_ready is not None:
        metrics_ready(endpoint.address)
    advert = None
    if cfg.advertise:
        from paradis_tf.mesh.discovery import Advertisement

        advert = Advertisement(
            servicer.node_id, host, bound, fleet=cfg.fleet, capacity=cfg.capacity, backend=cfg.backend,
            version=__version__, interfaces=list(cfg.advertise_interfaces) or None,
        )
        try:
            await advert.start()
        except Exception as e:  # the static address keeps working: serve anyway
            log.error("zeroconf announcement failed (%s); serving without it: give coordinators %s with --nodes", e, address)
            advert = None
    warner = None
    if plaintext_off_loopback:
        warner = asyncio.create_task(_warn_plaintext(address, servicer.config.insecure_warning_interval_s))
    if ready is not None:
        ready(address)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    await stop.wait()
    log.info("node %s shutting down", servicer.node_id)
    # NOT_SERVING first, then the zeroconf goodbye: a coordinator that hears
    # the goodbye and probes the node must not see it healthy and re-admit it.
    await health_servicer.enter_graceful_shutdown()
    stopping = True
    if metrics is not None:
        metrics.set_serving(False)
    if warner is not None:
        warner.cancel()
    if advert is not None:
        await advert.close()
    await server.stop(grace_s)
    if endpoint is not None:
        await asyncio.to_thread(endpoint.close)
    await servicer.close()


async def _warn_plaintext(address: str, interval_s: float) -> None:
    while True:
        log.warning("serving PLAINTEXT on %s (--insecure): anyone who reaches this address can deploy, activate and "
                    "run models and read their inputs; use --tls-ca/--tls-cert/--tls-key", address)
        await asyncio.sleep(interval_s)


def run_node(config: NodeConfig, listen: str, ready: Callable[[str], None] | None = None,
             metrics_ready: Callable[[str], None] | None = None) -> int:
    """Blocking entry point of `paradis node serve`."""

    async def main() -> None:
        servicer = NodeServicer(config)
        await serve(servicer, listen, ready=ready, metrics_ready=metrics_ready)

    asyncio.run(main())
    return 0
