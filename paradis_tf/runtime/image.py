"""Image outputs: depth-to-space, tiling a photograph over fixed-size partitions, pixel formats.

A super-resolution bundle's partitions take one fixed low-resolution tile
(``model.input_shape``, e.g. 48x48). `upscale` runs an image of any larger
size through them: overlapping tiles, each keeping only the part at least
``margin`` pixels away from its edges that are inside the image, so that
every kept pixel sees everything its receptive field reaches, as in one run
over the whole image. At the image's own borders a tile's edge is the
image's edge, so the partitions' zero padding is the padding the whole-image
network sees there too: the result equals the full-size switch network (up
to its int8 error) everywhere, borders included.

`upscale_image` wraps it for photographs: pixel format (RGB, or the BT.601
luma Y with the chroma upscaled bicubically), preprocessing and the checks
of what the bundle takes. NumPy only: the keras layer's depth-to-space and
resizing are not available to the mesh.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from paradis_tf.bundle import ModelInfo
from paradis_tf.errors import InputError

__all__ = [
    "Predict",
    "bicubic_upscale",
    "check_sr_model",
    "depth_to_space",
    "from_ycbcr",
    "tile_spans",
    "to_ycbcr",
    "upscale",
    "upscale_image",
]

# A batch of tiles (N, h, w, C) float32 -> their fused outputs (N, h * scale, w * scale, C).
Predict = Callable[[np.ndarray], np.ndarray]

# ITU-R BT.601, studio range (MATLAB's rgb2ycbcr; paradis_tf.data.sr trains Y models on this Y): rows Y, Cb, Cr
# from R, G, B in 0..255.
_YCBCR = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_RGB = np.linalg.inv(_YCBCR)


def depth_to_space(x: np.ndarray, scale: int) -> np.ndarray:
    """``(N, H, W, scale**2 * C) -> (N, H * scale, W * scale, C)``: channel ``(i * scale + j) * C + c``
    goes to pixel ``(i, j)`` of each ``scale x scale`` cell (``tf.nn.depth_to_space``'s order)."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] % (scale * scale):
        raise InputError(f"depth_to_space by {scale} expects (N, H, W, C) with C a multiple of {scale * scale}; "
                         f"received shape {x.shape}.")
    n, h, w, cs = x.shape
    c = cs // (scale * scale)
    return x.reshape(n, h, w, scale, scale, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * scale, w * scale, c)


def tile_spans(length: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis: ``(start, keep_from, keep_to)`` in input pixels, in order.

    Each tile covers ``[start, start + tile)``; it keeps ``[keep_from,
    keep_to)``, which is at least ``margin`` pixels from each of its edges
    that lies inside the image. The kept parts cover ``[0, length)`` without
    overlap. The last tile is moved back to end at the image's edge.

    Raises:
        InputError: ``length < tile``, or a tile too small to keep anything
            (``tile <= 2 * margin`` on an axis that needs more than one tile).
    """
    if length < tile:
        raise InputError(f"an axis of {length} pixels is shorter than the {tile}-pixel tile.")
    if length == tile:
        return [(0, 0, length)]
    if tile - 2 * margin < 1:
        raise InputError(f"{tile}-pixel tiles keep nothing with a margin of {margin} pixels on both sides; "
                         f"use a margin below {(tile + 1) // 2} (or tiles larger than {2 * margin}).")
    spans, covered = [], 0
    while covered < length:
        start = 0 if covered == 0 else min(covered - margin, length - tile)
        end = start + tile
        keep_to = length if end == length else end - margin
        spans.append((start, covered, keep_to))
        covered = keep_to
    return spans


def upscale(lr: np.ndarray, predict: Predict, tile: tuple[int, int], scale: int, margin: int,
            batch: int = 16) -> np.ndarray:
    """The high-resolution output of a low-resolution float image of any size at least ``tile``.

    Args:
        lr: float32 ``(H, W, C)``, preprocessed as the bundle says.
        predict: runs a batch of tiles ``(N, th, tw, C)`` and returns their
            fused outputs ``(N, th * scale, tw * scale, C)``
            (`LocalRunner.predict`, `Coordinator.infer`).
        tile: ``(th, tw)``, the partitions' input size.
        scale: the upscaling factor.
        margin: pixels a tile keeps away from its inner edges (see
            `tile_spans`; the manifest's ``output.margin`` makes the result
            equal the whole-image network's).
        batch: tiles per ``predict`` call.

    Returns:
        float32 ``(H * scale, W * scale, C)``.
    """
    lr = np.asarray(lr, dtype=np.float32)
    h, w, c = lr.shape
    th, tw = tile
    rows, cols = tile_spans(h, th, margin), tile_spans(w, tw, margin)
    jobs = [(r, q) for r in rows for q in cols]
    out = np.empty((h * scale, w * scale, c), np.float32)
    for i in range(0, len(jobs), max(1, int(batch))):
        part = jobs[i:i + batch]
        tiles = np.stack([lr[r[0]:r[0] + th, q[0]:q[0] + tw] for r, q in part])
        got = np.asarray(predict(tiles), dtype=np.float32)
        if got.shape != (len(part), th * scale, tw * scale, c):
            raise InputError(f"the plan returned outputs of shape {got.shape} for {len(part)} tiles of "
                             f"{th}x{tw}; expected {(len(part), th * scale, tw * scale, c)}.")
        for (r0, ra, rb), (q0, qa, qb), y in zip((p[0] for p in part), (p[1] for p in part), got):
            out[ra * scale:rb * scale, qa * scale:qb * scale] = y[(ra - r0) * scale:(rb - r0) * scale,
                                                                  (qa - q0) * scale:(qb - q0) * scale]
    return out


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, C)`` float upscaled by an integer ``scale``: Keys' cubic (a = -0.5), half-pixel centres, taps
    outside the image left out and the others renormalized (``tf.image.resize`` bicubic, whose antialiasing
    does nothing when upscaling)."""
    a = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        n = a.shape[axis]
        pos = (np.arange(n * scale) + 0.5) / scale - 0.5
        base = np.floor(pos).astype(int)
        taps = base[:, None] + np.arange(-1, 3)[None, :]
        weights = _cubic(pos[:, None] - taps) * ((taps >= 0) & (taps < n))
        weights /= weights.sum(axis=1, keepdims=True)
        gathered = np.take(a, np.clip(taps, 0, n - 1), axis=axis)  # axis grows to (n*scale, 4)
        shape = [1] * gathered.ndim
        shape[axis], shape[axis + 1] = weights.shape
        a = (gathered * weights.reshape(shape)).sum(axis=axis + 1)
    return a


def to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """float64 ``(H, W, 3)`` Y, Cb, Cr (BT.601 studio range, Y in 16..235) of RGB pixels in 0..255."""
    return np.asarray(rgb, dtype=np.float64) @ _YCBCR.T + _YCBCR_OFFSET


def from_ycbcr(ycc: np.ndarray) -> np.ndarray:
    """float64 RGB in 0..255 (not clipped) of BT.601 studio-range Y, Cb, Cr (`to_ycbcr`'s inverse)."""
    return (np.asarray(ycc, dtype=np.float64) - _YCBCR_OFFSET) @ _RGB.T


def check_sr_model(model: ModelInfo, what: str = "the bundle") -> None:
    """Refuses (`InputError`) a bundle that does not output images, naming what it is."""
    if model.output is None:
        raise InputError(f"{what} is {model.describe()}, model {model.name!r}; upscaling needs a super-resolution "
                         "bundle (model.task 'super_resolution': convert a model built with paradis_tf.models.wdsr)")


def _describe(image: np.ndarray) -> str:
    return f"{image.dtype} array of shape {image.shape}"


def upscale_image(image: np.ndarray, model: ModelInfo, predict: Predict, *, margin: int | None = None,
                  batch: int = 16, name: str = "image") -> np.ndarray:
    """A uint8 photograph upscaled by a super-resolution bundle's plan, as uint8.

    ``pixel_format`` ``"rgb"``: the image must be RGB ``(H, W, 3)``.
    ``"y"``: RGB ``(H, W, 3)``, whose BT.601 luma goes through the plan
    (rounded to uint8 first, as the training images were) while Cb and Cr
    are upscaled bicubically, or grayscale ``(H, W)`` / ``(H, W, 1)``, taken
    as R = G = B and written back as grayscale.

    Args:
        image: uint8 pixels.
        model: the bundle's `ModelInfo` (``bundle.model``).
        predict: the plan on a batch of tiles (see `upscale`).
        margin: overrides the manifest's ``output.margin`` (smaller: faster,
            no longer equal to the whole-image network near tile seams).
        batch: tiles per ``predict`` call.
        name: names the image in errors.

    Returns:
        uint8 ``(H * scale, W * scale, C)`` with the input's channel count.

    Raises:
        InputError: a classifier bundle; an image that is not uint8, has a
            channel count the bundle does not take, or is smaller than the
            partitions' tile; a margin that leaves a tile nothing to keep.
    """
    check_sr_model(model)
    out_info = model.output
    th, tw, _ = model.input_shape
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    fmt = out_info.pixel_format
    takes = "3 (RGB)" if fmt == "rgb" else "1 (grayscale) or 3 (RGB, its luma Y is upscaled)"
    if a.ndim != 3 or a.shape[-1] not in ((3,) if fmt == "rgb" else (1, 3)):
        got = f"{a.shape[-1]} channel(s), shape {np.asarray(image).shape}" if a.ndim == 3 else f"shape {a.shape}"
        raise InputError(f"{name} has {got}; this bundle upscales {fmt.upper()} images and takes {takes} channels"
                         + (" (drop the alpha channel, or convert the image to RGB)" if a.ndim == 3 and a.shape[-1] in (2, 4) else ""))
    if a.dtype != np.uint8:
        raise InputError(f"{name} is a {_describe(a)}; expected 8-bit pixels (uint8).")
    h, w = a.shape[:2]
    if h < th or w < tw:
        raise InputError(f"{name} is {h}x{w} pixels (height x width); the bundle's partitions take {th}x{tw} tiles, "
                         f"so give an image of at least {th}x{tw} (or convert the model with a smaller --tile).")
    m = out_info.margin if margin is None else int(margin)
    if m < 0:
        raise InputError(f"margin must be >= 0 pixels; received {m}.")
    pre = model.preprocessing
    s = out_info.scale

    def run(pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, C) model pixels -> float 0..255 (H*s, W*s, C), unclipped."""
        y = upscale(pre.apply(pixels), predict, (th, tw), s, m, batch)
        return (y.astype(np.float64) - pre.offset) / pre.scale

    if fmt == "rgb":
        return np.clip(np.round(run(a)), 0, 255).astype(np.uint8)
    rgb = np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a
    ycc = to_ycbcr(rgb.astype(np.float64))
    y_in = np.clip(np.round(ycc[..., :1]), 0, 255).astype(np.uint8)
    y_out = run(y_in)
    if a.shape[-1] == 1:
        gray = (y_out[..., 0] - _YCBCR_OFFSET[0]) / _YCBCR[0].sum()
        return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]
    chroma = bicubic_upscale(ycc[..., 1:], s)
    return np.clip(np.round(from_ycbcr(np.concatenate([y_out, chroma], axis=-1))), 0, 255).astype(np.uint8)
