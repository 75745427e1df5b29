"""Sub-pixel rasterisation of tapered polylines, smooth random fields, and local image edits.

Pixel centres are at integer coordinates (x to the right, y down), as in :mod:`inspector.dataset`.

A tapered polyline is the union of its segments' "capsules": the points within the local half-width
``h`` of a segment, ``h`` varying linearly between the segment's ends. A pixel's coverage is the
exact overlap of the pixel's unit footprint, taken across the line, with the band ``[-h, h]``::

    coverage(d) = clip(min(d + 0.5, h) - max(d - 0.5, -h), 0, 1)

with ``d`` the distance from the pixel centre to the segment. For ``h >= 0.5`` that is
``clip(h - d + 0.5, 0, 1)``; for thinner lines it keeps the integral across the line equal to the
full width ``2h`` (a 0.4 px line darkens one pixel by 40%). ``coverage >= 0.5`` is then exactly
``d <= h`` for ``h >= 0.25``: the pixels whose centre lies inside the band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MAX_SEGMENT_PX = 6.0
"""Long segments are cut into pieces no longer than this, so each piece's patch stays small."""


@dataclass(frozen=True)
class Patch:
    """A small float32 array placed with its top-left pixel at ``(x0, y0)`` of a larger image."""

    x0: int
    y0: int
    values: np.ndarray  # (h, w) float32

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1), inclusive pixel coordinates."""
        h, w = self.values.shape[:2]
        return float(self.x0), float(self.y0), float(self.x0 + w - 1), float(self.y0 + h - 1)

    def clip_to(self, shape: tuple[int, ...]) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """The image slices this patch overlaps and the matching part of ``values``; None if outside."""
        h, w = self.values.shape[:2]
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x0 + w, shape[1]), min(self.y0 + h, shape[0])
        if x0 >= x1 or y0 >= y1:
            return None
        part = self.values[y0 - self.y0 : y1 - self.y0, x0 - self.x0 : x1 - self.x0]
        return (slice(y0, y1), slice(x0, x1)), part


def _subdivide(
    points: np.ndarray, half_widths: np.ndarray, values: np.ndarray, max_len: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert vertices so that no segment is longer than ``max_len`` (widths, values interpolated)."""
    lengths = np.hypot(*np.diff(points, axis=0).T)
    pieces = np.maximum(np.ceil(lengths / max_len).astype(int), 1)
    if (pieces == 1).all():
        return points, half_widths, values
    t = np.concatenate([np.arange(n) / n + i for i, n in enumerate(pieces)] + [np.array([len(points) - 1.0])])
    knots = np.arange(len(points), dtype=np.float64)
    out = np.stack([np.interp(t, knots, points[:, 0]), np.interp(t, knots, points[:, 1])], axis=1)
    return out, np.interp(t, knots, half_widths), np.interp(t, knots, values)


