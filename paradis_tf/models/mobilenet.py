"""MobileNet v1 (Howard et al. 2017) as a ParaDiS network."""

from __future__ import annotations

from typing import Sequence

from paradis_tf.layers import ParaDiSDepthwiseConv2D
from paradis_tf.models.base import ParaDiSModel, build_model, register_architecture
from paradis_tf.models.body import Body

# (pointwise filters, depthwise stride) of the 13 separable blocks.
MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


@register_architecture("mobilenet_v1")
class MobileNetV1Body(Body):
    """Stem conv + ``depth`` depthwise-separable blocks + GAP + classifier.

    Args:
        width: width multiplier of every layer (channels rounded up so they
            split exactly for every switch).
        depth: number of separable blocks (1..13), the leading ones of the
            standard layout.
        sync_layers: indices (0-based) of the blocks whose pointwise
            convolution is a sync convolution.
        stem_stride: stride of the stem; default 2 for inputs of 64 pixels
            or more, else 1 (Fashion-MNIST's 28x28).
        channels: output channels of the stem and of each block
            (``depth + 1`` counts, each rounded up like the widths), instead
            of the standard layout times ``width``: a network narrow where
            the image is large and wide where it is small, for example.
    """

    def __init__(self, switches, input_shape, num_classes, width: float = 1.0, depth: int = 13,
                 sync_layers: Sequence[int] = (), stem_stride: int | None = None,
                 channels: Sequence[int] | None = None, **kwargs):
        super().__init__(switches, input_shape, num_classes, **kwargs)
        if not width > 0:
            raise ValueError(f"Expected a strictly positive value. Received width={width!r}.")
        if not 1 <= int(depth) <= len(MOBILENET_V1_BLOCKS):
            raise ValueError(f"Expected 1 <= depth <= {len(MOBILENET_V1_BLOCKS)}. Received depth={depth!r}.")
        bad = [i for i in sync_layers if not 0 <= int(i) < int(depth)]
        if bad:
            raise ValueError(f"Expected sync_layers to be block indices in [0, {depth}). Received sync_layers={list(sync_layers)}.")
        self.width = float(width)
        self.depth = int(depth)
        self.sync_layers = sorted(int(i) for i in sync_layers)
        if stem_stride is None:
            stem_stride = 2 if min(self.image_shape[:2]) >= 64 else 1
        self.stem_stride = int(stem_stride)
        if channels is not None:
            counts = list(channels)
            if len(counts) != self.depth + 1 or not all(isinstance(n, (int, float)) and n > 0 for n in counts):
                raise ValueError(
                    f"Expected channels to be {self.depth + 1} positive counts (the stem, then each of the "
                    f"depth={self.depth} blocks). Received channels={counts!r}.")
            counts = [self.channels(n) for n in counts]
        else:
            counts = [self.channels(32 * width)] + [self.channels(f * width) for f, _ in MOBILENET_V1_BLOCKS[: self.depth]]
        self.channel_counts = counts
        c = counts[0]
        self.stem_conv = self._conv("stem_conv", self.image_shape[-1], c, 3, self.stem_stride, role="stem")
        self.stem_bn = self._bn("stem_bn", c)
        self.blocks = []
        for i, (filters, stride) in enumerate(MOBILENET_V1_BLOCKS[: self.depth]):
            out = counts[i + 1]
            dw = ParaDiSDepthwiseConv2D(3, stride, "same", switches=self.switches, name=f"block{i}_dw")
            dw.build((None, None, None, c))
            role = "sync" if i in self.sync_layers else "split"
            self.blocks.append((
                dw,
                self._bn(f"block{i}_dw_bn", c),
                self._conv(f"block{i}_pw", c, out, 1, 1, role=role),
                self._bn(f"block{i}_pw_bn", out),
            ))
            c = out
        self.head = self._dense("classifier", c)
        self.built = True

    def stages(self):
        def stem(ops, x):
            return ops.relu(ops.bn(self.stem_bn, ops.stem(self.stem_conv, x)), 6.0)

        def block(dw, dw_bn, pw, pw_bn):
            def run(ops, x):
                x = ops.relu(ops.bn(dw_bn, ops.dwconv(dw, x)), 6.0)
                return ops.relu(ops.bn(pw_bn, ops.conv(pw, x)), 6.0)
            return run

        def head(ops, x):
            return ops.head(self.head, ops.global_pool(x))

        return [stem] + [block(*b) for b in self.blocks] + [head]

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, depth=self.depth, sync_layers=self.sync_layers, stem_stride=self.stem_stride,
                      channels=self.channel_counts)
        return config


def mobilenet_v1(
    input_shape: Sequence[int],
    num_classes: int,
    switches: Sequence,
    width: float = 1.0,
    depth: int = 13,
    sync_layers: Sequence[int] = (),
    stem_stride: int | None = None,
    channels: Sequence[int] | None = None,
    **options,
) -> ParaDiSModel:
    """MobileNet v1 ParaDiS network, from 28x28x1 to 224x224x3 inputs.

    Args:
        input_shape: (H, W, C).
        num_classes: number of classes.
        switches: switch texts, e.g. ``["1x1.0", "2x0.5", "4x0.25"]``.
        width: width multiplier.
        depth: number of separable blocks (13 is the full network).
        sync_layers: blocks whose pointwise conv reads all devices' channels.
        stem_stride: stem stride (default: 2 for inputs >= 64 px, else 1).
        channels: output channels of the stem and of each block, ``depth + 1``
            counts (default: the standard layout times ``width``).
        **options: the `Body` options (bn_momentum, weight_decay,
            logit_scale) and the `ParaDiSModel` arguments (labels,
            label_mix, sandwich, switch_weights, preprocessing, name...).

    Returns:
        A `ParaDiSModel`.

    Reference:
        Ozerov, Lambert, Kumaraswamy, "ParaDiS: Parallelly Distributable
        Slimmable Neural Networks", arXiv 2110.02724.
    """
    arch = dict(width=width, depth=depth, sync_layers=list(sync_layers), stem_stride=stem_stride,
                channels=None if channels is None else list(channels))
    return build_model("mobilenet_v1", input_shape, num_classes, switches, arch, options)
