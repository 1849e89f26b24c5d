"""Conversion of trained ParaDiS models into bundles (needs TensorFlow).

`convert_model(model, out, calib_x, ...)` writes a bundle: int8 TFLite
partitions per switch, device role and segment, TFLM C arrays with measured
arena sizes, sequential baseline plans, and the manifest (docs/BUNDLE.md).
"""

from paradis_tf.convert.converter import REQUIRED_MODEL_API, convert_model, load_images, load_model, prepare_calibration
from paradis_tf.convert.qcheck import BackendCheck, PlanCheck, qcheck
from paradis_tf.convert.tflite import ConversionError, keras_to_tflite
from paradis_tf.convert.tflm import c_name, tflm_artefacts

__all__ = [
    "ConversionError",
    "REQUIRED_MODEL_API",
    "c_name",
    "convert_model",
    "load_images",
    "load_model",
    "qcheck",
    "BackendCheck",
    "PlanCheck",
    "keras_to_tflite",
    "prepare_calibration",
    "tflm_artefacts",
]
