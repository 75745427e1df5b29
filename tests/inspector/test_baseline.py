from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspector.dataset import iter_samples
from inspector.evaluate import evaluate_sample, summarize
from inspector.model import ModelError, ModelInput, create_model, list_models
from inspector.pipeline import inspect_pair
from inspector.registration import warp_to_visible


def test_registry_lists_and_rejects() -> None:
    assert {"baseline", "baseline-ir"} <= set(list_models())
    with pytest.raises(ModelError, match=r"unknown model .nope.: choose one of baseline, baseline-ir, crack-concat"):
        create_model("nope")
    with pytest.raises(ModelError, match="low <= high"):
        create_model("baseline", low=5, high=1)


def test_ir_baseline_needs_infrared() -> None:
    with pytest.raises(ModelError, match="needs an infrared image"):
        create_model("baseline-ir").predict(ModelInput(np.zeros((64, 64), np.uint8), None, 0.05))


@pytest.mark.parametrize(("name", "floor"), [("baseline", 0.5), ("baseline-ir", 0.15)])
def test_baselines_find_cracks_on_the_synthetic_line(small_line: Path, name: str, floor: float) -> None:
    model = create_model(name)
    evaluations = []
    for sample in iter_samples(small_line):
        assert not isinstance(sample, Exception)
        result, probability = inspect_pair(
            sample.visible, sample.infrared, sample.meta.homography, sample.meta.mm_per_px, model
        )
        assert probability.dtype == np.float32 and probability.min() >= 0 and probability.max() <= 1
        assert sample.mask is not None
        evaluations.append(evaluate_sample(sample.meta, sample.mask, probability, result.verdict))
    report = summarize(evaluations)
    assert report.pixel["recall"] > floor  # a floor against regressions; figures: docs/BENCHMARKS.md
    wide = report.recall_by_width[">=0.3"]
    assert wide["cracks"] == 0 or wide["recall"] >= 0.5


def test_blank_image_has_no_cracks() -> None:
    rng = np.random.default_rng(0)
    flat = np.clip(rng.normal(128, 2, (256, 256)), 0, 255).astype(np.uint8)
    out = create_model("baseline").predict(ModelInput(flat, None, 0.05))
    assert (out.probability >= 0.5).sum() < 50
    ir = warp_to_visible(rng.normal(20000, 5, (64, 64)).astype(np.uint16), np.diag([4.0, 4.0, 1.0]), (256, 256))
    out_ir = create_model("baseline-ir").predict(ModelInput(flat, ir, 0.05))
    assert (out_ir.probability >= 0.5).sum() < 200
