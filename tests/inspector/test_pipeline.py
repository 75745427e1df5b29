from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.model import ModelInput, ModelOutput
from inspector.pipeline import InputError, inspect_pair, nominal_homography, probability_to_png, write_prediction
from tests.inspector.shapes import capsule

SHAPE = (128, 128)


class PaintedModel:
    """Returns a fixed crack map and remembers what it was given."""

    name = "painted"
    version = "0"

    def __init__(self, probability: np.ndarray, weights: dict[str, float] | None = None) -> None:
        self.probability, self.weights = probability, weights
        self.seen: ModelInput | None = None

    def predict(self, inputs: ModelInput) -> ModelOutput:
        self.seen = inputs
        return ModelOutput(self.probability, self.weights)


def ticking_clock(step: float = 0.001):  # type: ignore[no-untyped-def]
    counter = itertools.count()
    return lambda: next(counter) * step


def test_ng_part_with_measured_defect_and_timings() -> None:
    prob = capsule(SHAPE, (10, 60), (110, 70), 6).astype(np.float32)
    model = PaintedModel(prob, {"visible": 0.7, "infrared": 0.3})
    visible = np.full(SHAPE, 128, np.uint8)
    infrared = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    result, out = inspect_pair(visible, infrared, None, 0.05, model, sample_id="x", clock=ticking_clock())
    assert result.verdict == "NG"
    (defect,) = result.defects
    assert defect.max_width_mm == pytest.approx(0.3, abs=0.05)
    assert defect.length_mm == pytest.approx(5.0, rel=0.06)
    assert result.modal_weights == {"visible": 0.7, "infrared": 0.3}
    assert result.timings_ms == {"register": 1.0, "model": 1.0, "measure": 1.0, "total": 3.0}
    assert model.seen is not None and model.seen.infrared is not None
    assert model.seen.infrared.shape == SHAPE  # IR arrived on the visible grid
    assert out is not None and out.shape == SHAPE
    doc = result.to_dict()
    assert doc["schema"] == "inspector.result/1" and doc["defects"][0]["class"] == "crack"


def test_nominal_homography_maps_pixel_centres() -> None:
    h = nominal_homography((32, 32), (128, 128))
    corner = h @ np.array([-0.5, -0.5, 1.0])
    assert corner[:2].tolist() == [-0.5, -0.5]  # IR pixel edge = visible pixel edge


def test_ok_part_and_rgb_visible() -> None:
    model = PaintedModel(np.zeros(SHAPE, np.float32))
    rgb = np.zeros((*SHAPE, 3), np.uint8)
    result, _ = inspect_pair(rgb, None, None, 0.05, model)
    assert result.verdict == "OK" and result.cracks == ()
    assert model.seen is not None and model.seen.infrared is None and model.seen.visible.ndim == 2


@pytest.mark.parametrize(
    ("visible", "infrared", "mm", "message"),
    [
        (np.zeros(SHAPE, np.uint8), np.zeros((256, 256), np.uint16), 0.05, "larger than the visible image"),
        (np.zeros(SHAPE, np.uint8), np.zeros((32, 32, 3), np.uint16), 0.05, "single-channel"),
        (np.zeros(SHAPE, np.uint16), None, 0.05, "must be 8-bit"),
        (np.zeros(SHAPE, np.uint8), None, 0.0, "mm_per_px"),
    ],
)
def test_bad_input(visible: np.ndarray, infrared: np.ndarray | None, mm: float, message: str) -> None:
    with pytest.raises(InputError, match=message):
        inspect_pair(visible, infrared, None, mm, PaintedModel(np.zeros(SHAPE, np.float32)))


def test_model_returning_the_wrong_size_is_caught() -> None:
    with pytest.raises(InputError, match="returned a"):
        inspect_pair(np.zeros(SHAPE, np.uint8), None, None, 0.05, PaintedModel(np.zeros((10, 10), np.float32)))


def test_prediction_files_keep_the_decision(tmp_path: Path) -> None:
    assert probability_to_png(np.array([0.0, 0.49, 0.4999, 0.5, 1.0])).tolist() == [0, 125, 127, 128, 255]
    prob = capsule(SHAPE, (10, 60), (110, 70), 6).astype(np.float32)
    result, _ = inspect_pair(np.zeros(SHAPE, np.uint8), None, None, 0.05, PaintedModel(prob), sample_id="p")
    write_prediction(tmp_path, "p", prob, result)
    png = cv2.imread(str(tmp_path / "p.pred.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and ((png >= 128) == (prob >= 0.5)).all()
    assert json.loads((tmp_path / "p.result.json").read_text())["verdict"] == "NG"


def test_the_models_own_verdict_rules_apply_unless_the_caller_gives_rules() -> None:
    from inspector.verdict import VerdictRules

    prob = capsule(SHAPE, (10, 60), (110, 70), 6).astype(np.float32)  # a 0.3 mm crack
    model = PaintedModel(prob)
    model.verdict_rules = VerdictRules(min_width_mm=0.4)  # type: ignore[attr-defined]  # its operating point
    visible = np.full(SHAPE, 128, np.uint8)
    assert inspect_pair(visible, None, None, 0.05, model)[0].verdict == "OK"
    assert inspect_pair(visible, None, None, 0.05, model, rules=VerdictRules())[0].verdict == "NG"
