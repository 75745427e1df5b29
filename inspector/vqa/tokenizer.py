"""A word-level tokenizer fitted here, on the generated questions and captions.

Lower-case words and numbers; punctuation is dropped. Ids 0-3 are the special ids of
:mod:`mla.text` (``PAD``, ``BOS``, ``EOS``, ``SEP``), 4 is ``UNK``, words follow in order of
frequency, so a question's ids go straight into ``mla``'s ``text`` encoder (which takes ids below
``mla.text.VOCAB_SIZE``)::

    tok = WordTokenizer.fit(["what shape is the red object?", ...])
    tok.encode("What shape is the red object?")     # [9, 17, 6, 5, 11, 7]
    tok.unknown("what hue is the red object?")      # ["hue"]
    ids = tok.batch(questions)                      # (B, T) LongTensor, PAD on the right

``strict=True`` (the default) refuses unknown words with :class:`VQAInputError` (reason
``unknown_words``) and names them; ``strict=False`` maps them to ``UNK``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from inspector.vqa.errors import VQAInputError
from mla.text import PAD, VOCAB_SIZE

UNK = 4
FIRST_WORD = 5
MAX_TOKENS = 32
_WORD = re.compile(r"[a-z]+|\d+")


def words(text: str) -> list[str]:
    """The lower-case words and numbers of ``text``."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Words → ids; see the module docs.

    Args:
        vocabulary: The words, in id order from :data:`FIRST_WORD`.
        max_tokens: Most words in one text.

    """

    def __init__(self, vocabulary: Sequence[str], max_tokens: int = MAX_TOKENS) -> None:
        if len(vocabulary) + FIRST_WORD > VOCAB_SIZE:
            msg = f"{len(vocabulary)} words do not fit the text encoder's {VOCAB_SIZE - FIRST_WORD} word ids"
            raise ValueError(msg)
        self.vocabulary = list(vocabulary)
        self.max_tokens = max_tokens
        self.ids = {word: FIRST_WORD + i for i, word in enumerate(self.vocabulary)}

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1, max_tokens: int = MAX_TOKENS) -> WordTokenizer:
        """Learn the vocabulary: every word seen at least ``min_count`` times, most frequent first."""
        counts = Counter(word for text in texts for word in words(text))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, max_tokens)

    def __len__(self) -> int:
        return len(self.vocabulary) + FIRST_WORD

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary, in order, each once."""
        return list(dict.fromkeys(w for w in words(text) if w not in self.ids))

    def encode(self, text: str, *, strict: bool = True) -> list[int]:
        """Ids of ``text``.

        Raises:
            VQAInputError: ``empty_question`` (no word), ``question_too_long`` (over ``max_tokens``), or
                ``unknown_words`` when ``strict``.

        """
        found = words(text)
        if not found:
            raise VQAInputError(
                "empty_question", f"the question {text!r} has no words: ask e.g. 'what shape is the red object?'"
            )
        if len(found) > self.max_tokens:
            msg = f"the question has {len(found)} words; at most {self.max_tokens} are read"
            raise VQAInputError("question_too_long", msg)
        if strict:
            unknown = self.unknown(text)
            if unknown:
                known = ", ".join(self.vocabulary[:12])
                names = ", ".join(map(repr, unknown))
                msg = f"unknown word(s) {names}: the model knows {len(self.vocabulary)} words ({known}, …)"
                raise VQAInputError("unknown_words", msg)
        return [self.ids.get(w, UNK) for w in found]

    def batch(self, texts: Sequence[str], *, strict: bool = True) -> Tensor:
        """(B, T) int64 ids, ``PAD`` on the right; T is the longest text's length."""
        encoded = [self.encode(text, strict=strict) for text in texts]
        ids = torch.full((len(encoded), max((len(e) for e in encoded), default=1)), PAD, dtype=torch.long)
        for row, values in enumerate(encoded):
            ids[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        return ids

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (stored in model checkpoints)."""
        return {"format": "inspector.vqa.words/1", "vocabulary": list(self.vocabulary), "max_tokens": self.max_tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        """Rebuild from :meth:`to_dict`."""
        if data.get("format") != "inspector.vqa.words/1":
            msg = f"not a word tokenizer (format {data.get('format')!r})"
            raise ValueError(msg)
        return cls(list(data["vocabulary"]), int(data.get("max_tokens", MAX_TOKENS)))
