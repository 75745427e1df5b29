"""Crack geometry: branching, tapering, wandering polylines, and their exact ground truth.

A fatigue or quench crack grows grain by grain, so its path is a random walk whose heading keeps
a memory (an AR(1) process around a slowly turning mean direction) with occasional kinks. It is
widest near where it started and tapers to both tips; branches leave the trunk at 20-70 degrees,
narrower than the trunk where they start, and taper to their tip.

Ground truth is computed from the very numbers that are rendered: vertices are rounded to 1/1000 px
and widths to 0.1 um *before* rendering, so :meth:`CrackGeometry.truth` describes the image exactly.
Widths run from :data:`MIN_WIDTH_MM` at the tips to the crack's max width, drawn per bin so that every
bin of :data:`WIDTH_BIN_LABELS` is populated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inspector.dataset import CrackTruth
from inspector.synth.config import MAX_WIDTH_MM, MIN_WIDTH_MM, WIDTH_BIN_EDGES_MM, SynthConfig
from inspector.synth.raster import Patch, polylines_coverage

STEP_MM = 0.2
"""Random-walk step: about a grain size, so the path zig-zags at the scale a crack does."""
_BIN_RANGES = tuple(zip((MIN_WIDTH_MM, *WIDTH_BIN_EDGES_MM), (*WIDTH_BIN_EDGES_MM, MAX_WIDTH_MM), strict=True))


@dataclass(frozen=True)
class CrackGeometry:
    """One crack: polylines (trunk first, then branches) in visible pixels, widths in mm per vertex."""

    polylines: tuple[np.ndarray, ...]  # each (N, 2) float64 (x, y)
    widths_mm: tuple[np.ndarray, ...]  # each (N,)
    contrast: float
    ir_delta: float

    @property
    def max_width_mm(self) -> float:
        """Largest width at any vertex."""
        return float(max(w.max() for w in self.widths_mm))

    def truth(self, mm_per_px: float) -> CrackTruth:
        """The ground-truth record: lengths summed over polylines, mean width weighted by length."""
        total, weighted = 0.0, 0.0
        for pts, w in zip(self.polylines, self.widths_mm, strict=True):
            seg = np.hypot(*np.diff(pts, axis=0).T) * mm_per_px
            total += float(seg.sum())
            weighted += float((seg * (w[:-1] + w[1:]) / 2.0).sum())
        return CrackTruth(
            polylines=[[(float(x), float(y)) for x, y in pts] for pts in self.polylines],
            widths_mm=[[float(v) for v in w] for w in self.widths_mm],
            max_width_mm=self.max_width_mm,
            mean_width_mm=weighted / total if total > 0 else self.max_width_mm,
            length_mm=total,
            contrast=self.contrast,
            ir_delta=self.ir_delta,
        )

    def coverage(self, mm_per_px: float) -> Patch | None:
        """Anti-aliased coverage in visible pixels: full width at a vertex = ``widths_mm / mm_per_px``."""
        return polylines_coverage(self.polylines, [w / mm_per_px / 2.0 for w in self.widths_mm])


def draw_max_width(rng: np.random.Generator, config: SynthConfig) -> float:
    """A crack's max width (mm): a bin by the preset's odds, then uniform within the bin."""
    weights = np.asarray(config.width_bin_weights, dtype=np.float64)
    low, high = _BIN_RANGES[int(rng.choice(4, p=weights / weights.sum()))]
    return float(rng.uniform(low, high))


def random_walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step_px: float, wander: float
) -> np.ndarray:
    """A crack-like path: ``steps + 1`` vertices from ``start``, heading with memory and rare kinks."""
    mean = heading + np.cumsum(rng.normal(0.0, wander * 0.15, steps))  # slow turning
    kinks = np.where(rng.random(steps) < 0.03, rng.normal(0.0, 0.5, steps), 0.0)
    mean += np.cumsum(kinks)
    jitter = np.empty(steps)
    value = 0.0
    noise = rng.normal(0.0, wander, steps)
    for k in range(steps):  # AR(1): a zig-zag that keeps a memory of a few steps
        value = 0.6 * value + noise[k]
        jitter[k] = value
    angles = mean + jitter
    lengths = step_px * rng.uniform(0.7, 1.3, steps)
    moves = np.stack([np.cos(angles) * lengths, np.sin(angles) * lengths], axis=1)
    return np.vstack([start[None, :], start[None, :] + np.cumsum(moves, axis=0)])


def taper_profile(rng: np.random.Generator, n: int) -> np.ndarray:
    """Relative width (max 1, ~0 at both tips) along ``n`` vertices: flat-topped, peak off-centre."""
    t = np.linspace(0.0, 1.0, n)
    peak = rng.uniform(0.2, 0.8)
    span = np.where(t < peak, peak, 1.0 - peak)
    shape = 1.0 - np.abs((t - peak) / span) ** rng.uniform(1.3, 3.0)
    wobble = 1.0 + 0.12 * np.interp(t, np.linspace(0, 1, 6), rng.normal(0, 1, 6))
    rough = 1.0 + np.convolve(rng.normal(0.0, 0.12, n + 2), [0.25, 0.5, 0.25], mode="valid")  # ragged edges
    profile = np.clip(shape * wobble * rough, 0.0, None)
    return np.asarray(profile / profile.max(), dtype=np.float64)


def _fit_in_frame(
    lines: list[np.ndarray], shape: tuple[int, int], margin: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shrink (about the centroid) if needed, then move the crack to a random place fully inside."""
    pts = np.vstack(lines)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    room = np.array([shape[1], shape[0]], dtype=np.float64) - 1.0 - 2.0 * margin
    extent = np.maximum(hi - lo, 1e-6)
    factor = min(1.0, float((room / extent).min()))
    centre = (lo + hi) / 2.0
    lines = [(p - centre) * factor for p in lines]
    half = extent * factor / 2.0
    target = np.array([rng.uniform(margin + half[i], margin + half[i] + max(room[i] - 2 * half[i], 0)) for i in (0, 1)])
    return [p + target for p in lines]


