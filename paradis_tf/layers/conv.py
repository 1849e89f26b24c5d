"""ParaDiS convolutions: one full-width kernel, sliced per switch and device."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from paradis_tf.layers._common import SwitchLayer, as_list, check_device_count, check_splits, full_channels, shape_list
from paradis_tf.switches import Switch

ROLES = ("stem", "split", "sync")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"Expected a strictly positive int or pair of ints. Received {name}={value}.")
    return value


def _set_window(layer, kernel_size, strides, padding: str) -> None:
    """Checks and sets a convolution's ``kernel_size``, ``strides`` and ``padding``."""
    if padding not in ("same", "valid"):
        raise ValueError(f"Expected padding 'same' or 'valid'. Received padding={padding!r}.")
    layer.kernel_size = _pair(kernel_size, "kernel_size")
    layer.strides = _pair(strides, "strides")
    layer.padding = padding


def _conv_output_shape(shape, kernel_size, strides, padding: str, channels: int) -> tuple:
    """NHWC output shape of a convolution (None sizes stay None)."""
    spatial = []
    for size, k, stride in zip(shape[1:3], kernel_size, strides):
        if size is None:
            spatial.append(None)
        else:
            spatial.append(-(-size // stride) if padding == "same" else (size - k) // stride + 1)
    return (shape[0], *spatial, channels)


def block_diagonal_mask(in_ranges, out_ranges) -> np.ndarray:
    """(in_used, out_used) float32 mask: 1 where input channel and output channel share a device."""
    mask = np.zeros((in_ranges[-1][1], out_ranges[-1][1]), np.float32)
    for (ia, ib), (oa, ob) in zip(in_ranges, out_ranges):
        mask[ia:ib, oa:ob] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSConv2D(SwitchLayer):
    """2D convolution shared by all switches of a ParaDiS network.

    Under a switch with devices ``k = 0..K-1`` and the channel ranges
    ``in_k`` / ``out_k`` of `paradis_tf.switches`, device ``k`` computes:

    * ``role="stem"``:  ``conv(x, W[:, :, all, out_k])`` (input broadcast);
    * ``role="split"``: ``conv(x_k, W[:, :, in_k, out_k])`` (block-diagonal);
    * ``role="sync"``:  ``conv(concat_j x_j, W[:, :, in_all, out_k])``
      (an all-gather of the device slices precedes it).

    Args:
        filters: full-width number of output channels.
        kernel_size: int or pair.
        strides: int or pair.
        padding: ``"same"`` or ``"valid"``.
        role: ``"stem"``, ``"split"`` or ``"sync"``.
        switches: switch texts the layer must serve; every channel count is
            checked to split exactly for each of them when the layer builds.
        use_bias: whether to add a bias (ParaDiS nets use BN instead).
        kernel_initializer: Keras initializer.
        kernel_regularizer: Keras regularizer.

    Call arguments:
        inputs: the image tensor for ``role="stem"``; otherwise the list of
            per-device tensors of the switch, in device order.
        switch: switch text or `Switch`, a plain Python value.
        packed: inputs and output are one tensor holding the devices'
            slices side by side (channels ``0 .. used``, device order), and
            the layer runs one convolution: ``W[:, :, in_used, out_used]``,
            masked block-diagonal for ``role="split"``. The same numbers as
            the per-device convolutions (the masked products are exact
            zeros), fewer and larger kernels (see `PackedOps`).

    Returns:
        The list of per-device output tensors (one tensor when ``packed``).
    """

    CONFIG = ("filters", "kernel_size", "strides", "padding", "role", "use_bias", "kernel_initializer",
              "kernel_regularizer")

    def __init__(self, filters: int, kernel_size=3, strides=1, padding: str = "same", role: str = "split",
                 switches: Sequence = ("1x1.0",), use_bias: bool = False, kernel_initializer="he_normal",
                 kernel_regularizer=None, **kwargs):
        super().__init__(switches, **kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"Expected a strictly positive value. Received filters={filters!r}.")
        if role not in ROLES:
            raise ValueError(f"Expected role in {ROLES}. Received role={role!r}.")
        self.filters = filters
        self.role = role
        _set_window(self, kernel_size, strides, padding)
        self._kernel_options("kernel", use_bias, kernel_initializer, kernel_regularizer)

    def build(self, input_shape):
        check_splits(self.filters, self.switches, self.name)
        # a stem reads the whole image: its input channels need not split
        self.in_channels = self._channels(input_shape) if self.role != "stem" else full_channels(input_shape, self.name)
        self.kernel, self.bias = self._add_kernel("kernel", (*self.kernel_size, self.in_channels, self.filters),
                                                  self.kernel_initializer, self.kernel_regularizer,
                                                  (self.filters,) if self.use_bias else None)

    def device_weights(self, switch, k: int) -> list:
        """Kernel (and bias) slice that device ``k`` runs under ``switch``."""
        s = Switch.parse(switch)
        oa, ob = s.channel_ranges(self.filters, self.name)[k]
        if self.role == "stem":
            ia, ib = 0, self.in_channels
        elif self.role == "sync":
            ia, ib = 0, s.used_channels(self.in_channels, self.name)
        else:
            ia, ib = s.channel_ranges(self.in_channels, self.name)[k]
        w = self.kernel[:, :, ia:ib, oa:ob]
        return [w] if self.bias is None else [w, self.bias[oa:ob]]

    def _conv(self, x, weights):
        if self.kernel_size == (1, 1) and self.strides == (1, 1):
            # A pointwise convolution is a matmul over the pixels (the same
            # numbers up to float summation order); on CPU the matmul and its
            # gradients beat the 1x1 convolution kernels
            # (tools/bench_train_time.py --conv-pointwise).
            w = weights[0][0, 0]
            shape = ops.shape(x)
            y = ops.reshape(ops.matmul(ops.reshape(x, (-1, shape[-1])), w), (*shape[:-1], w.shape[-1]))
        else:
            y = ops.conv(x, weights[0], strides=self.strides, padding=self.padding)
        if self.bias is not None:
            y = y + weights[1]
        return y

    def packed_weights(self, switch) -> list:
        """Kernel (and bias) of the whole switch as one convolution on packed tensors."""
        s = Switch.parse(switch)
        out_ranges = s.channel_ranges(self.filters, self.name)
        cout = out_ranges[-1][1]
        if self.role == "stem":
            w = self.kernel[:, :, :, :cout]
        else:
            in_ranges = s.channel_ranges(self.in_channels, self.name)
            w = self.kernel[:, :, : in_ranges[-1][1], :cout]
            if self.role == "split" and len(s) > 1:
                w = w * ops.cast(block_diagonal_mask(in_ranges, out_ranges), w.dtype)
        return [w] if self.bias is None else [w, self.bias[:cout]]

    def call(self, inputs, switch="1x1.0", packed=False):
        s = Switch.parse(switch)
        if packed:
            x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            return self._conv(x, self.packed_weights(s))
        if self.role == "stem":
            x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            return [self._conv(x, self.device_weights(s, k)) for k in range(len(s))]
        xs = as_list(inputs)
        check_device_count(xs, s, self.name)
        if self.role == "sync":
            gathered = xs[0] if len(xs) == 1 else ops.concatenate(xs, axis=-1)
            return [self._conv(gathered, self.device_weights(s, k)) for k in range(len(s))]
        return [self._conv(x, self.device_weights(s, k)) for k, x in enumerate(xs)]

    def compute_output_shape(self, input_shape, switch="1x1.0", packed=False):
        """Output shapes under ``switch``: one per device, or one shape when ``packed``."""
        s = Switch.parse(switch)
        out = s.channel_ranges(self.filters, self.name)
        shapes = shape_list(input_shape)
        if packed:
            return _conv_output_shape(shapes[0], self.kernel_size, self.strides, self.padding, out[-1][1])
        if self.role != "split":  # every device reads the whole image, or all devices' channels
            shapes = shapes[:1] * len(s)
        return [_conv_output_shape(shape, self.kernel_size, self.strides, self.padding, b - a)
                for shape, (a, b) in zip(shapes, out)]


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSDepthwiseConv2D(SwitchLayer):
    """Depthwise convolution: device ``k`` filters its own channel slice.

    Args:
        kernel_size: int or pair.
        strides: int or pair.
        padding: ``"same"`` or ``"valid"``.
        switches: switch texts the layer must serve.
        use_bias: whether to add a bias.
        depthwise_initializer: Keras initializer.
        depthwise_regularizer: Keras regularizer.

    Call arguments:
        inputs: list of per-device tensors, in device order.
        switch: switch text or `Switch`.
        packed: inputs and output are one tensor of the devices' slices side
            by side; one depthwise convolution over channels ``0 .. used``
            (depthwise filters never mix channels, so this is exact).

    Returns:
        The list of per-device output tensors (one tensor when ``packed``).
    """

    CONFIG = ("kernel_size", "strides", "padding", "use_bias", "depthwise_initializer", "depthwise_regularizer")

    def __init__(self, kernel_size=3, strides=1, padding: str = "same", switches: Sequence = ("1x1.0",),
                 use_bias: bool = False, depthwise_initializer="he_normal", depthwise_regularizer=None, **kwargs):
        super().__init__(switches, **kwargs)
        _set_window(self, kernel_size, strides, padding)
        self._kernel_options("depthwise", use_bias, depthwise_initializer, depthwise_regularizer)

    def build(self, input_shape):
        self.channels = self._channels(input_shape)
        self.kernel, self.bias = self._add_kernel("depthwise_kernel", (*self.kernel_size, self.channels, 1),
                                                  self.depthwise_initializer, self.depthwise_regularizer,
                                                  (self.channels,) if self.use_bias else None)

    def device_weights(self, switch, k: int) -> list:
        a, b = Switch.parse(switch).channel_ranges(self.channels, self.name)[k]
        w = self.kernel[:, :, a:b, :]
        return [w] if self.bias is None else [w, self.bias[a:b]]

    def call(self, inputs, switch="1x1.0", packed=False):
        s = Switch.parse(switch)
        if packed:
            used = s.used_channels(self.channels, self.name)
            y = ops.depthwise_conv(inputs, self.kernel[:, :, :used, :], strides=self.strides, padding=self.padding)
            return y + self.bias[:used] if self.bias is not None else y
        xs = as_list(inputs)
        check_device_count(xs, s, self.name)
        out = []
        for k, x in enumerate(xs):
            w = self.device_weights(s, k)
            y = ops.depthwise_conv(x, w[0], strides=self.strides, padding=self.padding)
            out.append(y + w[1] if self.bias is not None else y)
        return out

    def compute_output_shape(self, input_shape, switch="1x1.0", packed=False):
        """Output shapes under ``switch``: one per device, or one shape when ``packed``."""
        s = Switch.parse(switch)
        if packed:
            return _conv_output_shape(shape_list(input_shape)[0], self.kernel_size, self.strides, self.padding,
                                      s.used_channels(self.channels, self.name))
        return [_conv_output_shape(shape, self.kernel_size, self.strides, self.padding, shape[-1])
                for shape in shape_list(input_shape)]
