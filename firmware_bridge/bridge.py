"""The bridge: a serial board served as one more node of the mesh.

    paradis bridge --serial /dev/ttyACM0 --baud 921600 --listen 0.0.0.0:5101 --store /var/lib/paradis-bridge --capacity 0.25 \
        --tls-ca pki/ca.pem --tls-cert pki/mcu1.pem --tls-key pki/mcu1.key

`BridgeServicer` is the node daemon (`paradis_tf.mesh.node.NodeServicer`:
the same Deploy, Activate, Run, Exchange, health, restart and SIGTERM
behaviour) with one difference: a role runs on the board. On Activate the
bridge flashes the role's partition to the board (skipped when it is the
board's active image already; resumed after an interruption; refused before
sending anything if it is larger than the board's flash or its measured
TFLM arena larger than the board's arena), has the board verify and activate
it, and checks the board's tensor specs against the manifest. A Run then
goes through the shared plan semantics (`paradis_tf.runtime.DeviceProgram`:
which inputs, explicit requantization, who consumes the output) with a
`BoardInterpreter` in place of a local interpreter: one RUN per sample.

A board holds one partition, so a bridge serves roles of one segment (every
plan without sync layers, and the stages of sequential plans); a role with
several segments is refused at Activate with a clear error.

The bridge watches its board (`firmware_bridge.liveness.BoardMonitor`): a
PING every ``--ping-interval`` and a check after every failed Run, on the
same worker thread as the RUNs. A board that stops answering makes the
health NOT_SERVING within about interval + budget (1.5 s by default),
GetInfo's ``board`` says why, and Run and Activate answer UNAVAILABLE at
once (the coordinator plans without the bridge); when the board answers
again, the active role's partition is flashed again if the board lost it,
and the health is SERVING again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import grpc
import numpy as np

from firmware_bridge import protocol as P
from firmware_bridge.board import Board
from firmware_bridge.errors import BoardError, BoardTimeoutError, PortError, SerialBridgeError
from firmware_bridge.liveness import OK, BoardMonitor, BoardSnapshot, BoardUnavailableError
from firmware_bridge.tflm import check_models as check_tflm_models
from paradis_tf.bundle import Bundle, BundleError
from paradis_tf.bundle import load as load_bundle
from paradis_tf.mesh._proto import mesh_pb2
from paradis_tf.mesh.errors import DeployError, ProgramReplacedError
from paradis_tf.mesh.metrics import BoardCollector, check_metrics_listen
from paradis_tf.mesh.node import NodeConfig, NodeServicer, _Abort, serve
from paradis_tf.mesh.security import check_listen
from paradis_tf.mesh.store import VersionInfo
from paradis_tf.runtime.backends import BackendError, Interpreter, TensorDetail
from paradis_tf.runtime.program import DeviceProgram

__all__ = ["BoardInterpreter", "BoardProgram", "BridgeServicer", "run_bridge"]

log = logging.getLogger("paradis.bridge")

# A microcontroller is slow next to the hosts' matmul score; the coordinator
# gives the widest role to the fastest node, so a board ranks last unless the
# operator says otherwise (--speed-score).
DEFAULT_SPEED_SCORE = 0.01
# How often the bridge pings its board (--ping-interval), seconds.
DEFAULT_PING_INTERVAL_S = 0.5
# The board watcher's turn on the serial worker (`paradis_tf.mesh.scheduler.FairScheduler`).
_BOARD_CALLER = "(board)"


class BoardInterpreter(Interpreter):
    """An `Interpreter` whose model runs on a serial board (batch 1, looped)."""

    backend = "serial"
    resizable = False

    def __init__(self, board: Board, what: str, inputs: Sequence[TensorDetail], outputs: Sequence[TensorDetail],
                 work_s: float = 0.0, monitor: BoardMonitor | None = None, sha256: bytes | None = None) -> None:
        super().__init__(what, inputs, outputs)
        self.board = board
        self.sha256 = sha256  # the partition this interpreter's model is; None: whatever the board runs
        self.work_s = work_s
        # with a monitor: no RUN while the board is not OK, each RUN bounded by its budget, failures recorded
        self.monitor = monitor

    def _run(self, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]:
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        m = self.monitor
        info = self.board.info
        if self.sha256 is not None and info is not None and info.active_sha256 != self.sha256:
            # an Activate of another role ran on this worker thread after the request was admitted
            raise ProgramReplacedError(f"{self.what} is no longer on the board, which now runs "
                                       f"{info.active_name or (info.active_sha256 or b'').hex()[:16] or 'no partition'}")
        for n in range(batch):
            tensors = [P.Tensor.from_numpy(x[n:n + 1], d.quant.scale, d.quant.zero_point)
                       for x, d in zip(inputs, self.inputs)]
            try:
                if m is None:
                    outs = self.board.run(tensors, work=self.work_s)
                else:
                    m.check()
                    t0 = time.monotonic()
                    outs = self.board.run(tensors, work=self.work_s, within=m.run_within(self.work_s))
                    m.run_succeeded(time.monotonic() - t0)
            except BoardUnavailableError as e:
                raise BackendError(f"{self.what}: {e}") from e
            except SerialBridgeError as e:
                if m is not None:
                    m.failed(e)
                raise BackendError(f"{self.what}: {e}") from e
            if len(outs) != len(self.outputs):
                raise BackendError(f"{self.what}: the board returned {len(outs)} outputs, the model has {len(self.outputs)}")
            for o, (t, d) in enumerate(zip(outs, self.outputs)):
                want = _spec(d)
                if not t.spec.matches(want):
                    raise BackendError(f"{self.what}: the board's output {o} is {t.spec}, the manifest says {want}")
                results[o].append(t.numpy())
        return [np.concatenate(r, axis=0) for r in results]


def _spec(d: TensorDetail) -> P.TensorSpec:
    return P.TensorSpec(d.quant.dtype, d.shape, d.quant.scale, d.quant.zero_point)


class BoardProgram(DeviceProgram):
    """`DeviceProgram` of one role whose single segment runs on a board.

    Everything but the interpreter is `DeviceProgram`'s, so the bridge
    answers exactly like a node daemon (and like `LocalRunner`) would.

    Args:
        bundle: a loaded `Bundle` or a bundle directory.
        plan: plan name.
        role: device index in the plan.
        board: the board, after `hello()`.
        progress: called as progress(bytes_acknowledged, total) while flashing.
        work_s: seconds the board may spend on one RUN before the first retransmission.
        monitor: the board's liveness (the bridge's): RUNs are refused while it is not OK and bounded.

    Raises:
        BundleError: unknown plan or role, or a role of several segments.
        FlashError: the partition does not fit the board, or flashing failed.
        BoardError: the board refused or failed to activate it.
    """

    def __init__(self, bundle: "Bundle | str | Path", plan: str, role: int, board: Board, *, progress=None,
                 work_s: float = 0.0, monitor: BoardMonitor | None = None) -> None:
        bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
        plan_ = bundle.plan(plan)
        if not 0 <= role < len(plan_.devices):
            raise BundleError(f"plan '{plan_.name}' has roles 0..{len(plan_.devices) - 1}; received role {role}")
        device = plan_.devices[role]
        if len(device.segments) != 1:
            raise BundleError(f"plan '{plan_.name}' role {role} has {len(device.segments)} segments; a serial "
                              "board holds one partition (serve it from a node daemon, or pick a plan without sync layers)")
        self.bundle = bundle
        seg = device.segments[0]
        image = self.bundle.path(seg.file).read_bytes()
        if hashlib.sha256(image).hexdigest() != seg.sha256:
            raise BundleError(f"{self.bundle.path(seg.file)}: sha256 differs from the manifest")
        self.board = board
        self.image = image
        self.sha256 = hashlib.sha256(image).digest()
        self._file = seg.file
        self._arena = seg.tflm.arena_bytes if seg.tflm is not None else None
        self._name = f"{self.bundle.model.name}/{plan_.name}/{role}"[:P.MAX_STRING]
        self._ins = [TensorDetail(f"input_{i}", inp.tensor.shape, inp.tensor.quant) for i, inp in enumerate(seg.inputs)]
        self._outs = [TensorDetail("output_0", seg.output.shape, seg.output.quant)]
        self.install(progress)
        interp = BoardInterpreter(board, f"board {board.info.board_id if board.info else '?'} ({seg.file})",
                                  self._ins, self._outs, work_s, monitor, sha256=self.sha256)
        super().__init__(bundle, plan_, role, backend="serial", interpreters=[interp])

    def install(self, progress=None) -> None:
        """Flashes the role's partition (nothing is sent when the board runs it already), activates it and
        checks the board's tensor specs against the manifest: on Activate, and again for a board that lost it.

        Raises:
            FlashError: the partition does not fit the board, or flashing failed.
            BoardError: the board refused or failed to activate it, or runs it with other tensor specs.
        """
        self.flash_result = self.board.flash(self._name, self.image, progress, arena_bytes=self._arena)
        act = self.board.activate(self.flash_result.sha256)
        for kind, got, want in (("input", act.inputs, self._ins), ("output", act.outputs, self._outs)):
            if len(got) != len(want) or not all(g.matches(_spec(w)) for g, w in zip(got, want)):
                raise BoardError(f"the board runs {self._file} with {kind}s {list(got)}, the manifest says "
                                 f"{[_spec(w) for w in want]}")
        self.arena_used = act.arena_used


class BridgeServicer(NodeServicer):
    """`NodeServicer` whose roles run on a serial board.

    While the board does not answer (or is being re-flashed), the health is
    NOT_SERVING and Run and Activate answer UNAVAILABLE naming the board's
    state (module doc).

    Args:
        config: the node settings (store, capacity, ...).
        board: the board client.
        speed_score: the relative speed the coordinator ranks nodes by.
        ping_interval_s: seconds between two PINGs of the board.
        board_budget_s: seconds a PING (or a RUN beyond its usual time) may
            go unanswered, retransmissions included, before the board
            counts as unresponsive.
    """

    kind = "serial-bridge"

    def __init__(self, config: NodeConfig, board: Board, speed_score: float = DEFAULT_SPEED_SCORE, *,
                 ping_interval_s: float = DEFAULT_PING_INTERVAL_S, board_budget_s: float = 1.0) -> None:
        if not ping_interval_s > 0:
            raise ValueError(f"Expected a positive ping interval in seconds. Received ping_interval_s={ping_interval_s!r}.")
        super().__init__(config, speed_score=speed_score)
        self.board = board
        self.ping_interval_s = float(ping_interval_s)
        self.monitor = BoardMonitor(board, budget_s=board_budget_s, on_change=self._board_changed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._set_serving: Callable[[bool], Awaitable[None]] | None = None
        self._probe_now: asyncio.Event | None = None
        self._watcher: asyncio.Task | None = None
        self._health_lock: asyncio.Lock | None = None
        self._health_tasks: set[asyncio.Task] = set()

    def load_program(self, bundle: VersionInfo, plan: str, role: int) -> BoardProgram:
        # On the node's single worker thread, like every Run: the serial line
        # carries one exchange at a time.
        try:
            self.board.hello()
            program = BoardProgram(bundle.path, plan, role, self.board, monitor=self.monitor)
        except (SerialBridgeError, BundleError) as e:
            if isinstance(e, (BoardTimeoutError, PortError)):
                self.monitor.failed(e)
            raise DeployError(f"serial board on {self.board.port}: {e}") from e
        self.monitor.forget_runs()  # another partition: its RUN times are learnt anew
        return program

    def check_models(self, models: Sequence[tuple[str, Path]]) -> None:
        """Loads every .tflite of an upload with TFLM, the board's runtime, before its version is committed:
        in one child process, as TFLM has no flatbuffer verifier and crashes on some malformed files
        (`firmware_bridge.tflm.check_models`).

        Raises:
            DeployError: naming the first file TFLM does not load.
        """
        for (rel, _), why in zip(models, check_tflm_models([path for _, path in models])):
            if why:
                raise DeployError(f"{rel!r} is not a model TFLM (the board's runtime) can load: {why}")

    def _info(self):
        info = super()._info()
        if self.board.info is not None:
            info.memory_bytes = self.board.info.arena_capacity
        info.board.CopyFrom(self.board_status())
        return info

    def board_status(self) -> mesh_pb2.BoardStatus:
        """The board's state and line counters (GetInfo's ``board``, and the metrics endpoint's board families)."""
        s = self.monitor.snapshot()
        return mesh_pb2.BoardStatus(
            state=s.state, error=s.error, since_unix_ms=s.since_unix_ms, last_answer_unix_ms=s.last_answer_unix_ms,
            board_id=s.board_id, port=s.port, frames_retransmitted=s.retransmits, bad_frames=s.bad_frames,
            crc_errors=s.crc_errors, naks=s.naks, port_reopens=s.reopens, probes_failed=s.probes_failed,
            reflashes=s.reflashes,
        )

    def metrics_collectors(self) -> Sequence[BoardCollector]:
        """The serial line's and board's families, read from `board_status` at scrape time."""
        return (BoardCollector(self.board_status),)

    # --- board liveness -------------------------------------------------------
    def serving_started(self, set_serving: Callable[[bool], Awaitable[None]]) -> None:
        """Starts watching the board; its state sets the health from now on."""
        self._loop = asyncio.get_running_loop()
        self._set_serving = set_serving
        self._probe_now = asyncio.Event()
        self._health_lock = asyncio.Lock()
        self._watcher = asyncio.create_task(self._watch_board(), name="board-watcher")
        if not self.monitor.ok:
            self._sync_health()

    async def _watch_board(self) -> None:
        """A probe every ping interval, or at once after a failed Run (`_run`)."""
        while True:
            try:
                await asyncio.wait_for(self._probe_now.wait(), self.ping_interval_s)
            except asyncio.TimeoutError:
                pass
            self._probe_now.clear()
            try:
                await self._in_worker(self._probe_board, caller=_BOARD_CALLER)
            except RuntimeError:  # the worker is closed: shutting down
                return
            except Exception:  # the watcher must outlive any one bad probe
                log.exception("board watcher: the probe failed")

    def _probe_board(self) -> str:
        """One `BoardMonitor.probe` (on the serial worker), re-flashing the current role's partition if needed."""
        current = self._current
        program = current.program if current is not None else None
        if isinstance(program, BoardProgram):
            return self.monitor.probe(program.sha256, program.install)
        return self.monitor.probe()

    def _board_changed(self, s: BoardSnapshot) -> None:
        """The board's state changed (any thread): log it, set the health to match."""
        if s.state == OK:
            log.info("board %s on %s answers again: serving (health SERVING)", s.board_id, s.port)
        else:
            log.warning("board %s on %s is %s: %s; health NOT_SERVING, Run and Activate refused with UNAVAILABLE "
                        "until it answers", s.board_id, s.port, s.state, s.error)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._sync_health)

    def _sync_health(self) -> None:
        """Sets the health to the board's state (on the event loop)."""
        if self._set_serving is not None:
            task = asyncio.ensure_future(self._apply_health())
            self._health_tasks.add(task)
            task.add_done_callback(self._health_tasks.discard)

    async def _apply_health(self) -> None:
        async with self._health_lock:  # one at a time, each with the state as it is then: the last one wins
            await self._set_serving(self.monitor.ok)

    async def _refuse(self, context: grpc.aio.ServicerContext, rpc: str) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            f"{rpc} refused: {self.monitor.why()}; health is NOT_SERVING until the board answers again")

    async def Activate(self, request: mesh_pb2.ActivateRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.ActivateReply:
        await self._require(context, "Activate")
        if not self.monitor.ok:
            await self._refuse(context, "Activate")
        return await super().Activate(request, context)

    async def _run(self, request: mesh_pb2.RunRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.RunReply:
        # a board that does not answer costs the caller nothing: UNAVAILABLE at once, the coordinator re-plans
        if not self.monitor.ok:
            self.counters.run_errors += 1
            await self._refuse(context, "Run")
        self._check_partition(request.activation_id)
        failed = self.monitor.failures
        try:
            return await super()._run(request, context)
        except Exception:
            if self.monitor.failures != failed and self._probe_now is not None:
                self._probe_now.set()  # a RUN failed on the board: check it now
            if not self.monitor.ok:
                self.counters.run_errors += 1
                await self._refuse(context, "Run")
            raise

    def _check_partition(self, activation_id: str) -> None:
        """The board holds one partition, the current activation's: a Run of the activation before it (kept
        loaded on a node daemon so requests in flight during a re-plan finish) is stale here unless it is the
        same role of the same bundle version."""
        cur = self._current
        entry = self._activations.get(activation_id) if activation_id else None
        if cur is None or entry is None or entry is cur:
            return  # none active, unknown or current: the base class answers
        a, b = entry.activation, cur.activation
        if (a.bundle, a.version, a.plan, a.role) != (b.bundle, b.version, b.plan, b.role):
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"activation {a.activation_id!r} (plan {a.plan!r} role {a.role}) is no longer on the board, "
                         f"which now runs plan {b.plan!r} role {b.role} (activation {b.activation_id!r}); re-plan")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
            self._watcher = None
        await super().close()


def run_bridge(port: str, listen: str, store: str | Path, *, baudrate: int = 115200, capacity: float = 1.0,
               node_id: str = "", speed_score: float = DEFAULT_SPEED_SCORE, timeout: float = 0.5, retries: int = 8,
               latency_budget_ms: float = 0.0, ready=None, tls=None, insecure: bool = False, max_batch: int = 0,
               trust_keys: tuple[str, ...] = (), store_quota_mb: float | None = None,
               ping_interval: float = DEFAULT_PING_INTERVAL_S, metrics_listen: str = "", metrics_ready=None) -> int:
    """Blocking entry point of `paradis bridge`.

    The board counts as unresponsive when a PING gets no valid answer within max(1 s, 2 x ``timeout``).
    With ``metrics_listen`` the bridge serves Prometheus metrics (`paradis_tf.mesh.metrics`), and calls
    ``metrics_ready("host:port")`` once they are served.
    """
    check_listen(listen, tls, insecure)  # before the board is opened
    if metrics_listen:
        check_metrics_listen(metrics_listen, tls, insecure)
    board = Board.open(port, baudrate, timeout=timeout, retries=retries)
    try:
        info = board.hello()
        log.info("board %s (%s, %s): flash %d B, arena %d B, max payload %d B", info.board_id, info.firmware_version,
                 info.runtime, info.flash_capacity, info.arena_capacity, info.max_payload)
        config = NodeConfig(store=Path(store), node_id=node_id or f"bridge-{info.board_id}",
                            backend=f"serial:{info.runtime}", capacity=capacity,
                            latency_budget_ms=latency_budget_ms, tls=tls, insecure=insecure, max_batch=max_batch,
                            trust_keys=tuple(trust_keys), store_quota_mb=store_quota_mb,
                            metrics_listen=metrics_listen)

        async def main() -> None:
            servicer = BridgeServicer(config, board, speed_score, ping_interval_s=ping_interval,
                                      board_budget_s=max(1.0, 2.0 * timeout))
            await serve(servicer, listen, ready=ready, metrics_ready=metrics_ready)

        asyncio.run(main())
    finally:
        board.close()
    return 0
