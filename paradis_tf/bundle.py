"""The bundle: every int8 partition of one ParaDiS model, plus its manifest.

Reading side: `load(dir) -> Bundle` validates ``manifest.json`` against the
schema (docs/BUNDLE.md), every file's size and sha256, every segment input
reference, and every partition's tensors against the .tflite file. Writing
side (used by the converter): `BundleWriter` builds the bundle in a temporary
directory next to the target, validates it with `load`, and renames it into
place, so a failed conversion never leaves a bundle that looks complete.

Imports without TensorFlow (node daemons and the serial bridge use it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from paradis_tf.errors import ParaDiSError
from paradis_tf.files import PathError, atomic_write_json, check_relpath, fsync_dir
from paradis_tf.quant import QuantParams
from paradis_tf.switches import Switch
from paradis_tf.tflite_file import TfliteFileError, read_tflite

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "MANIFEST",
    "PLAN_KINDS",
    "BundleError",
    "SegmentRef",
    "TensorSpec",
    "SegmentInput",
    "TflmInfo",
    "Segment",
    "Device",
    "Fusion",
    "Plan",
    "Preprocessing",
    "ImageOutput",
    "ModelInfo",
    "TASKS",
    "CLASSIFICATION",
    "SUPER_RESOLUTION",
    "PIXEL_FORMATS",
    "FileEntry",
    "Bundle",
    "load",
    "BundleWriter",
    "sha256_file",
    "segment_order",
    "fusion_output_shape",
    "update_accuracy",
]

SCHEMA = "paradis-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PLAN_KINDS = ("paradis", "sequential")
MODEL_INPUT = "input"
CLASSIFICATION = "classification"
SUPER_RESOLUTION = "super_resolution"
# model.task; a manifest without one is a classifier's (bundles written before tasks existed).
TASKS = (CLASSIFICATION, SUPER_RESOLUTION)
# output.pixel_format of a super-resolution bundle -> image channels.
PIXEL_FORMATS = {"rgb": 3, "y": 1}


class BundleError(ParaDiSError, ValueError):
    """A bundle that is missing, malformed, or does not match its files."""


# --------------------------------------------------------------------------
# Schema objects (frozen; `to_json` gives the manifest form)


def _json(value: Any) -> Any:
    """The manifest form of a field value: schema objects, tuples and mappings recursively."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


class _Json:
    """`to_json` for schema objects whose manifest form is their fields, by name."""

    def to_json(self) -> dict:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, order=True)
class SegmentRef(_Json):
    """Segment `segment` of device `device` (its output tensor, as a source)."""

    device: int
    segment: int

    def __str__(self) -> str:
        return f"device {self.device} segment {self.segment}"


@dataclass(frozen=True)
class TensorSpec:
    """Dtype, shape (batch first) and quantization of a segment boundary tensor."""

    shape: tuple[int, ...]
    quant: QuantParams

    @property
    def dtype(self) -> str:
        return self.quant.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of one sample (batch dimension excluded)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.quant.np_dtype.itemsize

    def to_json(self) -> dict:
        return {
            "dtype": self.quant.dtype,
            "shape": list(self.shape),
            "scale": self.quant.scale,
            "zero_point": self.quant.zero_point,
        }


@dataclass(frozen=True)
class SegmentInput:
    """One input of a segment: the model input (`source` None) or a segment output."""

    source: SegmentRef | None
    tensor: TensorSpec

    def to_json(self) -> dict:
        src: Any = MODEL_INPUT if self.source is None else self.source.to_json()
        return {"source": src, **self.tensor.to_json()}


@dataclass(frozen=True)
class TflmInfo(_Json):
    """TFLite Micro artefacts of a segment.

    Attributes:
        arena_bytes: the tensor arena the segment needs on the board.
        ops: the operators the firmware registers for it.
        cc: the C array source (bundle-relative path).
        h: its header.
        symbol: the C array's name.
    """

    arena_bytes: int
    ops: tuple[str, ...]
    cc: str
    h: str
    symbol: str


@dataclass(frozen=True)
class Segment(_Json):
    """The part of one device's work between two sync points."""

    index: int
    file: str
    sha256: str
    size: int
    inputs: tuple[SegmentInput, ...]
    output: TensorSpec
    float_file: str | None = None
    tflm: TflmInfo | None = None


