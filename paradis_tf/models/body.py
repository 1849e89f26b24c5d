"""Base class of architecture bodies (the layers of a ParaDiS network)."""

from __future__ import annotations

from typing import Sequence

import keras

from paradis_tf.layers import ParaDiSConv2D, ParaDiSDense, SwitchableBatchNormalization
from paradis_tf.switches import channel_divisor, parse_switches

# The keyword arguments every architecture body takes (`Body`), with their
# defaults; the builders (`mobilenet_v1`, `resnet`) take them too.
BODY_OPTIONS = {"bn_momentum": 0.99, "weight_decay": 0.0, "logit_scale": False}


class Body(keras.layers.Layer):
    """Holds an architecture's ParaDiS layers and its stage functions.

    Subclasses create their layers in `__init__` through `_conv`, `_dw`,
    `_bn` and `_dense` (which build them at full width right away, so that a
    narrow switch never sizes a weight) and define `stages()`: a list of
    callables ``(ops, x) -> x``. Stage 0 receives the image; the last stage
    returns logits.

    Args:
        switches: switch texts.
        input_shape: (H, W, C) of one image.
        num_classes: number of classes.
        bn_momentum: BN moving-average momentum.
        weight_decay: L2 factor on convolution and classifier kernels.
        logit_scale: learn one scale per switch on the classifier's partial
            logits (folded into the device kernels at export).
    """

    def __init__(self, switches: Sequence[str], input_shape, num_classes: int,
                 bn_momentum: float = BODY_OPTIONS["bn_momentum"], weight_decay: float = BODY_OPTIONS["weight_decay"],
                 logit_scale: bool = BODY_OPTIONS["logit_scale"], **kwargs):
        super().__init__(**kwargs)
        self.logit_scale = bool(logit_scale)
        self.switches = [str(s) for s in parse_switches(switches)]
        self.image_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.bn_momentum = float(bn_momentum)
        self.weight_decay = float(weight_decay)
        self.divisor = channel_divisor(parse_switches(self.switches))
        self._bns: list = []
        self._syncs: list = []

    def channels(self, c: float) -> int:
        """A channel count rounded up to split exactly for every switch."""
        d = self.divisor
        return max(d, int(-(-round(c) // d) * d))

    def _reg(self):
        return keras.regularizers.L2(self.weight_decay) if self.weight_decay > 0 else None

    def _conv(self, name, in_ch, filters, kernel_size=1, strides=1, role="split"):
        layer = ParaDiSConv2D(
            filters, kernel_size, strides, "same", role=role, switches=self.switches,
            kernel_regularizer=self._reg(), name=name,
        )
        layer.build((None, None, None, in_ch))
        if role == "sync":
            self._syncs.append(name)
        return layer

    def _bn(self, name, ch):
        layer = SwitchableBatchNormalization(self.switches, momentum=self.bn_momentum, name=name)
        layer.build((None, None, None, ch))
        self._bns.append(layer)
        return layer

    def _dense(self, name, in_ch):
        layer = ParaDiSDense(self.num_classes, self.switches, kernel_regularizer=self._reg(), name=name,
                             logit_scale=self.logit_scale)
        layer.build((None, in_ch))
        return layer

    def build_full(self):
        self.built = True

    def bn_layers(self) -> list:
        return list(self._bns)

    def sync_layer_names(self) -> list[str]:
        return list(self._syncs)

    def stages(self) -> list:
        raise NotImplementedError

    def num_stages(self) -> int:
        return len(self.stages())

    def forward(self, ops, x):
        for i, stage in enumerate(self.stages()):
            if i:
                x = ops.boundary(i, x)
            x = stage(ops, x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            switches=self.switches,
            input_shape=list(self.image_shape),
            num_classes=self.num_classes,
            bn_momentum=self.bn_momentum,
            weight_decay=self.weight_decay,
            logit_scale=self.logit_scale,
        )
        return config
