"""Helpers shared by the ParaDiS layers."""

from __future__ import annotations

from typing import Sequence

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
