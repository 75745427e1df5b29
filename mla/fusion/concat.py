"""``concat``: the plain baseline, project and concatenate.

Every modality is projected to W (non-spatial ones broadcast over space), the projections are
concatenated in the configured order (zeros for a missing modality) and mixed back to W::

    levels_l = ConvBNAct 1×1 (cat_m proj_m,l · p_m)           (B, M·W, H_l, W_l) → (B, W, H_l, W_l)
    vector   = LayerNorm(Linear(cat_m proj_m(vector_m) · p_m))  (B, M·W) → (B, W)
    weights  = p / Σ p                                         uniform over present modalities (B, M)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mla.encoders.base import NUM_LEVELS, FeatureSpec, ModalFeatures
from mla.encoders.blocks import ConvBNAct
from mla.fusion.base import Fusion, FusionOutput, register_fusion

logger = logging.getLogger(__name__)


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Concatenate the projected modalities and mix them with a 1×1 conv (levels) or a linear map (vector).

    Args:
        modalities: The model's modalities in order, with their feature sizes.
        width: Shared width W.
        modality_dropout: Per-sample modality dropout in training mode (see :class:`Fusion`).
        act: Activation after each level's mix: ``silu`` (default) or ``relu`` (fused by inference runtimes).

    """

    def __init__(
        self, modalities: Mapping[str, FeatureSpec], width: int, modality_dropout: float = 0.0, act: str = "silu"
    ) -> None:
        super().__init__(modalities, width, modality_dropout)
        count = len(self.names)
        levels = NUM_LEVELS if self.spatial else 0
        self.mix = nn.ModuleList(ConvBNAct(count * width, width, 1, act=act) for _ in range(levels))
        self.vector_mix = nn.Sequential(nn.Linear(count * width, width), nn.LayerNorm(width))

    def forward(self, features: Mapping[str, ModalFeatures | None]) -> FusionOutput:
        """Fuse the present modalities (see the module docstring for shapes)."""
        found, mask = self.present(features)  # {m: features}, (B, M) bool
        weights = mask.float() / mask.sum(dim=1, keepdim=True)  # (B, M)
        vector = self.vector_mix(self._stack(self.project_vectors(found), mask))  # (B, M·W) → (B, W)
        sizes = self.level_sizes(found)
        levels = None
        if sizes is not None:
            levels = tuple(
                self.mix[index](self._stack(self.project_levels(found, index, sizes[index]), mask))  # (B, W, H_l, W_l)
                for index in range(NUM_LEVELS)
            )
        return FusionOutput(vector=vector, weights=weights, levels=levels)

    def _stack(self, parts: Mapping[int, Tensor], mask: Tensor) -> Tensor:
        """Concatenate (B, W, ...) parts in modality order along dim 1, zeros for missing or dropped ones."""
        anchor = next(iter(parts.values()))
        slots = []
        for i in range(len(self.names)):
            if i in parts:
                keep = mask[:, i].to(anchor.dtype).view(-1, *([1] * (anchor.dim() - 1)))  # (B, 1, ...)
                slots.append(parts[i] * keep)
            else:
                slots.append(torch.zeros_like(anchor))
        return torch.cat(slots, dim=1)  # (B, M·W, ...)
