"""``answer``: visual question answering, fused vector + question tokens → answer logits.

The fused vector asks the question's tokens what matters (one cross-attention step); the vector, the
attended question and the pooled question go through an MLP to logits over a fixed answer vocabulary::

    q        = vector                                      (B, 1, W)
    K = V    = Linear(question tokens)                     (B, T, W)   padding masked
    attended = MultiheadAttention(q, K, V)                 (B, W)
    question = mean of K over real tokens                  (B, W)
    logits   = MLP([vector, attended, question])           (B, 3W) → (B, A)

When the question modality is missing, ``attended`` and ``question`` are zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mla.encoders.base import FeatureSpec
from mla.errors import MLAConfigError
from mla.heads.base import Head, HeadInput, register_head

logger = logging.getLogger(__name__)


@register_head("answer")
class AnswerHead(Head):
    """Answer classification conditioned on the question's tokens.

    Args:
        width: Fused width W.
        modalities: The model's modalities; the question is one with tokens.
        num_answers: Size A of the answer vocabulary.
        question: Name of the question modality (default: the first modality with tokens).
        heads: Attention heads; must divide W.
        hidden: Hidden width of the MLP (default 2W).
        dropout: Dropout in the MLP.

    """

    def __init__(
        self,
        width: int,
        modalities: Mapping[str, FeatureSpec],
        num_answers: int = 32,
        question: str | None = None,
        heads: int = 4,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        with_tokens = [name for name, spec in modalities.items() if spec.token_dim is not None]
        name = question or (with_tokens[0] if with_tokens else None)
        if name is None or name not in with_tokens:
            msg = (
                f"the answer head needs a question modality with tokens (a text encoder); "
                f"modalities with tokens: {', '.join(with_tokens) or 'none'}"
            )
            raise MLAConfigError(msg)
        if width % heads or num_answers < 1:
            msg = (
                f"answer head: width {width} must be a multiple of heads {heads} and num_answers ≥ 1, got {num_answers}"
            )
            raise MLAConfigError(msg)
        token_dim = modalities[name].token_dim
        assert token_dim is not None  # checked above
        self.question = name
        self.key = nn.Linear(token_dim, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(3 * width),
            nn.Linear(3 * width, hidden or 2 * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden or 2 * width, num_answers),
        )

    def forward(self, inputs: HeadInput) -> Tensor:
        """Fused vector and question tokens → answer logits (B, A)."""
        vector = inputs.fused.vector  # (B, W)
        asked = inputs.features.get(self.question)
        if asked is None or asked.tokens is None:
            attended = question = torch.zeros_like(vector)  # (B, W)
        else:
            keys = self.key(asked.tokens)  # (B, T, W)
            mask = asked.token_mask if asked.token_mask is not None else torch.ones_like(keys[..., 0], dtype=torch.bool)
            out, _ = self.attn(vector[:, None].to(keys.dtype), keys, keys, key_padding_mask=~mask, need_weights=False)
            attended = out[:, 0]  # (B, W)
            real = mask.unsqueeze(-1).to(keys.dtype)  # (B, T, 1)
            question = (keys * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)  # (B, W)
        joint = torch.cat([vector, attended.to(vector.dtype), question.to(vector.dtype)], dim=1)  # (B, 3W)
        logits: Tensor = self.mlp(joint)  # (B, A)
        return logits
