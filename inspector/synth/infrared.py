"""Infrared frame: active thermography at the IR camera's native resolution, 16-bit counts.

The part is heated (flash, induction or a hot-air line); a crack blocks the heat flow, so heat piles
up at it and it appears **warmer** than its surroundings. The heat spreads by diffusion before the
frame is taken, which blurs the signature over a few IR pixels: a Gaussian whose sigma is the
diffusion length ``thermal_blur_mm`` (0.2-0.4 mm, i.e. 1-2 IR pixels at 0.05 mm/px).

The crack is rendered from the ground-truth polylines mapped into IR pixels through the inverse of
``ir_to_visible`` (never by downsampling the visible mask), as a heat source at least one IR pixel
wide of peak ``ir_delta`` counts (weaker where the crack is thinner), then blurred.

The rest of the frame: a base level of 20000-30000 counts, a smooth heating gradient with a hot
spot, a faint emissivity texture, emissivity patches and reflections (distractors), the lens blur,
temporal noise (NETD) and fixed-pattern noise (column and row offsets, per-pixel gain).

Geometry: IR pixel ``(u, v)`` maps to visible ``H @ (u, v, 1)``; nominally ``x = s u + (s - 1) / 2``
with ``s = ir_downscale`` (pixel centres), perturbed by a fraction of a degree of rotation, ~1% of
scale and a few visible pixels of shift, plus a trace of perspective.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inspector.synth.config import SynthConfig
from inspector.synth.crack import CrackGeometry
from inspector.synth.raster import Patch, add_patch, polylines_coverage, smooth_noise


def ir_homography(
    rng: np.random.Generator, visible_shape: tuple[int, int], ir_shape: tuple[int, int], config: SynthConfig
) -> np.ndarray:
    """A small random misregistration on top of the nominal IR -> visible scaling (3x3 float64)."""
    (h, w), (hi, wi) = visible_shape, ir_shape
    scale = (w / wi) * (1.0 + rng.uniform(-1, 1) * config.ir_scale_jitter)
    theta = np.deg2rad(rng.uniform(-1, 1) * config.ir_rotation_deg)
    shift = rng.uniform(-1, 1, size=2) * config.ir_shift_px
    c, s = np.cos(theta), np.sin(theta)
    to_centre = np.array([[1, 0, -(wi - 1) / 2], [0, 1, -(hi - 1) / 2], [0, 0, 1]], dtype=np.float64)
    similarity = np.array([[scale * c, -scale * s, 0], [scale * s, scale * c, 0], [0, 0, 1]], dtype=np.float64)
    back = np.array([[1, 0, (w - 1) / 2 + shift[0]], [0, 1, (h - 1) / 2 + shift[1]], [0, 0, 1]], dtype=np.float64)
    perspective = np.eye(3)
    perspective[2, :2] = rng.normal(0.0, 2e-6, size=2)  # a trace of tilt between the two cameras
    m = back @ similarity @ perspective @ to_centre
    return np.asarray(np.round(m / m[2, 2], 9))


def map_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.hstack([pts, np.ones((len(pts), 1))]) @ homography.T
    return np.asarray(out[:, :2] / out[:, 2:3], dtype=np.float64)


def bbox_to_visible(homography: np.ndarray, bbox: tuple[float, float, float, float]) -> tuple[float, ...]:
    """An IR-pixel box mapped to the visible image: the box around its four mapped corners."""
    x0, y0, x1, y1 = bbox
    corners = map_points(homography, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    return (*corners.min(axis=0).round(2).tolist(), *corners.max(axis=0).round(2).tolist())


def visible_patch_to_ir(patch: Patch, homography: np.ndarray, ir_shape: tuple[int, int]) -> Patch | None:
    """Resample a visible-pixel patch onto the IR grid (area-averaged, then warped)."""
    x0, y0, x1, y1 = patch.bbox
    to_ir = np.linalg.inv(homography)
    corners = map_points(to_ir, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    u0, v0 = np.floor(corners.min(axis=0)).astype(int) - 1
    u1, v1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, ir_shape[1] - 1), min(v1, ir_shape[0] - 1)
    if u0 > u1 or v0 > v1:
        return None
    factor = max(round(float(np.sqrt(abs(np.linalg.det(homography[:2, :2]))))), 1)
    small = cv2.resize(patch.values, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    fy, fx = patch.values.shape[0] / small.shape[0], patch.values.shape[1] / small.shape[1]
    # IR dst pixel -> visible -> patch pixel -> small-image pixel (pixel centres)
    to_small = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
    to_patch = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float64)
    from_dst = np.array([[1, 0, u0], [0, 1, v0], [0, 0, 1]], dtype=np.float64)
    m = to_small @ to_patch @ homography @ from_dst
    out = cv2.warpPerspective(
        small, m, (u1 - u0 + 1, v1 - v0 + 1), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0.0
    )
    return Patch(int(u0), int(v0), out)


def crack_heat_source(crack: CrackGeometry, homography: np.ndarray, mm_per_px: float) -> Patch | None:
    """The crack's heat source in IR pixels: its polylines through the inverse homography.

    At least one IR pixel wide (the heat source of a sub-pixel crack still covers its IR pixel), peak
    ``ir_delta``, falling to 60% of it where the crack is thinnest.
    """
    to_ir = np.linalg.inv(homography)
    scale = float(np.sqrt(abs(np.linalg.det(homography[:2, :2]))))
    lines = [map_points(to_ir, pts) for pts in crack.polylines]
    half = [np.maximum(w / mm_per_px / scale / 2.0, 0.5) for w in crack.widths_mm]
    peak = crack.max_width_mm
    values = [crack.ir_delta * (0.6 + 0.4 * w / peak) for w in crack.widths_mm]
    return polylines_coverage(lines, half, values)


def render_infrared(
    rng: np.random.Generator,
    ir_shape: tuple[int, int],
    homography: np.ndarray,
    cracks: Sequence[CrackGeometry],
    mm_per_px: float,
    emissivity: Sequence[tuple[Patch, float]],
    config: SynthConfig,
) -> np.ndarray:
    """Render the 16-bit infrared frame.

    Args:
        rng: the infrared's random stream.
        ir_shape: (h, w) of the IR frame.
        homography: IR pixel -> visible pixel.
        cracks: the part's cracks (visible-pixel geometry).
        mm_per_px: visible calibration.
        emissivity: IR-pixel patches (alpha) with their count change: emissivity patches, reflections,
            the IR footprint of oil, ink and stains.
        config: preset (base level, gradient, noise, blur).

    Returns:
        (h, w) uint16 radiometric counts.

    """
    h, w = ir_shape
    n = 16
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1) * 2.0 - 1.0
    angle = rng.uniform(0, 2 * np.pi)
    ramp = x * np.cos(angle) + y * np.sin(angle)
    hx, hy = rng.uniform(-1.2, 1.2, size=2)
    hot = np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * rng.uniform(0.4, 1.0) ** 2))
    amplitude = rng.uniform(*config.ir_gradient_counts)
    coarse = amplitude * (0.5 * ramp + 0.6 * hot)
    signal = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    signal += float(rng.uniform(*config.ir_base_counts))
    signal += float(rng.uniform(5.0, 20.0)) * smooth_noise(rng, ir_shape, 6.0)  # emissivity of the finish

    heat = np.zeros(ir_shape, dtype=np.float32)
    for crack in cracks:
        source = crack_heat_source(crack, homography, mm_per_px)
        if source is not None:
            add_patch(heat, source, 1.0)
    ir_mm_per_px = mm_per_px * float(np.sqrt(abs(np.linalg.det(homography[:2, :2]))))
    sigma = max(float(rng.uniform(*config.thermal_blur_mm)) / ir_mm_per_px, 0.5)
    if cracks:
        signal += cv2.GaussianBlur(heat, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    for patch, counts in emissivity:
        add_patch(signal, patch, counts)
    signal = cv2.GaussianBlur(signal, (0, 0), sigmaX=0.6, borderType=cv2.BORDER_REFLECT)  # IR lens

    fpn = float(rng.uniform(*config.ir_fpn_counts))
    gain = 1.0 + config.ir_gain_sigma * rng.standard_normal(ir_shape, dtype=np.float32)
    signal *= gain
    signal += fpn * rng.standard_normal((1, w), dtype=np.float32)  # column offsets
    signal += 0.5 * fpn * rng.standard_normal((h, 1), dtype=np.float32)  # row offsets
    signal += float(rng.uniform(*config.ir_netd_counts)) * rng.standard_normal(ir_shape, dtype=np.float32)
    return np.asarray(np.clip(np.rint(signal), 0, 65535), dtype=np.uint16)
