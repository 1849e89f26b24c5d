"""Switchable batch normalization: private parameters and statistics per switch."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from paradis_tf.layers._common import SwitchLayer, as_list, check_device_count, check_known_switch, shape_list
from paradis_tf.layers.tensorflow_ops import fused_batch_norm
from paradis_tf.switches import Switch


@keras.saving.register_keras_serializable(package="paradis_tf")
class SwitchableBatchNormalization(SwitchLayer):
    """Batch normalization with one set of gamma/beta/moving statistics per switch.

    A narrow device sees different activation statistics than the full
    network, so sharing BN statistics across switches breaks every switch
    but one (slimmable networks, Yu et al. 2018). Each switch owns full-width
    vectors; device ``k`` normalizes its own channel slice with the matching
    slice of its switch's vectors.

    It runs on TensorFlow's fused batch-norm kernel
    (`tensorflow_ops.fused_batch_norm`, which says why).

    Args:
        switches: switch texts; one parameter set is created for each.
        momentum: moving-average momentum.
        epsilon: small float added to the variance.
        center: whether to learn beta.
        scale: whether to learn gamma.

    Call arguments:
        inputs: list of per-device 4D tensors (NHWC), in device order.
        switch: switch text or `Switch`; must be one of ``switches``.
        training: Python bool; batch statistics and moving-average updates.
        packed: inputs and output are one tensor of the devices' slices side
            by side; one fused BN over channels ``0 .. used`` (BN is per
            channel, so this is exact).

    Returns:
        The list of normalized per-device tensors (one tensor when ``packed``).
    """

    CONFIG = ("momentum", "epsilon", "center", "scale")

    def __init__(
        self,
        switches: Sequence = ("1x1.0",),
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        **kwargs,
    ):
        super().__init__(switches, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"Expected 0 <= momentum < 1. Received momentum={momentum!r}.")
        if not float(epsilon) > 0.0:
            raise ValueError(f"Expected a strictly positive value. Received epsilon={epsilon!r}.")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        # Cumulative averaging during calibration: batch i gets weight 1/(i+1).
        self._calibration_step = None

    def build(self, input_shape):
        ch = self.channels = self._channels(input_shape)
        self.gammas, self.betas, self.moving_means, self.moving_vars = [], [], [], []
        for i, _ in enumerate(self.switches):
            self.gammas.append(
                self.add_weight(name=f"gamma_{i}", shape=(ch,), initializer="ones", trainable=self.scale)
            )
            self.betas.append(
                self.add_weight(name=f"beta_{i}", shape=(ch,), initializer="zeros", trainable=self.center)
            )
            self.moving_means.append(
                self.add_weight(
                    name=f"moving_mean_{i}", shape=(ch,), initializer="zeros", trainable=False, aggregation="mean"
                )
            )
            self.moving_vars.append(
                self.add_weight(
                    name=f"moving_variance_{i}", shape=(ch,), initializer="ones", trainable=False, aggregation="mean"
                )
            )

    def device_weights(self, switch, k: int) -> list:
        """``[gamma, beta, moving_mean, moving_variance]`` slices of device ``k``."""
        s = Switch.parse(switch)
        i = check_known_switch(s, self.switches, self.name)
        a, b = s.channel_ranges(self.channels, self.name)[k]
        return [v[a:b] for v in (self.gammas[i], self.betas[i], self.moving_means[i], self.moving_vars[i])]

    def call(self, inputs, switch="1x1.0", training=None, packed=False):
        s = Switch.parse(switch)
        i = check_known_switch(s, self.switches, self.name)
        if packed:
            return self._packed_call(inputs, s, i, training)
        xs = as_list(inputs)
        check_device_count(xs, s, self.name)
        ranges = s.channel_ranges(self.channels, self.name)
        gamma, beta = self.gammas[i], self.betas[i]
        mean, var = self.moving_means[i], self.moving_vars[i]
        out = []
        if not training:
            for x, (a, b) in zip(xs, ranges):
                out.append(fused_batch_norm(x, gamma[a:b], beta[a:b], mean[a:b], var[a:b], self.epsilon)[0])
            return out
        batch_means, batch_vars = [], []
        for x, (a, b) in zip(xs, ranges):
            y, bm, bv = fused_batch_norm(x, gamma[a:b], beta[a:b], epsilon=self.epsilon, training=True)
            out.append(y)
            batch_means.append(bm)
            batch_vars.append(bv)
        self._update_moving(mean, batch_means, ranges[-1][1])
        self._update_moving(var, batch_vars, ranges[-1][1])
        return out

    def _packed_call(self, x, s: Switch, i: int, training):
        """One fused BN over channels ``0 .. used`` of a packed tensor (per-channel, so exact)."""
        used = s.used_channels(self.channels, self.name)
        gamma, beta = self.gammas[i][:used], self.betas[i][:used]
        mean, var = self.moving_means[i], self.moving_vars[i]
        if not training:
            return fused_batch_norm(x, gamma, beta, mean[:used], var[:used], self.epsilon)[0]
        y, bm, bv = fused_batch_norm(x, gamma, beta, epsilon=self.epsilon, training=True)
        self._update_moving(mean, [bm], used)
        self._update_moving(var, [bv], used)
        return y

    def _update_moving(self, variable, batch_values: list, used: int) -> None:
        if self._calibration_step is None:
            m = self.momentum
        else:
            m = self._calibration_step / (self._calibration_step + 1.0)
        new = ops.concatenate(batch_values, axis=0) if len(batch_values) > 1 else batch_values[0]
        old = ops.convert_to_tensor(variable)
        head = old[:used] * m + ops.stop_gradient(new) * (1.0 - m)
        variable.assign(ops.concatenate([head, old[used:]], axis=0) if used < self.channels else head)

    def compute_output_shape(self, input_shape, switch="1x1.0", packed=False):
        """The input shapes: BN keeps every shape."""
        return tuple(input_shape) if packed else shape_list(input_shape)
