"""``sequence``: a small Transformer decoder that writes text conditioned on the fused representation.

The memory the decoder attends to is the fused vector, the fused coarse level's cells (when a
spatial modality is present) and the tokens of every sequence modality::

    memory  = [vector (B, 1, W) | coarse cells (B, H/16·W/16, W) | Linear(tokens_m) (B, T_m, W) …]
    ids     (B, T)  ──embedding + positions──▶ (B, T, W)
            ──TransformerDecoder × depth (causal self-attention, cross-attention to memory)──▶ (B, T, W)
            ──LayerNorm─Linear──▶ logits (B, T, V)

Training is teacher-forced: pass ``ids = [BOS, y_1 … y_{T-1}]`` (``HeadInput.tokens``) and compare
the logits with ``[y_1 … y_T]``. Without tokens, ``forward`` decodes greedily and returns the logits
of each generated step; :meth:`SequenceHead.generate` returns the token ids (decode them with
:class:`~mla.text.ByteTokenizer`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mla.encoders.base import FeatureSpec
from mla.errors import MLAConfigError, MLAInputError
from mla.heads.base import Head, HeadInput, register_head
from mla.text import BOS, EOS, PAD, VOCAB_SIZE

logger = logging.getLogger(__name__)


@register_head("sequence")
class SequenceHead(Head):
    """A causal Transformer decoder over a byte vocabulary, cross-attending to the fused memory.

    Args:
        width: Fused width W (the decoder's width).
        modalities: The model's modalities; those with tokens join the memory.
        vocab_size: V (default: the byte tokenizer's vocabulary).
        depth: Decoder layers.
        heads: Attention heads; must divide W.
        max_len: Most decoder positions (teacher-forced length or generated length).
        dropout: Dropout inside the decoder layers.

    """

    def __init__(
        self,
        width: int,
        modalities: Mapping[str, FeatureSpec],
        vocab_size: int = VOCAB_SIZE,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width % heads or vocab_size <= EOS or max_len < 1:
            msg = f"sequence head: width {width} must be a multiple of heads {heads}, vocab_size > {EOS}, max_len ≥ 1"
            raise MLAConfigError(msg)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.token_proj = nn.ModuleDict(
            {name: nn.Linear(spec.token_dim, width) for name, spec in modalities.items() if spec.token_dim is not None}
        )
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerDecoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, depth)
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab_size)

    def forward(self, inputs: HeadInput) -> Tensor:
        """Teacher-forced logits (B, T, V) for ``inputs.tokens``, else the greedy decoding's step logits."""
        memory, padding = self.memory(inputs)  # (B, S, W), (B, S)
        if inputs.tokens is None:
            _, logits = self._greedy(memory, padding, self.max_len)
            return logits
        ids = self._check_tokens(inputs.tokens, memory.shape[0])
        return self.decode(ids.to(memory.device), memory, padding)

    def memory(self, inputs: HeadInput) -> tuple[Tensor, Tensor]:
        """The decoder's memory (B, S, W) and its padding mask (B, S), True on padding."""
        vector = inputs.fused.vector  # (B, W)
        parts = [vector[:, None]]  # (B, 1, W)
        if inputs.fused.levels is not None:
            parts.append(inputs.fused.levels[-1].flatten(2).transpose(1, 2))  # (B, H/16·W/16, W)
        masks = [torch.ones(vector.shape[0], sum(p.shape[1] for p in parts), dtype=torch.bool, device=vector.device)]
        for name, proj in self.token_proj.items():
            features = inputs.features.get(name)
            if features is None or features.tokens is None:
                continue
            parts.append(proj(features.tokens))  # (B, T_m, W)
            real = features.token_mask if features.token_mask is not None else torch.ones_like(features.tokens[..., 0])
            masks.append(real.bool())
        dtype = parts[-1].dtype
        memory = torch.cat([p.to(dtype) for p in parts], dim=1)  # (B, S, W)
        return memory, ~torch.cat(masks, dim=1)  # (B, S, W), (B, S)

    def decode(self, ids: Tensor, memory: Tensor, padding: Tensor) -> Tensor:
        """Token ids (B, T) → next-token logits (B, T, V), causally masked."""
        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)  # (T, T) True = hidden
        x = self.embed(ids) + self.position[:length]  # (B, T, W)
        x = self.decoder(x, memory.to(x.dtype), tgt_mask=causal, memory_key_padding_mask=padding)  # (B, T, W)
        logits: Tensor = self.lm_head(self.norm(x))  # (B, T, V)
        return logits

    @torch.no_grad()
    def generate(self, inputs: HeadInput, max_len: int | None = None) -> Tensor:
        """Greedy decoding from ``BOS``: token ids (B, T ≤ max_len), ``PAD`` after each row's ``EOS``."""
        memory, padding = self.memory(inputs)
        ids, _ = self._greedy(memory, padding, max_len or self.max_len)
        return ids

    def _greedy(self, memory: Tensor, padding: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """Greedy ids (B, T) without the leading BOS and the logits (B, T, V) that chose them."""
        if not 1 <= max_len <= self.max_len:
            msg = f"max_len must lie in [1, {self.max_len}] (the head's positions), got {max_len}"
            raise MLAInputError(msg)
        batch = memory.shape[0]
        ids = torch.full((batch, 1), BOS, dtype=torch.long, device=memory.device)  # (B, 1)
        done = torch.zeros(batch, dtype=torch.bool, device=memory.device)  # (B,)
        steps: list[Tensor] = []
        for _ in range(max_len):
            logits = self.decode(ids, memory, padding)[:, -1]  # (B, V)
            steps.append(logits)
            token = logits.argmax(dim=-1).masked_fill(done, PAD)  # (B,)
            ids = torch.cat([ids, token[:, None]], dim=1)  # (B, t + 1)
            done = done | (token == EOS)
            if bool(done.all()):
                break
        return ids[:, 1:], torch.stack(steps, dim=1)  # (B, T), (B, T, V)

    def _check_tokens(self, ids: Tensor, batch: int) -> Tensor:
        """Check teacher-forcing ids: (B, T) integers in [0, V), 1 ≤ T ≤ max_len."""
        if ids.dim() != 2 or ids.is_floating_point() or ids.shape[0] != batch:
            msg = f"sequence tokens must be a ({batch}, T) integer tensor, got {ids.dtype} of shape {tuple(ids.shape)}"
            raise MLAInputError(msg)
        if not 1 <= ids.shape[1] <= self.max_len:
            msg = f"sequence tokens have length {ids.shape[1]}; the head takes 1 to {self.max_len} (max_len)"
            raise MLAInputError(msg)
        if bool(((ids < 0) | (ids >= self.vocab_size)).any()):
            msg = f"sequence token ids must lie in [0, {self.vocab_size})"
            raise MLAInputError(msg)
        return ids.long()
