"""A hand-made model with the ParaDiSModel conversion API, for runtime tests.

Four layers on tiny images: stem conv -> conv2 (split, or sync with an
all-gather before it) -> conv3 (split) -> global average pool -> classifier.
Device k of a switch owns a contiguous channel range of every layer, exactly
as docs/ARCHITECTURE.md (keras layer) describes, with slices of one set of full-width weights;
`switch_model` computes the same thing in one graph with masked full-width
weights, so it is an independent reference for the converted partitions.
"""

from __future__ import annotations

import numpy as np

import keras

from paradis_tf.switches import Switch


class TinyParaDiS:
    def __init__(self, switches=("1x1.0", "2x0.5"), image_shape=(8, 8, 1), num_classes=4, channels=8, sync=False, seed=0):
        self.switches = tuple(Switch.parse(s) for s in switches)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.preprocessing = {"scale": 1 / 255, "offset": 0.0}
        self.labels = [f"class-{i}" for i in range(num_classes)]
        self.sync = sync
        self.name = "tiny_sync" if sync else "tiny"
        rng = np.random.default_rng(seed)
        c, cin = channels, image_shape[-1]
        self.C = c

        def w(*shape, fan_in):
            return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

        self.w1, self.b1 = w(3, 3, cin, c, fan_in=9 * cin), rng.normal(0, 0.1, c).astype(np.float32)
        self.w2, self.b2 = w(3, 3, c, c, fan_in=9 * c), rng.normal(0, 0.1, c).astype(np.float32)
        self.w3, self.b3 = w(3, 3, c, c, fan_in=9 * c), rng.normal(0, 0.1, c).astype(np.float32)
        self.w4, self.b4 = w(c, num_classes, fan_in=c), rng.normal(0, 0.1, num_classes).astype(np.float32)

    @property
    def fusion_bias(self) -> np.ndarray:
        return self.b4

    # -- helpers
    @staticmethod
    def _conv(x, kernel, bias, name):
        layer = keras.layers.Conv2D(kernel.shape[-1], 3, padding="same", activation="relu", name=name)
        y = layer(x)
        layer.set_weights([kernel, bias])
        return y

    def _head(self, x, w, name, bias=None):
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
        layer = keras.layers.Dense(self.num_classes, use_bias=bias is not None, name=f"{name}_fc")
        y = layer(x)
        layer.set_weights([w] if bias is None else [w, bias])
        return y

    # -- the conversion API
    def device_segments(self, switch):
        s = Switch.parse(switch)
        rs = s.channel_ranges(self.C)
        used = rs[-1][1]
        image = self.image_shape
        out = []
        if not self.sync:
            for k, (a, b) in enumerate(rs):
                x = keras.Input(image)
                h = self._conv(x, self.w1[..., a:b], self.b1[a:b], "stem")
                h = self._conv(h, self.w2[:, :, a:b, a:b], self.b2[a:b], "conv2")
                h = self._conv(h, self.w3[:, :, a:b, a:b], self.b3[a:b], "conv3")
                out.append([keras.Model(x, self._head(h, self.w4[a:b], "head"), name=f"dev{k}")])
            return out
        for k, (a, b) in enumerate(rs):
            x = keras.Input(image)
            seg0 = keras.Model(x, self._conv(x, self.w1[..., a:b], self.b1[a:b], "stem"), name=f"dev{k}_seg0")
            ins = [keras.Input(image[:2] + (bb - aa,)) for aa, bb in rs]
            h = keras.layers.Concatenate(name="gather")(ins) if len(ins) > 1 else ins[0]
            h = self._conv(h, self.w2[:, :, :used, a:b], self.b2[a:b], "conv2_sync")
            h = self._conv(h, self.w3[:, :, a:b, a:b], self.b3[a:b], "conv3")
            seg1 = keras.Model(ins, self._head(h, self.w4[a:b], "head"), name=f"dev{k}_seg1")
            out.append([seg0, seg1])
        return out

    def device_models(self, switch):
        if self.sync:
            raise ValueError("model has sync layers; use device_segments")
        return [segs[0] for segs in self.device_segments(switch)]

    def switch_model(self, switch):
        """Full-width graph with block-diagonal (or, for sync, input-dense) masks."""
        s = Switch.parse(switch)
        rs = s.channel_ranges(self.C)
        used = rs[-1][1]
        m_out = np.zeros(self.C, np.float32)
        m_block = np.zeros((self.C, self.C), np.float32)
        for a, b in rs:
            m_out[a:b] = 1
            m_block[a:b, a:b] = 1
        m2 = np.zeros((self.C, self.C), np.float32)
        m2[:used, :used] = 1
        x = keras.Input(self.image_shape)
        h = self._conv(x, self.w1 * m_out, self.b1 * m_out, "stem")
        h = self._conv(h, self.w2 * (m2 if self.sync else m_block), self.b2 * m_out, "conv2")
        h = self._conv(h, self.w3 * m_block, self.b3 * m_out, "conv3")
        return keras.Model(x, self._head(h, self.w4 * m_out[:, None], "head", bias=self.b4), name="switch_" + str(s).replace("+", "p"))

    def sequential_models(self, num_devices):
        if num_devices not in (2, 3, 4):
            raise ValueError("tiny model cuts into 2, 3 or 4 pieces")
        shapes = [self.image_shape] + [self.image_shape[:2] + (self.C,)] * 3
        stages = [
            lambda h: self._conv(h, self.w1, self.b1, "stem"),
            lambda h: self._conv(h, self.w2, self.b2, "conv2"),
            lambda h: self._conv(h, self.w3, self.b3, "conv3"),
            lambda h: self._head(h, self.w4, "head", bias=self.b4),
        ]
        cuts = {2: [0, 2, 4], 3: [0, 1, 3, 4], 4: [0, 1, 2, 3, 4]}[num_devices]
        pieces = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            inp = keras.Input(shapes[a])
            h = inp
            for st in stages[a:b]:
                h = st(h)
            pieces.append(keras.Model(inp, h, name=f"piece{a}"))
        return pieces


def images(n: int, shape=(8, 8, 1), seed: int = 1) -> np.ndarray:
    """Smooth random uint8 images (blobs), so convolutions see structure."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w, c), np.float32)
    for i in range(n):
        for _ in range(2):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            out[i, ..., :] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(2, 8))[..., None]
    out = out / out.max(axis=(1, 2, 3), keepdims=True)
    return (out * 255).round().astype(np.uint8)
