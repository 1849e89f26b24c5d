"""ParaDiS model -> bundle: every switch, every device role, every segment.

For each plan (a switch of the model, or a sequential baseline cut), the
segments are converted in dependency order. Segment 0 is calibrated on the
calibration images; a later segment on what the int8 partitions before it
really produce on those images (their dequantized int8 outputs), so that its
input ranges match the tensors it will receive on the devices.

Super-resolution models (``model.task == "super_resolution"``, e.g.
`paradis_tf.models.wdsr`) are converted for one fixed low-resolution tile
(``tile``, default the model's patch size), calibrated on low-resolution
patches of photographs (`sr_calibration_patches`). The skip branch is folded
into device 0: its last segment outputs its partial residual plus the skip
convolution of the image, so every plan keeps the classifier's semantics
(sum of the devices' outputs) followed by one depth-to-space.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from paradis_tf.bundle import (
    CLASSIFICATION,
    SUPER_RESOLUTION,
    Bundle,
    BundleError,
    BundleWriter,
    Device,
    Fusion,
    ImageOutput,
    ModelInfo,
    Plan,
    Preprocessing,
    Segment,
    SegmentInput,
    SegmentRef,
    TensorSpec,
    TflmInfo,
    segment_order,
)
from paradis_tf.convert.tflite import ConversionError, keras_to_tflite_variants, native_stderr_quiet
from paradis_tf.convert.tflm import c_name, tflm_artefacts
from paradis_tf.errors import ParaDiSError
from paradis_tf.runtime.backends import load_interpreter
from paradis_tf.quant import dequantize, quantize
from paradis_tf.tflite_file import read_tflite
from paradis_tf.switches import Switch

__all__ = ["DEFAULT_SEQUENTIAL", "REQUIRED_MODEL_API", "convert_model", "is_super_resolution", "load_images",
           "load_model", "prepare_calibration", "plan_dir", "sr_calibration_patches", "tile_shape"]

# What the converter uses of a ParaDiS model (paradis_tf.models.ParaDiSModel).
REQUIRED_MODEL_API = ("switches", "image_shape", "num_classes", "preprocessing", "device_segments", "fusion_bias")

Progress = Callable[[str], None]
# Device counts of the sequential baseline plans when the caller names none.
DEFAULT_SEQUENTIAL = (2, 3, 4)
log = logging.getLogger(__name__)


def plan_dir(plan: str, device: int) -> str:
    return f"switches/{plan}/device-{device}"


def _check_model(model: Any, what: str) -> None:
    missing = [a for a in REQUIRED_MODEL_API if not hasattr(model, a)]
    if missing:
        raise ConversionError(
            f"{what} is a {type(model).__name__}, not a ParaDiS model (it lacks {', '.join(missing)}); "
            "convert a model built with paradis_tf.models and trained with `paradis train`"
        )


def is_super_resolution(model: Any) -> bool:
    """Whether ``model`` is a super-resolution network (image out), not a classifier."""
    return getattr(model, "task", None) == SUPER_RESOLUTION


def tile_shape(model: Any, tile: "int | Sequence[int] | None") -> tuple[int, int, int]:
    """The (H, W, C) input of a super-resolution bundle's partitions: ``tile`` (N or (H, W)) low-resolution
    pixels, default the model's patch size.

    Raises:
        ConversionError: a tile for a classifier, or not a positive size.
    """
    shape = tuple(int(v) for v in model.image_shape)
    if tile is None:
        return shape
    if not is_super_resolution(model):
        raise ConversionError(f"a tile size is for super-resolution models; this model is a classifier taking "
                              f"{shape} images (leave --tile out)")
    hw = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
    if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ConversionError(f"tile must be a positive pixel count N or (height, width); received {tile!r}")
    return (int(hw[0]), int(hw[1]), shape[-1])


def sr_calibration_patches(images: "dict[str, np.ndarray] | Sequence[np.ndarray]", scale: int,
                           tile: Sequence[int], samples: int, seed: int = 0) -> np.ndarray:
    """Low-resolution calibration patches: each photograph cropped to a multiple of ``scale`` and downscaled
    as in training (`paradis_tf.data.sr.sr_pairs`), then ``samples`` random ``tile``-sized crops, spread
    evenly over the images (uint8 ``(samples, th, tw, C)``).

    Raises:
        ConversionError: no images, or one whose low-resolution version is
            smaller than the tile (names it and both sizes).
    """
    from paradis_tf.data.sr import sr_pairs

    th, tw = int(tile[0]), int(tile[1])
    lrs = [(name, lr) for name, (lr, _) in sr_pairs(images, scale).items()]
    if not lrs or samples < 1:
        raise ConversionError(f"calibration needs at least one image and one sample; received {len(lrs)} images "
                              f"(samples={samples})")
    for name, lr in lrs:
        if lr.shape[0] < th or lr.shape[1] < tw:
            raise ConversionError(f"calibration image {name}: its low-resolution version (x{scale} smaller) is "
                                  f"{lr.shape[0]}x{lr.shape[1]}, smaller than the {th}x{tw} tile; use larger "
                                  "images or a smaller tile")
    rng = np.random.default_rng(seed)
    out = []
    for n in range(int(samples)):
        _, lr = lrs[n % len(lrs)]
        y, x = int(rng.integers(lr.shape[0] - th + 1)), int(rng.integers(lr.shape[1] - tw + 1))
        out.append(lr[y:y + th, x:x + tw])
    return np.stack(out)


def prepare_calibration(model: Any, x: np.ndarray, samples: int, seed: int = 0,
                        shape: Sequence[int] | None = None) -> np.ndarray:
    """Calibration images, preprocessed exactly as the model expects.

    Args:
        model: the ParaDiS model (gives image_shape and preprocessing).
        x: raw uint8 images (preprocessed here) or float images already
            preprocessed, shape (N,) + image_shape.
        samples: how many to keep (a fixed random subset when N is larger).
        shape: the images' shape when it is not the model's (a
            super-resolution tile, `tile_shape`).

    Raises:
        ConversionError: wrong shape or dtype, or no samples.
    """
    shape = tuple(int(v) for v in (model.image_shape if shape is None else shape))
    x = np.asarray(x)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ConversionError(
            f"calibration set has shape {x.shape}; the model takes images of shape (N, {', '.join(map(str, shape))})"
        )
    if len(x) == 0 or samples < 1:
        raise ConversionError(f"calibration needs at least one sample; received {len(x)} (samples={samples})")
    if len(x) > samples:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), samples, replace=False))
        x = x[idx]
    if x.dtype == np.uint8:
        pre = model.preprocessing
        return Preprocessing(float(pre["scale"]), float(pre.get("offset", 0.0))).apply(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ConversionError(f"calibration images must be uint8 (raw) or float (preprocessed); received {x.dtype}")
    return x.astype(np.float32)


@dataclass
class _PlanSpec:
    name: str
    kind: str
    widths: tuple[float, ...]
    models: list[list[Any]]  # [device][segment] keras.Model
    sources: dict[SegmentRef, list[SegmentRef | None]]
    fusion_outputs: tuple[SegmentRef, ...]
    bias: np.ndarray
    depth_to_space: int | None = None


def _paradis_spec(model: Any, switch: Switch, shape: tuple[int, int, int] | None = None) -> _PlanSpec:
    sr = is_super_resolution(model)
    segs = model.device_segments(switch, image_shape=shape) if sr else model.device_segments(switch)
    k_count = len(segs)
    if k_count != len(switch):
        raise ConversionError(f"device_segments({switch}) returned {k_count} devices; the switch has {len(switch)}")
    j_count = len(segs[0])
    if any(len(s) != j_count for s in segs):
        raise ConversionError(f"device_segments({switch}): devices have different segment counts {[len(s) for s in segs]}")
    sources: dict[SegmentRef, list[SegmentRef | None]] = {}
    for k in range(k_count):
        for j in range(j_count):
            sources[SegmentRef(k, j)] = [None] if j == 0 else [SegmentRef(d, j - 1) for d in range(k_count)]
    models = [list(s) for s in segs]
    if sr:
        # The skip branch rides with device 0's last segment (taking the image as one more input when that
        # segment is not its first).
        last = j_count - 1
        models[0][last] = _with_skip(models[0][last], model.skip_model(image_shape=shape), takes_image=last == 0)
        if last:
            sources[SegmentRef(0, last)].append(None)
    return _PlanSpec(
        name=str(switch),
        kind="paradis",
        widths=tuple(switch.widths),
        models=models,
        sources=sources,
        fusion_outputs=tuple(SegmentRef(k, j_count - 1) for k in range(k_count)),
        bias=np.asarray(model.fusion_bias, dtype=np.float32).reshape(-1),
        depth_to_space=int(model.scale) if sr else None,
    )


def _with_skip(segment: Any, skip: Any, takes_image: bool) -> Any:
    """``segment``'s output plus ``skip`` of the image: one Keras model (the image is ``segment``'s input
    when ``takes_image``, else an extra last input)."""
    import keras

    inputs = [keras.Input(tuple(t.shape[1:])) for t in segment.inputs]
    image = inputs[0] if takes_image else keras.Input(tuple(skip.inputs[0].shape[1:]))
    partial = segment(inputs if len(inputs) > 1 else inputs[0])
    out = keras.layers.Add(name="plus_skip")([partial, skip(image)])
    return keras.Model(inputs + ([] if takes_image else [image]), out, name=f"{segment.name}_plus_skip")


def _receptive_radius(model: Any, what: str) -> int:
    """An upper bound on how many pixels away an output pixel of ``model`` reads: the sum over its
    convolutions (nested models included) of ``dilation * (kernel // 2)``, the longest path's or more.

    Raises:
        ConversionError: a layer that changes the resolution (strides,
            pooling), which a tiled image-to-image partition cannot have.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _receptive_radius(layer, what)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            if tuple(layer.strides) != (1, 1):
                raise ConversionError(f"{what}: layer {layer.name} has strides {tuple(layer.strides)}; an image "
                                      "output needs stride-1 convolutions")
            total += max(int(d) * (int(k) // 2) for k, d in zip(layer.kernel_size, layer.dilation_rate))
        elif "Pooling" in type(layer).__name__:
            raise ConversionError(f"{what}: layer {layer.name} is a {type(layer).__name__}; an image output "
                                  "keeps the resolution until its depth-to-space")
    return total


def _spec_margin(spec: _PlanSpec) -> int:
    """`_receptive_radius` of a plan: per segment the widest device's, summed over the segments."""
    return sum(
        max(_receptive_radius(dev[j], f"plan {spec.name} device {k} segment {j}") for k, dev in enumerate(spec.models))
        for j in range(len(spec.models[0]))
    )


def _sequential_spec(model: Any, k_count: int) -> _PlanSpec:
    pieces = model.sequential_models(k_count)
    if len(pieces) != k_count:
        raise ConversionError(f"sequential_models({k_count}) returned {len(pieces)} pieces")
    sources = {SegmentRef(k, 0): [None] if k == 0 else [SegmentRef(k - 1, 0)] for k in range(k_count)}
    return _PlanSpec(
        name=f"seq-{k_count}",
        kind="sequential",
        widths=(1.0,) * k_count,
        models=[[p] for p in pieces],
        sources=sources,
        fusion_outputs=(SegmentRef(k_count - 1, 0),),
        bias=np.zeros(int(model.num_classes), np.float32),
    )


def _order(spec: _PlanSpec) -> list[SegmentRef]:
    """The order `Plan.order` gives the converted plan (one implementation: `segment_order`)."""
    try:
        return segment_order(spec.sources, f"plan {spec.name}")
    except BundleError as e:
        raise ConversionError(str(e)) from None


def _convert_plan(
    spec: _PlanSpec,
    calib: np.ndarray,
    writer: BundleWriter,
    *,
    float_variant: bool,
    tflm: bool,
    num_threads: int | None,
    progress: Progress,
) -> Plan:
    produced: dict[SegmentRef, np.ndarray] = {}  # dequantized int8 outputs on the calibration set
    segments: dict[SegmentRef, Segment] = {}
    stats: dict[int, list[int]] = {k: [0, 0] for k in range(len(spec.models))}
    for ref in _order(spec):
        km = spec.models[ref.device][ref.segment]
        what = f"plan {spec.name} device {ref.device} segment {ref.segment}"
        progress(what)
        calib_inputs = [calib if s is None else produced[s] for s in spec.sources[ref]]
        if len(km.inputs) != len(calib_inputs):
            raise ConversionError(f"{what}: the Keras segment takes {len(km.inputs)} inputs; the plan feeds it {len(calib_inputs)}")
        for i, (t, c) in enumerate(zip(km.inputs, calib_inputs)):
            if tuple(t.shape[1:]) != c.shape[1:]:
                raise ConversionError(f"{what}: input {i} expects shape {tuple(t.shape)}, its source produces {c.shape}")

        def representative(inputs=calib_inputs):
            for n in range(len(inputs[0])):
                yield [a[n : n + 1] for a in inputs]

        variants = keras_to_tflite_variants(
            km, representative, variants=("int8", "float") if float_variant else ("int8",), what=what
        )
        data = variants["int8"]
        info = read_tflite(data, what)
        out_q = info.outputs[0].quant
        with native_stderr_quiet():
            it = load_interpreter(data, "litert", num_threads=num_threads)
            q_out = it.run([quantize(c, t.quant) for c, t in zip(calib_inputs, info.inputs)])[0]
        produced[ref] = dequantize(q_out, out_q)
        macs, params = info.macs_and_params()
        stats[ref.device][0] += macs
        stats[ref.device][1] += params

        base = f"{plan_dir(spec.name, ref.device)}/segment-{ref.segment}"
        entry = writer.add_file(base + ".tflite", data)
        float_file = None
        if float_variant:
            float_file = base + ".float.tflite"
            writer.add_file(float_file, variants["float"])
        tflm_info = None
        if tflm:
            art = tflm_artefacts(data, c_name(spec.name, "device", ref.device, "segment", ref.segment), f"segment-{ref.segment}.h")
            writer.add_file(base + ".cc", art.cc.encode())
            writer.add_file(base + ".h", art.h.encode())
            tflm_info = TflmInfo(art.arena_bytes, art.ops, base + ".cc", base + ".h", art.symbol)
        segments[ref] = Segment(
            index=ref.segment,
            file=base + ".tflite",
            sha256=entry.sha256,
            size=entry.size,
            inputs=tuple(
                SegmentInput(src, TensorSpec(t.shape, t.quant)) for src, t in zip(spec.sources[ref], info.inputs)
            ),
            output=TensorSpec(info.outputs[0].shape, out_q),
            float_file=float_file,
            tflm=tflm_info,
        )
    for k in range(len(spec.models)):
        # the coordinator sends one input tensor per role (paradis_tf.mesh.program.model_input_spec)
        taken = {i.tensor for r, seg in segments.items() if r.device == k for i in seg.inputs if i.source is None}
        if len(taken) > 1:
            raise ConversionError(f"plan {spec.name} device {k}: its segments quantize the model input differently "
                                  f"({sorted(str(t.quant) for t in taken)}); a role takes one input tensor")
    devices = []
    for k, segs in enumerate(spec.models):
        devices.append(
            Device(
                role=k,
                width=float(spec.widths[k]),
                macs=int(stats[k][0]),
                params=int(stats[k][1]),
                segments=tuple(segments[SegmentRef(k, j)] for j in range(len(segs))),
            )
        )
    return Plan(
        name=spec.name,
        kind=spec.kind,
        widths=spec.widths,
        fusion=Fusion("sum", tuple(float(b) for b in spec.bias), spec.fusion_outputs, spec.depth_to_space),
        devices=tuple(devices),
    )


def _sequential_specs(model: Any, sequential: Sequence[int] | None) -> list[_PlanSpec]:
    """The sequential baseline plans asked for; with ``None``, those of `DEFAULT_SEQUENTIAL` the model can make."""
    if is_super_resolution(model):
        if sequential:
            raise ConversionError(f"a super-resolution model has no sequential baseline plans; received "
                                  f"sequential={list(sequential)} (pass sequential=() / --sequential none)")
        return []
    counts = sorted({int(k) for k in (DEFAULT_SEQUENTIAL if sequential is None else sequential)})
    if any(k < 2 for k in counts):
        raise ConversionError(f"sequential plans need at least 2 devices; received {counts}")
    if not counts:
        return []
    names = ", ".join(f"seq-{k}" for k in counts)
    if not hasattr(model, "sequential_models"):
        if sequential is None:
            return []
        raise ConversionError(f"cannot make the sequential plans {names}: the model has no sequential_models() "
                              "(pass sequential=() / --sequential none)")
    if sequential is None and "1x1.0" not in {str(Switch.parse(s)) for s in model.switches}:
        log.warning("skipping the sequential baseline plans %s: they cut the 1x1.0 switch, which the model lacks "
                    "(it has %s)", names, ", ".join(str(s) for s in model.switches))
        return []
    specs, skipped = [], []
    for k in counts:
        try:
            specs.append(_sequential_spec(model, k))
        except ValueError as e:  # no 1x1.0 switch, or more pieces than the network has stages
            if sequential is not None:
                raise ConversionError(f"cannot make the sequential plan seq-{k}: {e} (choose other device counts "
                                      "or pass sequential=() / --sequential none)") from None
            skipped.append((k, str(e)))
    if skipped:
        log.warning("skipping the sequential baseline plans %s: %s", ", ".join(f"seq-{k}" for k, _ in skipped),
                    skipped[0][1])
    return specs


def _resolve_switches(model: Any, switches: Iterable["str | Switch"] | None) -> list[Switch]:
    known = {str(Switch.parse(s)): Switch.parse(s) for s in model.switches}
    if switches is None:
        return list(known.values())
    out = []
    for s in switches:
        try:
            key = str(Switch.parse(s))
        except ParaDiSError as e:
            raise ConversionError(str(e)) from None
        if key not in known:
            raise ConversionError(f"unknown switch {str(s)!r}: the model has {list(known)}")
        out.append(known[key])
    return out


def convert_model(
    model: Any,
    out: str | os.PathLike,
    calib_x: np.ndarray,
    *,
    switches: Iterable["str | Switch"] | None = None,
    calib_samples: int = 500,
    sequential: Sequence[int] | None = None,
    float_variant: bool = False,
    tflm: bool = True,
    overwrite: bool = False,
    num_threads: int | None = None,
    name: str | None = None,
    extra: dict | None = None,
    progress: Progress | None = None,
    tile: "int | Sequence[int] | None" = None,
) -> Bundle:
    """Converts a ParaDiS model into a bundle directory.

    Args:
        model: a `ParaDiSModel` (anything with `REQUIRED_MODEL_API`, plus
            `sequential_models` when `sequential` is not empty).
        out: the bundle directory to create (atomically).
        calib_x: calibration images: raw uint8 or preprocessed float, shape
            (N,) + model.image_shape (a super-resolution model: low-resolution
            patches of the tile's size, `sr_calibration_patches`).
        switches: switches to convert (default: all of the model's).
        calib_samples: how many calibration images to use.
        sequential: device counts K of the sequential baseline plans
            ``seq-K`` (the 1x1.0 network cut into K pieces). None:
            `DEFAULT_SEQUENTIAL`, leaving out (with a logged warning) the
            plans the model cannot make: all of them when it has no 1x1.0
            switch, those with more pieces than the network has stages.
        float_variant: also write float .tflite partitions (exactness checks).
        tflm: write TFLM C arrays and measure arena sizes.
        overwrite: replace an existing bundle at `out`.
        num_threads: CPU threads for the interpreter runs during conversion.
        name: model name for the manifest (default: the model's name).
        extra: extra top-level manifest fields (e.g. conversion provenance).
        progress: called with a short text before each segment.
        tile: a super-resolution model's partition input, N or (H, W)
            low-resolution pixels (default: the model's patch size); the
            manifest states it as ``model.input_shape``.

    Returns:
        The written, validated bundle.

    Raises:
        ConversionError: not a ParaDiS model, an unknown switch, a
            calibration set of the wrong shape, or a failed conversion.
        BundleError: `out` holds something that must not be replaced.
    """
    _check_model(model, "the model")
    chosen = _resolve_switches(model, switches)
    sr = is_super_resolution(model)
    shape = tile_shape(model, tile)
    calib = prepare_calibration(model, calib_x, calib_samples, shape=shape)
    progress = progress or (lambda msg: None)
    pre = model.preprocessing
    labels = getattr(model, "labels", None)
    specs = [_paradis_spec(model, s, shape if sr else None) for s in chosen] + _sequential_specs(model, sequential)
    output = None
    if sr:
        lo, hi = float(pre.get("offset", 0.0)), 255.0 * float(pre["scale"]) + float(pre.get("offset", 0.0))
        margin = max(_spec_margin(spec) for spec in specs)
        if min(shape[:2]) <= 2 * margin:
            raise ConversionError(f"a {shape[0]}x{shape[1]} tile keeps nothing of its output once a margin of "
                                  f"{margin} pixels (the network's receptive radius) is cropped from each side, so "
                                  f"larger images could not be tiled; choose a tile of at least {2 * margin + 1} "
                                  "pixels (--tile)")
        output = ImageOutput(int(model.scale), "rgb" if shape[-1] == 3 else "y", (lo, hi), margin)
    info = ModelInfo(
        name=name or str(getattr(model, "architecture", None) or getattr(model, "name", "model")),
        input_shape=shape,
        num_classes=int(model.num_classes),
        preprocessing=Preprocessing(float(pre["scale"]), float(pre.get("offset", 0.0))),
        labels=None if labels is None else tuple(str(s) for s in labels),
        task=SUPER_RESOLUTION if sr else CLASSIFICATION,
        output=output,
    )
    with BundleWriter(out, overwrite=overwrite) as writer:
        plans = [
            _convert_plan(spec, calib, writer, float_variant=float_variant, tflm=tflm, num_threads=num_threads, progress=progress)
            for spec in specs
        ]
        conversion = {"calibration_samples": int(len(calib)), "float_variant": bool(float_variant), **(extra or {})}
        return writer.commit(writer.manifest(info, plans, conversion=conversion))


def load_model(path: str | os.PathLike) -> Any:
    """Loads a saved ParaDiS model (``model.keras``).

    Raises:
        ConversionError: missing file, a file Keras cannot load, or a model
            that is not a ParaDiS model.
    """
    import zipfile
    from pathlib import Path

    import keras

    p = Path(path)
    if not p.is_file():
        raise ConversionError(f"{p}: no such model file (it does not exist; train one with `paradis train --out {p}`)")
    if not zipfile.is_zipfile(p):
        # Keras would answer "File not found" for a file that exists.
        raise ConversionError(f"{p} is not a Keras model file (a .keras zip archive); pass the model.keras that "
                              "`paradis train --out` or `model.save()` wrote")
    try:
        import paradis_tf.models  # noqa: F401  (registers the ParaDiS classes with Keras)
    except ImportError:
        pass
    try:
        model = keras.saving.load_model(p)
    except Exception as e:
        raise ConversionError(f"{p}: Keras cannot load it ({type(e).__name__}: {e})") from None
    _check_model(model, str(p))
    return model


def load_images(model: Any, dataset: str | None, data_dir: str | None, split: str,
                labelled: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw uint8 images (and labels) for calibration or checking.

    Args:
        dataset: ``"fashion_mnist"`` (uses `split`), or None with `data_dir`.
        data_dir: a folder of class sub-folders (all images are used).
        labelled: the labels will be compared with the model's predictions:
            they are mapped to the model's classes (`match_classes`).

    Raises:
        DatasetError: both, neither, or an unknown dataset; unreadable data;
            with `labelled`, classes that do not match the model's.
    """
    from paradis_tf.data import load_source, match_classes

    x, y, classes = load_source(dataset, data_dir, split, tuple(int(v) for v in model.image_shape), holdout=0.0)
    if labelled:
        source = f"--data {data_dir}" if data_dir else str(dataset)
        y = match_classes(classes, y, getattr(model, "labels", None), int(model.num_classes), source)
    return x, y
