from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.vqa.data import build_set, to_tensor
from inspector.vqa.errors import VQAError, VQAInputError
from inspector.vqa.model import FUSIONS, VQAModel, vqa_config
from inspector.vqa.scenes import ANSWERS, QUESTION_TYPES
from inspector.vqa.tokenizer import WordTokenizer
from inspector.vqa.training import evaluate
from mla import MLAConfigError, MLAModel


@pytest.mark.parametrize("fusion", FUSIONS)
def test_published_api_answers_with_every_fusion(fusion: str, tokenizer: WordTokenizer) -> None:
    model = MLAModel(vqa_config(fusion, width=32, text_dim=32, image_width=8))
    data = build_set(2, seed=1)
    ids = tokenizer.batch(data.questions[:3])
    out = model(ids, to_tensor(data.images[data.scene_index[:3]]))  # model(question, image)
    assert out.outputs["answer"].shape == (3, len(ANSWERS))
    assert out.modalities == ("text", "image")


def spy_on_relation(relation: torch.nn.Module, see: Callable[[torch.Tensor], object]) -> None:
    """Call ``see`` with the cells the answer head gives its relation (it calls ``reason``, not ``forward``)."""
    reason = relation.reason

    def spied(level: torch.Tensor, question: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        see(level)
        return reason(level, question)

    relation.reason = spied  # type: ignore[method-assign]


def test_the_relation_head_pairs_the_chosen_level(tokenizer: WordTokenizer) -> None:
    data = build_set(2, seed=1)
    ids, image = tokenizer.batch(data.questions[:2]), to_tensor(data.images[data.scene_index[:2]])
    for level, cells in ((1, 8 * 8), (2, 4 * 4)):
        model = MLAModel(vqa_config("hffn", width=32, text_dim=32, image_width=8, level=level))
        seen: list[tuple[int, ...]] = []
        relation = model.heads["answer"].relation
        assert isinstance(relation, torch.nn.Module)
        spy_on_relation(relation, lambda level, seen=seen: seen.append(tuple(level.shape)))
        assert model(ids, image).outputs["answer"].shape == (2, len(ANSWERS))
        assert seen[0][0] == 2 and seen[0][2] * seen[0][3] == cells  # (B, W, H_l, W_l) at 64 px


def test_the_relation_head_can_pair_the_image_encoders_own_cells(tokenizer: WordTokenizer) -> None:
    data = build_set(2, seed=1)
    ids, image = tokenizer.batch(data.questions[:2]), to_tensor(data.images[data.scene_index[:2]])
    model = MLAModel(
        vqa_config("hffn", width=48, text_dim=32, image_width=8, level=2, relation_source="image", anchor=True)
    )
    seen: list[torch.Tensor] = []
    relation = model.heads["answer"].relation
    assert isinstance(relation, torch.nn.Module)
    spy_on_relation(relation, seen.append)
    out = model(ids, image)
    assert out.outputs["answer"].shape == (2, len(ANSWERS))
    channels = model.encoder("image").spec.level_channels
    assert channels is not None and channels[2] != 48  # the encoder's coarse width differs from the fused width
    assert tuple(seen[0].shape) == (2, channels[2], 4, 4)  # the encoder's own cells, not the fused ones
    with pytest.raises(MLAConfigError, match="choose one of image"):
        MLAModel(vqa_config("hffn", width=32, text_dim=32, image_width=8, relation_source="text"))


def test_the_pointer_reads_every_image_level_and_starts_from_the_relation_anchor(tokenizer: WordTokenizer) -> None:
    data = build_set(2, seed=1)
    ids, image = tokenizer.batch(data.questions[:2]), to_tensor(data.images[data.scene_index[:2]])
    config = vqa_config(
        "hffn", width=48, text_dim=32, image_width=8, level=2, relation_source="image", anchor=True, pointer=True
    )
    model = MLAModel(config).eval()
    pointer = model.heads["answer"].pointer
    assert isinstance(pointer, torch.nn.Module)
    seen: list[tuple[list[torch.Tensor], torch.Tensor | None]] = []
    pointer.register_forward_hook(lambda _m, args, _out: seen.append((args[0], args[2])))
    assert model(ids, image).outputs["answer"].shape == (2, len(ANSWERS))
    levels, prior = seen[0]
    assert [tuple(level.shape[2:]) for level in levels] == [(16, 16), (8, 8), (4, 4)]  # all three, finest first
    assert prior is not None and tuple(prior.shape) == (2, 4, 4)  # the relation anchor's logits on its 4 × 4 cells
    with pytest.raises(MLAConfigError, match="relation_pointer reads a modality's own levels"):
        MLAModel(vqa_config("hffn", width=32, text_dim=32, image_width=8, pointer=True))  # fused cells: no
    with pytest.raises(MLAConfigError, match="pointer_glimpse is 0 or a window side with relation_pointer"):
        MLAModel(vqa_config("hffn", width=32, text_dim=32, image_width=8, relation_source="image", glimpse=5))


def test_answer_gives_a_word_and_confidence(tiny_model: VQAModel) -> None:
    data = build_set(2, seed=3)
    answers = tiny_model.answer(
        [data.images[0], data.images[1]], ["what shape is the red object?", "how many objects are there?"]
    )
    assert len(answers) == 2
    for a in answers:
        assert a.answer in ANSWERS and 0.0 < a.confidence <= 1.0 and a.top[0] == (a.answer, a.confidence)
        assert len(a.to_dict()["top"]) == 3


def test_answer_refuses_unknown_words_and_mismatched_lengths(tiny_model: VQAModel) -> None:
    image = build_set(1, seed=3).images[0]
    with pytest.raises(VQAInputError) as err:
        tiny_model.answer([image], ["what is the meaning of life?"])
    assert err.value.reason == "unknown_words"
    with pytest.raises(VQAError, match="one image per question"):
        tiny_model.answer([image], [])


def test_save_and_load_keep_tokenizer_answers_and_outputs(tiny_model: VQAModel, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    tiny_model.save(path, metadata={"note": "x"})
    again = VQAModel.load(path)
    assert again.tokenizer.vocabulary == tiny_model.tokenizer.vocabulary and again.answers == ANSWERS
    assert again.metadata["note"] == "x" and len(again.sha256) == 64 and again.fusion == "dma"
    data = build_set(1, seed=4)
    ids, image = again.tokenizer.batch(data.questions[:2]), to_tensor(data.images[data.scene_index[:2]])
    assert torch.allclose(again.logits(ids, image), tiny_model.logits(ids, image))


def test_load_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(VQAError, match="cannot read checkpoint"):
        VQAModel.load(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"x": 1}, other)
    with pytest.raises(VQAError):
        VQAModel.load(other)


def test_pointer_looks_counts_the_questions_whose_softmax_lands_on_the_object() -> None:
    from inspector.vqa.training import pointer_looks

    shares = np.array([[0.9, 0.2, 0.8, 0.7, 0.6], [0.6, 0.9, 0.4, np.nan, np.nan]])  # named, asked
    correct = np.array([True, False, True, True, False])
    relation = np.array(["closest-shape", "closest-shape", "closest-shape", "same-count", "same-count"])
    looks = pointer_looks(shares, correct, relation)
    assert looks["closest-shape"] == {"named": 2 / 3, "asked": 2 / 3, "accuracy_when_found": 0.5}
    assert looks["same-count"] == {"named": 1.0, "asked": None, "accuracy_when_found": 0.5}  # by the named one


def test_evaluate_reports_every_type(tiny_model: VQAModel) -> None:
    found = evaluate(tiny_model, build_set(10, seed=9), looks=True)
    assert "pointer_by_kind" not in found  # no pointer in this model
    assert set(found["by_type"]) == set(QUESTION_TYPES)
    assert 0.0 <= found["overall"] <= 1.0 and sum(found["questions"].values()) > 0
    assert np.isclose(
        found["overall"],
        sum(found["by_type"][k] * found["questions"][k] for k in QUESTION_TYPES) / sum(found["questions"].values()),
    )
    kinds = found["relational_by_kind"]
    assert all(type(kind) is str for kind in kinds)  # plain str: the figures go into model files' metadata
    assert sum(k["questions"] for k in kinds.values()) == found["questions"]["relational"]
    assert np.isclose(
        sum(k["accuracy"] * k["questions"] for k in kinds.values()) / found["questions"]["relational"],
        found["by_type"]["relational"],
    )
