"""``answer``: visual question answering, fused vector + question tokens → answer logits.

The fused vector asks the question's tokens what matters (one cross-attention step); the vector, the
attended question and the pooled question go through an MLP to logits over a fixed answer vocabulary::

    q        = vector                                      (B, 1, W)
    K = V    = Linear(question tokens)                     (B, T, W)   padding masked
    attended = MultiheadAttention(q, K, V)                 (B, W)
    question = mean of K over real tokens                  (B, W)
    logits   = MLP([vector, attended, question])           (B, 3W) → (B, A)

With ``reasoning="relation"`` a :class:`~mla.heads.relation.RelationReasoner` also reads one level
of the fused pyramid (every ordered pair of cells with the question, as a Relation Network) and its
output joins the MLP's input. With ``relation_source`` naming a modality, the relation reads that
modality's own level instead (its encoder's cells before fusion, layer-normalised, as the Relation
Network reads its CNN's cells)::

    relation = RelationReasoner(levels[level], [attended, question])   (B, W)
    logits   = MLP([vector, attended, question, relation])           (B, 4W) → (B, A)

With ``relation_pointer`` a :class:`~mla.heads.pointer.PointerReasoner` over all the source
modality's levels (the named object, then the closest or furthest one) adds to ``relation``.

When the question modality is missing, ``attended`` and ``question`` are zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mla.encoders.base import FeatureSpec
from mla.errors import MLAConfigError, MLAInputError
from mla.heads.base import Head, HeadInput, register_head
from mla.heads.pointer import PointerReasoner
from mla.heads.relation import RelationReasoner

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
        reasoning: ``"attention"`` (the fused vector only) or ``"relation"`` (also pairs of fused cells).
        level: Pyramid level the relation reads (0 fine, 1 mid, 2 coarse).
        relation_hidden: Width of the relation MLPs.
        relation_source: ``None`` (the fused level) or the modality whose own level the relation reads.
        relation_anchor: The relation also weights pairs by the cell the question names.
        relation_pointer: A pointer over the source modality's levels adds to the relation (needs
            ``relation_source``; see ``mla.heads.pointer``).
        pointer_glimpse: Side of the window of cells the pointer reads around the object it finds
            (0: none; needs ``relation_pointer``).

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
        reasoning: str = "attention",
        level: int = 1,
        relation_hidden: int = 128,
        relation_source: str | None = None,
        relation_anchor: bool = False,
        relation_pointer: bool = False,
        pointer_glimpse: int = 0,
    ) -> None:
        super().__init__()
        if reasoning not in ("attention", "relation") or level not in (0, 1, 2):
            msg = f"answer head: reasoning must be 'attention' or 'relation' and level 0-2, got {reasoning!r}, {level}"
            raise MLAConfigError(msg)
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
        spatial = [m for m, spec in modalities.items() if spec.level_channels is not None]
        if relation_source is not None and relation_source not in spatial:
            msg = (
                f"answer head: relation_source {relation_source!r} is not a modality with levels; "
                f"choose one of {', '.join(spatial) or 'none'} or leave it out (the fused level)"
            )
            raise MLAConfigError(msg)
        if relation_pointer and (relation_source is None or reasoning != "relation"):
            msg = (
                "answer head: relation_pointer reads a modality's own levels: "
                "set reasoning='relation' and relation_source"
            )
            raise MLAConfigError(msg)
        if pointer_glimpse < 0 or (pointer_glimpse and not relation_pointer):
            msg = f"answer head: pointer_glimpse is 0 or a window side with relation_pointer, got {pointer_glimpse}"
            raise MLAConfigError(msg)
        token_dim = modalities[name].token_dim
        assert token_dim is not None  # checked above
        self.question = name
        self.key = nn.Linear(token_dim, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.level = level
        self.relation_source = relation_source
        channels = modalities[relation_source].level_channels if relation_source is not None else None
        cells = width if channels is None else channels[level]
        self.relation = (
            RelationReasoner(
                cells, 2 * width, relation_hidden, width, norm=relation_source is not None, anchor=relation_anchor
            )
            if reasoning == "relation"
            else None
        )
        self.pointer = None
        if relation_pointer:
            assert channels is not None  # checked above: relation_pointer needs relation_source
            self.pointer = PointerReasoner(
                channels, 2 * width, hidden=relation_hidden // 2, out_dim=width, glimpse=pointer_glimpse
            )
        self.needs_levels = self.relation is not None
        joint = 4 * width if self.relation is not None else 3 * width
        self.mlp = nn.Sequential(
            nn.LayerNorm(joint),
            nn.Linear(joint, hidden or 2 * width),
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
        parts = [vector, attended.to(vector.dtype), question.to(vector.dtype)]
        if self.relation is not None:
            asked_vector = torch.cat(parts[1:], dim=1)  # (B, 2W)
            relation, prior = self.relation.reason(self._relation_level(inputs), asked_vector)  # (B, W), anchor
            if self.pointer is not None:  # starts from the relation's anchor, when it has one
                relation = relation + self.pointer(self._source_levels(inputs), asked_vector, prior)  # (B, W)
            parts.append(relation.to(vector.dtype))
        joint = torch.cat(parts, dim=1)  # (B, 3W) or (B, 4W)
        logits: Tensor = self.mlp(joint)  # (B, A)
        return logits

    def _relation_level(self, inputs: HeadInput) -> Tensor:
        """The cells the relation pairs: the fused level, or the source modality's own level."""
        if self.relation_source is None:
            assert inputs.fused.levels is not None  # needs_levels: MLAModel checks a spatial modality is present
            return inputs.fused.levels[self.level]
        return self._source_levels(inputs)[self.level]

    def _source_levels(self, inputs: HeadInput) -> list[Tensor]:
        """The ``relation_source`` modality's own pyramid, finest first."""
        found = inputs.features.get(str(self.relation_source))
        if found is None or found.levels is None:
            msg = f"the answer head's relation reads the {self.relation_source!r} modality's levels, which are missing"
            raise MLAInputError(msg)
        return list(found.levels)
