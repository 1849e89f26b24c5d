"""ParaDiS switches: how one network is spread over a set of devices.

A switch is a tuple of widths, one per device. Device ``k`` owns the
contiguous channel range ``[round(C*o_k), round(C*(o_k+w_k)))`` of every split
layer with ``C`` channels, where ``o_k = w_1 + ... + w_{k-1}``. Widths sum to
at most 1.0; a switch whose widths sum to less than one uses the leading
channels only (``1x0.5`` is the half-width slimmable network).

Text forms: ``"2x0.5"`` (two devices of width 0.5), ``"0.5+0.25+0.25"``
(one device per term) and ``"1x1.0"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Sequence

from paradis_tf.errors import ChannelSplitError, SwitchError

__all__ = ["Switch", "parse_switches", "channel_divisor"]

_EPS = 1e-9
_REPEAT = re.compile(r"^\s*(\d+)\s*[xX]\s*([0-9]*\.?[0-9]+)\s*$")
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*$")
_ALLOWED = (
    "allowed: 'NxW' (N devices of width W, e.g. '2x0.5', '1x1.0') or "
    "widths joined by '+' (e.g. '0.5+0.25+0.25'); widths positive, summing "
    "to at most 1.0"
)


def _format_width(w: float) -> str:
    text = f"{w:g}"
    return text if ("." in text or "e" in text) else text + ".0"


@dataclass(frozen=True, init=False)
class Switch:
    """One way to run the shared weights on ``len(widths)`` devices.

    ``Switch("0.5+0.25+0.25")`` and ``Switch.parse("0.5+0.25+0.25")`` are the
    same switch as ``Switch((0.5, 0.25, 0.25))``.

    Args:
        widths: width fraction of every device, in device order, or a switch
            text (``"2x0.5"``, ``"0.5+0.25+0.25"``; see `parse`).

    Raises:
        SwitchError: widths empty, not positive, or summing above 1.0, or a
            text that is not a switch; the message says what is allowed.
    """

    widths: tuple[float, ...]

    def __init__(self, widths: "Sequence[float] | str") -> None:
        if isinstance(widths, (str, Switch)):
            widths = Switch.parse(widths).widths
        try:
            checked = tuple(float(w) for w in widths)
        except (TypeError, ValueError):
            raise SwitchError(f"Expected device widths or switch text. Received widths={widths!r}; "
                              f"{_ALLOWED}.") from None
        if not checked:
            raise SwitchError(f"Expected at least one device width. Received widths={widths!r}; {_ALLOWED}.")
        for w in checked:
            if not (w > 0.0) or math.isinf(w):
                raise SwitchError(
                    f"Expected strictly positive device widths. Received widths={widths!r}; {_ALLOWED}."
                )
        if sum(checked) > 1.0 + _EPS:
            raise SwitchError(
                f"Device widths must sum to at most 1.0. Received widths={widths!r} "
                f"(sum {sum(checked):g}); {_ALLOWED}."
            )
        object.__setattr__(self, "widths", checked)

    @classmethod
    def parse(cls, text: "str | Switch") -> "Switch":
        """Parses ``"2x0.5"``, ``"0.5+0.25+0.25"`` or ``"1x1.0"``.

        Raises:
            SwitchError: the text is not a switch; the message quotes it.
        """
        if isinstance(text, Switch):
            return text
        if not isinstance(text, str):
            raise SwitchError(f"Expected switch text such as '2x0.5'. Received {text!r}; {_ALLOWED}.")
        m = _REPEAT.match(text)
        try:
            if m:
                n, w = int(m.group(1)), float(m.group(2))
                if n < 1:
                    raise SwitchError(f"Expected at least one device. Received switch {text!r}; {_ALLOWED}.")
                return cls((w,) * n)
            parts = text.split("+")
            widths = []
            for p in parts:
                pm = _NUMBER.match(p)
                if not pm:
                    raise SwitchError(f"Cannot parse switch {text!r}; {_ALLOWED}.")
                widths.append(float(pm.group(1)))
            return cls(tuple(widths))
        except SwitchError as e:
            if repr(text) in str(e):
                raise
            raise SwitchError(f"Invalid switch {text!r}: {e}") from None

    def __len__(self) -> int:
        return len(self.widths)

    def __str__(self) -> str:
        if len(set(self.widths)) == 1:
            return f"{len(self.widths)}x{_format_width(self.widths[0])}"
        return "+".join(_format_width(w) for w in self.widths)

    def __repr__(self) -> str:
        return f"Switch({str(self)!r})"

    @property
    def total_width(self) -> float:
        """Fraction of every layer's channels that the switch uses."""
        return float(sum(self.widths))

    @property
    def offsets(self) -> tuple[float, ...]:
        out, acc = [], 0.0
        for w in self.widths:
            out.append(acc)
            acc += w
        return tuple(out)

    def channel_ranges(self, channels: int, layer: str = "layer") -> list[tuple[int, int]]:
        """Channel range ``(start, stop)`` of every device for a layer.

        Raises:
            ChannelSplitError: ``channels`` does not divide exactly; the
                message names ``layer`` and the switch.
        """
        ranges = []
        for o, w in zip(self.offsets, self.widths):
            a, b = channels * o, channels * (o + w)
            ra, rb = round(a), round(b)
            if abs(a - ra) > 1e-6 or abs(b - rb) > 1e-6 or rb <= ra:
                raise ChannelSplitError(
                    f"Layer '{layer}' has {channels} channels, which do not split exactly for switch "
                    f"'{self}' (device widths {self.widths}); use a channel count that is a multiple of "
                    f"{channel_divisor([self])}."
                )
            ranges.append((ra, rb))
        return ranges

    @property
    def cost(self) -> float:
        """Relative compute of the switch, all devices together: the sum of
        the squared device widths (a pointwise layer's work grows with the
        product of its input and output channels)."""
        return float(sum(w * w for w in self.widths))

    def contains(self, other: "Switch | str") -> bool:
        """Whether every device block of ``other`` lies inside one device
        block of this switch, so that ``other`` runs a subset of the weights
        this switch runs (``1x1.0`` contains every switch, ``2x0.5`` contains
        ``4x0.25`` and ``1x0.5``, ``1x0.5`` contains ``1x0.25``)."""
        other = Switch.parse(other)
        mine = [(o, o + w) for o, w in zip(self.offsets, self.widths)]
        return all(any(a - _EPS <= o and o + w <= b + _EPS for a, b in mine)
                   for o, w in zip(other.offsets, other.widths))

    def used_channels(self, channels: int, layer: str = "layer") -> int:
        """Number of leading channels the switch uses in a layer."""
        return self.channel_ranges(channels, layer)[-1][1]


