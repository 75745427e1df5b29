"""Exact test shapes: capsules (round-capped bands) and tapered polylines, rasterised analytically."""

from __future__ import annotations

import numpy as np


def segment_distance(shape: tuple[int, int], p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Distance of every pixel centre to the segment p0-p1 (points as (x, y))."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    d = b - a
    t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
    return np.asarray(np.hypot(xx - (a[0] + t * d[0]), yy - (a[1] + t * d[1])))


def capsule(shape: tuple[int, int], p0: tuple[float, float], p1: tuple[float, float], width: float) -> np.ndarray:
    """Pixels whose centre lies within width/2 of the segment: the coverage >= 0.5 rule."""
    return segment_distance(shape, p0, p1) <= width / 2


def straight_crack(
    shape: tuple[int, int], centre: tuple[float, float], angle: float, length: float, width: float
) -> np.ndarray:
    """A capsule of the given length and width through ``centre`` at ``angle`` (radians)."""
    c = np.asarray(centre, float)
    d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    return capsule(shape, tuple(c - d), tuple(c + d), width)
