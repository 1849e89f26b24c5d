"""What a plan costs: work per device and bytes crossing devices per inference.

Computed from the manifest alone (deterministic, no interpreter runs), for
`paradis plan` and the mesh benchmark's comparison of ParaDiS against
sequential plans. Tensors are counted at their stored size (int8: one byte
per element), per sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from paradis_tf.bundle import Plan

__all__ = ["DeviceCost", "PlanCost", "plan_cost"]


@dataclass(frozen=True)
class DeviceCost:
    role: int
    width: float
    macs: int
    params: int
    segments: int
    partition_bytes: int  # sum of the device's int8 .tflite files
    arena_bytes: int | None  # largest TFLM arena among its segments (segments run one at a time)
    input_bytes: int  # model input the coordinator sends it
    received_bytes: int  # feature maps from other devices
    sent_bytes: int  # feature maps to other devices
    output_bytes: int  # partial outputs to the coordinator's fusion


# PlanCost totals: name -> (DeviceCost field, how the devices' values combine)
_TOTALS = {
    "input_broadcast_bytes": ("input_bytes", sum),
    "exchange_bytes": ("sent_bytes", sum),
    "output_bytes": ("output_bytes", sum),
    "total_macs": ("macs", sum),
    "max_device_macs": ("macs", max),
}


@dataclass(frozen=True)
class PlanCost:
    """Per-device costs and their totals (`_TOTALS`, filled in from ``devices``)."""

    name: str
    kind: str
    devices: tuple[DeviceCost, ...]
    input_broadcast_bytes: int = field(init=False)  # model input sent to the devices
    exchange_bytes: int = field(init=False)  # feature maps between devices
    output_bytes: int = field(init=False)  # partial outputs to the fusion
    total_macs: int = field(init=False)
    max_device_macs: int = field(init=False)

    def __post_init__(self) -> None:
        for total, (attr, combine) in _TOTALS.items():
            object.__setattr__(self, total, combine(getattr(d, attr) for d in self.devices))

    @property
    def crossing_bytes(self) -> int:
        """Everything that crosses a device boundary for one inference."""
        return self.input_broadcast_bytes + self.exchange_bytes + self.output_bytes

    def as_dict(self) -> dict:
        d = asdict(self)
        d["devices"] = list(d["devices"])
        return {"plan": d.pop("name"), **d, "crossing_bytes": self.crossing_bytes}


def plan_cost(plan: Plan) -> PlanCost:
    """Per-device work and per-inference traffic of a plan.

    A feature map a device needs from another is counted once per receiving
    device, however many of its segments read it; the model input once per
    device that reads it.
    """
    received = {d.role: 0 for d in plan.devices}
    sent = {d.role: 0 for d in plan.devices}
    inputs = {d.role: 0 for d in plan.devices}
    seen: set = set()
    for d in plan.devices:
        for s in d.segments:
            for inp in s.inputs:
                if inp.source is None:
                    if ("input", d.role) not in seen:
                        seen.add(("input", d.role))
                        inputs[d.role] += inp.tensor.nbytes
                elif inp.source.device != d.role and (inp.source, d.role) not in seen:
                    seen.add((inp.source, d.role))
                    nbytes = plan.segment(inp.source).output.nbytes
                    received[d.role] += nbytes
                    sent[inp.source.device] += nbytes
    outputs = {d.role: 0 for d in plan.devices}
    for ref in plan.fusion.outputs:
        outputs[ref.device] += plan.segment(ref).output.nbytes
    devices = []
    for d in plan.devices:
        arenas = [s.tflm.arena_bytes for s in d.segments if s.tflm is not None]
        devices.append(
            DeviceCost(
                role=d.role,
                width=d.width,
                macs=d.macs,
                params=d.params,
                segments=len(d.segments),
                partition_bytes=sum(s.size for s in d.segments),
                arena_bytes=max(arenas) if arenas else None,
                input_bytes=inputs[d.role],
                received_bytes=received[d.role],
                sent_bytes=sent[d.role],
                output_bytes=outputs[d.role],
            )
        )
    return PlanCost(plan.name, plan.kind, tuple(devices))
