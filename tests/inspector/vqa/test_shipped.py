"""The VQA model that ships with the package: small, documented, loadable, and it answers."""

from __future__ import annotations

import mla
from inspector.commands.vqa import SHIPPED
from inspector.vqa.data import build_set
from inspector.vqa.model import VQAModel
from inspector.vqa.scenes import ANSWERS


def test_shipped_vqa_model_is_small_documented_and_answers() -> None:
    assert SHIPPED.stat().st_size < 10 * 2**20
    card = SHIPPED.with_suffix(".md").read_text()
    assert "synthetic" in card and "inspector vqa train" in card
    meta = mla.load_metadata(SHIPPED)
    assert meta["figures"]["heldout_seed"] == 10_001 and meta["seed"] != 10_001
    model = VQAModel.load(SHIPPED)
    data = build_set(3, seed=4242)
    answers = model.answer([data.images[i] for i in data.scene_index[:5]], data.questions[:5])
    assert all(a.answer in ANSWERS for a in answers)
