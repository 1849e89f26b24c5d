"""paradis_tf.runtime.image: depth-to-space, tiles, pixel formats and the checks of upscale_image.

The tiling is checked against a NumPy network with a known receptive field
(3x3 box filters, one per pass, then a fixed upsampling), run once on the
whole image: the tiled result must be identical, borders included.
"""

from __future__ import annotations

import numpy as np
import pytest

from paradis_tf.bundle import ImageOutput, ModelInfo, Preprocessing
from paradis_tf.errors import InputError
from paradis_tf.runtime.image import (
    bicubic_upscale,
    depth_to_space,
    from_ycbcr,
    tile_spans,
    to_ycbcr,
    upscale,
    upscale_image,
)

SCALE = 2


def _box_net(passes: int):
    """A 'network' of ``passes`` zero-padded 3x3 box filters (receptive radius ``passes``), then each pixel
    repeated into a SCALE x SCALE cell with a per-position gain: the whole image or any tile of it."""
    gains = np.arange(1, SCALE * SCALE + 1, dtype=np.float64).reshape(SCALE, SCALE) / 4

    def run(x: np.ndarray) -> np.ndarray:  # (N, H, W, C)
        y = x.astype(np.float64)
        for _ in range(passes):
            p = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
            y = sum(p[:, i:i + y.shape[1], j:j + y.shape[2]] for i in range(3) for j in range(3)) / 9.0
        up = np.repeat(np.repeat(y, SCALE, axis=1), SCALE, axis=2)
        return (up * np.tile(gains, (y.shape[1], y.shape[2]))[None, :, :, None]).astype(np.float32)

    return run


def test_depth_to_space_matches_tensorflow():
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(2, 5, 7, 12)).astype(np.float32)
    for scale in (2,):
        np.testing.assert_array_equal(depth_to_space(x, scale), tf.nn.depth_to_space(x, scale).numpy())
    x3 = np.random.default_rng(1).normal(size=(1, 4, 3, 27)).astype(np.float32)
    np.testing.assert_array_equal(depth_to_space(x3, 3), tf.nn.depth_to_space(x3, 3).numpy())
    with pytest.raises(InputError, match="multiple of 4"):
        depth_to_space(np.zeros((1, 2, 2, 6)), 2)


@pytest.mark.parametrize("length,tile,margin", [(24, 24, 8), (25, 24, 8), (40, 24, 8), (100, 24, 8), (57, 17, 3),
                                                (30, 12, 0), (13, 5, 2)])
def test_tile_spans_cover_once_and_keep_the_margin(length, tile, margin):
    spans = tile_spans(length, tile, margin)
    assert spans[0][1] == 0 and spans[-1][2] == length
    for (start, a, b), nxt in zip(spans, spans[1:] + [None]):
        assert 0 <= start and start + tile <= length and start <= a < b <= start + tile
        assert a == 0 or a - start >= margin  # an inner left edge keeps the margin
        assert b == length or start + tile - b >= margin
        if nxt is not None:
            assert nxt[1] == b  # no gap, no overlap


def test_tile_spans_refuse_what_cannot_be_tiled():
    with pytest.raises(InputError, match="20 pixels is shorter than the 24-pixel tile"):
        tile_spans(20, 24, 2)
    with pytest.raises(InputError, match="keep nothing with a margin of 8"):
        tile_spans(30, 16, 8)
    assert tile_spans(16, 16, 8) == [(0, 0, 16)]  # one tile needs no margin


@pytest.mark.parametrize("shape", [(24, 24), (37, 61), (50, 24)])
def test_tiled_output_equals_the_whole_image(shape):
    passes, tile = 3, (24, 24)
    net = _box_net(passes)
    lr = np.random.default_rng(2).random((*shape, 3), dtype=np.float32)
    calls = []

    def predict(x):
        calls.append(len(x))
        return net(x)

    got = upscale(lr, predict, tile, SCALE, margin=passes, batch=4)
    np.testing.assert_array_equal(got, net(lr[None])[0])
    assert max(calls) <= 4
    # a margin below the receptive radius is not exact at the seams (it is what --margin trades away)
    if shape != tile:
        assert not np.array_equal(upscale(lr, net, tile, SCALE, margin=1), got)


