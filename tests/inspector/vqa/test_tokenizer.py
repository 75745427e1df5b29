from __future__ import annotations

import pytest

from inspector.vqa.errors import VQAInputError
from inspector.vqa.tokenizer import FIRST_WORD, UNK, WordTokenizer, words
from mla.text import PAD


def test_fit_orders_words_by_frequency_and_encodes_case_and_punctuation_away() -> None:
    tok = WordTokenizer.fit(["What shape is the red object?", "what colour is the red object?"])
    assert tok.vocabulary[:5] == ["is", "object", "red", "the", "what"]
    assert tok.encode("WHAT shape, is the red object") == tok.encode("what shape is the red object?")
    assert min(tok.encode("what is")) >= FIRST_WORD
    assert words("how many 3s?") == ["how", "many", "3", "s"]


def test_unknown_words_are_named_or_mapped_to_unk() -> None:
    tok = WordTokenizer.fit(["what shape is the red object?"])
    with pytest.raises(VQAInputError, match="'hue', 'purple'") as err:
        tok.encode("what hue is the purple object?")
    assert err.value.reason == "unknown_words"
    assert tok.encode("what hue is", strict=False)[1] == UNK
    assert tok.unknown("hue hue purple") == ["hue", "purple"]


@pytest.mark.parametrize(
    ("text", "reason"), [("", "empty_question"), ("?!", "empty_question"), ("the " * 40, "question_too_long")]
)
def test_empty_and_long_questions(text: str, reason: str) -> None:
    tok = WordTokenizer.fit(["the"])
    with pytest.raises(VQAInputError) as err:
        tok.encode(text)
    assert err.value.reason == reason


def test_batch_pads_right_and_round_trips() -> None:
    tok = WordTokenizer.fit(["a b c", "a"])
    ids = tok.batch(["a b c", "a"])
    assert ids.shape == (2, 3) and ids[1, 1:].tolist() == [PAD, PAD]
    again = WordTokenizer.from_dict(tok.to_dict())
    assert again.vocabulary == tok.vocabulary
    with pytest.raises(ValueError, match="not a word tokenizer"):
        WordTokenizer.from_dict({"format": "x"})
