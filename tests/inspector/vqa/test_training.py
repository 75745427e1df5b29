from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inspector.vqa.data import build_set
from inspector.vqa.tokenizer import WordTokenizer
from inspector.vqa.training import TrainOptions, answer_loss, batch_of, batches, referent_cells, train_vqa


def test_batches_are_fresh_and_seeded(tokenizer: WordTokenizer) -> None:
    options = TrainOptions(batch=12, seed=1)
    first = next(iter(batches(tokenizer, options)(0)))
    again = next(iter(batches(tokenizer, options)(0)))
    other = next(iter(batches(tokenizer, options)(1)))
    assert first["image"].shape == (12, 5, 64, 64) and first["ids"].shape[0] == 12
    assert torch.equal(first["image"], again["image"]) and not torch.equal(first["image"], other["image"])


def test_render_workers_make_the_same_batches_with_the_referent_cells(tokenizer: WordTokenizer) -> None:
    options = TrainOptions(batch=12, seed=2, pointer_supervision=1.0)
    here = next(iter(batches(tokenizer, options)(0)))
    there = next(iter(batches(tokenizer, TrainOptions(batch=12, seed=2, pointer_supervision=1.0, workers=1))(0)))
    assert set(here) == set(there) == {"ids", "image", "answer", "named_cells", "partner_cells"}
    assert all(torch.equal(here[k], there[k]) for k in here)
    assert here["named_cells"].sum() > 0  # made in the worker, not left empty
    assert "named_cells" not in next(iter(batches(tokenizer, TrainOptions(batch=12, seed=2))(0)))


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tokenizer: WordTokenizer, tmp_path: Path) -> None:
    data = build_set(4, seed=2)
    options = TrainOptions(
        fusion="concat", steps=1, batch=8, model_options={"width": 32, "text_dim": 32, "image_width": 8}
    )
    model = train_vqa(options, tmp_path, tokenizer=tokenizer, progress=False).model
    batch = batch_of(data, torch.arange(16).numpy(), tokenizer)
    opt = torch.optim.AdamW(model.network.parameters(), lr=3e-3)
    model.network.train()
    losses = []
    for _ in range(8):
        loss, _ = answer_loss(model.network, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_training_records_evaluations_and_stops_on_time(tokenizer: WordTokenizer, tmp_path: Path) -> None:
    options = TrainOptions(
        fusion="hffn",
        steps=50,
        batch=4,
        time_limit_s=0.0,
        model_options={"width": 32, "text_dim": 32, "image_width": 8},
    )
    result = train_vqa(
        options, tmp_path, tokenizer=tokenizer, eval_set=build_set(3, seed=9), eval_every=1, progress=False
    )
    assert result.fit.stopped_early and result.fit.step == 1
    assert result.history and "acc" in result.history[-1]
    assert result.model.metadata["fusion"] == "hffn"


def test_types_limit_the_training_questions_and_unknown_types_are_refused(tokenizer: WordTokenizer) -> None:
    from inspector.vqa.scenes import ANSWERS, COLOURS

    options = TrainOptions(batch=48, types=("colour",))
    batch = next(iter(batches(tokenizer, options)(0)))
    assert {ANSWERS[int(a)] for a in batch["answer"]} <= set(COLOURS)  # colour questions answer with a colour
    both = next(iter(batches(tokenizer, TrainOptions(batch=48, types=("colour", "count")))(0)))
    assert {ANSWERS[int(a)] for a in both["answer"]} - set(COLOURS)  # counts too
    with pytest.raises(ValueError, match="unknown question types"):
        TrainOptions(types=("color",))


def test_a_warm_start_keeps_the_matching_weights_and_the_tokenizer(tokenizer: WordTokenizer, tmp_path: Path) -> None:
    from inspector.vqa.model import VQAModel
    from inspector.vqa.training import warm_started

    small = {"width": 32, "text_dim": 32, "image_width": 8, "input_skip": True, "level": 2}
    source = VQAModel.create("hffn", tokenizer, **small)
    source.save(tmp_path / "source.pt")
    options = TrainOptions(model_options=small | {"relation_source": "image"})
    model = warm_started(tmp_path / "source.pt", options)
    given, state = source.network.state_dict(), model.network.state_dict()
    assert torch.equal(state["heads.answer.mlp.1.weight"], given["heads.answer.mlp.1.weight"])
    assert state["heads.answer.relation.left.weight"].shape != given["heads.answer.relation.left.weight"].shape
    assert model.tokenizer.to_dict() == tokenizer.to_dict()
    assert model.metadata["warm_start"] == "source.pt"
    with pytest.raises(ValueError, match="not both"):
        TrainOptions(init="a.pt", warm_start="b.pt")


def test_referent_cells_mark_the_named_and_the_asked_object(tokenizer: WordTokenizer) -> None:
    from inspector.vqa.scenes import ANSWERS, cells_covered, referents, relational_kind

    data = build_set(12, seed=5)
    rows = torch.arange(len(data)).numpy()
    batch = batch_of(data, rows, tokenizer, referent_cells(data, rows))
    assert batch["named_cells"].shape == batch["partner_cells"].shape == (len(data), 16 * 16)
    for i in rows:
        named, partner = referents(data.scenes[data.scene_index[i]], data.questions[i])
        kind = relational_kind(data.questions[i]) or ""
        assert (partner is not None) == (kind.startswith("closest") or kind.startswith("furthest"))
        answer = ANSWERS[data.answers[i]]
        if data.kinds[i] == "position":
            assert named is not None and answer in (named.horizontal, named.vertical)
        assert (batch["named_cells"][i].sum() > 0) == (named is not None)
        if partner is not None:
            assert torch.equal(batch["partner_cells"][i], torch.from_numpy(cells_covered(partner, 64, 16)))
            assert answer in (partner.colour, partner.shape)  # what the question asks about that object


def test_pointer_supervision_adds_a_look_loss_that_reaches_the_anchor(tokenizer: WordTokenizer, tmp_path: Path) -> None:
    options = TrainOptions(
        fusion="hffn", steps=1, batch=4,
        model_options={"width": 32, "text_dim": 32, "image_width": 8, "level": 2, "relation_source": "image",
                       "anchor": True, "pointer": True},
    )  # fmt: skip
    model = train_vqa(options, tmp_path, tokenizer=tokenizer, progress=False).model
    data = build_set(6, seed=6)
    rows = torch.arange(len(data)).numpy()
    batch = batch_of(data, rows, tokenizer, referent_cells(data, rows))
    model.network.train()
    plain, found = answer_loss(model.network, batch)
    assert "look" not in found
    looked, found = answer_loss(model.network, batch, pointer_weight=1.0)
    assert found["look"] > 0 and float(looked.detach()) > float(plain.detach())
    looked.backward()
    pointer = model.network.heads["answer"].pointer
    assert pointer.key_a.weight.grad is not None and pointer.key_a.weight.grad.abs().sum() > 0
