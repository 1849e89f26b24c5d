"""Helpers shared by the ParaDiS layers, and their base class."""

from __future__ import annotations

from typing import Sequence

import keras

from paradis_tf.errors import ChannelSplitError
from paradis_tf.switches import Switch, parse_switches


def normalize_switches(switches: Sequence) -> list[str]:
    """Switch texts in canonical form, validated (for `get_config`)."""
    return [str(s) for s in parse_switches(switches)]


def full_channels(input_shape, layer_name: str) -> int:
    """Channel count of a full-width input shape (or a list of slices)."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return int(sum(int(s[-1]) for s in input_shape))
    c = input_shape[-1]
    if c is None:
        raise ValueError(f"Layer '{layer_name}' needs a known channel count. Received input_shape={input_shape}.")
    return int(c)


def check_splits(channels: int, switches: Sequence[str], layer_name: str) -> None:
    """Raises ChannelSplitError naming the layer and switch that do not split."""
    for s in switches:
        Switch.parse(s).channel_ranges(channels, layer_name)


def as_list(inputs) -> list:
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [inputs]


def shape_list(input_shape) -> list[tuple]:
    """A shape, or a list of per-device shapes, as a list of shape tuples."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return [tuple(s) for s in input_shape]
    return [tuple(input_shape)]


def check_device_count(inputs: list, switch: Switch, layer_name: str) -> None:
    if len(inputs) != len(switch):
        raise ValueError(
            f"Layer '{layer_name}' under switch '{switch}' expects {len(switch)} per-device inputs. "
            f"Received {len(inputs)}."
        )


def check_known_switch(switch: Switch, switches: Sequence[str], layer_name: str) -> int:
    """Index of a switch among the layer's switches (raises if unknown)."""
    text = str(switch)
    if text not in switches:
        raise ChannelSplitError(
            f"Layer '{layer_name}' has no parameters for switch '{text}'. Known switches: {list(switches)}."
        )
    return list(switches).index(text)


def _serialize(value):
    if isinstance(value, keras.initializers.Initializer):
        return keras.initializers.serialize(value)
    if isinstance(value, keras.regularizers.Regularizer):
        return keras.regularizers.serialize(value)
    return value


class SwitchLayer(keras.layers.Layer):
    """Base of the ParaDiS layers: switches, the full-width weights, config and output shapes.

    A subclass lists its constructor arguments in ``CONFIG`` (`get_config`
    returns them, initializers and regularizers serialized) and defines
    ``compute_output_shape(input_shape, switch, ...)``: the output depends
    on the switch, a call argument, so `compute_output_spec` hands it on.
    """

    CONFIG: tuple[str, ...] = ()

    def __init__(self, switches: Sequence = ("1x1.0",), **kwargs):
        super().__init__(**kwargs)
        self.switches = normalize_switches(switches)

    def _kernel_options(self, prefix: str, use_bias: bool, initializer, regularizer) -> None:
        """Sets ``use_bias``, ``<prefix>_initializer`` and ``<prefix>_regularizer`` (Keras objects)."""
        self.use_bias = bool(use_bias)
        setattr(self, f"{prefix}_initializer", keras.initializers.get(initializer))
        setattr(self, f"{prefix}_regularizer", keras.regularizers.get(regularizer))

    def _channels(self, input_shape) -> int:
        """The full-width channel count of ``input_shape``, checked to split for every switch."""
        channels = full_channels(input_shape, self.name)
        check_splits(channels, self.switches, self.name)
        return channels

    def _add_kernel(self, name: str, shape: tuple, initializer, regularizer, bias_shape: tuple | None):
        """The full-width kernel, and the bias (None without ``bias_shape``)."""
        kernel = self.add_weight(name=name, shape=shape, initializer=initializer, regularizer=regularizer)
        bias = self.add_weight(name="bias", shape=bias_shape, initializer="zeros") if bias_shape else None
        return kernel, bias

    def compute_output_spec(self, inputs, switch="1x1.0", training=None, **kwargs):
        shapes = self.compute_output_shape([tuple(x.shape) for x in inputs] if isinstance(inputs, (list, tuple))
                                           else tuple(inputs.shape), switch=switch, **kwargs)
        if isinstance(shapes, list):
            return [keras.KerasTensor(s, dtype=self.compute_dtype) for s in shapes]
        return keras.KerasTensor(shapes, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({name: _serialize(getattr(self, name)) for name in ("switches", *self.CONFIG)})
        return config
