"""Review decisions as training samples (inspector.labels): masks, ids, metadata, and that training reads them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.crack_data import CrackTileSet
from inspector.dataset import list_ids, read_sample
from inspector.labels import (
    Decision,
    LabelError,
    Stroke,
    decode_infrared,
    decode_visible,
    label_id,
    label_mask,
    label_sample,
    review_record,
    write_label,
)

H, W = 64, 96
SQUARE = [(10.0, 10.0), (20.0, 10.0), (20.0, 30.0), (10.0, 30.0)]
TRIANGLE = [(60.0, 40.0), (80.0, 40.0), (70.0, 55.0)]


def evidence() -> dict:
    return {
        "schema": "inspector.evidence/1", "camera_id": "rig.1", "seq": 7, "part_id": "P-7",
        "capture_ts_ns": 1_765_000_000_000_000_000, "verdict": "NG", "kept": "ng", "mm_per_px": 0.05,
        "ir_to_visible": [[4, 0, 1.5], [0, 4, 1.5], [0, 0, 1]], "visible_shape": [H, W], "infrared_shape": [16, 24],
        "cracks": [
            {"index": 0, "length_mm": 1.0, "max_width_mm": 0.5, "mean_width_mm": 0.4, "bbox": [10, 10, 20, 30],
             "score": 0.9, "defect": True, "outline": [list(p) for p in SQUARE]},
            {"index": 1, "length_mm": 1.0, "max_width_mm": 0.3, "mean_width_mm": 0.2, "bbox": [60, 40, 80, 55],
             "score": 0.7, "defect": True, "outline": [list(p) for p in TRIANGLE]},
        ],
        "model": {"name": "crack-concat", "version": "1", "sha256": "f" * 64, "backend": "onnxruntime"},
        "modal_weights": {"visible": 0.6, "infrared": 0.4},
    }  # fmt: skip


def images() -> tuple[np.ndarray, np.ndarray]:
    visible = np.full((H, W), 140, np.uint8)
    infrared = np.full((16, 24), 3000, np.uint16)
    return visible, infrared


def filled(*polygons: list[tuple[float, float]]) -> np.ndarray:
    canvas = np.zeros((H, W), np.uint8)
    for polygon in polygons:
        cv2.fillPoly(canvas, [np.asarray(polygon, np.int32).reshape(-1, 1, 2)], 255)
    return canvas > 0


def test_confirm_fills_every_crack_outline() -> None:
    sample = label_sample(Decision(kind="confirm"), evidence(), *images())
    assert sample.mask is not None
    assert np.array_equal(sample.mask, filled(SQUARE, TRIANGLE))
    assert sample.meta.preset == "review" and sample.meta.seed is None
    assert len(sample.meta.cracks) == 2 and sample.meta.cracks[0].max_width_mm == 0.5


def test_a_false_call_has_an_empty_mask_and_no_cracks() -> None:
    sample = label_sample(Decision(kind="false_call"), evidence(), *images())
    assert sample.mask is not None and not sample.mask.any()
    assert sample.meta.is_clean


def test_relabel_keeps_real_cracks_and_adds_strokes() -> None:
    stroke = Stroke(points=[(40.0, 50.0), (50.0, 50.0)], width_px=3)
    decision = Decision(kind="relabel", cracks={0: "not_crack"}, strokes=[stroke])
    sample = label_sample(decision, evidence(), *images())
    assert sample.mask is not None
    assert not sample.mask[10:31, 10:21].any()  # crack 0 is not a crack
    assert sample.mask[45, 70]  # crack 1 stays (not mentioned: real)
    assert sample.mask[49:52, 40:51].all() and not sample.mask[47, 45] and not sample.mask[53, 45]  # 3 px wide
    assert [round(c.length_mm, 3) for c in sample.meta.cracks] == [1.0, 0.5]  # crack 1, then the 10 px stroke
    assert decision.verdict(2) == "NG"


def test_all_cracks_marked_not_crack_is_ok() -> None:
    decision = Decision(kind="relabel", cracks={0: "not_crack", 1: "not_crack"})
    assert decision.verdict(2) == "OK"
    assert not label_mask(decision, [SQUARE, TRIANGLE], (H, W)).any()


def test_a_one_point_stroke_is_a_dot() -> None:
    decision = Decision(kind="relabel", cracks={0: "not_crack", 1: "not_crack"},
                        strokes=[Stroke(points=[(30.0, 30.0)], width_px=6)])  # fmt: skip
    mask = label_mask(decision, [SQUARE, TRIANGLE], (H, W))
    assert mask[30, 30] and 9 <= mask.sum() <= 40


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ({"kind": "false_call", "cracks": {0: "real"}}, "a false call has no real cracks"),
        ({"kind": "false_call", "strokes": [{"points": [[1, 1]], "width_px": 2}]}, "no brush strokes"),
        ({"kind": "confirm", "cracks": {1: "not_crack"}}, "confirm keeps every crack"),
        ({"kind": "relabel", "strokes": [{"points": [[1, 1]], "width_px": 0}]}, "greater than 0"),
        ({"kind": "relabel", "strokes": [{"points": [[float("nan"), 1]], "width_px": 2}]}, "finite"),
        ({"kind": "maybe"}, "Input should be"),
    ],
)
def test_inconsistent_decisions_are_refused(decision: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Decision.model_validate(decision)


def test_marks_of_cracks_the_evidence_lacks_are_refused() -> None:
    with pytest.raises(LabelError, match=r"cracks \[5\] are not in the evidence"):
        label_sample(Decision(kind="relabel", cracks={5: "real"}), evidence(), *images())


@given(st.text(min_size=1, max_size=20), st.integers(0, 10**12))
def test_label_ids_are_valid_sample_ids_with_no_dot(camera_id: str, seq: int) -> None:
    sample_id = label_id(camera_id, seq)
    assert "." not in sample_id and "/" not in sample_id and sample_id.endswith(f"-{seq}")


def test_written_label_reads_back_and_its_review_record_is_not_a_sample(tmp_path: Path) -> None:
    decision = Decision(kind="confirm", note="clear crack")
    sample = label_sample(decision, evidence(), *images())
    record = review_record(decision, evidence(), who="rita", when="2026-12-01T08:00:00.000Z")
    write_label(tmp_path, sample, record)

    assert sample.meta.id == "rig_1-7"  # the dot of the camera id would hide the sample from list_ids
    assert (tmp_path / "rig_1-7.review.json").is_file()
    assert list_ids(tmp_path) == ["rig_1-7"]
    back = read_sample(tmp_path, "rig_1-7")
    assert back.mask is not None and np.array_equal(back.mask, filled(SQUARE, TRIANGLE))
    assert back.meta.camera_id == "rig.1" and back.meta.seq == 7 and back.meta.part_id == "P-7"
    assert back.meta.visible_ts_ns == back.meta.infrared_ts_ns == 1_765_000_000_000_000_000
    assert back.infrared.dtype == np.uint16 and back.visible.dtype == np.uint8
    review = json.loads((tmp_path / "rig_1-7.review.json").read_text())
    assert review["who"] == "rita" and review["decision"] == "confirm" and review["model"]["sha256"] == "f" * 64
    assert review["verdict"] == "NG" and review["cracks"] == {"0": "real", "1": "real"}

    tiles = CrackTileSet.load(tmp_path)  # what `inspector train --data` loads
    assert len(tiles) == 1 and tiles.masks[0].sum() == filled(SQUARE, TRIANGLE).sum()


def test_evidence_images_decode_to_the_sample_dtypes() -> None:
    visible, infrared = images()
    _, jpeg = cv2.imencode(".jpg", visible)
    _, png = cv2.imencode(".png", infrared)
    assert decode_visible(jpeg.tobytes()).shape == (H, W)
    assert decode_infrared(png.tobytes()).dtype == np.uint16
    with pytest.raises(LabelError, match="must be uint16"):
        decode_infrared(jpeg.tobytes())
    with pytest.raises(LabelError):
        decode_visible(b"not an image")


def test_cracks_rejected_by_the_reviewer_become_false_call_distractors_for_training() -> None:
    found = evidence()
    sample = label_sample(Decision(kind="relabel", cracks={0: "not_crack"}), found, *images())
    assert [d.kind for d in sample.meta.distractors] == ["false_call"]
    assert list(sample.meta.distractors[0].bbox) == [float(v) for v in found["cracks"][0]["bbox"]]
    every = label_sample(Decision(kind="false_call"), found, *images())
    assert [d.bbox for d in every.meta.distractors] == [tuple(float(v) for v in c["bbox"]) for c in found["cracks"]]
    assert label_sample(Decision(kind="confirm"), found, *images()).meta.distractors == []
