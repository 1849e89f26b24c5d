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
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from firmware_bridge import protocol as P
from firmware_bridge.board import Board
from firmware_bridge.errors import BoardError, SerialBridgeError
from firmware_bridge.tflm import check_models as check_tflm_models
from paradis_tf.bundle import Bundle, BundleError
from paradis_tf.bundle import load as load_bundle
from paradis_tf.mesh.errors import DeployError
from paradis_tf.mesh.node import NodeConfig, NodeServicer, serve
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


class BoardInterpreter(Interpreter):
    """An `Interpreter` whose model runs on a serial board (batch 1, looped)."""

    backend = "serial"
    resizable = False

    def __init__(self, board: Board, what: str, inputs: Sequence[TensorDetail], outputs: Sequence[TensorDetail],
                 work_s: float = 0.0) -> None:
        super().__init__(what, inputs, outputs)
        self.board = board
        self.work_s = work_s

    def _run(self, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]:
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for n in range(batch):
            tensors = [P.Tensor.from_numpy(x[n:n + 1], d.quant.scale, d.quant.zero_point)
                       for x, d in zip(inputs, self.inputs)]
            try:
                outs = self.board.run(tensors, work=self.work_s)
            except SerialBridgeError as e:
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

    Raises:
        BundleError: unknown plan or role, or a role of several segments.
        FlashError: the partition does not fit the board, or flashing failed.
        BoardError: the board refused or failed to activate it.
    """

    def __init__(self, bundle: "Bundle | str | Path", plan: str, role: int, board: Board, *, progress=None,
                 work_s: float = 0.0) -> None:
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
        arena = seg.tflm.arena_bytes if seg.tflm is not None else None
        name = f"{self.bundle.model.name}/{plan_.name}/{role}"[:P.MAX_STRING]
        self.flash_result = board.flash(name, image, progress, arena_bytes=arena)
        act = board.activate(self.flash_result.sha256)
        ins = [TensorDetail(f"input_{i}", inp.tensor.shape, inp.tensor.quant) for i, inp in enumerate(seg.inputs)]
        outs = [TensorDetail("output_0", seg.output.shape, seg.output.quant)]
        for kind, got, want in (("input", act.inputs, ins), ("output", act.outputs, outs)):
            if len(got) != len(want) or not all(g.matches(_spec(w)) for g, w in zip(got, want)):
                raise BoardError(f"the board runs {seg.file} with {kind}s {list(got)}, the manifest says "
                                 f"{[_spec(w) for w in want]}")
        self.arena_used = act.arena_used
        interp = BoardInterpreter(board, f"board {board.info.board_id if board.info else '?'} ({seg.file})", ins, outs,
                                  work_s)
        super().__init__(bundle, plan_, role, backend="serial", interpreters=[interp])


class BridgeServicer(NodeServicer):
    """`NodeServicer` whose roles run on a serial board.

    Args:
        config: the node settings (store, capacity, ...).
        board: the board client.
        speed_score: the relative speed the coordinator ranks nodes by.
    """

    kind = "serial-bridge"

    def __init__(self, config: NodeConfig, board: Board, speed_score: float = DEFAULT_SPEED_SCORE) -> None:
        super().__init__(config, speed_score=speed_score)
        self.board = board

    def load_program(self, bundle: VersionInfo, plan: str, role: int) -> BoardProgram:
        # On the node's single worker thread, like every Run: the serial line
        # carries one exchange at a time.
        try:
            self.board.hello()
            return BoardProgram(bundle.path, plan, role, self.board)
        except (SerialBridgeError, BundleError) as e:
            raise DeployError(f"serial board on {self.board.port}: {e}") from e

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
        return info


def run_bridge(port: str, listen: str, store: str | Path, *, baudrate: int = 115200, capacity: float = 1.0,
               node_id: str = "", speed_score: float = DEFAULT_SPEED_SCORE, timeout: float = 0.5, retries: int = 8,
               latency_budget_ms: float = 0.0, ready=None, tls=None, insecure: bool = False, max_batch: int = 0,
               trust_keys: tuple[str, ...] = (), store_quota_mb: float | None = None) -> int:
    """Blocking entry point of `paradis bridge`."""
    import asyncio

    check_listen(listen, tls, insecure)  # before the board is opened
    board = Board.open(port, baudrate, timeout=timeout, retries=retries)
    try:
        info = board.hello()
        log.info("board %s (%s, %s): flash %d B, arena %d B, max payload %d B", info.board_id, info.firmware_version,
                 info.runtime, info.flash_capacity, info.arena_capacity, info.max_payload)
        config = NodeConfig(store=Path(store), node_id=node_id or f"bridge-{info.board_id}",
                            backend=f"serial:{info.runtime}", capacity=capacity,
                            latency_budget_ms=latency_budget_ms, tls=tls, insecure=insecure, max_batch=max_batch,
                            trust_keys=tuple(trust_keys), store_quota_mb=store_quota_mb)

        async def main() -> None:
            await serve(BridgeServicer(config, board, speed_score), listen, ready=ready)

        asyncio.run(main())
    finally:
        board.close()
    return 0
