"""ResNet with bottleneck blocks (He et al. 2016) as a ParaDiS network."""

from __future__ import annotations

from typing import Sequence

from paradis_tf.models.base import ParaDiSModel, build_model, register_architecture
from paradis_tf.models.body import Body

RESNET50_BLOCKS = (3, 4, 6, 3)


@register_architecture("resnet")
class ResNetBody(Body):
    """Bottleneck ResNet: stem, stages of bottleneck blocks, GAP, classifier.

    Args:
        blocks: bottleneck blocks per stage; (3, 4, 6, 3) is ResNet-50.
        width: width multiplier.
        base_filters: bottleneck filters of the first stage (64 in ResNet-50).
        sync_layers: indices (0-based, over all bottleneck blocks) of blocks
            whose first 1x1 convolution is a sync convolution.
        large_stem: 7x7/2 conv + 3x3/2 max-pool (ImageNet); default for
            inputs of 64 pixels or more, else a 3x3/1 stem.
    """

    def __init__(self, switches, input_shape, num_classes, blocks: Sequence[int] = RESNET50_BLOCKS,
                 width: float = 1.0, base_filters: int = 64, sync_layers: Sequence[int] = (),
                 large_stem: bool | None = None, **kwargs):
        super().__init__(switches, input_shape, num_classes, **kwargs)
        blocks = [int(b) for b in blocks]
        if not blocks or min(blocks) < 1:
            raise ValueError(f"Expected a non-empty list of positive block counts. Received blocks={blocks}.")
        if not width > 0:
            raise ValueError(f"Expected a strictly positive value. Received width={width!r}.")
        total = sum(blocks)
        bad = [i for i in sync_layers if not 0 <= int(i) < total]
        if bad:
            raise ValueError(f"Expected sync_layers in [0, {total}). Received sync_layers={list(sync_layers)}.")
        self.blocks_per_stage = blocks
        self.width = float(width)
        self.base_filters = int(base_filters)
        self.sync_layers = sorted(int(i) for i in sync_layers)
        if large_stem is None:
            large_stem = min(self.image_shape[:2]) >= 64
        self.large_stem = bool(large_stem)
        c = self.channels(base_filters * width)
        k, s = (7, 2) if self.large_stem else (3, 1)
        self.stem_conv = self._conv("stem_conv", self.image_shape[-1], c, k, s, role="stem")
        self.stem_bn = self._bn("stem_bn", c)
        self.units = []
        idx = 0
        for stage, n in enumerate(blocks):
            mid = self.channels(base_filters * (2**stage) * width)
            out = 4 * mid
            for b in range(n):
                stride = 2 if (b == 0 and stage > 0) else 1
                name = f"stage{stage}_block{b}"
                role = "sync" if idx in self.sync_layers else "split"
                unit = {
                    "conv1": self._conv(f"{name}_conv1", c, mid, 1, 1, role=role),
                    "bn1": self._bn(f"{name}_bn1", mid),
                    "conv2": self._conv(f"{name}_conv2", mid, mid, 3, stride),
                    "bn2": self._bn(f"{name}_bn2", mid),
                    "conv3": self._conv(f"{name}_conv3", mid, out, 1, 1),
                    "bn3": self._bn(f"{name}_bn3", out),
                }
                if stride != 1 or c != out:
                    unit["proj"] = self._conv(f"{name}_proj", c, out, 1, stride)
                    unit["proj_bn"] = self._bn(f"{name}_proj_bn", out)
                self.units.append(unit)
                c = out
                idx += 1
        self.head = self._dense("classifier", c)
        self.built = True

    def stages(self):
        def stem(ops, x):
            x = ops.relu(ops.bn(self.stem_bn, ops.stem(self.stem_conv, x)))
            return ops.max_pool(x, 3, 2) if self.large_stem else x

        def bottleneck(u):
            def run(ops, x):
                # conv1 first: if it is a sync conv, the device model cuts a
                # segment there and `x` becomes this device's slice of it.
                y = ops.relu(ops.bn(u["bn1"], ops.conv(u["conv1"], x)))
                y = ops.relu(ops.bn(u["bn2"], ops.conv(u["conv2"], y)))
                y = ops.bn(u["bn3"], ops.conv(u["conv3"], y))
                shortcut = ops.bn(u["proj_bn"], ops.conv(u["proj"], x)) if "proj" in u else x
                return ops.relu(ops.add(shortcut, y))
            return run

        def head(ops, x):
            return ops.head(self.head, ops.global_pool(x))

        return [stem] + [bottleneck(u) for u in self.units] + [head]

    def get_config(self):
        config = super().get_config()
        config.update(blocks=self.blocks_per_stage, width=self.width, base_filters=self.base_filters,
                      sync_layers=self.sync_layers, large_stem=self.large_stem)
        return config


def resnet(
    input_shape: Sequence[int],
    num_classes: int,
    switches: Sequence,
    blocks: Sequence[int] = RESNET50_BLOCKS,
    width: float = 1.0,
    base_filters: int = 64,
    sync_layers: Sequence[int] = (),
    large_stem: bool | None = None,
    **options,
) -> ParaDiSModel:
    """Bottleneck ResNet ParaDiS network (ResNet-50 layout at full size).

    Args:
        input_shape: (H, W, C).
        num_classes: number of classes.
        switches: switch texts.
        blocks: bottleneck blocks per stage, (3, 4, 6, 3) = ResNet-50; use
            e.g. (1, 1) for small CPU experiments.
        width: width multiplier.
        base_filters: first-stage bottleneck filters.
        sync_layers: bottleneck blocks whose first 1x1 conv is a sync conv.
        large_stem: ImageNet stem (default for inputs >= 64 px).
        **options: the `Body` options (bn_momentum, weight_decay,
            logit_scale) and the `ParaDiSModel` arguments.

    Returns:
        A `ParaDiSModel`.
    """
    arch = dict(blocks=list(blocks), width=width, base_filters=base_filters, sync_layers=list(sync_layers),
                large_stem=large_stem)
    return build_model("resnet", input_shape, num_classes, switches, arch, options)
