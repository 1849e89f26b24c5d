"""Keras model -> .tflite bytes (full-integer int8, or float).

Keras 3 models are converted from a concrete function of the model (inputs
named ``in_00, in_01, ...`` in model-input order) with
`TFLiteConverter.from_concrete_functions(funcs, trackable_obj)`, where the
trackable is a `tf.Module` holding the model's TensorFlow variables.
`from_keras_model` misbehaves under Keras 3, and without the trackable the
converter cannot resolve the variables (READ_VARIABLE fails during
calibration). A `keras.export.ExportArchive` SavedModel gives bit-identical
models but took 2.5x longer per segment.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np

from paradis_tf.errors import ParaDiSError
from paradis_tf.runtime.backends import quiet_native_stderr

__all__ = ["ConversionError", "keras_to_tflite", "keras_to_tflite_variants", "input_name", "native_stderr_quiet"]

log = logging.getLogger(__name__)


class ConversionError(ParaDiSError, ValueError):
    """A model, switch or calibration set the converter cannot use."""


def input_name(i: int) -> str:
    return f"in_{i:02d}"


def _input_shapes(model) -> list[tuple]:
    return [tuple(t.shape) for t in model.inputs]


def keras_to_tflite(
    model,
    representative: Callable[[], Iterable[Sequence[np.ndarray]]] | None = None,
    *,
    int8: bool = True,
    what: str = "model",
) -> bytes:
    """Converts a plain Keras model to TFLite.

    Args:
        model: a `keras.Model` with one or more inputs (batch dimension free)
            and one output.
        representative: for int8, a callable returning an iterable of
            calibration samples, each a list with one float32 array of batch
            1 per model input.
        int8: full-integer int8 (per-channel weights, int8 input and output
            tensors); False gives a float32 model.
        what: how to name the model in errors.

    Returns:
        The .tflite flatbuffer; its inputs are in the Keras model's order.

    Raises:
        ConversionError: the converter failed or reordered the inputs.
    """
    variants = ("int8",) if int8 else ("float",)
    return keras_to_tflite_variants(model, representative, variants=variants, what=what)[variants[0]]


def keras_to_tflite_variants(
    model,
    representative: Callable[[], Iterable[Sequence[np.ndarray]]] | None = None,
    *,
    variants: Sequence[str] = ("int8",),
    what: str = "model",
) -> dict[str, bytes]:
    """`keras_to_tflite` for several variants (``"int8"``, ``"float"``) from one traced function."""
    import tensorflow as tf

    shapes = _input_shapes(model)
    specs = [tf.TensorSpec((None,) + tuple(s[1:]), tf.float32, name=input_name(i)) for i, s in enumerate(shapes)]
    multi = len(specs) > 1

    @tf.function(input_signature=specs)
    def serve(*xs):
        return model(list(xs) if multi else xs[0], training=False)

    try:
        func = serve.get_concrete_function()
    except Exception as e:
        raise ConversionError(f"{what}: cannot trace the Keras model ({type(e).__name__}: {e})") from e
    holder = tf.Module()
    holder.variables_ = [getattr(v, "value", v) for v in model.variables]
    out = {}
    for variant in variants:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([func], holder)
        if variant == "int8":
            if representative is None:
                raise ConversionError(f"{what}: int8 conversion needs calibration samples")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _by_name(representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif variant != "float":
            raise ValueError(f"Expected variants among ('int8', 'float'). Received {variant!r}.")
        try:
            with warnings.catch_warnings(), native_stderr_quiet():
                warnings.simplefilter("ignore")
                data = converter.convert()
        except Exception as e:
            raise ConversionError(f"{what}: TFLite {variant} conversion failed ({type(e).__name__}: {e})") from e
        data = _restore_input_order(bytes(data), len(shapes))
        _check_input_order(data, shapes, what)
        out[variant] = data
    return out


@contextlib.contextmanager
def native_stderr_quiet():
    """`paradis_tf.runtime.backends.quiet_native_stderr` unless this module logs at DEBUG.

    The MLIR quantizer prints a ``fully_quantize: ...`` line per model, and
    LiteRT an ``INFO: Created TensorFlow Lite XNNPACK delegate`` line, straight
    to file descriptor 2, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (failures
    still raise, with the converter's diagnostics in the exception).
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    with quiet_native_stderr():
        yield


def _by_name(representative: Callable[[], Iterable[Sequence[np.ndarray]]]) -> Callable[[], Iterable[dict]]:
    """Calibration samples keyed by input name (``{"in_00": a, ...}``).

    The calibrator feeds a list sample to the inputs in the converter's own
    order, which is not the model's: with 4 inputs it gave ``in_00``'s data
    to ``in_03`` and so on, and every activation range after them came from
    mis-wired inputs. A dict is matched by name.
    """

    def samples():
        for sample in representative():
            yield {input_name(i): a for i, a in enumerate(sample)}

    return samples


def _restore_input_order(data: bytes, count: int) -> bytes:
    """Puts the subgraph inputs back in model-input order (``in_00, in_01, ...``).

    The converter orders the inputs of a SavedModel signature by its own
    rules (with 4 inputs, ``in_03`` came first); the plan semantics need the
    Keras order, so the input list of the flatbuffer is permuted by name.
    """
    from paradis_tf.tflite_file import read_tflite

    names = [t.name for t in read_tflite(data).inputs]
    wanted = []
    for i in range(count):
        hits = [n for n, name in enumerate(names) if input_name(i) in name]
        if len(hits) != 1:
            return data  # leave it to _check_input_order to report
        wanted.append(hits[0])
    if wanted == list(range(count)):
        return data
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    sub = model.subgraphs[0]
    sub.inputs = [int(sub.inputs[n]) for n in wanted]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _check_input_order(data: bytes, shapes: list[tuple], what: str) -> None:
    from paradis_tf.tflite_file import read_tflite

    info = read_tflite(data, what)
    if len(info.inputs) != len(shapes):
        raise ConversionError(f"{what}: the .tflite has {len(info.inputs)} inputs, the Keras model {len(shapes)}")
    for i, t in enumerate(info.inputs):
        if input_name(i) not in t.name or tuple(t.shape[1:]) != tuple(shapes[i][1:]):
            raise ConversionError(
                f"{what}: .tflite input {i} is '{t.name}' {list(t.shape)}; expected {input_name(i)} with shape "
                f"{list(shapes[i][1:])}"
            )
