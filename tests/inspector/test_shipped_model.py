"""The model that ships with the package: small, documented, loadable, and it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mla
from inspector.dataset import list_ids, read_sample
from inspector.model import SHIPPED_MODELS, create_model, shipped_model_path
from inspector.pipeline import inspect_pair


def test_shipped_models_are_small_and_have_cards() -> None:
    for name in SHIPPED_MODELS:
        path = Path(str(shipped_model_path(name)))
        assert path.stat().st_size < 10 * 2**20
        card = path.with_suffix(".md").read_text()
        assert "synthetic" in card and "inspector train" in card
        meta = mla.load_metadata(path)
        assert meta["train_data"]["seeds"] and all(seed < 9000 for seed in meta["train_data"]["seeds"])


def test_shipped_model_inspects_a_part(small_line: Path) -> None:
    model = create_model("crack-hffn")
    sample = read_sample(small_line, list_ids(small_line)[0])
    result, probability = inspect_pair(
        sample.visible, sample.infrared, sample.meta.homography, sample.meta.mm_per_px, model
    )
    assert probability.shape == sample.visible.shape and np.isfinite(probability).all()
    assert result.modal_weights is not None and set(result.modal_weights) == {"visible", "infrared"}
    assert result.model["name"] == "crack-hffn"


# The default model on a small fixed held-out slice (seeds >= 9000 are never used for training or
# tuning). Bounds sit a margin below what the shipped model measured on this very slice (noted beside
# each), so a retrained or re-exported default that finds fewer cracks or rejects more clean parts fails.
SLICE_BOUNDS = {
    # preset: (minimum recall of cracks >= 0.2 mm, maximum false-reject rate of clean parts)
    "default": (0.9, 0.15),  # at most 1 miss, 1 false reject; measured 13/14 and 1/7 (crack-concat v4), v3: 14/14, 0/7
    "hard": (0.7, 0.25),  # measured 8/10 and 0/8 (v4), v3: 8/10, 1/8; the recipe-2 model found 6/10 and fails here
}


@pytest.fixture(scope="module")
def held_out_slice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from inspector.synth import generate_set

    folders = {}
    for preset, seed in (("default", 9101), ("hard", 9102)):
        folders[preset] = tmp_path_factory.mktemp(f"slice-{preset}")
        generate_set(folders[preset], 24, seed=seed, preset=preset, size=1024, clean_fraction=0.4)
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(SLICE_BOUNDS))
def test_default_model_holds_its_figures_on_a_held_out_slice(
    preset: str, held_out_slice: dict[str, Path], tmp_path: Path
) -> None:
    from inspector.commands.evaluate import evaluate_folder
    from inspector.commands.predict import predict_folder
    from inspector.config import WorkerSettings

    model = create_model(WorkerSettings().model)
    predict_folder(held_out_slice[preset], tmp_path, model, None, show_progress=False)
    report = evaluate_folder(held_out_slice[preset], tmp_path, show_progress=False).report()
    recall, clean = report.defect_crack_recall, report.parts
    assert recall["cracks"] >= 8 and clean["clean_parts"] >= 4, "the slice must hold cracks and clean parts"
    min_recall, max_false_reject = SLICE_BOUNDS[preset]
    assert recall["recall"] >= min_recall, f"{preset}: recall >= 0.2 mm {recall}"
    assert clean["false_reject_rate"] <= max_false_reject, f"{preset}: false rejects {clean}"
