"""The model that ships with the package: small, documented, loadable, and it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
