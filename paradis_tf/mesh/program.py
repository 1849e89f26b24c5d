"""What one activated role runs, as the node daemon sees it.

The node drives `paradis_tf.runtime.DeviceProgram`, the same class
`LocalRunner` runs, so a mesh result equals the local one bit for bit: the
plan semantics (which inputs a segment takes, explicit requantization, who
consumes an output, what the fusion takes) live there once. `RoleProgram`
names the part of that interface the node uses, so the serial bridge can
serve a board with an object that runs `run_segment` on the board.
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence, runtime_checkable

from paradis_tf.bundle import Bundle, Plan, SegmentInput, TensorSpec
from paradis_tf.quant import QTensor

__all__ = ["RoleProgram", "load_role_program", "model_input_spec"]


@runtime_checkable
class RoleProgram(Protocol):
    """The interface of `DeviceProgram` that `NodeServicer` uses."""

    plan: Plan
    role: int

    @property
    def num_segments(self) -> int: ...

    def needs(self, j: int) -> tuple[SegmentInput, ...]: ...

    def remote_consumers(self, j: int) -> list[int]: ...

    def is_fusion_output(self, j: int) -> bool: ...

    def input_specs(self, j: int) -> list[TensorSpec]: ...

    def output_spec(self, j: int) -> TensorSpec: ...

    def run_segment(self, j: int, inputs: Sequence[QTensor]) -> QTensor: ...


def load_role_program(bundle: "Bundle | str | os.PathLike", plan: str, role: int, backend: str, threads: int | None) -> RoleProgram:
    """A `DeviceProgram` for one role (interpreters loaded, ready to run).

    A node stores only manifest.json and the int8 segment files (no C
    arrays, no float partitions), each checked against the manifest's sha256
    when it was deployed, so the bundle is loaded without re-verifying files.
    """
    from paradis_tf.bundle import load
    from paradis_tf.runtime.program import DeviceProgram

    if not isinstance(bundle, Bundle):
        bundle = load(bundle, verify=False)
    return DeviceProgram(bundle, plan, role, backend, num_threads=threads)


def model_input_spec(plan: Plan, role: int) -> TensorSpec | None:
    """The quantization of the model input that role ``role`` takes (None: it takes none).

    Raises:
        ValueError: the role takes the model input with two different
            quantizations (the coordinator sends one tensor per role).
    """
    spec = None
    for seg in plan.devices[role].segments:
        for inp in seg.inputs:
            if inp.source is None:
                if spec is not None and spec != inp.tensor:
                    raise ValueError(f"plan {plan.name!r} role {role} takes the model input as both {spec} and {inp.tensor}")
                spec = inp.tensor
    return spec
