"""ParaDiS convolutions: one full-width kernel, sliced per switch and device."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from paradis_tf.layers._common import (
    as_list,
    check_device_count,
    check_splits,
    full_channels,
    normalize_switches,
)
from paradis_tf.switches import Switch

ROLES = ("stem", "split", "sync")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"Expected a strictly positive int or pair of ints. Received {name}={value}.")
    return value


def block_diagonal_mask(in_ranges, out_ranges) -> np.ndarray:
    """(in_used, out_used) float32 mask: 1 where input channel and output channel share a device."""
    mask = np.zeros((in_ranges[-1][1], out_ranges[-1][1]), np.float32)
    for (ia, ib), (oa, ob) in zip(in_ranges, out_ranges):
        mask[ia:ib, oa:ob] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSConv2D(keras.layers.Layer):
    """2D convolution shared by all switches of a ParaDiS network.

    Under a switch with devices ``k = 0..K-1`` and the channel ranges
    ``in_k`` / ``out_k`` of DESIGN §2, device ``k`` computes:

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

    # Run 1x1 stride-1 kernels as a matmul over the pixels (same numbers up
    # to float summation order). An instance may set it False before its
    # first call to use the convolution kernel instead (timing comparisons).
    pointwise_matmul = True

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        role: str = "split",
        switches: Sequence = ("1x1.0",),
        use_bias: bool = False,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"Expected a strictly positive value. Received filters={filters!r}.")
        if role not in ROLES:
            raise ValueError(f"Expected role in {ROLES}. Received role={role!r}.")
        if padding not in ("same", "valid"):
            raise ValueError(f"Expected padding 'same' or 'valid'. Received padding={padding!r}.")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = padding
        self.role = role
        self.switches = normalize_switches(switches)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        in_ch = full_channels(input_shape, self.name)
        check_splits(self.filters, self.switches, self.name)
        if self.role != "stem":
            check_splits(in_ch, self.switches, self.name)
        self.in_channels = in_ch
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_ch, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        )

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
        if self.pointwise_matmul and self.kernel_size == (1, 1) and self.strides == (1, 1):
            # A pointwise convolution is a matmul over the pixels; on this CPU
            # the matmul and its gradients beat the 1x1 convolution kernels
            # (tools/bench_train_time.py --conv-pointwise, docs/BENCHMARKS.md).
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

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            role=self.role,
            switches=self.switches,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSDepthwiseConv2D(keras.layers.Layer):
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

    def __init__(
        self,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        switches: Sequence = ("1x1.0",),
        use_bias: bool = False,
        depthwise_initializer="he_normal",
        depthwise_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if padding not in ("same", "valid"):
            raise ValueError(f"Expected padding 'same' or 'valid'. Received padding={padding!r}.")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = padding
        self.switches = normalize_switches(switches)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)
        self.depthwise_regularizer = keras.regularizers.get(depthwise_regularizer)

    def build(self, input_shape):
        ch = full_channels(input_shape, self.name)
        check_splits(ch, self.switches, self.name)
        self.channels = ch
        self.kernel = self.add_weight(
            name="depthwise_kernel",
            shape=(*self.kernel_size, ch, 1),
            initializer=self.depthwise_initializer,
            regularizer=self.depthwise_regularizer,
        )
        self.bias = self.add_weight(name="bias", shape=(ch,), initializer="zeros") if self.use_bias else None

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

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            switches=self.switches,
            use_bias=self.use_bias,
            depthwise_initializer=keras.initializers.serialize(self.depthwise_initializer),
            depthwise_regularizer=keras.regularizers.serialize(self.depthwise_regularizer),
        )
        return config
