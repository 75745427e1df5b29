from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.synth.raster import Patch, modulate, polylines_coverage, smooth_noise


def _distances(patch: Patch, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    h, w = patch.values.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    px, py = xs + patch.x0, ys + patch.y0
    d = p1 - p0
    t = np.clip(((px - p0[0]) * d[0] + (py - p0[1]) * d[1]) / (d @ d), 0, 1)
    return np.asarray(np.hypot(px - p0[0] - t * d[0], py - p0[1] - t * d[1]), dtype=np.float64)


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(10, 11),
    y=st.floats(10, 11),
    angle=st.floats(0, np.pi),
    half=st.floats(0.5, 6.0),
)
def test_mask_is_exactly_the_band_and_coverage_integrates_to_the_width(
    x: float, y: float, angle: float, half: float
) -> None:
    length = 60.0
    p0 = np.array([x, y])
    p1 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
    patch = polylines_coverage([np.stack([p0, p1])], [np.array([half, half])])
    assert patch is not None
    dist = _distances(patch, p0, p1)
    mask = patch.values >= 0.5
    assert (dist[mask] <= half + 1e-4).all()  # mask pixels lie within the half-width
    assert mask[dist < half - 1e-3].all()  # and every pixel centre inside the band is in the mask
    expected = 2 * half * length + np.pi * half**2  # band plus the two round caps
    assert abs(patch.values.sum() - expected) / expected < 0.04


@settings(max_examples=25, deadline=None)
@given(half=st.floats(0.05, 0.45), frac=st.floats(0, 1))
def test_subpixel_lines_keep_their_width_as_integrated_darkness(half: float, frac: float) -> None:
    p0, p1 = np.array([5.0, 5.0 + frac]), np.array([85.0, 5.0 + frac])  # horizontal, any sub-pixel offset
    patch = polylines_coverage([np.stack([p0, p1])], [np.array([half, half])])
    assert patch is not None
    column = patch.values[:, patch.values.shape[1] // 2]
    assert abs(column.sum() - 2 * half) < 1e-4


def test_tapered_polyline_and_values() -> None:
    pts = np.array([[10.0, 10.0], [40.0, 12.0], [70.0, 30.0]])
    patch = polylines_coverage([pts], [np.array([0.5, 3.0, 0.5])], values=[np.array([1.0, 0.5, 1.0])])
    assert patch is not None
    assert patch.values.max() <= 1.0 + 1e-6
    # a wide point in the middle is darker (value 0.5 there) but covers more than the thin ends
    mid = patch.values[12 - patch.y0 - 2 : 12 - patch.y0 + 3, 40 - patch.x0]
    assert (mid > 0.4).sum() >= 4
    assert polylines_coverage([], []) is None


def test_dots_and_clipping() -> None:
    dot = polylines_coverage([np.array([[3.0, 4.0]])], [np.array([2.0])])
    assert dot is not None and abs(dot.values.sum() - np.pi * 4) / (np.pi * 4) < 0.1
    image = np.ones((8, 8), dtype=np.float32)
    modulate(image, Patch(-2, -2, np.ones((4, 4), dtype=np.float32)), 0.25)
    assert image[:2, :2].max() == 0.25 and image[2:, :].min() == 1.0
    modulate(image, Patch(100, 100, np.ones((4, 4), dtype=np.float32)), 0.0)  # outside: no-op
    assert image[2:, :].min() == 1.0


def test_smooth_noise_is_normalised_and_seeded() -> None:
    a = smooth_noise(np.random.default_rng(1), (128, 96), 8.0)
    b = smooth_noise(np.random.default_rng(1), (128, 96), 8.0)
    assert a.shape == (128, 96) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert abs(float(a.mean())) < 0.2 and 0.7 < float(a.std()) < 1.3
