"""Metal surface finishes as diffuse reflectance (albedo) maps.

Each finish is what the process leaves on the part, at the scale the camera sees it:

- ``brushed``: abrasive belts or brushes leave long, fine, parallel streaks of varying depth; built
  from anisotropic noise (coarse noise stretched along the lay by an affine warp);
- ``turned``: a lathe tool leaves a helical feed groove, seen as near-concentric arcs of the feed pitch
  (0.08-0.3 mm) around the (far, off-frame) spindle axis, with a scallop profile;
- ``milled``: a face mill leaves overlapping circular arcs of the cutter radius, one per tooth pass,
  shifted by the feed per tooth along the feed direction;
- ``cast``: sand or die casting leaves an isotropic, multi-scale mottling and small pores.

All finishes add a fine isotropic grain (the metal's microstructure). Feature sizes are in
millimetres and converted with the calibration, so a 0.1 mm/px frame sees the same part coarser.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.synth.config import TEXTURE_KINDS, SynthConfig, TextureKind
from inspector.synth.raster import smooth_noise


@dataclass(frozen=True)
class Surface:
    """The generated surface: albedo map plus what the optics need to know about the finish."""

    albedo: np.ndarray  # (H, W) float32 diffuse reflectance, ~0.05-0.9
    kind: TextureKind
    lay_angle: float  # radians: direction of the streaks / grooves (highlights stretch across it)


def streaks(
    rng: np.random.Generator, shape: tuple[int, int], angle: float, length_px: float, width_px: float
) -> np.ndarray:
    """Unit-variance anisotropic noise: streaks ``length_px`` long and ``width_px`` wide at ``angle``.

    A small normal-noise image is mapped onto the frame by one affine warp that stretches it along the
    lay, so the cost does not depend on the streak length.
    """
    h, w = shape
    diag = float(np.hypot(h, w)) + 4.0
    length_px, width_px = max(length_px, 1.0), max(width_px, 0.5)
    n_along, n_across = int(diag / length_px) + 4, int(diag / width_px) + 4
    src = rng.standard_normal((n_across, n_along), dtype=np.float32)
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = np.array(
        [
            [c / length_px, s / length_px, -(c * cx + s * cy) / length_px + n_along / 2.0],
            [-s / width_px, c / width_px, (s * cx - c * cy) / width_px + n_across / 2.0],
        ],
        dtype=np.float64,
    )
    out = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    # linear interpolation of white noise has a variance between 1/4 and 1: renormalise
    return np.asarray(out, dtype=np.float32) / max(float(out.std()), 1e-6)


def _scallop(phase: np.ndarray) -> np.ndarray:
    """Groove profile of a round-nosed tool: parabolic scallops, mean 0, in about [-0.5, 0.5]."""
    frac = phase - np.floor(phase)
    return np.asarray(4.0 * (frac - 0.5) ** 2 - 1.0 / 3.0, dtype=np.float32)


def _feed_marks(phase: np.ndarray, pitch_px: float) -> np.ndarray:
    """Scallops, faded out as the pitch approaches the pixel size (no aliasing moiré)."""
    fade = float(np.clip((pitch_px - 1.8) / 2.5, 0.0, 1.0))
    if fade == 0.0:
        return np.zeros_like(phase, dtype=np.float32)
    return fade * _scallop(phase)


def _centred_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    return (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, :], (np.arange(h, dtype=np.float32) - (h - 1) / 2)[
        :, None
    ]


def _turned(rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float, angle: float) -> np.ndarray:
    pitch_px = rng.uniform(0.1, 0.4) / mm_per_px
    radius_px = rng.uniform(15.0, 120.0) / mm_per_px  # part radius: the arcs' centre is off-frame
    x, y = _centred_grid(shape)
    cx, cy = -np.sin(angle) * radius_px, np.cos(angle) * radius_px  # axis across the lay
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    marks = _feed_marks(r / pitch_px, pitch_px)
    tear = streaks(rng, shape, angle, 3.0 / mm_per_px, 0.6 * pitch_px)  # tool chatter along the groove
    return 2.2 * marks * (1.0 + 0.3 * tear) + 0.35 * tear


def _milled(rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float, angle: float) -> np.ndarray:
    feed_px = rng.uniform(0.1, 0.4) / mm_per_px
    cutter_px = rng.uniform(8.0, 30.0) / mm_per_px
    x, y = _centred_grid(shape)
    c, s = np.cos(angle), np.sin(angle)
    along = x * c + y * s
    across = -x * s + y * c + rng.uniform(-0.5, 0.5) * cutter_px
    chord = np.sqrt(np.maximum(cutter_px**2 - across**2, 0.0))
    marks = _feed_marks((along - chord) / feed_px, feed_px)
    return 2.2 * marks + 0.35 * streaks(rng, shape, angle + np.pi / 2, 2.0 / mm_per_px, 1.0)


def _brushed(rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float, angle: float) -> np.ndarray:
    fine = streaks(rng, shape, angle, rng.uniform(4.0, 15.0) / mm_per_px, 0.03 / mm_per_px)
    medium = streaks(rng, shape, angle, rng.uniform(8.0, 30.0) / mm_per_px, 0.15 / mm_per_px)
    deep = streaks(rng, shape, angle + rng.normal(0, 0.02), 40.0 / mm_per_px, 0.6 / mm_per_px)
    return 0.6 * fine + 0.6 * medium + 0.5 * deep


def _cast(rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float) -> np.ndarray:
    field = (
        0.6 * smooth_noise(rng, shape, 0.25 / mm_per_px)
        + 0.6 * smooth_noise(rng, shape, 1.0 / mm_per_px)
        + 0.5 * smooth_noise(rng, shape, 5.0 / mm_per_px)
    )
    pores = np.zeros(shape, dtype=np.uint8)
    h, w = shape
    for _ in range(int(rng.integers(10, 80) * h * w / 1024**2 * (0.05 / mm_per_px) ** 2) + 1):
        radius = max(1, round(rng.uniform(0.03, 0.12) / mm_per_px))
        cv2.circle(pores, (int(rng.integers(0, w)), int(rng.integers(0, h))), radius, 255, -1, cv2.LINE_AA)
    return field - 2.5 * pores.astype(np.float32) / 255.0


def surface(rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float, config: SynthConfig) -> Surface:
    """Draw a finish and its albedo map for one part.

    Args:
        rng: the texture's random stream.
        shape: (H, W) of the visible frame.
        mm_per_px: visible calibration.
        config: the preset (texture odds, strength, mean albedo).

    """
    kinds = [k for k in TEXTURE_KINDS if config.texture_weights.get(k, 0.0) > 0]
    weights = np.array([config.texture_weights[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    angle = float(rng.uniform(0, np.pi))
    if kind == "turned":
        pattern = _turned(rng, shape, mm_per_px, angle)
    elif kind == "milled":
        pattern = _milled(rng, shape, mm_per_px, angle)
    elif kind == "brushed":
        pattern = _brushed(rng, shape, mm_per_px, angle)
    else:
        pattern = _cast(rng, shape, mm_per_px)
    grain = smooth_noise(rng, shape, max(0.04 / mm_per_px, 1.2))
    mottle = smooth_noise(rng, shape, 8.0 / mm_per_px)
    strength = rng.uniform(*config.texture_strength)
    mean = rng.uniform(*config.albedo)
    albedo = mean * (1.0 + strength * (pattern + 0.35 * grain) + 0.05 * mottle)
    return Surface(albedo=np.clip(albedo, 0.03, 0.95).astype(np.float32), kind=kind, lay_angle=angle)