# The six switches `paradis train` trains by default, which the benchmarks
# measure too: one device at three widths (those a slimmable network has),
# two equal devices, one strong and two weak devices, four equal devices.
BENCHMARK_SWITCHES = ("1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25")


def parse_switches(switches: "Iterable[str | Switch] | str") -> tuple[Switch, ...]:
    """Parses a list of switches (or a comma-separated text) and checks it.

    Raises:
        SwitchError: empty list, duplicate switch, or an unparseable one.
    """
    if isinstance(switches, (str, Switch)):
        items: Sequence = [s for s in str(switches).split(",") if s.strip()] if isinstance(switches, str) else [switches]
    else:
        items = list(switches)
    parsed = tuple(Switch.parse(s.strip() if isinstance(s, str) else s) for s in items)
    if not parsed:
        raise SwitchError(f"Expected at least one switch. Received {switches!r}; {_ALLOWED}.")
    seen = set()
    for s in parsed:
        if str(s) in seen:
            raise SwitchError(f"Switch '{s}' is listed twice in {[str(p) for p in parsed]}.")
        seen.add(str(s))
    return parsed


def channel_divisor(switches: Iterable[Switch]) -> int:
    """Smallest channel multiple that splits exactly for every switch."""
    d = 1
    for s in switches:
        for x in list(s.offsets) + [o + w for o, w in zip(s.offsets, s.widths)]:
            den = Fraction(x).limit_denominator(1024).denominator
            d = d * den // math.gcd(d, den)
    return d
