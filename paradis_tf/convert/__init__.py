"""Conversion of trained ParaDiS models into bundles (needs TensorFlow).

`convert_model(model, out, calib_x, ...)` writes a bundle: int8 TFLite
partitions per switch, device role and segment, TFLM C arrays with measured
arena sizes, sequential baseline plans, and the manifest (docs/BUNDLE.md);
super-resolution models for a fixed low-resolution tile (`sr_calibration_patches`
makes their calibration set). `qcheck` (top-1) and `sr_qcheck` (PSNR, SSIM)
compare the int8 partitions with the float model.
"""

from paradis_tf.convert.converter import (
    REQUIRED_MODEL_API,
    convert_model,
    is_super_resolution,
    load_images,
    load_model,
    prepare_calibration,
    sr_calibration_patches,
)
from paradis_tf.convert.qcheck import BackendCheck, ImageBackendCheck, PlanCheck, SRPlanCheck, qcheck, sr_qcheck
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
    "sr_qcheck",
    "is_super_resolution",
    "sr_calibration_patches",
    "BackendCheck",
    "ImageBackendCheck",
    "PlanCheck",
    "SRPlanCheck",
    "keras_to_tflite",
    "prepare_calibration",
    "tflm_artefacts",
]
