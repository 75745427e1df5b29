"""``text``: byte tokens → embedding → a small Transformer encoder → tokens and a pooled vector.

::

    "A red car"  ──ByteTokenizer──▶ ids (B, T), mask (B, T)
    ids          ──embedding + positions──▶ (B, T, C)
                 ──TransformerEncoder × depth (pre-norm, padding masked)──▶ tokens (B, T, C)
    tokens       ──mean (or max) over real tokens──▶ vector (B, C)

The input is a ``str`` (a batch of one), a ``list[str]``, or a (B, T) integer tensor of token ids
from :class:`~mla.text.ByteTokenizer` (``PAD`` = 0 on the right).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from mla.encoders.base import Encoder, FeatureSpec, ModalFeatures, register_encoder
from mla.errors import MLAConfigError, MLAInputError
from mla.text import PAD, VOCAB_SIZE, ByteTokenizer

logger = logging.getLogger(__name__)


@register_encoder("text")
class TextEncoder(Encoder):
    """A byte-level Transformer text encoder.

    Args:
        width: Model width C (``ModalConfig.text_dim``).
        depth: Transformer layers.
        heads: Attention heads; must divide ``width``.
        max_len: Most tokens per text, ``BOS``/``EOS`` included; longer strings are cut.
        dropout: Dropout inside the Transformer layers.
        pool: How the vector is made from the real tokens: ``mean`` or ``max`` (per channel; one
            decisive word, such as a colour in a question, is not averaged away).

    """

    def __init__(
        self,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 256,
        dropout: float = 0.0,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if width % heads:
            msg = f"text width {width} must be a multiple of heads {heads}"
            raise MLAConfigError(msg)
        if pool not in ("mean", "max"):
            msg = f"text pool must be 'mean' or 'max', got {pool!r}"
            raise MLAConfigError(msg)
        self.pool = pool
        self.tokenizer = ByteTokenizer(max_length=max_len)
        self.max_len = max_len
        self.spec = FeatureSpec(vector_dim=width, token_dim=width)

        self.embed = nn.Embedding(VOCAB_SIZE, width, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def prepare(self, value: object, name: str) -> Tensor:
        """Token ids (B, T) from a ``str``, a ``list[str]`` or an integer id tensor.

        Raises:
            MLAInputError: Another type, an empty list, ids out of range, too many tokens, or a row of
                padding only.

        """
        device = self.embed.weight.device
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            ids, _ = self.tokenizer.batch(value, device=device)
            return ids
        if not isinstance(value, Tensor):
            msg = f"{name} must be a str, a list of str or a (B, T) LongTensor of token ids, got {type(value).__name__}"
            raise MLAInputError(msg)
        if value.dim() != 2 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            msg = f"{name} token ids must be a (B, T) integer tensor, got {value.dtype} of shape {tuple(value.shape)}"
            raise MLAInputError(msg)
        if value.shape[1] > self.max_len or value.shape[1] == 0:
            msg = f"{name} has {value.shape[1]} tokens; the encoder takes 1 to {self.max_len} (max_len)"
            raise MLAInputError(msg)
        if bool(((value < 0) | (value >= VOCAB_SIZE)).any()):
            msg = f"{name} token ids must lie in [0, {VOCAB_SIZE}) (mla.text.ByteTokenizer)"
            raise MLAInputError(msg)
        empty = ~(value != PAD).any(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            msg = f"{name} rows {rows} hold only padding; pass None for a missing text instead"
            raise MLAInputError(msg)
        return value.long().to(device)

    def forward(self, x: Tensor) -> ModalFeatures:
        """(B, T) token ids → tokens (B, T, C), a (B, C) vector and the (B, T) token mask."""
        mask = x != PAD  # (B, T) True on real tokens
        h = self.embed(x) + self.position[: x.shape[1]]  # (B, T, C)
        h = self.blocks(h, src_key_padding_mask=~mask)  # (B, T, C)
        h = self.norm(h)  # (B, T, C)
        if self.pool == "max":  # every row has a real token (prepare)
            vector = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, C)
        else:
            weights = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            vector = (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, C)
        return ModalFeatures(vector=vector, tokens=h, token_mask=mask)

    def example(self, batch: int, image_size: int) -> Any:
        """``batch`` short strings."""
        return [f"an example text {index}" for index in range(batch)]