@dataclass(frozen=True)
class Device(_Json):
    """One device role of a plan."""

    role: int
    width: float
    macs: int
    params: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Fusion(_Json):
    """How partial outputs become the result: ``sum(dequantized outputs) + bias``, then, for an image
    output, ``depth_to_space`` by that factor (None: logits, nothing after the sum)."""

    op: str
    bias: tuple[float, ...]
    outputs: tuple[SegmentRef, ...]
    depth_to_space: int | None = None

    def to_json(self) -> dict:
        out = super().to_json()
        if self.depth_to_space is None:
            del out["depth_to_space"]
        return out


@dataclass(frozen=True)
class Plan(_Json):
    """The execution graph of one switch (or of a sequential baseline)."""

    name: str
    kind: str
    widths: tuple[float, ...]
    fusion: Fusion
    devices: tuple[Device, ...]
    accuracy: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accuracy", MappingProxyType(dict(self.accuracy)))

    def segment(self, ref: SegmentRef) -> Segment:
        return self.devices[ref.device].segments[ref.segment]

    def refs(self) -> list[SegmentRef]:
        """Every segment of the plan, device by device."""
        return [SegmentRef(d.role, s.index) for d in self.devices for s in d.segments]

    def consumers(self, ref: SegmentRef) -> list[tuple[SegmentRef, int]]:
        """Segments that read `ref`'s output, with the input position they read it at."""
        out = []
        for r in self.refs():
            for i, inp in enumerate(self.segment(r).inputs):
                if inp.source == ref:
                    out.append((r, i))
        return out

    def order(self) -> list[SegmentRef]:
        """A topological order of the segments (see `segment_order`)."""
        return segment_order({r: [i.source for i in self.segment(r).inputs] for r in self.refs()}, f"plan '{self.name}'")

    def to_json(self) -> dict:
        # the name is the plan's key in the manifest's "plans"
        return {k: v for k, v in super().to_json().items() if k != "name"}


def segment_order(sources: Mapping[SegmentRef, Iterable[SegmentRef | None]], what: str = "plan") -> list[SegmentRef]:
    """A topological order of segments: producers before consumers.

    The order runs in rounds of ready segments, segment j of every device
    before segment j+1 of any: the order in which the converter calibrates
    and `LocalRunner` runs a plan.

    Args:
        sources: each segment -> the segments whose outputs it reads (None:
            the model input).
        what: names the plan in the error.

    Raises:
        BundleError: the inputs form a cycle (or name a segment not in
            ``sources``).
    """
    sources = {r: tuple(s) for r, s in sources.items()}
    done: set[SegmentRef] = set()
    order: list[SegmentRef] = []
    pending = sorted(sources, key=lambda r: (r.segment, r.device))
    while pending:
        ready = [r for r in pending if all(s is None or s in done for s in sources[r])]
        if not ready:
            raise BundleError(f"{what}: segment inputs form a cycle among {[str(r) for r in pending]}")
        order.extend(ready)
        done.update(ready)
        pending = [r for r in pending if r not in done]
    return order


@dataclass(frozen=True)
class Preprocessing(_Json):
    """float input = raw * scale + offset (raw: uint8 image, NHWC)."""

    scale: float
    offset: float = 0.0
    layout: str = "NHWC"

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)).astype(np.float32)


@dataclass(frozen=True)
class ImageOutput:
    """What a super-resolution bundle's plans output: an image ``scale`` times the input's size.

    Attributes:
        scale: the upscaling factor (the fusion's depth-to-space).
        pixel_format: ``"rgb"`` (3 channels) or ``"y"`` (1: BT.601 luma, 16..235).
        range: the float values of pixel 0 and pixel 255 (the input's
            preprocessing): raw pixels are ``(y - offset) / scale`` of the
            preprocessing, clipped to 0..255.
        margin: low-resolution pixels a tile needs on each side of the part
            it keeps for that part to equal the output of the whole image
            (an upper bound on the receptive radius of the partitions).
    """

    scale: int
    pixel_format: str
    range: tuple[float, float]
    margin: int

    @property
    def channels(self) -> int:
        return PIXEL_FORMATS[self.pixel_format]

    def to_json(self) -> dict:
        return {"kind": "image", "scale": self.scale, "pixel_format": self.pixel_format,
                "range": list(self.range), "margin": self.margin}