def draw_crack(
    rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float, config: SynthConfig
) -> CrackGeometry:
    """One crack placed inside a frame of ``shape`` (H, W) at ``mm_per_px``.

    Args:
        rng: the cracks' random stream.
        shape: (H, W) of the visible frame.
        mm_per_px: visible calibration.
        config: preset (width bins, length range, contrast, wander, branching, IR warming).

    """
    w_max = draw_max_width(rng, config)
    frame_mm = 0.85 * min(shape) * mm_per_px
    lo_mm, hi_mm = config.crack_length_mm
    total_mm = float(np.exp(rng.uniform(np.log(min(lo_mm, frame_mm)), np.log(min(hi_mm, frame_mm)))))
    step_px = max(STEP_MM / mm_per_px, 2.0)
    total_steps = total_mm / mm_per_px / step_px
    branching = rng.random() < config.branch_probability and config.max_branches > 0 and total_steps >= 16
    shares = rng.uniform(0.12, 0.45, int(rng.integers(1, config.max_branches + 1)) if branching else 0)
    steps = max(round(float(total_steps / (1.0 + shares.sum()))), 3)
    trunk = random_walk(rng, np.zeros(2), rng.uniform(0, 2 * np.pi), steps, step_px, config.crack_wander_rad)
    trunk_w = MIN_WIDTH_MM + (w_max - MIN_WIDTH_MM) * taper_profile(rng, len(trunk))
    lines, widths = [trunk], [trunk_w]
    for share in shares:  # total length = trunk * (1 + sum of shares)
        k = int(rng.integers(int(0.15 * steps), int(0.85 * steps) + 1))
        local = np.arctan2(*(trunk[min(k + 1, steps)] - trunk[max(k - 1, 0)])[::-1])
        angle = local + rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 1.2)
        n = max(round(float(steps * share)), 3)
        branch = random_walk(rng, trunk[k], angle, n, step_px, config.crack_wander_rad)
        start_w = MIN_WIDTH_MM + (trunk_w[k] - MIN_WIDTH_MM) * rng.uniform(0.35, 0.8)
        fall = (1.0 - np.linspace(0.0, 1.0, n + 1)) ** rng.uniform(0.6, 1.5)
        lines.append(branch)
        widths.append(MIN_WIDTH_MM + (start_w - MIN_WIDTH_MM) * fall)

    margin = w_max / mm_per_px / 2.0 + 3.0
    lines = _fit_in_frame(lines, shape, margin, rng)
    w_ratio = float(np.clip(w_max / 0.3, 0.2, 1.5))
    return CrackGeometry(
        polylines=tuple(np.round(p, 3) for p in lines),
        widths_mm=tuple(np.round(w, 4) for w in widths),
        contrast=round(float(rng.uniform(*config.crack_contrast)), 4),
        ir_delta=round(float(rng.uniform(*config.crack_ir_delta) * np.sqrt(w_ratio)), 2),
    )
