"""WDSR-A (Yu et al. 2018, "Wide activation for efficient and accurate image super-resolution") as a ParaDiS network."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from paradis_tf.layers import ParaDiSConv2D, ParaDiSFusedConv2D
from paradis_tf.models.base import register_architecture
from paradis_tf.models.body import Body
from paradis_tf.models.sr import ParaDiSSRModel, bicubic_upsampling_kernel

SKIP_KERNEL = 5


@register_architecture("wdsr")
class WDSRBody(Body):
    """WDSR-A body: a 3x3 head convolution, residual blocks with wide activation, a 3x3 output convolution,
    and the skip branch.

    Under a switch, device ``k`` computes (channel ranges as for the classifiers):

    * head: its slice of the ``channels`` feature maps from the whole image
      (a stem convolution: the image is broadcast);
    * each block: ``x_k + conv3x3(relu(conv3x3(x_k)))``, the first
      convolution widening its slice to ``channels * expansion``, the second
      bringing it back (split convolutions, block-diagonal);
    * output: ``conv3x3`` of its slice to all ``scale**2 * C`` channels, no
      bias (a `ParaDiSFusedConv2D`): its partial residual.

    The skip branch, ``skip_conv``, is a plain 5x5 convolution of the whole
    image to ``scale**2 * C`` channels with a bias, initialized to bicubic
    upsampling (`bicubic_upsampling_kernel`) and trained; `ParaDiSSRModel`
    adds it to the summed partials and applies depth-to-space. No batch
    normalization, as in WDSR, and no weight normalization: the
    convolutions are plain kernels, so a device's slice is the kernel's
    slice. Instead of weight normalization's initialization, the output
    convolution starts at zero, so the untrained network is its skip
    branch, bicubic upsampling, and the second convolution of every block
    starts at ``init_scale`` times He's standard deviation, so the
    residual stack starts near the identity. (Measured on the validation
    photographs' Y, x2, 16 channels, 2 blocks, 300 Adam steps: 33.23 dB
    for 1x1.0 against 33.22 with both at 0.01 times He and 33.24 with both
    at 0.1, whose untrained network was 10 dB below bicubic.)

    Args:
        scale: upscaling factor.
        channels: feature channels between blocks (rounded up so they split
            exactly for every switch).
        blocks: number of residual blocks.
        expansion: width of the activation inside a block, in multiples of
            ``channels`` (rounded up to split too).
        sync_layers: indices (0-based) of the blocks whose first convolution
            is a sync convolution (reads every device's channels).
        init_scale: factor on the initial standard deviation of the blocks'
            second convolutions.
    """

    def __init__(self, switches, input_shape, num_classes, scale: int = 2, channels: int = 32, blocks: int = 8,
                 expansion: float = 4, sync_layers: Sequence[int] = (), init_scale: float = 0.1, **kwargs):
        super().__init__(switches, input_shape, num_classes, **kwargs)
        c_img = int(self.image_shape[-1])
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
            raise ValueError(f"Expected an integer upscaling factor scale >= 2. Received scale={scale!r}.")
        if self.num_classes != scale * scale * c_img:
            raise ValueError(f"Expected num_classes = scale**2 * channels = {scale * scale * c_img} (the outputs per "
                             f"low-resolution pixel). Received num_classes={self.num_classes}.")
        if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"Expected a positive number of feature channels. Received channels={channels!r}.")
        if not isinstance(blocks, (int, np.integer)) or isinstance(blocks, bool) or blocks < 1:
            raise ValueError(f"Expected at least one residual block. Received blocks={blocks!r}.")
        if not expansion >= 1:
            raise ValueError(f"Expected expansion >= 1 (the activation is at least as wide as the features). "
                             f"Received expansion={expansion!r}.")
        if not init_scale > 0:
            raise ValueError(f"Expected init_scale > 0. Received init_scale={init_scale!r}.")
        bad = [i for i in sync_layers if not 0 <= int(i) < int(blocks)]
        if bad:
            raise ValueError(f"Expected sync_layers to be block indices in [0, {blocks}). "
                             f"Received sync_layers={list(sync_layers)}.")
        self.scale = int(scale)
        self.num_blocks = int(blocks)
        self.expansion = float(expansion)
        self.sync_layers = sorted(int(i) for i in sync_layers)
        self.init_scale = float(init_scale)
        self.feature_channels = self.channels(channels)
        self.wide_channels = self.channels(self.feature_channels * self.expansion)
        c, wide = self.feature_channels, self.wide_channels
        small = keras.initializers.VarianceScaling(2.0 * self.init_scale ** 2, "fan_in", "truncated_normal")
        self.head_conv = self._sr_conv("head", c_img, c, role="stem")
        self.blocks = []
        for i in range(self.num_blocks):
            role = "sync" if i in self.sync_layers else "split"
            self.blocks.append((self._sr_conv(f"block{i}_conv1", c, wide, role=role),
                                self._sr_conv(f"block{i}_conv2", wide, c, initializer=small)))
        self.tail = ParaDiSFusedConv2D(self.num_classes, 3, 1, "same", switches=self.switches, use_bias=False,
                                       kernel_initializer="zeros", kernel_regularizer=self._reg(), name="tail")
        self.tail.build((None, None, None, c))
        self.skip_conv = keras.layers.Conv2D(self.num_classes, SKIP_KERNEL, padding="same", use_bias=True,
                                             name="skip")
        self.skip_conv.build((None, None, None, c_img))
        self.skip_conv.kernel.assign(bicubic_upsampling_kernel(self.scale, c_img, SKIP_KERNEL))
        self.built = True

    def _sr_conv(self, name, in_ch, filters, role="split", initializer="he_normal"):
        layer = ParaDiSConv2D(filters, 3, 1, "same", role=role, switches=self.switches, use_bias=True,
                              kernel_initializer=initializer, kernel_regularizer=self._reg(), name=name)
        layer.build((None, None, None, in_ch))
        if role == "sync":
            self._syncs.append(name)
        return layer

    def stages(self):
        def head(ops, x):
            return ops.stem(self.head_conv, x)

        def block(conv1, conv2):
            def run(ops, x):
                # conv1 first: if it is a sync convolution, the device model cuts a segment there and `x`
                # becomes this device's slice of it, so the residual add stays within one segment.
                y = ops.conv(conv2, ops.relu(ops.conv(conv1, x)))
                return ops.add(x, y)
            return run

        def tail(ops, x):
            return ops.fused_conv(self.tail, x)

        return [head] + [block(*b) for b in self.blocks] + [tail]

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, channels=self.feature_channels, blocks=self.num_blocks,
                      expansion=self.expansion, sync_layers=self.sync_layers, init_scale=self.init_scale)
        return config


def wdsr(
    scale: int = 2,
    switches: Sequence = ("1x1.0", "2x0.5", "4x0.25", "1x0.5", "1x0.25"),
    channels: int = 32,
    blocks: int = 8,
    expansion: float = 4,
    input_shape: Sequence[int] = (48, 48, 3),
    sync_layers: Sequence[int] = (),
    init_scale: float = 0.1,
    weight_decay: float = 0.0,
    **options,
) -> ParaDiSSRModel:
    """WDSR-A ParaDiS super-resolution network.

    Args:
        scale: upscaling factor.
        switches: switch texts, e.g. ``["1x1.0", "2x0.5", "4x0.25"]``.
        channels: feature channels between blocks.
        blocks: residual blocks.
        expansion: activation width inside a block, in multiples of
            ``channels``.
        input_shape: (H, W, C) of a low-resolution training patch; C = 3
            (RGB) or 1 (the Y channel). The switch models take any size;
            device and skip models are built for this one unless given
            another.
        sync_layers: blocks whose first convolution reads all devices.
        init_scale: initial standard deviation factor of the blocks' second
            convolutions (see `WDSRBody`).
        weight_decay: L2 factor on the ParaDiS convolution kernels.
        **options: the `ParaDiSSRModel` arguments (preprocessing,
            label_mix, sandwich, switch_weights, teacher, teacher_of, name).

    Returns:
        A `ParaDiSSRModel`.

    Reference:
        Ozerov, Lambert, Kumaraswamy, "ParaDiS: Parallelly Distributable
        Slimmable Neural Networks", arXiv 2110.02724 (its WDSR experiments).
    """
    arch = dict(channels=channels, blocks=blocks, expansion=expansion, sync_layers=list(sync_layers),
                init_scale=init_scale, weight_decay=weight_decay)
    return ParaDiSSRModel("wdsr", switches, input_shape, scale=scale, arch_config=arch, **options)
