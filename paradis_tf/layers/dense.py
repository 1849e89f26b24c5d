"""Classifier dense layer with sum fusion across devices."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from paradis_tf.layers._common import SwitchLayer, as_list, check_device_count, check_known_switch, shape_list
from paradis_tf.switches import Switch


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSDense(SwitchLayer):
    """Final classifier: device ``k`` computes ``x_k @ W[in_k, :]``.

    The partial logits of the devices are fused by a sum plus one shared
    bias, so ``logits = sum_k x_k @ W[in_k, :] + b`` equals the dense layer
    applied to the concatenated features.

    With ``logit_scale=True`` each switch ``s`` also owns a learned scalar
    ``exp(t_s)`` on its partial logits: ``logits = exp(t_s) sum_k x_k @
    W[in_k, :] + b``. A narrow switch reaches the widest switch's logit
    scale without its features (bounded by ReLU6) or the shared kernel
    having to grow. The scalar folds into each device's kernel slice
    (`device_weights`), so device models and partitions stay plain dense
    layers and the fusion bias stays one vector.

    Args:
        units: number of outputs (classes).
        switches: switch texts the layer must serve.
        use_bias: whether to add the fusion bias.
        logit_scale: learn a per-switch scale of the partial logits.
        kernel_initializer: Keras initializer.
        kernel_regularizer: Keras regularizer.

    Call arguments:
        inputs: list of per-device 2D feature tensors, in device order.
        switch: switch text or `Switch`.
        partial: if True, return the per-device partial logits (no bias)
            instead of the fused logits.
        packed: inputs are one tensor of the devices' features side by
            side; the sum fusion is then one matmul over channels
            ``0 .. used``.

    Returns:
        Fused logits ``(batch, units)``, or the list of partial logits.
    """

    CONFIG = ("units", "use_bias", "kernel_initializer", "kernel_regularizer", "logit_scale")

    def __init__(
        self,
        units: int,
        switches: Sequence = ("1x1.0",),
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        logit_scale: bool = False,
        **kwargs,
    ):
        super().__init__(switches, **kwargs)
        self.logit_scale = bool(logit_scale)
        self.log_scales = None
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"Expected a strictly positive value. Received units={units!r}.")
        self.units = units
        self._kernel_options("kernel", use_bias, kernel_initializer, kernel_regularizer)

    def build(self, input_shape):
        self.in_channels = self._channels(input_shape)
        self.kernel, self.bias = self._add_kernel("kernel", (self.in_channels, self.units), self.kernel_initializer,
                                                  self.kernel_regularizer, (self.units,) if self.use_bias else None)
        self.log_scales = (self.add_weight(name="log_scales", shape=(len(self.switches),), initializer="zeros")
                           if self.logit_scale else None)

    def switch_scale(self, switch):
        """The factor on ``switch``'s partial logits (1 without ``logit_scale``)."""
        if self.log_scales is None:
            return 1.0
        return ops.exp(self.log_scales[check_known_switch(Switch.parse(switch), self.switches, self.name)])

    def device_weights(self, switch, k: int) -> list:
        """``[kernel slice]`` of device ``k``, the switch's logit scale folded in."""
        s = Switch.parse(switch)
        a, b = s.channel_ranges(self.in_channels, self.name)[k]
        if self.log_scales is None:
            return [self.kernel[a:b, :]]
        return [self.kernel[a:b, :] * self.switch_scale(s)]

    def call(self, inputs, switch="1x1.0", partial=False, packed=False):
        s = Switch.parse(switch)
        if packed:
            if partial:
                raise ValueError(f"Layer '{self.name}': partial logits need per-device inputs, not packed=True.")
            used = s.used_channels(self.in_channels, self.name)
            w = self.kernel[:used, :]
            if self.log_scales is not None:
                w = w * self.switch_scale(s)
            y = ops.matmul(inputs, w)
            return y + self.bias if self.bias is not None else y
        xs = as_list(inputs)
        check_device_count(xs, s, self.name)
        parts = [ops.matmul(x, self.device_weights(s, k)[0]) for k, x in enumerate(xs)]
        if partial:
            return parts
        y = parts[0]
        for p in parts[1:]:
            y = y + p
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape, switch="1x1.0", partial=False, packed=False):
        """``(batch, units)``, or one such shape per device for ``partial`` logits."""
        shapes = shape_list(input_shape)
        if partial:
            return [(shape[0], self.units) for shape in shapes]
        return (shapes[0][0], self.units)
