"""What one device does for a request: the shared plan semantics.

A `DeviceProgram` holds the interpreters of one device role of one plan and
answers, for each of its segments: which tensors it needs (the model input,
or the output of segment s of device d), who consumes its output, and how to
run it. `run_segment` converts every incoming tensor explicitly to the
quantization the segment expects (quantize a float input, requantize an int8
tensor whose scale or zero point differ) and returns the segment's output
with its own quantization attached.

`LocalRunner` runs all devices of a plan in-process with this class; the
mesh node daemon runs one `DeviceProgram` per node and moves the same
`QTensor`s over gRPC. `fuse` turns the plan's partial outputs into logits, or into an
image for a super-resolution plan (sum, then depth-to-space).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from paradis_tf.bundle import Bundle, BundleError, Plan, Segment, SegmentInput, SegmentRef, TensorSpec, load
from paradis_tf.errors import InputError
from paradis_tf.runtime.backends import DEFAULT_BACKEND, Interpreter, load_interpreter
from paradis_tf.runtime.image import depth_to_space
from paradis_tf.quant import FLOAT32, QTensor, convert
from paradis_tf.switches import Switch

__all__ = ["PRECISIONS", "DeviceProgram", "fuse", "segment_io"]

PRECISIONS = ("int8", "float")


def segment_io(segment: Segment, precision: str = "int8") -> tuple[list[TensorSpec], TensorSpec]:
    """Input and output tensor specs of a segment in the given precision."""
    if precision == "int8":
        return [i.tensor for i in segment.inputs], segment.output
    return [TensorSpec(i.tensor.shape, FLOAT32) for i in segment.inputs], TensorSpec(segment.output.shape, FLOAT32)


class DeviceProgram:
    """The work of device `role` of a plan.

    Args:
        bundle: a loaded `Bundle` or a bundle directory.
        plan: plan name (``"2x0.5"``, ``"seq-3"``), `Switch` or `Plan`.
        role: the device index in the plan.
        backend: interpreter backend (see `paradis_tf.runtime.BACKENDS`).
        precision: ``"int8"`` (the partitions that go to devices) or
            ``"float"`` (the float partitions written by ``convert --float``).
        num_threads: CPU threads per interpreter (TFLite backends).
        interpreters: ready interpreters, one per segment of the role, used
            instead of loading the partitions (e.g. a serial board's proxy);
            ``backend`` then only names where they run.

    Raises:
        BundleError: unknown plan or role, or no float partitions.
        BackendError: the backend is missing or cannot load a partition.
    """

    def __init__(
        self,
        bundle: "Bundle | str | os.PathLike",
        plan: "str | Switch | Plan",
        role: int,
        backend: str = DEFAULT_BACKEND,
        *,
        precision: str = "int8",
        num_threads: int | None = None,
        interpreters: "Sequence[Interpreter] | None" = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load(bundle)
        self.plan = self.bundle.plan(plan)
        if not 0 <= role < len(self.plan.devices):
            raise BundleError(
                f"plan '{self.plan.name}' has roles 0..{len(self.plan.devices) - 1}; received role {role}"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"Expected precision one of {PRECISIONS}. Received precision={precision!r}.")
        self.role = role
        self.backend = backend
        self.precision = precision
        self.device = self.plan.devices[role]
        if interpreters is not None:
            # Segments that run elsewhere (a serial board behind a bridge).
            if len(interpreters) != len(self.device.segments):
                raise BundleError(
                    f"plan '{self.plan.name}' role {role} has {len(self.device.segments)} segments; "
                    f"received {len(interpreters)} interpreters"
                )
            self._interpreters: list[Interpreter] = list(interpreters)
            return
        self._interpreters = []
        for seg in self.device.segments:
            rel = seg.file if precision == "int8" else seg.float_file
            if rel is None:
                raise BundleError(
                    f"{self.bundle.root}: plan '{self.plan.name}' device {role} segment {seg.index} has no float "
                    "partition (convert with --float)"
                )
            arena = seg.tflm.arena_bytes if (backend == "tflm" and seg.tflm is not None and precision == "int8") else None
            self._interpreters.append(
                load_interpreter(self.bundle.path(rel), backend, num_threads=num_threads, arena_size=arena)
            )

    def __repr__(self) -> str:
        return f"DeviceProgram(plan={self.plan.name!r}, role={self.role}, backend={self.backend!r}, precision={self.precision!r})"

    @property
    def num_segments(self) -> int:
        return len(self.device.segments)

    def ref(self, j: int) -> SegmentRef:
        return SegmentRef(self.role, j)

    def needs(self, j: int) -> tuple[SegmentInput, ...]:
        """The inputs of segment `j`, in order (model input or a segment's output)."""
        return self.device.segments[j].inputs

    def remote_inputs(self, j: int) -> list[SegmentRef]:
        """Segment outputs of *other* devices that segment `j` needs."""
        return [i.source for i in self.needs(j) if i.source is not None and i.source.device != self.role]

    def consumers(self, j: int) -> list[SegmentRef]:
        """Segments (of any device) that read the output of segment `j`."""
        return sorted({c for c, _ in self.plan.consumers(self.ref(j))})

    def remote_consumers(self, j: int) -> list[int]:
        """Devices other than this one that need segment `j`'s output."""
        return sorted({c.device for c in self.consumers(j) if c.device != self.role})

    def is_fusion_output(self, j: int) -> bool:
        """Whether segment `j`'s output goes to the fusion (the coordinator)."""
        return self.ref(j) in self.plan.fusion.outputs

    def input_specs(self, j: int) -> list[TensorSpec]:
        return segment_io(self.device.segments[j], self.precision)[0]

    def output_spec(self, j: int) -> TensorSpec:
        return segment_io(self.device.segments[j], self.precision)[1]

    def run_segment(self, j: int, inputs: Sequence["QTensor | np.ndarray"]) -> QTensor:
        """Runs segment `j` on a batch.

        Args:
            j: segment index on this device.
            inputs: one tensor per entry of `needs(j)`, in that order. A
                `QTensor` is converted to the quantization the segment
                expects (requantized when scale or zero point differ); a bare
                float array is taken as real values and quantized.

        Returns:
            The segment output with its quantization (int8, or float32 for
            the float precision).

        Raises:
            InputError: wrong number of inputs, or a shape that does not fit.
        """
        specs = self.input_specs(j)
        what = f"plan '{self.plan.name}' device {self.role} segment {j}"
        if len(inputs) != len(specs):
            raise InputError(f"{what} takes {len(specs)} input(s); received {len(inputs)}.")
        arrays = []
        for i, (t, spec) in enumerate(zip(inputs, specs)):
            if not isinstance(t, QTensor):
                a = np.asarray(t)
                if not np.issubdtype(a.dtype, np.floating):
                    raise InputError(
                        f"{what} input {i}: a bare array must hold real (float) values; received {a.dtype}. "
                        "Pass a QTensor for quantized data."
                    )
                t = QTensor.from_float(a)
            if t.shape[1:] != spec.shape[1:] or len(t.shape) != len(spec.shape):
                raise InputError(
                    f"{what} input {i} expects shape (N, {', '.join(map(str, spec.shape[1:]))}); received {t.shape}."
                )
            arrays.append(convert(t, spec.quant).data)
        out = self._interpreters[j].run(arrays)[0]
        return QTensor(out, self.output_spec(j).quant)

    def interpreter(self, j: int) -> Interpreter:
        return self._interpreters[j]


def fuse(plan: Plan, outputs: Mapping[SegmentRef, QTensor]) -> np.ndarray:
    """The result of a plan: ``sum(dequantize(outputs[r]) for r in fusion.outputs) + bias``, float32.

    Logits ``(N, num_classes)`` for a classifier. For a super-resolution
    plan (``fusion.depth_to_space`` set) the sum is ``(N, H, W, scale**2 *
    C)`` and depth-to-space makes it the image ``(N, H * scale, W * scale,
    C)``.

    Raises:
        InputError: an output of `plan.fusion.outputs` is missing.
    """
    missing = [str(r) for r in plan.fusion.outputs if r not in outputs]
    if missing:
        raise InputError(f"plan '{plan.name}': fusion is missing the output(s) of {missing}")
    total = None
    for r in plan.fusion.outputs:
        part = outputs[r].dequantize().astype(np.float32)
        total = part if total is None else total + part
    total = (total + np.asarray(plan.fusion.bias, dtype=np.float32)).astype(np.float32)
    if plan.fusion.depth_to_space:
        return depth_to_space(total, plan.fusion.depth_to_space)
    return total
