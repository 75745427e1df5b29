from __future__ import annotations

import numpy as np
import pytest

from inspector.dataset import CrackTruth, SampleMeta
from inspector.evaluate import (
    PixelCounts,
    centre_line_points,
    evaluate_sample,
    match_cracks,
    summarize,
    tolerant_counts,
    width_bin,
)
from tests.inspector.shapes import capsule

SHAPE = (120, 200)


def truth_crack(p0: tuple[float, float], p1: tuple[float, float], width_px: float, mm: float = 0.05) -> CrackTruth:
    length = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1])) * mm
    w = width_px * mm
    return CrackTruth(polylines=[[p0, p1]], widths_mm=[[w, w]], max_width_mm=w, mean_width_mm=w, length_mm=length)


def meta(cracks: list[CrackTruth], sample_id: str = "s1") -> SampleMeta:
    return SampleMeta(
        id=sample_id,
        part_id="p1",
        mm_per_px=0.05,
        ir_to_visible=[[4, 0, 1.5], [0, 4, 1.5], [0, 0, 1]],
        visible_ts_ns=1,
        infrared_ts_ns=2,
        cracks=cracks,
    )


def test_tolerance_forgives_two_pixels_not_three() -> None:
    truth = capsule(SHAPE, (20, 50), (180, 50), 4)
    shifted2 = np.roll(truth, 2, axis=0)
    shifted5 = np.roll(truth, 5, axis=0)
    assert tolerant_counts(shifted2, truth).f1 == 1.0
    far = tolerant_counts(shifted5, truth)
    assert far.precision < 0.5 and far.recall < 0.5


def test_empty_prediction_and_empty_truth() -> None:
    empty = np.zeros(SHAPE, bool)
    c = tolerant_counts(empty, empty)
    assert (c.precision, c.recall) == (1.0, 1.0)
    some = capsule(SHAPE, (20, 50), (180, 50), 4)
    assert tolerant_counts(empty, some).recall == 0.0
    assert tolerant_counts(some, empty).precision == 0.0
    assert (PixelCounts(1, 2, 3, 4) + PixelCounts(1, 2, 3, 4)).pred_total == 4


def test_width_bins() -> None:
    assert [width_bin(w) for w in (0.05, 0.1, 0.19, 0.2, 0.29, 0.3, 0.6)] == [
        "<0.1", "0.1-0.2", "0.1-0.2", "0.2-0.3", "0.2-0.3", ">=0.3", ">=0.3"
    ]  # fmt: skip


def test_centre_line_points_are_dense() -> None:
    c = truth_crack((0, 0), (10, 0), 4)
    pts = centre_line_points(c)
    assert len(pts) == 11 and pts[-1].tolist() == [10, 0]


def test_found_crack_is_matched_and_measured() -> None:
    crack = truth_crack((20.3, 40.6), (170.2, 80.1), 6)
    mask = capsule(SHAPE, (20.3, 40.6), (170.2, 80.1), 6)
    (m,) = match_cracks([crack], mask, mask.astype(np.float32), 0.05)
    assert m.found and m.coverage == 1.0
    assert m.measured is not None
    assert m.measured.max_width_mm == pytest.approx(0.3, abs=0.03)
    half = mask.copy()
    half[:, 100:] = False
    (partial,) = match_cracks([crack], half, half.astype(np.float32), 0.05)
    assert 0.4 < partial.coverage < 0.6


def test_sample_and_summary_figures() -> None:
    wide = truth_crack((20, 40), (170, 80), 6)  # 0.3 mm: a defect
    thin = truth_crack((20, 100), (170, 100), 1.5)  # 0.075 mm
    truth = capsule(SHAPE, (20, 40), (170, 80), 6) | capsule(SHAPE, (20, 100), (170, 100), 1.5)
    prob = capsule(SHAPE, (20, 40), (170, 80), 6).astype(np.float32) * 0.9  # finds the wide one only
    e1 = evaluate_sample(meta([wide, thin], "a"), truth, prob, "NG")
    clean = np.zeros(SHAPE, bool)
    e2 = evaluate_sample(meta([], "b"), clean, np.zeros(SHAPE, np.float32), "NG")  # a false reject
    e3 = evaluate_sample(meta([wide], "c"), capsule(SHAPE, (20, 40), (170, 80), 6), np.zeros(SHAPE, np.float32), "OK")
    report = summarize([e1, e2, e3])
    assert report.recall_by_width[">=0.3"] == {"cracks": 2, "found": 1, "recall": 0.5}
    assert report.recall_by_width["<0.1"]["recall"] == 0.0
    assert report.parts["escape_rate"] == 0.5  # c was NG and judged OK
    assert report.parts["false_reject_rate"] == 1.0  # b
    assert report.pixel["precision"] == 1.0
    assert 0 < report.pixel["recall"] < 1
    assert report.worst[0] == "c"  # a missed defect-size crack ranks worst
    assert report.measurement["matched_cracks"] == 1
    thresholds = [p["threshold"] for p in report.pr_curve]
    assert thresholds == sorted(thresholds) and 0.5 in thresholds
