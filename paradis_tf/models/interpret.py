"""Two interpretations of one architecture definition.

An architecture is written once, as stages that call an *ops* object
(`stem`, `conv`, `dwconv`, `bn`, `relu`, `add`, `max_pool`, `global_pool`,
`head`, `fused_conv`). `ParaDiSOps` runs it on lists of per-device tensors through the
shared ParaDiS layers (the reference); `PackedOps` runs the same numbers on
one tensor per layer, all devices side by side (training, switch models,
faster on CPU); `DeviceOps` runs it for a
single device of a switch and emits plain Keras layers with sliced weights,
cutting a new segment at every sync convolution (device models, converter).
Both read the same slices (`layer.device_weights`), so the device models
equal the switch model by construction.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from paradis_tf.errors import ParaDiSError
from paradis_tf.switches import Switch


def _safe(text: str) -> str:
    return str(text).replace(".", "_").replace("+", "p")


class ParaDiSOps:
    """Runs an architecture on lists of per-device tensors (all devices)."""

    def __init__(self, switch: Switch, training=None):
        self.switch = switch
        self.training = training

    def boundary(self, stage: int, xs):
        return xs

    def stem(self, layer, image):
        return layer(image, switch=str(self.switch))

    def conv(self, layer, xs):
        return layer(xs, switch=str(self.switch))

    dwconv = conv

    def bn(self, layer, xs):
        return layer(xs, switch=str(self.switch), training=self.training)

    def relu(self, xs, max_value=None):
        if max_value == 6.0:
            return [ops.relu6(x) for x in xs]
        return [ops.relu(x) for x in xs]

    def add(self, a, b):
        return [x + y for x, y in zip(a, b)]

    def max_pool(self, xs, pool_size, strides, padding="same"):
        return [ops.max_pool(x, pool_size, strides, padding) for x in xs]

    def global_pool(self, xs):
        return [ops.mean(x, axis=(1, 2)) for x in xs]

    def head(self, layer, xs):
        return layer(xs, switch=str(self.switch))

    def fused_conv(self, layer, xs):
        return layer(xs, switch=str(self.switch))


class PackedOps(ParaDiSOps):
    """Runs an architecture on one packed tensor per layer: the training path.

    The devices' channel slices of a switch are contiguous (`paradis_tf.switches`), so
    the per-device tensors of `ParaDiSOps`, side by side, are channels
    ``0 .. used`` of one tensor. Each layer then runs one kernel for all
    devices (`packed=True`): depthwise, BN, ReLU, pooling and adds are per
    channel and need nothing more; a split convolution multiplies its
    kernel by the switch's block-diagonal mask, so device ``k``'s outputs
    still read device ``k``'s inputs only (and the other blocks' kernel
    entries get exactly zero gradient); the classifier's sum fusion is one
    matmul. The numbers are those of `ParaDiSOps` up to float summation
    order; on CPU, a few large kernels beat many narrow ones.
    """

    def __init__(self, switch: Switch, training=None):
        super().__init__(switch, training)
        self.text = str(switch)

    def stem(self, layer, image):
        return layer(image, switch=self.text, packed=True)

    def conv(self, layer, x):
        return layer(x, switch=self.text, packed=True)

    dwconv = conv

    def bn(self, layer, x):
        return layer(x, switch=self.text, training=self.training, packed=True)

    def relu(self, x, max_value=None):
        return ops.relu6(x) if max_value == 6.0 else ops.relu(x)

    def add(self, a, b):
        return a + b

    def max_pool(self, x, pool_size, strides, padding="same"):
        return ops.max_pool(x, pool_size, strides, padding)

    def global_pool(self, x):
        return ops.mean(x, axis=(1, 2))

    def head(self, layer, x):
        return layer(x, switch=self.text, packed=True)

    def fused_conv(self, layer, x):
        return layer(x, switch=self.text, packed=True)


class _Value:
    """A tensor of the device model under construction, tagged with its segment."""

    __slots__ = ("tensor", "segment")

    def __init__(self, tensor, segment: int):
        self.tensor = tensor
        self.segment = segment


class SegmentCutError(ParaDiSError, ValueError):
    """A sync layer placed where a skip connection crosses it."""


class DeviceOps:
    """Builds plain Keras segment models for device ``k`` of a switch.

    Args:
        switch: the switch.
        k: device index.
        image_shape: (H, W, C) of the model input.
        sequential_cuts: if given, build the sequential baseline instead:
            the (single-device) network is cut before each listed stage,
            and the head keeps its bias (the last piece outputs logits).
    """

    def __init__(self, switch: Switch, k: int, image_shape, sequential_cuts=None):
        self.switch = switch
        self.k = k
        self.sequential = sequential_cuts is not None
        self.cuts = set(sequential_cuts or ())
        self.segment = 0
        self.prefix = f"s{_safe(switch)}_d{k}"
        self.inputs = [keras.Input(tuple(image_shape), name=f"{self.prefix}_input")]
        self.finished: list[tuple[list, object]] = []

    # -- bookkeeping --------------------------------------------------------
    def start(self) -> _Value:
        return _Value(self.inputs[0], 0)

    def _own(self, v: _Value):
        if v.segment != self.segment:
            raise SegmentCutError(
                f"A tensor of segment {v.segment} is used in segment {self.segment} of device {self.k} "
                f"(switch '{self.switch}'): a skip connection crosses a sync layer. Place sync layers where "
                "no skip connection crosses them."
            )
        return v.tensor

    def _cut(self, v: _Value, new_inputs: list, own_index: int) -> None:
        self._own(v)
        self.finished.append((self.inputs, v.tensor))
        self.inputs = new_inputs
        self.segment += 1
        v.tensor, v.segment = new_inputs[own_index], self.segment

    def _apply(self, layer, v: _Value, weights=None) -> _Value:
        y = layer(self._own(v))
        if weights is not None:
            layer.set_weights([np.asarray(w) for w in weights])
        return _Value(y, self.segment)

    def finish(self, v: _Value) -> list[keras.Model]:
        self.finished.append((self.inputs, self._own(v)))
        models = []
        for j, (inputs, output) in enumerate(self.finished):
            name = f"{self.prefix}_seg{j}"
            models.append(keras.Model(inputs if j else inputs[0], output, name=name))
        return models

    # -- ops ----------------------------------------------------------------
    def boundary(self, stage: int, v: _Value) -> _Value:
        if self.sequential and stage in self.cuts:
            t = self._own(v)
            new = keras.Input(tuple(t.shape[1:]), name=f"{self.prefix}_piece{self.segment + 1}_input")
            self._cut(v, [new], 0)
        return v

    def _conv2d(self, layer, weights, name):
        return keras.layers.Conv2D(
            filters=int(weights[0].shape[-1]),
            kernel_size=layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            use_bias=layer.use_bias,
            name=name,
        )

    def stem(self, layer, v: _Value) -> _Value:
        w = layer.device_weights(self.switch, self.k)
        return self._apply(self._conv2d(layer, w, layer.name), v, w)

    def conv(self, layer, v: _Value) -> _Value:
        w = layer.device_weights(self.switch, self.k)
        if layer.role == "sync" and not self.sequential:
            t = self._own(v)
            h, wd = t.shape[1], t.shape[2]
            ranges = self.switch.channel_ranges(layer.in_channels, layer.name)
            new = [
                keras.Input((h, wd, b - a), name=f"{self.prefix}_seg{self.segment + 1}_from_d{d}")
                for d, (a, b) in enumerate(ranges)
            ]
            self._cut(v, new, self.k)
            gathered = keras.layers.Concatenate(axis=-1, name=f"{layer.name}_gather")(new) if len(new) > 1 else new[0]
            v = _Value(gathered, self.segment)
        return self._apply(self._conv2d(layer, w, layer.name), v, w)

    def dwconv(self, layer, v: _Value) -> _Value:
        w = layer.device_weights(self.switch, self.k)
        dw = keras.layers.DepthwiseConv2D(
            kernel_size=layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            use_bias=layer.use_bias,
            name=layer.name,
        )
        return self._apply(dw, v, w)

    def bn(self, layer, v: _Value) -> _Value:
        w = layer.device_weights(self.switch, self.k)
        bn = keras.layers.BatchNormalization(epsilon=layer.epsilon, name=layer.name)
        return self._apply(bn, v, w)

    def relu(self, v: _Value, max_value=None) -> _Value:
        return self._apply(keras.layers.ReLU(max_value=max_value), v)

    def add(self, a: _Value, b: _Value) -> _Value:
        return _Value(keras.layers.Add()([self._own(a), self._own(b)]), self.segment)

    def max_pool(self, v: _Value, pool_size, strides, padding="same") -> _Value:
        return self._apply(keras.layers.MaxPooling2D(pool_size, strides, padding), v)

    def global_pool(self, v: _Value) -> _Value:
        return self._apply(keras.layers.GlobalAveragePooling2D(), v)

    def head(self, layer, v: _Value) -> _Value:
        w = layer.device_weights(self.switch, self.k)
        use_bias = self.sequential and layer.bias is not None
        dense = keras.layers.Dense(layer.units, use_bias=use_bias, name=layer.name)
        if use_bias:
            w = [w[0], layer.bias]
        return self._apply(dense, v, w)

    def fused_conv(self, layer, v: _Value) -> _Value:
        """The device's partial output of a `ParaDiSFusedConv2D` (the bias is the fusion's)."""
        w = layer.device_weights(self.switch, self.k)
        use_bias = self.sequential and layer.bias is not None
        if use_bias:
            w = [w[0], layer.bias]
        conv = keras.layers.Conv2D(filters=layer.filters, kernel_size=layer.kernel_size, strides=layer.strides,
                                   padding=layer.padding, use_bias=use_bias, name=layer.name)
        return self._apply(conv, v, w)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one inference of a plain Keras model."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w = layer.output.shape[1:3]
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * layer.input.shape[-1] * layer.depth_multiplier
        elif isinstance(layer, keras.layers.Conv2D):
            h, w = layer.output.shape[1:3]
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