def polylines_coverage(
    lines: Sequence[np.ndarray],
    half_widths: Sequence[np.ndarray],
    values: Sequence[np.ndarray] | None = None,
) -> Patch | None:
    """Anti-aliased coverage of the union of tapered polylines, within their bounding box only.

    Args:
        lines: polylines, each (N, 2) float (x, y) pixel coordinates, N >= 1.
        half_widths: (N,) half-width in pixels at each vertex.
        values: optional (N,) value at each vertex (e.g. contrast); the result is then the maximum over
            segments of ``coverage * value`` (value interpolated along the segment).

    Returns:
        The coverage patch (float32 in [0, max value]), or None when there is nothing to draw.

    """
    p0s, p1s, h0s, h1s, v0s, v1s = [], [], [], [], [], []
    for k, line in enumerate(lines):
        pts = np.asarray(line, dtype=np.float64).reshape(-1, 2)
        hw = np.asarray(half_widths[k], dtype=np.float64)
        val = np.ones(len(pts)) if values is None else np.asarray(values[k], dtype=np.float64)
        if len(pts) == 1:  # a dot: a zero-length segment
            pts, hw, val = np.repeat(pts, 2, axis=0), np.repeat(hw, 2), np.repeat(val, 2)
        pts, hw, val = _subdivide(pts, hw, val, MAX_SEGMENT_PX)
        p0s.append(pts[:-1])
        p1s.append(pts[1:])
        h0s.append(hw[:-1])
        h1s.append(hw[1:])
        v0s.append(val[:-1])
        v1s.append(val[1:])
    if not p0s:
        return None
    p0, p1 = np.concatenate(p0s), np.concatenate(p1s)
    h0, h1 = np.concatenate(h0s), np.concatenate(h1s)
    v0, v1 = np.concatenate(v0s), np.concatenate(v1s)

    reach = np.maximum(h0, h1) + 1.0
    lo = np.floor(np.minimum(p0, p1) - reach[:, None]).astype(np.int64)  # (S, 2) x, y
    hi = np.ceil(np.maximum(p0, p1) + reach[:, None]).astype(np.int64)
    kx, ky = int((hi[:, 0] - lo[:, 0]).max()) + 1, int((hi[:, 1] - lo[:, 1]).max()) + 1
    xs = lo[:, 0:1] + np.arange(kx)  # (S, kx)
    ys = lo[:, 1:2] + np.arange(ky)  # (S, ky)

    d = (p1 - p0).astype(np.float32)
    inv_len2 = 1.0 / np.maximum((d * d).sum(axis=1), 1e-12)
    rx = (xs - p0[:, 0:1]).astype(np.float32)[:, None, :]  # (S, 1, kx)
    ry = (ys - p0[:, 1:2]).astype(np.float32)[:, :, None]  # (S, ky, 1)
    dx, dy = d[:, 0, None, None], d[:, 1, None, None]
    t = np.clip((rx * dx + ry * dy) * inv_len2[:, None, None].astype(np.float32), 0.0, 1.0)  # (S, ky, kx)
    dist = np.sqrt((rx - t * dx) ** 2 + (ry - t * dy) ** 2)
    h = (h0[:, None, None] + t * (h1 - h0)[:, None, None]).astype(np.float32)
    cov = np.clip(np.minimum(dist + 0.5, h) - np.maximum(dist - 0.5, -h), 0.0, 1.0)
    if values is not None:
        cov *= (v0[:, None, None] + t * (v1 - v0)[:, None, None]).astype(np.float32)

    ox, oy = int(lo[:, 0].min()), int(lo[:, 1].min())
    width = int(lo[:, 0].max()) + kx - ox
    height = int(lo[:, 1].max()) + ky - oy
    canvas = np.zeros(height * width, dtype=np.float32)
    flat = (ys - oy)[:, :, None] * width + (xs - ox)[:, None, :]
    keep = cov > 0
    np.maximum.at(canvas, flat[keep], cov[keep])
    return Patch(ox, oy, canvas.reshape(height, width))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field with features about ``cell_px`` pixels across.

    Normal noise on a coarse grid, interpolated bicubically: cheap at any size.
    """
    h, w = shape
    gh, gw = max(int(np.ceil(h / cell_px)) + 3, 4), max(int(np.ceil(w / cell_px)) + 3, 4)
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    big = cv2.resize(coarse, None, fx=cell_px, fy=cell_px, interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(big.shape[0] - h, 0) + 1))
    ox = int(rng.integers(0, max(big.shape[1] - w, 0) + 1))
    field: np.ndarray = np.array(big[oy : oy + h, ox : ox + w], dtype=np.float32)
    probe = field[:: max(h // 64, 1), :: max(w // 64, 1)]  # statistics from a subsample: same result, faster
    mean, std = float(probe.mean()), float(probe.std())
    field -= mean
    field *= 1.0 / (std if std > 1e-6 else 1.0)
    return field


def blob(rng: np.random.Generator, rx: float, ry: float, angle: float, roughness: float = 0.5) -> np.ndarray:
    """An irregular soft-edged blob (alpha in [0, 1]) of about ``2 rx`` by ``2 ry`` pixels, rotated.

    An ellipse whose edge is displaced by smooth noise, with an edge softness of a few pixels.
    """
    r = max(rx, ry)
    size = int(np.ceil(2.6 * r)) + 5
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - c
    ca, sa = np.cos(angle), np.sin(angle)
    u = (xx * ca + yy * sa) / max(rx, 0.5)
    v = (-xx * sa + yy * ca) / max(ry, 0.5)
    radius = np.sqrt(u * u + v * v)
    wobble = smooth_noise(rng, (size, size), max(size / 5.0, 2.0))
    edge = 1.0 + roughness * 0.35 * wobble
    soft = max(0.08, 2.0 / r)
    return np.asarray(np.clip((edge - radius) / soft + 0.5, 0.0, 1.0), dtype=np.float32)


def modulate(image: np.ndarray, patch: Patch, factor: float | np.ndarray) -> None:
    """In place: ``image *= 1 + alpha * (factor - 1)`` over the patch (``alpha`` = patch values).

    ``factor`` < 1 darkens (crack, stain, ink), > 1 brightens (bright scratch, dust); for an RGB image
    it may be a length-3 array (a colour).
    """
    clipped = patch.clip_to(image.shape)
    if clipped is None:
        return
    (sy, sx), alpha = clipped
    f = np.asarray(factor, dtype=np.float32)
    region = image[sy, sx]
    if image.ndim == 3:
        region *= 1.0 + alpha[..., None] * (f.reshape(1, 1, -1) - 1.0)
    else:
        grey = luminance(f) if f.size == 3 else float(f)
        region *= 1.0 + alpha * (grey - 1.0)


def add_patch(image: np.ndarray, patch: Patch, amount: float) -> None:
    """In place: ``image += amount * patch`` where they overlap."""
    clipped = patch.clip_to(image.shape)
    if clipped is not None:
        (sy, sx), values = clipped
        image[sy, sx] += amount * values


def luminance(rgb: np.ndarray) -> float:
    """Grey value of an RGB colour (Rec. 601 weights)."""
    return float(np.dot(np.asarray(rgb, dtype=np.float64), (0.299, 0.587, 0.114)))