def test_wrong_output_shape_is_named():
    with pytest.raises(InputError, match=r"expected \(1, 48, 48, 3\)"):
        upscale(np.zeros((24, 24, 3), np.float32), lambda x: np.zeros((len(x), 48, 48, 1)), (24, 24), 2, 4)


def test_bicubic_matches_tensorflow_resize():
    import tensorflow as tf

    img = np.random.default_rng(3).random((9, 13, 2)) * 255
    # x3: TensorFlow samples its kernel from a table, 0.13 of 255 off at most here
    for scale, atol in ((2, 1e-3), (3, 0.2)):
        want = tf.image.resize(img[None], (9 * scale, 13 * scale), method="bicubic", antialias=False).numpy()[0]
        np.testing.assert_allclose(bicubic_upscale(img, scale), want, atol=atol)


def test_ycbcr_round_trip_and_the_luma_of_the_data_module():
    from paradis_tf.data.sr import to_y

    rgb = np.random.default_rng(4).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    ycc = to_ycbcr(rgb)
    np.testing.assert_allclose(ycc[..., 0], to_y(rgb), atol=1e-9)
    np.testing.assert_allclose(from_ycbcr(ycc), rgb, atol=1e-9)
    assert 16 <= ycc[..., 0].min() and ycc[..., 0].max() <= 235


def _sr_info(fmt: str = "rgb", tile=(24, 24), margin: int = 3) -> ModelInfo:
    c = 3 if fmt == "rgb" else 1
    return ModelInfo("box", (*tile, c), SCALE * SCALE * c, Preprocessing(1 / 255), task="super_resolution",
                     output=ImageOutput(SCALE, fmt, (0.0, 1.0), margin))


def test_upscale_image_rgb_and_y():
    net = _box_net(3)
    rgb = np.random.default_rng(5).integers(0, 256, (30, 41, 3)).astype(np.uint8)
    out = upscale_image(rgb, _sr_info("rgb"), net)
    want = np.clip(np.round(net(rgb[None].astype(np.float32) / 255)[0].astype(np.float64) * 255), 0, 255)
    assert out.dtype == np.uint8 and out.shape == (60, 82, 3)
    np.testing.assert_allclose(out, want, atol=1)  # float32 vs float64 rounding of the same values
    # a y bundle: RGB in, RGB out (luma through the network, chroma bicubic); grayscale in, grayscale out
    y_rgb = upscale_image(rgb, _sr_info("y"), net)
    assert y_rgb.shape == (60, 82, 3) and y_rgb.dtype == np.uint8
    gray = rgb[..., 0]
    y_gray = upscale_image(gray, _sr_info("y"), net)
    assert y_gray.shape == (60, 82, 1)
    # a flat gray image stays that gray through a network that preserves flat images (box filters away from
    # the zero-padded border, and gains averaging to 1 would; here: the identity)
    flat = np.full((24, 24), 77, np.uint8)
    ident = lambda x: np.repeat(np.repeat(x, SCALE, axis=1), SCALE, axis=2)  # noqa: E731
    np.testing.assert_array_equal(upscale_image(flat, _sr_info("y"), ident), np.full((48, 48, 1), 77, np.uint8))


def test_upscale_image_bad_input_names_what_it_got_and_expected():
    net = _box_net(1)
    rgb_info = _sr_info("rgb")
    with pytest.raises(InputError, match=r"has 1 channel\(s\).*upscales RGB images and takes 3 \(RGB\)"):
        upscale_image(np.zeros((30, 30), np.uint8), rgb_info, net, name="gray.png")
    with pytest.raises(InputError, match=r"has 4 channel\(s\).*drop the alpha"):
        upscale_image(np.zeros((30, 30, 4), np.uint8), rgb_info, net)
    with pytest.raises(InputError, match=r"gray.png is 20x30 pixels.*take 24x24 tiles.*at least 24x24"):
        upscale_image(np.zeros((20, 30, 3), np.uint8), rgb_info, net, name="gray.png")
    with pytest.raises(InputError, match="expected 8-bit pixels"):
        upscale_image(np.zeros((30, 30, 3), np.float32), rgb_info, net)
    classifier = ModelInfo("mobilenet_v1", (28, 28, 1), 10, Preprocessing(1 / 255))
    with pytest.raises(InputError, match=r"is a classifier \(10 classes\).*needs a super-resolution bundle"):
        upscale_image(np.zeros((30, 30, 3), np.uint8), classifier, net)
