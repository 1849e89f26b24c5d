"""`ParaDiSSRModel`: a ParaDiS super-resolution network (low-resolution image in, high-resolution image out).

The output of one switch is

    depth_to_space(sum_k partial_k(x) + skip(x) + fusion_bias, scale)

where ``partial_k`` is device ``k``'s model (`device_models`): the ParaDiS
body up to its output convolution, a `ParaDiSFusedConv2D` with
``scale**2 * C`` channels and no bias. ``skip`` (`skip_model`) is a plain
convolution of the whole low-resolution image to ``scale**2 * C``
channels, shared by every switch and initialized to bicubic upsampling;
its bias is the network's only output bias, so `fusion_bias` is zero. The
sum happens before depth-to-space: the devices and the skip branch output
low-resolution tensors of ``scale**2 * C`` channels, and one depth-to-space
(a fixed rearrangement, linear, so summing after it gives the same image)
makes the high-resolution image.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from paradis_tf.errors import InputError
from paradis_tf.models.base import ParaDiSModel
from paradis_tf.models.interpret import DeviceOps, count_macs

TASK = "super_resolution"
# Float pixels in [0, 1], in and out.
SR_PREPROCESSING = {"scale": 1.0 / 255.0, "offset": 0.0}


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5: the bicubic of MATLAB, PIL and ``tf.image.resize``)."""
    x = np.abs(np.asarray(x, np.float64))
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_upsampling_kernel(scale: int, channels: int, size: int = 5) -> np.ndarray:
    """A ``(size, size, channels, scale**2 * channels)`` convolution kernel that, followed by depth-to-space,
    upsamples by ``scale`` with bicubic interpolation (half-pixel centres, as ``tf.image.resize``).

    Output pixel ``(i, j)`` of a ``scale x scale`` cell of low-resolution pixel ``p`` sits at ``p + t_i``,
    ``t_i = (i + 0.5) / scale - 0.5``; its four taps lie within two pixels of ``p`` (``size`` 5).
    Channel ``(i * scale + j) * channels + c`` is the depth-to-space order (``tf.nn.depth_to_space``).
    """
    if size < 5 or size % 2 == 0:
        raise ValueError(f"Expected an odd kernel size >= 5 (bicubic reads two pixels each side). Received size={size}.")
    r = size // 2
    offsets = np.arange(-r, r + 1)
    t = (np.arange(scale) + 0.5) / scale - 0.5
    taps = keys_cubic(t[:, None] - offsets[None, :])  # (scale, size): weight of pixel p + offset
    kernel = np.zeros((size, size, channels, scale * scale * channels), np.float32)
    for i in range(scale):
        for j in range(scale):
            w = np.outer(taps[i], taps[j])
            for c in range(channels):
                kernel[:, :, c, (i * scale + j) * channels + c] = w
    return kernel


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSSRModel(ParaDiSModel):
    """A ParaDiS super-resolution network: shared full-width weights serving several switches.

    Calling the model runs every switch and returns the list of their
    high-resolution images ``(batch, H * scale, W * scale, C)`` in
    `switches` order. The network is fully convolutional: `switch_model`
    takes images of any size; `device_models` and `skip_model` are built
    for ``input_shape`` unless given another ``image_shape`` (a tile size).

    Build instances with `paradis_tf.models.wdsr`.

    Args:
        architecture: registered architecture name (``"wdsr"``).
        switches: switch texts or `Switch` objects.
        input_shape: (H, W, C) of one low-resolution training patch; C is 1
            (the Y channel) or 3 (RGB).
        scale: upscaling factor (2, 3, 4...).
        arch_config: keyword arguments of the architecture body.
        preprocessing: ``{"scale", "offset"}``: float input is
            ``raw * scale + offset`` (default: pixels in [0, 1]); the output
            is in the same units.
        label_mix: weight of the target term for the distilled switches
            (0 = pure distillation); see `compute_loss`.
        sandwich: ``None`` to train every switch at every step, or the
            number of switches per step (widest + narrowest + random others).
        switch_weights: optional ``{switch text: weight}`` of each switch's
            loss term.
        teacher: ``"widest"`` or ``"nested"`` (see `ParaDiSModel`).
        teacher_of: optional ``{student switch: teacher switch}``.
        loss_border: high-resolution pixels left out of the loss on each
            side of a training patch. None: the skip branch's reach
            (``scale * (kernel // 2)``, 4 for WDSR x2), the pixels where its
            zero padding makes even bicubic upsampling wrong: inside a whole
            image they do not exist, and training on them taught the network
            to repair patch edges instead of upscaling (measured on a brick
            crop, 120 steps of a tiny WDSR: 35.8 dB with a border of 0, below
            bicubic's 36.9; 37.2 dB with 4).

    Training: all switches jointly with an L1 loss and in-place distillation
    (`compute_loss`). No batch normalization (WDSR has none), so there are
    no per-switch statistics and nothing to calibrate after training. The
    classifier's ``temperature`` and ``label_smoothing`` act on a softmax,
    which an image output has not; they are refused.
    """

    task = TASK

    def __init__(self, architecture: str, switches: Sequence, input_shape: Sequence[int], scale: int = 2,
                 arch_config: dict | None = None, preprocessing: dict | None = None, label_mix: float = 0.0,
                 sandwich: int | None = None, switch_weights: dict | None = None, teacher: str = "widest",
                 teacher_of: dict | None = None, loss_border: int | None = None, **kwargs):
        for option, neutral in (("temperature", 1.0), ("label_smoothing", 0.0)):
            if option in kwargs and kwargs.pop(option) not in (neutral, None):
                raise ValueError(f"{option} acts on a classifier's softmax; a super-resolution network distils its "
                                 f"images with an L1 loss. Leave {option} out (or use label_mix).")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3 or shape[-1] not in (1, 3) or min(shape) < 1:
            raise InputError(f"Expected input_shape (height, width, channels) with 1 channel (Y) or 3 (RGB). "
                             f"Received input_shape={tuple(input_shape)}.")
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 2 <= int(scale) <= 8:
            raise ValueError(f"Expected an integer upscaling factor 2 <= scale <= 8. Received scale={scale!r}.")
        self.scale = int(scale)
        arch = {**dict(arch_config or {}), "scale": self.scale}
        # The body's "classes" are its outputs per low-resolution pixel: scale**2 * C before depth-to-space.
        super().__init__(architecture, switches, shape, self.scale ** 2 * shape[-1], arch_config=arch,
                         preprocessing=dict(preprocessing or SR_PREPROCESSING), label_mix=label_mix,
                         sandwich=sandwich, switch_weights=switch_weights, teacher=teacher, teacher_of=teacher_of,
                         **kwargs)
        reach = self.scale * (int(self.body.skip_conv.kernel_size[0]) // 2)
        border = reach if loss_border is None else loss_border
        if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0 \
                or 2 * border >= min(shape[:2]) * self.scale:
            raise ValueError(f"Expected loss_border, the high-resolution pixels left out of the loss on each side of "
                             f"a patch, to be a whole number >= 0 that leaves some of a {shape[0] * self.scale}x"
                             f"{shape[1] * self.scale} training patch (None: {reach}). "
                             f"Received loss_border={loss_border!r}.")
        self.loss_border = int(border)

    def _switch_metrics(self, switches) -> list:
        """No per-switch metric (top-1 accuracy has no meaning for images)."""
        return []

    # -- structure ----------------------------------------------------------
    @property
    def channels(self) -> int:
        """Image channels, in and out: 1 (Y) or 3 (RGB)."""
        return self.image_shape[-1]

    @property
    def fusion_bias(self) -> np.ndarray:
        """Added once to the summed partial outputs, before depth-to-space: zero (the skip branch holds the bias)."""
        return np.zeros((self.num_classes,), np.float32)

    # -- forward ------------------------------------------------------------
    def forward(self, switch, x, training=None, per_device: bool = False):
        """High-resolution image of one switch (tensors in, tensor out); see `ParaDiSModel.forward`."""
        residual = super().forward(switch, x, training, per_device)
        return ops.depth_to_space(residual + self.body.skip_conv(x), self.scale)

    def _check_input(self, x):
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[-1] != self.channels or any(d is not None and d < 1 for d in shape[1:3]):
            kind = "Y" if self.channels == 1 else "RGB"
            raise InputError(f"Expected low-resolution images of shape (batch, height, width, {self.channels}) "
                             f"({kind}). Received shape {shape}.")
        if not keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat")):
            raise InputError(
                f"Expected float input (raw * {self.preprocessing['scale']:g} + {self.preprocessing['offset']:g}). "
                f"Received dtype {x.dtype}; preprocess it first (paradis_tf.data.preprocess).")

    def calibrate(self, x, steps: int = 20, batch_size: int = 128, switches=None) -> None:
        """Nothing to calibrate: the super-resolution bodies have no batch normalization."""
        if self.body.bn_layers():
            super().calibrate(x, steps=steps, batch_size=batch_size, switches=switches)

    def _skipped_output(self, inputs):
        """A switch the sandwich sample skips outputs a NaN image, which the loss leaves out."""
        shape = ops.shape(inputs)
        return ops.full((shape[0], shape[1] * self.scale, shape[2] * self.scale, self.channels), np.nan,
                        dtype="float32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """L1 loss of every switch, with in-place distillation from the teacher switches.

        The widest switch learns from the high-resolution target ``y``:
        ``L1(y, out_w)``. Every other switch ``i`` learns from its teacher's
        output ``t`` (`teachers`; the widest switch unless ``teacher`` or
        ``teacher_of`` say otherwise), detached so that no gradient flows
        into the teacher from the students:
        ``(1 - label_mix) * L1(t, out_i) + label_mix * L1(y, out_i)``.
        Each term is multiplied by its switch weight; L1 is the mean
        absolute difference over every pixel and channel, in the model's
        preprocessing units, ``loss_border`` pixels from the patch's edges
        left out. A switch the sandwich sample skipped (NaN
        output) adds nothing, and a skipped teacher is replaced by the widest
        switch.
        """
        outs = list(y_pred)
        if len(outs) != len(self._switches):
            raise ValueError(f"Expected one output per switch ({len(self._switches)}: "
                             f"{[str(s) for s in self._switches]}). Received {len(outs)}.")
        w = self.widest_index
        weight = [self.switch_weights.get(str(s), 1.0) for s in self._switches]
        # Keras' loss objects average over every element and scale for `tf.distribute` replicas themselves.
        l1 = keras.losses.MeanAbsoluteError()
        y = ops.cast(y, outs[w].dtype)
        b = self.loss_border
        if b:
            y = y[:, b:-b, b:-b, :]
            outs = [o[:, b:-b, b:-b, :] for o in outs]
        total = weight[w] * l1(y, outs[w])
        targets = {w: ops.stop_gradient(outs[w])}
        teachers = self.teachers
        for i, student in enumerate(outs):
            t = teachers[i]
            if t is None:
                continue
            if t not in targets:
                targets[t] = ops.where(ops.isnan(outs[t]), targets[w], ops.stop_gradient(outs[t]))
            term = l1(targets[t], student)
            if self.label_mix > 0.0:
                term = (1.0 - self.label_mix) * term + self.label_mix * l1(y, student)
            total = total + ops.where(ops.isnan(term), 0.0, weight[i] * term)
        if self.losses:
            total = total + self._aggregate_additional_loss(self.losses)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    # -- derived models -----------------------------------------------------
    def _model_shape(self, image_shape) -> tuple[int, int, int]:
        if image_shape is None:
            return self.image_shape
        shape = tuple(int(d) for d in image_shape)
        if len(shape) != 3 or shape[-1] != self.channels or min(shape) < 1:
            raise InputError(f"Expected image_shape (height, width, {self.channels}). Received image_shape={image_shape}.")
        return shape

    def device_segments(self, switch, image_shape: Sequence[int] | None = None) -> list[list[keras.Model]]:
        """Plain Keras models of every device's segments (sliced weights), for ``image_shape`` (default
        ``input_shape``). The last segment outputs the device's partial residual, ``scale**2 * C``
        channels at low resolution, before depth-to-space; see `ParaDiSModel.device_segments`."""
        s = self._switch(switch)
        shape = self._model_shape(image_shape)
        out = []
        for k in range(len(s)):
            dops = DeviceOps(s, k, shape)
            out.append(dops.finish(self.body.forward(dops, dops.start())))
        return out

    def device_models(self, switch, image_shape: Sequence[int] | None = None) -> list[keras.Model]:
        """One plain Keras model per device: low-resolution image in, partial residual out.

        ``depth_to_space(sum(m(x) for m in device_models(s)) + skip_model()(x) + fusion_bias, scale)
        == switch_model(s)(x)``.
        """
        if self.has_sync:
            raise ValueError(
                f"Model has sync layers {self.body.sync_layer_names()}, so a device cannot run alone; "
                "use device_segments(switch).")
        return [segs[0] for segs in self.device_segments(switch, image_shape)]

    def skip_model(self, image_shape: Sequence[int] | None = None) -> keras.Model:
        """The skip branch as a plain Keras model: the whole low-resolution image in, ``scale**2 * C`` channels
        out (with the network's output bias), before depth-to-space. The same for every switch."""
        shape = self._model_shape(image_shape)
        src = self.body.skip_conv
        inp = keras.Input(shape, name="skip_input")
        conv = keras.layers.Conv2D(src.filters, src.kernel_size, padding=src.padding, use_bias=src.use_bias,
                                   name=src.name)
        out = conv(inp)
        conv.set_weights([np.asarray(w) for w in src.get_weights()])
        return keras.Model(inp, out, name="skip")

    def skip_stats(self) -> dict:
        """MACs and parameters of the skip branch (`skip_model`) at ``input_shape``."""
        m = self.skip_model()
        return {"macs": count_macs(m), "params": int(m.count_params())}

    def sequential_models(self, num_devices: int) -> list[keras.Model]:
        raise ValueError(f"{type(self).__name__}: the sequential baseline is built for classifiers only; "
                         "a super-resolution network's skip branch reads the image in its last piece.")

    # -- serialization ------------------------------------------------------
    def get_config(self):
        arch = {k: v for k, v in self.arch_config.items() if k != "scale"}
        return {
            "architecture": self.architecture,
            "switches": [str(s) for s in self._switches],
            "input_shape": list(self.image_shape),
            "scale": self.scale,
            "arch_config": arch,
            "preprocessing": self.preprocessing,
            "label_mix": self.label_mix,
            "sandwich": self.sandwich,
            "loss_border": self.loss_border,
            "switch_weights": self.switch_weights or None,
            "teacher": self.teacher,
            "teacher_of": self.teacher_of or None,
            "name": self.name,
            "trainable": self.trainable,
        }


def depth_to_space(x: np.ndarray, scale: int) -> np.ndarray:
    """NumPy depth-to-space of ``(..., H, W, scale**2 * C)`` (channel ``(i * scale + j) * C + c`` goes to
    pixel ``(i, j)`` of the ``scale x scale`` cell), as ``tf.nn.depth_to_space``."""
    x = np.asarray(x)
    *lead, h, w, cs = x.shape
    if cs % (scale * scale):
        raise InputError(f"Expected a channel count divisible by scale**2 = {scale * scale}. Received shape {x.shape}.")
    c = cs // (scale * scale)
    y = x.reshape(*lead, h, w, scale, scale, c)
    n = len(lead)
    y = np.moveaxis(y, n + 2, n + 1)  # (..., h, i, w, j, c)
    return y.reshape(*lead, h * scale, w * scale, c)


__all__ = ["ParaDiSSRModel", "SR_PREPROCESSING", "TASK", "bicubic_upsampling_kernel", "depth_to_space", "keys_cubic"]
