"""``dma``: dynamic modal attention, a per-sample weighted sum of the modalities.

Each modality is projected to the shared width W (per level for spatial ones, broadcast over space
for the others). Modal importance is a softmax over modalities of a learned prior plus an
input-conditioned gate, so weights vary per sample; a missing modality's logit is -inf, so the
weights renormalise over the present ones::

    v_m  = proj_m(vector_m)                                   (B, W)      per present modality
    g    = MLP([v_1·p_1, …, v_M·p_M, p])                      (B, M)      p: (B, M) presence mask
    w    = softmax(prior + g, masked to present)              (B, M)
    vector   = LayerNorm(Σ_m w_m · v_m)                       (B, W)
    levels_l = Σ_m w_m · proj_m,l(levels_m,l)                 (B, W, H_l, W_l)  l = fine, mid, coarse
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from mla.encoders.base import NUM_LEVELS, FeatureSpec, ModalFeatures
from mla.fusion.base import Fusion, FusionOutput, ModalGate, masked_softmax, register_fusion, weighted_sum

logger = logging.getLogger(__name__)


@register_fusion("dma")
class DynamicModalAttention(Fusion):
    """Weighted sum of projected modalities, the weights from a learned prior and a per-sample gate.

    Args:
        modalities: The model's modalities in order, with their feature sizes.
        width: Shared width W.
        modality_dropout: Per-sample modality dropout in training mode (see :class:`Fusion`).
        hidden: Hidden width of the gate MLP (default W).

    """

    def __init__(
        self,
        modalities: Mapping[str, FeatureSpec],
        width: int,
        modality_dropout: float = 0.0,
        hidden: int | None = None,
    ) -> None:
        super().__init__(modalities, width, modality_dropout)
        count = len(self.names)
        self.prior = nn.Parameter(torch.zeros(count))
        self.gate = ModalGate(count, width, hidden=hidden)
        self.norm = nn.LayerNorm(width)

    def forward(self, features: Mapping[str, ModalFeatures | None]) -> FusionOutput:
        """Fuse the present modalities (see the module docstring for shapes)."""
        found, mask = self.present(features)  # {m: features}, (B, M) bool
        vectors = self.project_vectors(found)  # {m: (B, W)}
        logits = self.prior + self.gate(vectors, mask)  # (B, M)
        weights = masked_softmax(logits, mask)  # (B, M), rows sum to 1 over present modalities
        vector = self.norm(weighted_sum(vectors, weights))  # (B, W)
        sizes = self.level_sizes(found)
        levels = None
        if sizes is not None:
            levels = tuple(
                weighted_sum(self.project_levels(found, index, sizes[index]), weights)  # (B, W, H_l, W_l)
                for index in range(NUM_LEVELS)
            )
        return FusionOutput(vector=vector, weights=weights, levels=levels)
