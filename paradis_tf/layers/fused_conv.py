"""Convolution with sum fusion across devices (the output convolution of an image-to-image network)."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from paradis_tf.layers._common import SwitchLayer, as_list, check_device_count, shape_list
from paradis_tf.layers.conv import _conv_output_shape, _set_window
from paradis_tf.switches import Switch


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSFusedConv2D(SwitchLayer):
    """Device ``k`` computes ``conv(x_k, W[:, :, in_k, :])``: every output channel from its own inputs.

    The image counterpart of `ParaDiSDense`: the devices' partial outputs
    are fused by a sum plus one shared bias, so
    ``y = sum_k conv(x_k, W[:, :, in_k, :]) + b`` equals the convolution of
    the concatenated inputs (convolution is linear in its input channels).
    Only the input channels split; the output channels are the fused
    result's (``scale**2 * C`` before depth-to-space in super-resolution).

    Args:
        filters: number of output channels (not split).
        kernel_size: int or pair.
        strides: int or pair.
        padding: ``"same"`` or ``"valid"``.
        switches: switch texts the layer must serve; the input channel
            count is checked to split exactly for each of them.
        use_bias: whether the fusion adds a bias.
        kernel_initializer: Keras initializer.
        kernel_regularizer: Keras regularizer.

    Call arguments:
        inputs: list of per-device tensors, in device order.
        switch: switch text or `Switch`.
        partial: return the per-device partial outputs (no bias) instead of
            the fused output.
        packed: inputs are one tensor of the devices' slices side by side;
            the sum fusion is then one convolution over channels
            ``0 .. used``.

    Returns:
        The fused output, or the list of partial outputs.
    """

    CONFIG = ("filters", "kernel_size", "strides", "padding", "use_bias", "kernel_initializer", "kernel_regularizer")

    def __init__(self, filters: int, kernel_size=3, strides=1, padding: str = "same", switches: Sequence = ("1x1.0",),
                 use_bias: bool = False, kernel_initializer="he_normal", kernel_regularizer=None, **kwargs):
        super().__init__(switches, **kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"Expected a strictly positive value. Received filters={filters!r}.")
        self.filters = filters
        _set_window(self, kernel_size, strides, padding)
        self._kernel_options("kernel", use_bias, kernel_initializer, kernel_regularizer)

    def build(self, input_shape):
        self.in_channels = self._channels(input_shape)
        self.kernel, self.bias = self._add_kernel("kernel", (*self.kernel_size, self.in_channels, self.filters),
                                                  self.kernel_initializer, self.kernel_regularizer,
                                                  (self.filters,) if self.use_bias else None)

    def device_weights(self, switch, k: int) -> list:
        """``[kernel slice]`` of device ``k``: its input channels, every output channel (no bias)."""
        a, b = Switch.parse(switch).channel_ranges(self.in_channels, self.name)[k]
        return [self.kernel[:, :, a:b, :]]

    def _conv(self, x, kernel):
        return ops.conv(x, kernel, strides=self.strides, padding=self.padding)

    def call(self, inputs, switch="1x1.0", partial=False, packed=False):
        s = Switch.parse(switch)
        if packed:
            if partial:
                raise ValueError(f"Layer '{self.name}': partial outputs need per-device inputs, not packed=True.")
            x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            y = self._conv(x, self.kernel[:, :, : s.used_channels(self.in_channels, self.name), :])
            return y + self.bias if self.bias is not None else y
        xs = as_list(inputs)
        check_device_count(xs, s, self.name)
        parts = [self._conv(x, self.device_weights(s, k)[0]) for k, x in enumerate(xs)]
        if partial:
            return parts
        y = parts[0]
        for p in parts[1:]:
            y = y + p
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape, switch="1x1.0", partial=False, packed=False):
        """The fused output's shape, or one such shape per device for ``partial`` outputs."""
        shapes = [_conv_output_shape(shape, self.kernel_size, self.strides, self.padding, self.filters)
                  for shape in shape_list(input_shape)]
        return shapes if partial else shapes[0]
