"""Baselines for the paper's claims, built with the same code as ParaDiS.

* *individual*: each switch trained alone (labels only), same recipe and
  epochs: `individual_model(builder, "2x0.5", ...)`.
* *universally slimmable* (Yu & Huang 2019): single-device widths only, each
  width fully connected inside itself: `slimmable_model(builder, ...)` with
  switches 1x1.0, 1x0.5, 1x0.25 (a ParaDiS model whose switches are all
  single-device is exactly a slimmable network).
"""

from __future__ import annotations

from typing import Callable, Sequence

SLIMMABLE_SWITCHES = ("1x1.0", "1x0.5", "1x0.25")


def individual_model(builder: Callable, switch: str, **kwargs):
    """A model that serves only ``switch`` (trained alone, from labels)."""
    return builder(switches=[switch], **kwargs)


def slimmable_model(builder: Callable, widths: Sequence[str] = SLIMMABLE_SWITCHES, **kwargs):
    """A universally slimmable model: single-device switches only."""
    return builder(switches=list(widths), **kwargs)
