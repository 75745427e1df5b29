"""A byte-level tokenizer: UTF-8 bytes plus four special tokens.

No vocabulary file, no download, the same ids on every machine: token ``b + 4`` is the byte ``b``,
and ids 0-3 are ``PAD``, ``BOS``, ``EOS`` and ``SEP``::

    tok = ByteTokenizer()
    tok.encode("ok")            # [1, 115, 111, 2]  (BOS, 'o', 'k', EOS)
    tok.decode([1, 115, 111, 2])  # 'ok'
    ids, mask = tok.batch(["a red car", "ok"])   # (2, 11) LongTensor, (2, 11) bool (True = real token)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mla.errors import MLAInputError

logger = logging.getLogger(__name__)

PAD = 0
BOS = 1
EOS = 2
SEP = 3
NUM_SPECIAL = 4
VOCAB_SIZE = 256 + NUM_SPECIAL


class ByteTokenizer:
    """UTF-8 bytes as tokens, with ``BOS``/``EOS`` around each text and ``PAD`` to the right.

    Args:
        max_length: Most tokens one text may take, ``BOS`` and ``EOS`` included; longer texts are cut
            (the last kept token is still ``EOS``).

    """

    pad_id = PAD
    bos_id = BOS
    eos_id = EOS
    sep_id = SEP
    vocab_size = VOCAB_SIZE

    def __init__(self, max_length: int = 256) -> None:
        if max_length < 2:
            msg = f"max_length must be at least 2 (room for BOS and EOS), got {max_length}"
            raise MLAInputError(msg)
        self.max_length = max_length

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of one text.

        Args:
            text: Any Unicode string.
            special: Add ``BOS`` in front and ``EOS`` at the end.

        Returns:
            At most ``max_length`` ids.

        """
        ids = [byte + NUM_SPECIAL for byte in text.encode("utf-8")]
        if not special:
            return ids[: self.max_length]
        return [BOS, *ids[: self.max_length - 2], EOS]

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """The text of a sequence of ids: special tokens are skipped, decoding stops at the first ``EOS``.

        Byte sequences that are not valid UTF-8 (e.g. cut in the middle of a character) decode to U+FFFD.
        """
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        data = bytearray()
        for value in values:
            if value == EOS:
                break
            if NUM_SPECIAL <= value < VOCAB_SIZE:
                data.append(value - NUM_SPECIAL)
        return data.decode("utf-8", errors="replace")

    def batch(self, texts: Sequence[str], device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Encode texts and pad them to the longest one.

        Args:
            texts: One or more strings.
            device: Where the tensors go.

        Returns:
            ``ids`` (B, T) int64 and ``mask`` (B, T) bool, True on real tokens.

        """
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            msg = f"texts must be a sequence of str, got {type(texts).__name__}"
            raise MLAInputError(msg)
        if len(texts) == 0:
            msg = "texts is empty: give at least one string"
            raise MLAInputError(msg)
        encoded = [self.encode(text) for text in texts]
        length = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), length), PAD, dtype=torch.long)
        for row, values in enumerate(encoded):
            ids[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        ids = ids.to(device) if device is not None else ids
        return ids, ids != PAD
