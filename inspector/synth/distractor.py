"""Things that look like defects but are not, recorded as :class:`~inspector.dataset.Distractor`.

Visible only (they do not disturb the heat flow, so the IR camera does not see them):

- ``scratch``: a plastic groove from handling: a long, straight or gently curved line of constant
  width, bright (it catches the light) or dark. A *crack-like* scratch (the ``hard`` preset) is dark,
  jagged, tapered and as thin and faint as a crack: only the IR tells it apart;
- ``machining_mark``: chatter or tool-entry marks, a short family of parallel arcs;
- ``dust``: a cluster of bright or dark specks, sometimes a lint fibre.

Both cameras (they change the emissivity, so the IR sees them too, but not as a heat line):
``stain`` (rust, water marks; sometimes), ``oil`` (higher emissivity than bare metal: warm in IR),
``printed_mark`` (dot-matrix codes and marker strokes; ink is nearly black in LWIR: warm).

Infrared only: ``ir_emissivity`` (an invisible coating or residue patch, warm or cold) and
``ir_reflection`` (metal mirrors warm surroundings: a soft warm blob, or a thin warm streak that
looks like a crack in the IR alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inspector.dataset import Distractor, DistractorKind
from inspector.synth.config import DISTRACTOR_KINDS, SynthConfig
from inspector.synth.crack import random_walk, taper_profile
from inspector.synth.infrared import bbox_to_visible, visible_patch_to_ir
from inspector.synth.raster import Patch, blob, polylines_coverage

_INKS = (np.array([0.22, 0.22, 0.25]), np.array([0.3, 0.38, 0.75]), np.array([0.75, 0.3, 0.28]))


@dataclass
class DistractorLayers:
    """What the distractors of one part do to each image, and their ground-truth records."""

    truths: list[Distractor] = field(default_factory=list)
    visible: list[tuple[Patch, np.ndarray]] = field(default_factory=list)  # alpha, RGB reflectance factor
    infrared: list[tuple[Patch, float]] = field(default_factory=list)  # alpha in IR pixels, counts


@dataclass(frozen=True)
class _Frame:
    rng: np.random.Generator
    shape: tuple[int, int]
    mm: float  # mm per visible pixel
    config: SynthConfig
    homography: np.ndarray
    ir_shape: tuple[int, int]

    def px(self, low_mm: float, high_mm: float) -> float:
        """A uniform length between two millimetre values, in visible pixels."""
        return float(self.rng.uniform(low_mm, high_mm)) / self.mm

    def point(self) -> np.ndarray:
        """A uniform point in the visible frame."""
        return self.rng.uniform((0, 0), (self.shape[1] - 1, self.shape[0] - 1))


def _tight_bbox(
    patch: Patch, shape: tuple[int, int], threshold: float = 0.05
) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(np.abs(patch.values) > threshold)
    if len(xs) == 0:
        return None
    x0, y0 = max(patch.x0 + int(xs.min()), 0), max(patch.y0 + int(ys.min()), 0)
    x1, y1 = min(patch.x0 + int(xs.max()), shape[1] - 1), min(patch.y0 + int(ys.max()), shape[0] - 1)
    if x0 > x1 or y0 > y1:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def _add_visible(
    f: _Frame, out: DistractorLayers, kind: DistractorKind, patch: Patch | None, factor: np.ndarray, ir_counts: float
) -> None:
    """Record a visible-pixel distractor; with ``ir_counts`` != 0 the IR sees its footprint too."""
    bbox = None if patch is None else _tight_bbox(patch, f.shape)
    if patch is None or bbox is None:
        return
    out.visible.append((patch, np.broadcast_to(np.asarray(factor, dtype=np.float32), (3,)).copy()))
    modality: Literal["visible", "both"] = "visible"
    if ir_counts:
        ir_patch = visible_patch_to_ir(patch, f.homography, f.ir_shape)
        if ir_patch is not None:
            out.infrared.append((ir_patch, ir_counts))
            modality = "both"
    out.truths.append(Distractor(kind=kind, bbox=bbox, modality=modality))


def _add_infrared(f: _Frame, out: DistractorLayers, kind: DistractorKind, patch: Patch | None, counts: float) -> None:
    """Record an IR-only distractor; its box is mapped to visible pixels and clipped to the frame."""
    bbox = None if patch is None else _tight_bbox(patch, f.ir_shape)
    if patch is None or bbox is None:
        return
    x0, y0, x1, y1 = bbox_to_visible(f.homography, bbox)
    h, w = f.shape
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, w - 1.0), min(y1, h - 1.0)
    if x0 > x1 or y0 > y1:
        return
    out.infrared.append((patch, counts))
    out.truths.append(Distractor(kind=kind, bbox=(x0, y0, x1, y1), modality="infrared"))


def _arc(centre: np.ndarray, length_px: float, heading: float, radius_px: float) -> np.ndarray:
    s = np.linspace(-length_px / 2, length_px / 2, max(int(length_px / 6.0), 2) + 1)
    angles = heading + s / radius_px
    steps = np.diff(s)[:, None] * np.stack([np.cos(angles[:-1]), np.sin(angles[:-1])], axis=1)
    pts = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return np.asarray(pts - pts.mean(axis=0) + centre, dtype=np.float64)


def _scratch(f: _Frame, out: DistractorLayers) -> None:
    rng, c = f.rng, f.config
    if rng.random() < c.crack_like_scratch:  # as thin, dark, tapered and jagged as a crack
        step = max(0.2 / f.mm, 2.0)
        length = float(np.exp(rng.uniform(np.log(1.5), np.log(25.0)))) / f.mm
        pts = random_walk(rng, f.point(), rng.uniform(0, 2 * np.pi), max(int(length / step), 3), step, 0.2)
        w_mm = 0.05 + (rng.uniform(0.06, 0.4) - 0.05) * taper_profile(rng, len(pts))
        factor = 1.0 - rng.uniform(*c.crack_contrast)
    else:
        radius = rng.choice([1e6, rng.uniform(20.0, 200.0) / f.mm])
        pts = _arc(f.point(), f.px(3.0, 50.0), rng.uniform(0, 2 * np.pi), radius)
        w_mm = np.full(len(pts), rng.uniform(0.02, 0.15)) * rng.uniform(0.9, 1.1, len(pts))
        amount = rng.uniform(*c.scratch_contrast)
        factor = 1.0 + 1.5 * amount if rng.random() < 0.5 else 1.0 - amount
    _add_visible(f, out, "scratch", polylines_coverage([pts], [w_mm / f.mm / 2]), np.full(3, factor), 0.0)


def _machining_mark(f: _Frame, out: DistractorLayers) -> None:
    rng = f.rng
    n, spacing = int(rng.integers(3, 9)), f.px(0.3, 1.0)
    heading, radius, length = rng.uniform(0, 2 * np.pi), f.px(5.0, 30.0), f.px(2.0, 8.0)
    centre, normal = f.point(), np.array([-np.sin(heading), np.cos(heading)])
    lines = [_arc(centre + (k - n / 2) * spacing * normal, length, heading, radius) for k in range(n)]
    hw = rng.uniform(0.05, 0.2) / f.mm / 2
    amount = 0.5 * rng.uniform(*f.config.scratch_contrast)
    factor = 1.0 + amount if rng.random() < 0.5 else 1.0 - amount
    patch = polylines_coverage(lines, [np.full(len(p), hw) for p in lines])
    _add_visible(f, out, "machining_mark", patch, np.full(3, factor), 0.0)


def _blob_patch(f: _Frame, low_mm: float, high_mm: float, strength: float = 1.0) -> Patch:
    rx = f.px(low_mm, high_mm)
    alpha = blob(f.rng, rx, rx * f.rng.uniform(0.4, 1.0), f.rng.uniform(0, np.pi), roughness=0.8) * strength
    cx, cy = f.point()
    return Patch(int(cx) - alpha.shape[1] // 2, int(cy) - alpha.shape[0] // 2, alpha)


def _ir_amount(f: _Frame) -> float:
    return float(f.rng.uniform(*f.config.ir_distractor_counts))


def _stain(f: _Frame, out: DistractorLayers) -> None:
    depth = f.rng.uniform(0.05, 0.3)
    factor = 1.0 - depth * np.array([0.6, 0.9, 1.25])  # rust and water marks: brownish
    ir = 0.5 * _ir_amount(f) * f.rng.choice([-1.0, 1.0]) if f.rng.random() < 0.4 else 0.0
    _add_visible(f, out, "stain", _blob_patch(f, 1.0, 8.0, f.rng.uniform(0.5, 1.0)), factor, ir)


def _oil(f: _Frame, out: DistractorLayers) -> None:
    depth = f.rng.uniform(0.05, 0.22)
    factor = 1.0 - depth * np.array([1.05, 1.0, 0.85])
    _add_visible(f, out, "oil", _blob_patch(f, 2.0, 10.0, f.rng.uniform(0.6, 1.0)), factor, _ir_amount(f))


def _dust(f: _Frame, out: DistractorLayers) -> None:
    rng = f.rng
    centre, spread = f.point(), f.px(0.5, 4.0)
    n = int(rng.integers(5, 40))
    dots = [centre + rng.normal(0, spread / 2, 2) for _ in range(n)]
    lines, widths = [d[None, :] for d in dots], [np.array([f.px(0.015, 0.12)]) for _ in dots]
    if rng.random() < 0.3:  # a lint fibre
        fibre = random_walk(rng, centre, rng.uniform(0, 2 * np.pi), int(rng.integers(4, 15)), 0.2 / f.mm, 0.3)
        lines.append(fibre)
        widths.append(np.full(len(fibre), 0.012 / f.mm))
    factor = rng.uniform(1.3, 2.0) if rng.random() < 0.5 else rng.uniform(0.4, 0.8)
    _add_visible(f, out, "dust", polylines_coverage(lines, widths), np.full(3, factor), 0.0)


def _printed_mark(f: _Frame, out: DistractorLayers) -> None:
    rng = f.rng
    ink = _INKS[int(rng.integers(len(_INKS)))] * rng.uniform(0.5, 1.0)
    origin, heading = f.point(), rng.uniform(0, 2 * np.pi)
    along, across = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
    if rng.random() < 0.6:  # dot-matrix code: 5x7 dots per character
        dot, chars = f.px(0.15, 0.35), int(rng.integers(4, 11))
        pitch = 1.4 * dot
        grid = rng.random((7, chars * 6)) < 0.45
        grid[:, 5::6] = False  # gap between characters
        rows, cols = np.nonzero(grid)
        lines = [(origin + c * pitch * along + r * pitch * across)[None, :] for r, c in zip(rows, cols, strict=True)]
        widths = [np.array([dot / 2])] * len(lines)
    else:  # a marker stroke
        length = f.px(3.0, 20.0)
        t = np.linspace(0, 1, 24)
        wave = f.px(0.2, 1.5) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6.3))
        lines = [origin + (t * length)[:, None] * along + wave[:, None] * across]
        widths = [np.full(24, f.px(0.4, 1.2) / 2)]
    _add_visible(f, out, "printed_mark", polylines_coverage(lines, widths), ink, _ir_amount(f))


def _ir_emissivity(f: _Frame, out: DistractorLayers) -> None:
    rng = f.rng
    r = rng.uniform(2.0, 15.0)
    alpha = blob(rng, r, r * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi), roughness=0.8)
    u, v = rng.uniform(0, f.ir_shape[1]), rng.uniform(0, f.ir_shape[0])
    patch = Patch(int(u) - alpha.shape[1] // 2, int(v) - alpha.shape[0] // 2, alpha)
    _add_infrared(f, out, "ir_emissivity", patch, _ir_amount(f) * rng.choice([-1.0, 1.0]))


def _ir_reflection(f: _Frame, out: DistractorLayers) -> None:
    rng = f.rng
    start = rng.uniform((0, 0), (f.ir_shape[1] - 1, f.ir_shape[0] - 1))
    if rng.random() < f.config.ir_streak_probability:  # a thin warm line: crack-like in the IR alone
        pts = random_walk(rng, start, rng.uniform(0, 2 * np.pi), int(rng.integers(4, 30)), 1.5, 0.1)
        patch = polylines_coverage([pts], [np.full(len(pts), rng.uniform(0.5, 0.8))])
    else:
        r = rng.uniform(4.0, 25.0)
        alpha = blob(rng, r, r * rng.uniform(0.15, 0.6), rng.uniform(0, np.pi), roughness=0.2)
        patch = Patch(int(start[0]) - alpha.shape[1] // 2, int(start[1]) - alpha.shape[0] // 2, alpha)
    _add_infrared(f, out, "ir_reflection", patch, _ir_amount(f))


_MAKERS: dict[DistractorKind, Callable[[_Frame, DistractorLayers], None]] = {
    "scratch": _scratch,
    "machining_mark": _machining_mark,
    "stain": _stain,
    "oil": _oil,
    "dust": _dust,
    "printed_mark": _printed_mark,
    "ir_emissivity": _ir_emissivity,
    "ir_reflection": _ir_reflection,
}


def draw_distractors(
    rng: np.random.Generator,
    shape: tuple[int, int],
    mm_per_px: float,
    config: SynthConfig,
    homography: np.ndarray,
    ir_shape: tuple[int, int],
) -> DistractorLayers:
    """Draw the distractors of one part (count and kinds from the preset).

    Args:
        rng: the distractors' random stream.
        shape: (H, W) of the visible frame.
        mm_per_px: visible calibration.
        config: preset (count range, kind odds, contrasts, IR amplitudes).
        homography: IR pixel -> visible pixel, to place IR footprints and map IR boxes.
        ir_shape: (h, w) of the IR frame.

    """
    frame = _Frame(rng, shape, mm_per_px, config, homography, ir_shape)
    kinds = [k for k in DISTRACTOR_KINDS if config.distractor_weights.get(k, 0.0) > 0]
    out = DistractorLayers()
    if not kinds:
        return out
    weights = np.array([config.distractor_weights[k] for k in kinds], dtype=np.float64)
    count = int(rng.integers(config.distractor_count[0], config.distractor_count[1] + 1))
    for index in rng.choice(len(kinds), size=count, p=weights / weights.sum()):
        _MAKERS[kinds[int(index)]](frame, out)
    return out
