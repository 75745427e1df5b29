"""``hffn``: hierarchical feature fusion over the three pyramid levels.

Bottom-up, each level fuses the modalities with its own per-sample weights (a DMA-style gate that
also sees the finer fused level), adds that finer level downsampled as context and refines the sum;
then a top-down, FPN-like pass brings coarse context back to the fine levels::

    bottom-up, l = fine, mid, coarse:
        P_m,l = proj_m,l(levels_m,l)                                      (B, W, H_l, W_l)
        C_l   = Down(F_{l-1}) (zeros at the fine level)                   (B, W, H_l, W_l)
        w_l   = softmax(prior_l + MLP_l([GAP(P_1,l)·p_1, …, GAP(C_l), p]), masked)   (B, M)
        F_l   = Block_l(Σ_m w_m,l · P_m,l + C_l)                          (B, W, H_l, W_l)
    top-down:
        O_coarse = F_coarse;  O_l = Smooth_l(F_l + up(O_{l+1}))           (B, W, H_l, W_l)
    weights  = mean_l w_l                                                 (B, M)
    vector   = LayerNorm(Σ_m weights_m · proj_m(vector_m) + Linear(GAP(O_coarse)))   (B, W)

A missing modality has weight 0 at every level, as in ``dma``. With no spatial modality present the
levels are skipped and the gates see the modal vectors only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mla.encoders.base import NUM_LEVELS, FeatureSpec, ModalFeatures
from mla.encoders.blocks import SeparableBlock, upsample
from mla.fusion.base import Fusion, FusionOutput, ModalGate, masked_softmax, register_fusion, weighted_sum

logger = logging.getLogger(__name__)


@register_fusion("hffn")
class HierarchicalFusion(Fusion):
    """Per-level gated cross-modal fusion, bottom-up with finer context, then a top-down refinement.

    Args:
        modalities: The model's modalities in order, with their feature sizes.
        width: Shared width W.
        modality_dropout: Per-sample modality dropout in training mode (see :class:`Fusion`).
        hidden: Hidden width of each level's gate MLP (default W).
        act: Activation of the conv blocks.

    """

    def __init__(
        self,
        modalities: Mapping[str, FeatureSpec],
        width: int,
        modality_dropout: float = 0.0,
        hidden: int | None = None,
        act: str = "silu",
    ) -> None:
        super().__init__(modalities, width, modality_dropout)
        count = len(self.names)
        self.prior = nn.Parameter(torch.zeros(NUM_LEVELS, count))
        self.gates = nn.ModuleList(ModalGate(count, width, extras=1, hidden=hidden) for _ in range(NUM_LEVELS))
        blocks = NUM_LEVELS if self.spatial else 0
        self.merge = nn.ModuleList(SeparableBlock(width, width, 1, act) for _ in range(blocks))
        self.down = nn.ModuleList(SeparableBlock(width, width, 2, act) for _ in range(max(blocks - 1, 0)))
        self.smooth = nn.ModuleList(SeparableBlock(width, width, 1, act) for _ in range(max(blocks - 1, 0)))
        self.pool = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, features: Mapping[str, ModalFeatures | None]) -> FusionOutput:
        """Fuse the present modalities (see the module docstring for shapes)."""
        found, mask = self.present(features)  # {m: features}, (B, M) bool
        vectors = self.project_vectors(found)  # {m: (B, W)}
        sizes = self.level_sizes(found)  # [(H_l, W_l)] or None
        context: Tensor | None = None  # the finer fused level, downsampled to this level
        fused: list[Tensor] = []
        level_weights: list[Tensor] = []
        for index in range(NUM_LEVELS):
            parts = self.project_levels(found, index, sizes[index]) if sizes else {}  # {m: (B, W, H_l, W_l)}
            pooled = {i: part.mean(dim=(2, 3)) for i, part in parts.items()} if parts else vectors  # {m: (B, W)}
            summary = (context.mean(dim=(2, 3)),) if context is not None else ()  # (B, W); none at the fine level
            logits = self.prior[index] + self.gates[index](pooled, mask, *summary)  # (B, M)
            weights = masked_softmax(logits, mask)  # (B, M)
            level_weights.append(weights)
            if parts:
                x = weighted_sum(parts, weights)  # (B, W, H_l, W_l)
                x = x + context if context is not None else x
                fused.append(self.merge[index](x))  # (B, W, H_l, W_l)
                if index < NUM_LEVELS - 1:
                    context = self.down[index](fused[-1])  # (B, W, H_{l+1}, W_{l+1})

        stacked = torch.stack(level_weights, dim=1)  # (B, L, M)
        mean_weights = stacked.mean(dim=1)  # (B, M), still sums to 1, 0 for missing modalities
        vector = weighted_sum(vectors, mean_weights)  # (B, W)
        levels = self._top_down(fused) if fused else None
        if levels is not None:
            vector = vector + self.pool(levels[-1].mean(dim=(2, 3)))  # (B, W)
        return FusionOutput(vector=self.norm(vector), weights=mean_weights, levels=levels, level_weights=stacked)

    def _top_down(self, fused: list[Tensor]) -> tuple[Tensor, ...]:
        """FPN-like refinement, coarse to fine: O_l = Smooth_l(F_l + up(O_{l+1}))."""
        outs = [fused[-1]]  # coarse (B, W, H/16, W/16)
        for index in reversed(range(len(fused) - 1)):
            top = upsample(outs[0], fused[index].shape[-2:])  # (B, W, H_l, W_l)
            outs.insert(0, self.smooth[index](fused[index] + top))  # (B, W, H_l, W_l)
        return tuple(outs)  # fine, mid, coarse
