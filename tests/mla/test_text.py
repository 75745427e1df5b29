from __future__ import annotations

import pytest
import torch

from mla import ByteTokenizer, MLAInputError
from mla.text import BOS, EOS, PAD, VOCAB_SIZE


def test_round_trip_unicode() -> None:
    tok = ByteTokenizer()
    for text in ["", "ok", "Riss 0,2 mm — température 37 °C", "裂纹", "emoji 🔥"]:
        ids = tok.encode(text)
        assert ids[0] == BOS
        assert ids[-1] == EOS
        assert all(0 <= i < VOCAB_SIZE for i in ids)
        assert tok.decode(ids) == text


def test_deterministic_and_byte_offsets() -> None:
    assert ByteTokenizer().encode("ok") == [BOS, ord("o") + 4, ord("k") + 4, EOS]
    assert ByteTokenizer().encode("ok") == ByteTokenizer().encode("ok")
    assert ByteTokenizer().encode("ok", special=False) == [ord("o") + 4, ord("k") + 4]


def test_truncation_keeps_eos() -> None:
    tok = ByteTokenizer(max_length=5)
    ids = tok.encode("abcdefgh")
    assert len(ids) == 5
    assert ids[-1] == EOS
    assert tok.decode(ids) == "abc"


def test_decode_stops_at_eos_and_skips_specials() -> None:
    tok = ByteTokenizer()
    ids = [BOS, *tok.encode("hi", special=False), EOS, *tok.encode("junk", special=False)]
    assert tok.decode(torch.tensor(ids)) == "hi"


def test_batch_pads_right() -> None:
    ids, mask = ByteTokenizer().batch(["a", "abc"])
    assert ids.shape == (2, 5)
    assert ids.dtype == torch.long
    assert ids[0, 3:].tolist() == [PAD, PAD]
    assert mask.tolist() == [[True, True, True, False, False], [True] * 5]


@pytest.mark.parametrize("bad", [[], "text", [1, 2]])
def test_batch_rejects_non_strings(bad: object) -> None:
    with pytest.raises(MLAInputError):
        ByteTokenizer().batch(bad)  # type: ignore[arg-type]
