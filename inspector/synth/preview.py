"""Side-by-side previews of samples (visible | infrared | mask), for people looking at the data.

The infrared frame is warped onto the visible grid through ``ir_to_visible`` (so both show the same
place) and contrast-stretched between its 1st and 99.5th percentiles with the *inferno* colour map.
``docs/img/synth-*.png`` are made with :func:`montage`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inspector.dataset import Sample


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(image)
    out[:24] = (out[:24] * 0.35).astype(np.uint8)
    cv2.putText(out, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def infrared_on_visible(sample: Sample, panel: int) -> np.ndarray:
    """The IR frame resampled onto the visible grid, stretched and colour-mapped, ``panel`` px square (BGR)."""
    h, w = sample.visible.shape[:2]
    ir = cv2.warpPerspective(
        sample.infrared.astype(np.float32),
        sample.meta.homography,
        (w, h),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    lo, hi = np.percentile(ir, [1.0, 99.5])
    grey = np.clip((ir - lo) / max(float(hi - lo), 1.0) * 255.0, 0, 255).astype(np.uint8)
    small = cv2.resize(grey, (panel, panel), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.applyColorMap(small, cv2.COLORMAP_INFERNO), dtype=np.uint8)


def montage_row(sample: Sample, panel: int = 400) -> np.ndarray:
    """One sample as three labelled panels: visible, infrared (on the visible grid), mask (BGR uint8)."""
    vis = sample.visible
    vis = cv2.cvtColor(vis, cv2.COLOR_RGB2BGR) if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
    mask = sample.mask if sample.mask is not None else np.zeros(vis.shape[:2], dtype=bool)
    mask_img = cv2.resize(mask.astype(np.uint8) * 255, (panel, panel), interpolation=cv2.INTER_AREA)
    widths = ", ".join(f"{c.max_width_mm:.2f}" for c in sample.meta.cracks)
    gap = np.full((panel, 6, 3), 255, dtype=np.uint8)
    panels = [
        _label(cv2.resize(vis, (panel, panel), interpolation=cv2.INTER_AREA), f"{sample.meta.preset}: visible 8-bit"),
        gap,
        _label(infrared_on_visible(sample, panel), "infrared 16-bit (x4)"),
        gap,
        _label(
            cv2.cvtColor(mask_img, cv2.COLOR_GRAY2BGR),
            f"mask; max width mm: {widths}" if widths else "mask: clean part (no crack)",
        ),
    ]
    return np.hstack(panels)


def montage(samples: Sequence[Sample], panel: int = 400) -> np.ndarray:
    """Rows of :func:`montage_row`, one per sample, separated by white lines (BGR uint8)."""
    rows = [montage_row(s, panel) for s in samples]
    if not rows:
        raise ValueError("montage needs at least one sample")
    gap = np.full((6, rows[0].shape[1], 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for row in rows:
        parts += [row, gap]
    return np.vstack(parts[:-1])
