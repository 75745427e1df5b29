"""The VQA model that ships with the package: small, documented, loadable, and it answers."""

from __future__ import annotations

import mla
from inspector.commands.vqa import SHIPPED
from inspector.vqa.data import build_set
from inspector.vqa.model import VQAModel
from inspector.vqa.scenes import ANSWERS
from inspector.vqa.training import evaluate


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


def test_shipped_vqa_model_meets_its_targets_on_held_out_scenes_and_looks_at_the_right_objects() -> None:
    """40 held-out scenes (about 400 questions, 80 relational): the shipped model's measured 98.0% / 99.6%
    on 1,000 scenes leaves a wide margin over the issue's targets here."""
    found = evaluate(VQAModel.load(SHIPPED), build_set(40, seed=10_001), looks=True)
    assert found["overall"] >= 0.97 and found["by_type"]["count"] >= 0.95 and found["by_type"]["relational"] >= 0.9
    looks = found["pointer_by_kind"]
    assert set(looks) == set(found["relational_by_kind"])
    distance = [f"{way}-{what}" for way in ("closest", "furthest") for what in ("colour", "shape")]
    asked = [found["relational_by_kind"][k]["questions"] for k in distance]
    pooled = sum(looks[k]["asked"] * n for k, n in zip(distance, asked, strict=True)) / sum(asked)
    assert pooled >= 0.85 and all(looks[k]["named"] >= 0.9 for k in distance), looks  # 1,000 scenes: 97.8%, 100%
    assert looks["same-count"]["asked"] is None and looks["same-count"]["named"] >= 0.9  # asks about no one object
