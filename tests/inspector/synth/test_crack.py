from __future__ import annotations

import numpy as np
import pytest

from inspector.synth import get_preset, width_bin
from inspector.synth.config import MAX_WIDTH_MM, MIN_WIDTH_MM
from inspector.synth.crack import CrackGeometry, draw_crack, draw_max_width


@pytest.fixture(scope="module")
def cracks() -> list[CrackGeometry]:
    rng = np.random.default_rng(5)
    return [draw_crack(rng, (1024, 1024), 0.05, get_preset("default")) for _ in range(300)]


def test_widths_lengths_and_bins_cover_the_required_ranges(cracks: list[CrackGeometry]) -> None:
    truths = [c.truth(0.05) for c in cracks]
    widths = np.array([t.max_width_mm for t in truths])
    lengths = np.array([t.length_mm for t in truths])
    assert all(MIN_WIDTH_MM <= w <= MAX_WIDTH_MM for t in truths for p in t.widths_mm for w in p)
    counts = np.bincount([width_bin(w) for w in widths], minlength=4)
    assert counts.min() >= 45, counts  # ~75 each with equal odds
    assert 1.2 <= lengths.min() < 2.5 and 20.0 < lengths.max() <= 33.0
    assert np.median(lengths) < 12.0  # log-uniform: many short cracks
    assert any(len(t.polylines) > 1 for t in truths) and any(len(t.polylines) == 1 for t in truths)


def test_truth_is_computed_from_the_rendered_geometry(cracks: list[CrackGeometry]) -> None:
    for crack in cracks[:50]:
        t = crack.truth(0.05)
        seg = [np.hypot(*np.diff(np.array(p), axis=0).T) for p in t.polylines]
        assert t.length_mm == pytest.approx(sum(s.sum() for s in seg) * 0.05)
        mid = [(np.array(w[:-1]) + np.array(w[1:])) / 2 for w in t.widths_mm]
        weighted = sum((s * m).sum() for s, m in zip(seg, mid, strict=True)) * 0.05
        assert t.mean_width_mm == pytest.approx(weighted / t.length_mm)
        assert t.max_width_mm == max(max(w) for w in t.widths_mm) >= t.mean_width_mm
        trunk = np.array(t.polylines[0])
        for branch in t.polylines[1:]:  # branches start exactly on a trunk vertex
            assert (np.abs(trunk - np.array(branch[0])).sum(axis=1) == 0).any()


def test_cracks_lie_inside_the_frame_with_their_width() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        crack = draw_crack(rng, (256, 256), 0.05, get_preset("hard"))
        x0, y0, x1, y1 = crack.truth(0.05).bbox
        margin = crack.max_width_mm / 0.05 / 2
        assert x0 - margin >= 0 and y0 - margin >= 0 and x1 + margin <= 255 and y1 + margin <= 255


def test_width_bin_odds_follow_the_preset() -> None:
    rng = np.random.default_rng(0)
    only_wide = get_preset("default", width_bin_weights=(0, 0, 0, 1))
    assert all(draw_max_width(rng, only_wide) >= 0.3 for _ in range(50))
    only_thin = get_preset("default", width_bin_weights=(1, 0, 0, 0))
    assert all(draw_max_width(rng, only_thin) < 0.1 for _ in range(50))