@dataclass(frozen=True)
class ModelInfo(_Json):
    """The model a bundle was converted from.

    For a super-resolution bundle (``task == "super_resolution"``),
    ``input_shape`` is the fixed low-resolution tile every partition takes
    and ``num_classes`` the channels of the fused partial outputs before
    depth-to-space (``scale**2 * C``); ``output`` says what the image is.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    preprocessing: Preprocessing
    labels: tuple[str, ...] | None = None
    task: str = CLASSIFICATION
    output: ImageOutput | None = None

    @property
    def is_image(self) -> bool:
        """Whether the plans output an image (super-resolution) rather than logits."""
        return self.task == SUPER_RESOLUTION

    def describe(self) -> str:
        """``"a classifier (10 classes)"`` or ``"a super-resolution bundle (x2, rgb, 48x48 tiles)"``."""
        if self.output is None:
            return f"a classifier ({self.num_classes} classes)"
        h, w = self.input_shape[:2]
        return f"a super-resolution bundle (x{self.output.scale}, {self.output.pixel_format}, {h}x{w} tiles)"

    def to_json(self) -> dict:
        out = super().to_json()
        if self.output is None:
            del out["output"]
        return out


@dataclass(frozen=True)
class FileEntry(_Json):
    size: int
    sha256: str


# --------------------------------------------------------------------------
# Parsing with precise error locations


class _Ctx:
    """Where in manifest.json a value sits, for error messages."""

    def __init__(self, file: str, where: str = "") -> None:
        self.file = file
        self.where = where

    def at(self, key: Any) -> "_Ctx":
        if isinstance(key, int):
            part = f"[{key}]"
        elif isinstance(key, str) and key.isidentifier():
            part = f".{key}" if self.where else key
        else:
            part = f"[{key!r}]"
        return _Ctx(self.file, self.where + part)

    def error(self, msg: str) -> BundleError:
        loc = f"{self.file}: {self.where}: " if self.where else f"{self.file}: "
        return BundleError(loc + msg)

    def get(self, obj: Mapping, key: str, types: type | tuple[type, ...], optional: bool = False) -> Any:
        if not isinstance(obj, Mapping):
            raise self.error(f"expected an object, found {type(obj).__name__}")
        if key not in obj or (optional and obj[key] is None):
            if optional:
                return None
            raise self.error(f"missing required field '{key}'")
        value = obj[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.at(key).error(f"expected {_type_names(types)}, found {value!r}")
        if not isinstance(value, types):
            raise self.at(key).error(f"expected {_type_names(types)}, found {type(value).__name__} {value!r}")
        return value


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return " or ".join(names.get(t, t.__name__) for t in types)


_NUM = (int, float)


def _shape(ctx: _Ctx, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ctx.error(f"expected a list of positive integers, found {value!r}")
    return tuple(value)


def _tensor(ctx: _Ctx, obj: Mapping) -> TensorSpec:
    dtype = ctx.get(obj, "dtype", str)
    shape = _shape(ctx.at("shape"), ctx.get(obj, "shape", list))
    scale = float(ctx.get(obj, "scale", _NUM))
    zp = ctx.get(obj, "zero_point", int)
    try:
        quant = QuantParams(dtype, scale, zp)
    except ParaDiSError as e:
        raise ctx.error(str(e)) from None
    return TensorSpec(shape, quant)


def _ref(ctx: _Ctx, obj: Any) -> SegmentRef:
    if not isinstance(obj, Mapping):
        raise ctx.error(f"expected {{\"device\": d, \"segment\": s}} or \"input\", found {obj!r}")
    return SegmentRef(ctx.get(obj, "device", int), ctx.get(obj, "segment", int))


def _relpath(ctx: _Ctx, value: Any) -> str:
    try:
        return check_relpath(value)
    except PathError as e:
        raise ctx.error(str(e)) from None


def _nonempty(ctx: _Ctx, obj: Mapping, key: str, what: str) -> list[tuple[_Ctx, Any]]:
    """The items of the required, non-empty list ``obj[key]``, each with its location."""
    items = ctx.get(obj, key, list)
    if not items:
        raise ctx.at(key).error(what)
    return [(ctx.at(key).at(i), item) for i, item in enumerate(items)]


def _segment(ctx: _Ctx, obj: Mapping, expected_index: int) -> Segment:
    index = ctx.get(obj, "index", int)
    if index != expected_index:
        raise ctx.at("index").error(f"segments must be listed in order; expected index {expected_index}, found {index}")
    inputs = []
    for ictx, inp in _nonempty(ctx, obj, "inputs", "a segment needs at least one input"):
        src = ictx.get(inp, "source", (str, dict))
        if isinstance(src, str):
            if src != MODEL_INPUT:
                raise ictx.at("source").error(f"expected \"input\" or {{\"device\": d, \"segment\": s}}, found {src!r}")
            source = None
        else:
            source = _ref(ictx.at("source"), src)
        inputs.append(SegmentInput(source, _tensor(ictx, inp)))
    tflm = None
    raw_tflm = ctx.get(obj, "tflm", dict, optional=True)
    if raw_tflm is not None:
        tctx = ctx.at("tflm")
        arena = tctx.get(raw_tflm, "arena_bytes", int)
        if arena <= 0:
            raise tctx.at("arena_bytes").error(f"expected a positive byte count, found {arena}")
        ops = tctx.get(raw_tflm, "ops", list)
        if not all(isinstance(o, str) for o in ops):
            raise tctx.at("ops").error(f"expected a list of operator names, found {ops!r}")
        tflm = TflmInfo(
            arena,
            tuple(ops),
            _relpath(tctx.at("cc"), tctx.get(raw_tflm, "cc", str)),
            _relpath(tctx.at("h"), tctx.get(raw_tflm, "h", str)),
            tctx.get(raw_tflm, "symbol", str),
        )
    float_file = ctx.get(obj, "float_file", str, optional=True)
    return Segment(
        index=index,
        file=_relpath(ctx.at("file"), ctx.get(obj, "file", str)),
        sha256=ctx.get(obj, "sha256", str).lower(),
        size=ctx.get(obj, "size", int),
        inputs=tuple(inputs),
        output=_tensor(ctx.at("output"), ctx.get(obj, "output", dict)),
        float_file=None if float_file is None else _relpath(ctx.at("float_file"), float_file),
        tflm=tflm,
    )


def _plan(ctx: _Ctx, name: str, obj: Mapping, model: ModelInfo) -> Plan:
    num_classes = model.num_classes
    kind = ctx.get(obj, "kind", str)
    if kind not in PLAN_KINDS:
        raise ctx.at("kind").error(f"unknown plan kind {kind!r}; expected one of {list(PLAN_KINDS)}")
    widths = ctx.get(obj, "widths", list)
    if not widths or not all(isinstance(w, _NUM) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ctx.at("widths").error(f"expected a list of positive widths, found {widths!r}")
    devices = []
    for k, (dctx, dev) in enumerate(_nonempty(ctx, obj, "devices", "a plan needs at least one device")):
        role = dctx.get(dev, "role", int)
        if role != k:
            raise dctx.at("role").error(f"devices must be listed by role; expected role {k}, found {role}")
        segs = _nonempty(dctx, dev, "segments", "a device needs at least one segment")
        devices.append(
            Device(
                role=role,
                width=float(dctx.get(dev, "width", _NUM)),
                macs=dctx.get(dev, "macs", int),
                params=dctx.get(dev, "params", int),
                segments=tuple(_segment(sctx, seg, j) for j, (sctx, seg) in enumerate(segs)),
            )
        )
    if kind == "paradis" and len(widths) != len(devices):
        raise ctx.at("widths").error(f"{len(widths)} widths for {len(devices)} devices")
    fctx = ctx.at("fusion")
    fobj = ctx.get(obj, "fusion", dict)
    op = fctx.get(fobj, "op", str)
    if op != "sum":
        raise fctx.at("op").error(f"unknown fusion op {op!r}; expected 'sum'")
    bias = fctx.get(fobj, "bias", list)
    if len(bias) != num_classes or not all(isinstance(b, _NUM) and not isinstance(b, bool) for b in bias):
        raise fctx.at("bias").error(f"expected {num_classes} numbers (model.num_classes), found {len(bias)} values")
    outputs = tuple(_ref(octx, o) for octx, o in _nonempty(fctx, fobj, "outputs", "fusion needs at least one output"))
    d2s = fctx.get(fobj, "depth_to_space", int, optional=True)
    if model.output is None and d2s is not None:
        raise fctx.at("depth_to_space").error(f"a classifier's fusion outputs logits; found depth_to_space {d2s} "
                                              f"(model.task is {model.task!r})")
    if model.output is not None and d2s != model.output.scale:
        raise fctx.at("depth_to_space").error(f"expected {model.output.scale} (model.output.scale: the fusion of a "
                                              f"super-resolution plan ends with depth-to-space), found {d2s!r}")
    accuracy = ctx.get(obj, "accuracy", dict, optional=True) or {}
    plan = Plan(name, kind, tuple(float(w) for w in widths), Fusion(op, tuple(float(b) for b in bias), outputs, d2s),
                tuple(devices), accuracy)
    _check_graph(ctx, plan, model)
    return plan


def fusion_output_shape(model: ModelInfo) -> tuple[int, ...]:
    """The shape (batch excluded) of every partial output the fusion sums: ``(num_classes,)`` logits, or
    ``(H, W, scale**2 * C)`` low-resolution channels of a super-resolution tile."""
    if model.output is None:
        return (model.num_classes,)
    return (*model.input_shape[:2], model.num_classes)


def _check_graph(ctx: _Ctx, plan: Plan, model: ModelInfo) -> None:
    def exists(ref: SegmentRef) -> str | None:
        if not 0 <= ref.device < len(plan.devices):
            return f"names device {ref.device}, but plan '{plan.name}' has {len(plan.devices)} device(s)"
        n = len(plan.devices[ref.device].segments)
        if not 0 <= ref.segment < n:
            return f"names segment {ref.segment} of device {ref.device}, which has {n} segment(s)"
        return None

    for d in plan.devices:
        for s in d.segments:
            for i, inp in enumerate(s.inputs):
                if inp.source is None:
                    continue
                ictx = ctx.at("devices").at(d.role).at("segments").at(s.index).at("inputs").at(i).at("source")
                problem = exists(inp.source)
                if problem:
                    raise ictx.error(problem)
                if inp.source == SegmentRef(d.role, s.index):
                    raise ictx.error("a segment cannot read its own output")
                produced = plan.segment(inp.source).output
                if produced.shape[1:] != inp.tensor.shape[1:] or produced.quant.is_float != inp.tensor.quant.is_float:
                    raise ictx.error(
                        f"expects {inp.tensor.dtype} {list(inp.tensor.shape)}, but {inp.source} outputs "
                        f"{produced.dtype} {list(produced.shape)}"
                    )
    for i, ref in enumerate(plan.fusion.outputs):
        problem = exists(ref)
        if problem:
            raise ctx.at("fusion").at("outputs").at(i).error(problem)
        shape = plan.segment(ref).output.shape
        want = fusion_output_shape(model)
        if shape[1:] != want:
            raise ctx.at("fusion").at("outputs").at(i).error(
                f"{ref} outputs shape {list(shape)}; fusion needs (N, {', '.join(map(str, want))})"
            )
    try:
        plan.order()
    except BundleError as e:
        raise ctx.error(str(e)) from None


def _model(ctx: _Ctx, obj: Mapping) -> ModelInfo:
    pctx = ctx.at("preprocessing")
    pre = ctx.get(obj, "preprocessing", dict)
    labels = ctx.get(obj, "labels", list, optional=True)
    num_classes = ctx.get(obj, "num_classes", int)
    if num_classes < 1:
        raise ctx.at("num_classes").error(f"expected a positive integer, found {num_classes}")
    if labels is not None and (len(labels) != num_classes or not all(isinstance(s, str) for s in labels)):
        raise ctx.at("labels").error(f"expected {num_classes} label strings, found {labels!r}")
    task = ctx.get(obj, "task", str, optional=True) or CLASSIFICATION
    if task not in TASKS:
        raise ctx.at("task").error(f"unknown task {task!r}; expected one of {list(TASKS)} (absent: classification)")
    input_shape = _shape(ctx.at("input_shape"), ctx.get(obj, "input_shape", list))
    raw_out = ctx.get(obj, "output", dict, optional=True)
    output = None
    if task == CLASSIFICATION and raw_out is not None:
        raise ctx.at("output").error("a classifier outputs logits and has no 'output' entry "
                                     f"(it describes the image of a {SUPER_RESOLUTION!r} bundle)")
    if task == SUPER_RESOLUTION:
        if raw_out is None:
            raise ctx.error(f"missing required field 'output' (a {SUPER_RESOLUTION!r} bundle says what image it "
                            "outputs: kind, scale, pixel_format, range, margin)")
        output = _image_output(ctx.at("output"), raw_out, input_shape, num_classes)
    return ModelInfo(
        name=ctx.get(obj, "name", str),
        input_shape=input_shape,
        num_classes=num_classes,
        preprocessing=Preprocessing(
            float(pctx.get(pre, "scale", _NUM)),
            float(pctx.get(pre, "offset", _NUM)),
            pctx.get(pre, "layout", str, optional=True) or "NHWC",
        ),
        labels=None if labels is None else tuple(labels),
        task=task,
        output=output,
    )


def _image_output(ctx: _Ctx, obj: Mapping, input_shape: tuple[int, ...], num_classes: int) -> ImageOutput:
    kind = ctx.get(obj, "kind", str)
    if kind != "image":
        raise ctx.at("kind").error(f"expected 'image', found {kind!r}")
    scale = ctx.get(obj, "scale", int)
    if scale < 2:
        raise ctx.at("scale").error(f"expected an upscaling factor >= 2, found {scale}")
    fmt = ctx.get(obj, "pixel_format", str)
    if fmt not in PIXEL_FORMATS:
        raise ctx.at("pixel_format").error(f"expected one of {list(PIXEL_FORMATS)}, found {fmt!r}")
    rng = ctx.get(obj, "range", list)
    if len(rng) != 2 or not all(isinstance(v, _NUM) and not isinstance(v, bool) for v in rng) or not rng[0] < rng[1]:
        raise ctx.at("range").error(f"expected [lo, hi] with lo < hi (the float values of pixels 0 and 255), "
                                    f"found {rng!r}")
    margin = ctx.get(obj, "margin", int)
    if margin < 0:
        raise ctx.at("margin").error(f"expected a pixel count >= 0, found {margin}")
    channels = PIXEL_FORMATS[fmt]
    if len(input_shape) != 3 or input_shape[-1] != channels:
        raise ctx.error(f"pixel_format {fmt!r} means input tiles of shape (H, W, {channels}); "
                        f"model.input_shape is {list(input_shape)}")
    if num_classes != scale * scale * channels:
        raise ctx.error(f"model.num_classes must be scale**2 * channels = {scale * scale * channels} for a "
                        f"super-resolution bundle (the channels summed before depth-to-space), found {num_classes}")
    return ImageOutput(scale, fmt, (float(rng[0]), float(rng[1])), margin)


# --------------------------------------------------------------------------
# Bundle


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


class Bundle:
    """A validated bundle directory.

    Attributes:
        root: the bundle directory.
        manifest: the parsed manifest.json (plain JSON objects).
        model: what was converted.
        plans: plan name -> `Plan`, in manifest order.
        files: relative path -> `FileEntry` for every file besides the manifest.
    """

    def __init__(self, root: Path, manifest: dict, model: ModelInfo, plans: dict[str, Plan], files: dict[str, FileEntry]):
        self.root = root
        self.manifest = manifest
        self.model = model
        self.plans = MappingProxyType(plans)
        self.files = MappingProxyType(files)

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, plans={list(self.plans)})"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def plan(self, name: "str | Switch | Plan") -> Plan:
        """The plan called `name` (``"2x0.5"``, ``Switch``, ``"seq-3"``).

        Raises:
            BundleError: no such plan; the message lists the available ones.
        """
        if isinstance(name, Plan):
            return name
        key = str(name)
        if key in self.plans:
            return self.plans[key]
        try:
            key = str(Switch.parse(key))
        except ParaDiSError:
            pass
        if key in self.plans:
            return self.plans[key]
        raise BundleError(f"{self.root}: no plan {str(name)!r} in the bundle; it has {list(self.plans)}")


def load(root: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Loads and validates a bundle.

    Args:
        root: the bundle directory.
        verify: also check every file's size and sha256 and every .tflite
            file's tensors against the manifest (off only for quick listings).

    Raises:
        BundleError: naming the file and what is wrong (missing file, sha256
            or size mismatch, unknown schema version, a reference to a
            segment that does not exist, a shape that disagrees with the
            model file, ...).
    """
    root = Path(root)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory (it does not exist or is not a directory)")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing; {root} is not a bundle (make one with `paradis convert`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}: not valid JSON ({e})") from None
    ctx = _Ctx(str(mpath))
    if not isinstance(raw, dict):
        raise ctx.error("expected a JSON object at the top level")
    schema = raw.get("schema")
    if schema != SCHEMA:
        raise ctx.error(f"unknown schema {schema!r}; expected {SCHEMA!r}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ctx.error(
            f"unknown schema_version {version!r}; this paradis_tf reads version {SCHEMA_VERSION} "
            "(convert the model again with this version, or upgrade paradis_tf)"
        )
    model = _model(ctx.at("model"), ctx.get(raw, "model", dict))
    files: dict[str, FileEntry] = {}
    for rel, entry in ctx.get(raw, "files", dict).items():
        fctx = ctx.at("files").at(rel)
        _relpath(fctx, rel)
        sha = fctx.get(entry, "sha256", str).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise fctx.at("sha256").error(f"expected 64 hex digits, found {sha!r}")
        files[rel] = FileEntry(fctx.get(entry, "size", int), sha)
    plans: dict[str, Plan] = {}
    raw_plans = ctx.get(raw, "plans", dict)
    if not raw_plans:
        raise ctx.at("plans").error("a bundle needs at least one plan")
    for name, pobj in raw_plans.items():
        plans[name] = _plan(ctx.at("plans").at(name), name, pobj, model)
    _check_files_listed(ctx, plans, files)
    bundle = Bundle(root, raw, model, plans, files)
    if verify:
        _verify_files(bundle)
        _verify_models(bundle)
    return bundle


def _segment_files(plan: Plan) -> Iterable[tuple[str, Segment, str]]:
    for d in plan.devices:
        for s in d.segments:
            yield s.file, s, "file"
            if s.float_file:
                yield s.float_file, s, "float_file"
            if s.tflm:
                yield s.tflm.cc, s, "tflm.cc"
                yield s.tflm.h, s, "tflm.h"


def _check_files_listed(ctx: _Ctx, plans: Mapping[str, Plan], files: Mapping[str, FileEntry]) -> None:
    for name, plan in plans.items():
        for rel, seg, what in _segment_files(plan):
            if rel not in files:
                raise ctx.at("plans").at(name).error(f"segment {seg.index} {what} {rel!r} is not listed in 'files'")
            if what == "file" and (files[rel].sha256 != seg.sha256 or files[rel].size != seg.size):
                raise ctx.at("plans").at(name).error(
                    f"segment file {rel!r}: sha256/size in the segment disagree with 'files'"
                )


def _verify_files(bundle: Bundle) -> None:
    for rel, entry in bundle.files.items():
        path = bundle.root / rel
        if not path.is_file():
            raise BundleError(f"{path}: missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != entry.size:
            raise BundleError(f"{path}: size mismatch ({MANIFEST} says {entry.size} bytes, the file has {size})")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise BundleError(
                f"{path}: sha256 mismatch ({MANIFEST} says {entry.sha256[:16]}..., the file has {digest[:16]}...); "
                "the file is corrupt or was changed after conversion"
            )


def _verify_models(bundle: Bundle) -> None:
    for plan in bundle.plans.values():
        for d in plan.devices:
            for s in d.segments:
                variants = [(s.file, [i.tensor for i in s.inputs], s.output)]
                if s.float_file:
                    f32 = QuantParams("float32")
                    variants.append(
                        (s.float_file, [TensorSpec(i.tensor.shape, f32) for i in s.inputs], TensorSpec(s.output.shape, f32))
                    )
                for rel, ins, out in variants:
                    path = bundle.root / rel
                    try:
                        info = read_tflite(path.read_bytes(), str(path))
                    except TfliteFileError as e:
                        raise BundleError(str(e)) from None
                    _compare_io(path, "input", ins, info.inputs)
                    _compare_io(path, "output", [out], info.outputs)


def _compare_io(path: Path, kind: str, expected: Sequence[TensorSpec], actual) -> None:
    if len(expected) != len(actual):
        raise BundleError(f"{path}: the model has {len(actual)} {kind}(s), {MANIFEST} lists {len(expected)}")
    for i, (e, a) in enumerate(zip(expected, actual)):
        if tuple(a.shape) != tuple(e.shape) or a.quant.dtype != e.quant.dtype:
            raise BundleError(
                f"{path}: {kind} {i} ('{a.name}') is {a.quant.dtype} {list(a.shape)} in the model file, "
                f"but {MANIFEST} says {e.dtype} {list(e.shape)}"
            )
        if not e.quant.is_float and not (
            a.quant.zero_point == e.quant.zero_point and math.isclose(a.quant.scale, e.quant.scale, rel_tol=1e-6)
        ):
            raise BundleError(
                f"{path}: {kind} {i} ('{a.name}') is quantized as {a.quant} in the model file, but {MANIFEST} says {e.quant}"
            )


# --------------------------------------------------------------------------
# Writing


class BundleWriter:
    """Builds a bundle in a temporary directory and renames it into place.

    Usage::

        with BundleWriter("bundle/", overwrite=True) as w:
            entry = w.add_file("switches/2x0.5/device-0/segment-0.tflite", data)
            ...
            w.commit(manifest)   # validates with load(), then renames

    Leaving the block without `commit` (an exception) removes the temporary
    directory; the target is untouched.

    Raises:
        BundleError: the target exists and is not a bundle, or exists and
            `overwrite` is False; the manifest fails validation.
    """

    def __init__(self, target: str | os.PathLike, overwrite: bool = False) -> None:
        self.target = Path(target)
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.files: dict[str, FileEntry] = {}
        self.committed: Bundle | None = None

    def _check_target(self) -> None:
        t = self.target
        if t.exists() or t.is_symlink():
            if not t.is_dir():
                raise BundleError(f"{t}: exists and is not a directory; choose another --out")
            entries = list(t.iterdir())
            if entries and not (t / MANIFEST).is_file():
                raise BundleError(f"{t}: exists, is not empty and holds no {MANIFEST}; refusing to replace it")
            if entries and not self.overwrite:
                raise BundleError(f"{t}: a bundle is already there (pass --force / overwrite=True to replace it)")

    def __enter__(self) -> "BundleWriter":
        self._check_target()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def add_file(self, rel: str, data: bytes) -> FileEntry:
        """Writes `data` at `rel` inside the bundle; returns its size and sha256."""
        if self.tmp is None:
            raise BundleError("BundleWriter.add_file() outside its `with` block")
        _relpath(_Ctx("bundle"), rel)
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entry = FileEntry(len(data), hashlib.sha256(data).hexdigest())
        self.files[rel] = entry
        return entry

    def manifest(self, model: ModelInfo, plans: Sequence[Plan], **extra: Any) -> dict:
        """The manifest for `model` and `plans`, with every added file listed."""
        import datetime

        from paradis_tf import __version__

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "paradis_tf_version": __version__,
            **extra,
            "model": model.to_json(),
            "files": {rel: e.to_json() for rel, e in sorted(self.files.items())},
            "plans": {p.name: p.to_json() for p in plans},
        }

    def commit(self, manifest: Mapping) -> Bundle:
        """Writes the manifest, validates the whole bundle, renames it into place."""
        if self.tmp is None:
            raise BundleError("BundleWriter.commit() outside its `with` block")
        atomic_write_json(self.tmp / MANIFEST, manifest)
        try:
            load(self.tmp)  # validate everything before it becomes visible
        except BundleError as e:
            raise BundleError(
                f"refusing to write {self.target}: " + str(e).replace(str(self.tmp), str(self.target))
            ) from None
        self._check_target()
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
            os.replace(self.target, old / "bundle")
        os.replace(self.tmp, self.target)
        fsync_dir(self.target.parent)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = load(self.target, verify=False)
        return self.committed


def update_accuracy(root: str | os.PathLike, accuracy: Mapping[str, Mapping[str, Any]]) -> Bundle:
    """Merges measured accuracies into plans' ``accuracy`` (atomic rewrite of the manifest).

    Args:
        root: the bundle directory.
        accuracy: plan name -> {"samples": 10000, "float": 0.91, "int8": 0.90, ...}.
            ``samples`` (how many images were measured) lets plan selection
            tell accuracies apart from sampling noise
            (`paradis_tf.mesh.placement`); without it plans rank by accuracy alone.
    """
    bundle = load(root, verify=False)
    raw = json.loads(json.dumps(bundle.manifest))
    for name, values in accuracy.items():
        plan = bundle.plan(name)
        raw["plans"][plan.name].setdefault("accuracy", {})
        raw["plans"][plan.name]["accuracy"] = {**(raw["plans"][plan.name]["accuracy"] or {}), **values}
    atomic_write_json(Path(root) / MANIFEST, raw)
    return load(root, verify=False)
