"""What every fusion takes, returns and shares: presence masks, modality dropout, projections.

A fusion takes ``{name: ModalFeatures}`` for the modalities given (a missing one is absent or None)
and returns a :class:`FusionOutput`::

    vector         (B, W)                     the fused summary
    weights        (B, M)                     modal weights, in the model's modality order; each row
                                              sums to 1 over the present modalities, 0 for missing ones
    levels         ((B, W, H/4, W/4), (B, W, H/8, W/8), (B, W, H/16, W/16)) or None when no present
                                              modality is spatial (H, W: the reference grid)
    level_weights  (B, 3, M) or None          per-level weights for fusions that have them (hffn)

Non-spatial modalities (text, tabular) join the pyramid broadcast over space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mla.encoders.base import NUM_LEVELS, FeatureSpec, ModalFeatures
from mla.encoders.blocks import ConvBNAct
from mla.errors import MLAConfigError, MLAInputError
from mla.registry import Registry

logger = logging.getLogger(__name__)

C = TypeVar("C", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class FusionOutput:
    """The fused representation of a batch.

    Attributes:
        vector: (B, W) fused summary.
        weights: (B, M) modal weights in the configured modality order; rows sum to 1 over the
            present modalities and are 0 for missing (or dropped) ones.
        levels: The fused pyramid (fine, mid, coarse), each (B, W, H_l, W_l), or None when no
            present modality is spatial.
        level_weights: (B, L, M) weights per pyramid level for fusions that weigh each level apart
            (``weights`` is then their mean over levels), else None.

    """

    vector: Tensor
    weights: Tensor
    levels: tuple[Tensor, ...] | None = None
    level_weights: Tensor | None = None


class ModalProjection(nn.Module):
    """Brings one modality to the shared width W: a (B, W) vector and, per level, a (B, W, H_l, W_l) map.

    Spatial modalities are projected level by level with a 1×1 conv + BN; non-spatial ones with a
    linear map of their vector, broadcast over the level's size (a view, no copy).
    """

    def __init__(self, spec: FeatureSpec, width: int, num_levels: int = NUM_LEVELS) -> None:
        super().__init__()
        self.vector = nn.Sequential(nn.Linear(spec.vector_dim, width), nn.LayerNorm(width))
        self.levels: nn.ModuleList
        if spec.level_channels is not None:
            self.levels = nn.ModuleList(ConvBNAct(c, width, 1, act=None) for c in spec.level_channels[:num_levels])
        else:
            self.levels = nn.ModuleList(nn.Linear(spec.vector_dim, width) for _ in range(num_levels))

    def project_vector(self, features: ModalFeatures) -> Tensor:
        """(B, C) → (B, W)."""
        out: Tensor = self.vector(features.vector)
        return out

    def project_level(self, features: ModalFeatures, index: int, size: tuple[int, int]) -> Tensor:
        """Level ``index`` at the shared width: (B, W, *size)."""
        layer = self.levels[index]
        if features.levels is not None:
            out: Tensor = layer(features.levels[index])  # (B, W, H_l, W_l)
            return out
        flat: Tensor = layer(features.vector)  # (B, W)
        return flat[:, :, None, None].expand(-1, -1, *size)  # (B, W, H_l, W_l), broadcast


class Fusion(nn.Module):
    """Base of the registered fusions.

    Args:
        modalities: The model's modalities in order, with the sizes of their features.
        width: Shared width W of the fused vector and pyramid.
        modality_dropout: In training mode, the probability of dropping each present modality of
            each sample (never all of a sample's modalities); 0 disables it. Inactive in eval mode.

    """

    def __init__(self, modalities: Mapping[str, FeatureSpec], width: int, modality_dropout: float = 0.0) -> None:
        super().__init__()
        if not modalities:
            msg = "a fusion needs at least one modality"
            raise MLAConfigError(msg)
        if width < 1:
            msg = f"fusion width must be ≥ 1, got {width}"
            raise MLAConfigError(msg)
        if not 0.0 <= modality_dropout < 1.0:
            msg = f"modality_dropout must lie in [0, 1), got {modality_dropout}"
            raise MLAConfigError(msg)
        self.names = tuple(modalities)
        self.specs = dict(modalities)
        self.width = width
        self.modality_dropout = modality_dropout
        self.spatial = any(spec.spatial for spec in self.specs.values())
        self.proj = nn.ModuleDict({name: ModalProjection(spec, width) for name, spec in self.specs.items()})

    def forward(self, features: Mapping[str, ModalFeatures | None]) -> FusionOutput:
        """Fuse the present modalities."""
        raise NotImplementedError

    def present(self, features: Mapping[str, ModalFeatures | None]) -> tuple[dict[int, ModalFeatures], Tensor]:
        """The given modalities by index, and the (B, M) bool presence mask after modality dropout.

        Raises:
            MLAInputError: An unknown modality name, no modality at all, or unequal batch sizes.

        """
        unknown = sorted(set(features) - set(self.names))
        if unknown:
            msg = f"unknown modality {', '.join(map(repr, unknown))}: this fusion takes {', '.join(self.names)}"
            raise MLAInputError(msg)
        found = {i: f for i, name in enumerate(self.names) if (f := features.get(name)) is not None}
        if not found:
            msg = f"all modalities are missing: give at least one of {', '.join(self.names)}"
            raise MLAInputError(msg)
        sizes = {self.names[i]: f.batch_size for i, f in found.items()}
        if len(set(sizes.values())) > 1:
            msg = f"modalities have different batch sizes: {sizes}"
            raise MLAInputError(msg)
        first = next(iter(found.values())).vector
        mask = torch.zeros(first.shape[0], len(self.names), dtype=torch.bool, device=first.device)
        mask[:, list(found)] = True  # (B, M)
        if self.training and self.modality_dropout > 0:
            mask = drop_modalities(mask, self.modality_dropout)
        return found, mask

    def level_sizes(self, found: Mapping[int, ModalFeatures]) -> list[tuple[int, int]] | None:
        """(H_l, W_l) of each pyramid level, from the first present spatial modality; None if none is."""
        for features in found.values():
            if features.levels is not None:
                return [(int(t.shape[-2]), int(t.shape[-1])) for t in features.levels[:NUM_LEVELS]]
        return None

    def project_vectors(self, found: Mapping[int, ModalFeatures]) -> dict[int, Tensor]:
        """Every present modality's vector at the shared width: index → (B, W)."""
        return {i: self.projection(i).project_vector(f) for i, f in found.items()}

    def project_levels(
        self, found: Mapping[int, ModalFeatures], index: int, size: tuple[int, int]
    ) -> dict[int, Tensor]:
        """Every present modality at pyramid level ``index``: index → (B, W, H_l, W_l)."""
        return {i: self.projection(i).project_level(f, index, size) for i, f in found.items()}

    def projection(self, index: int) -> ModalProjection:
        """The projection of modality number ``index``."""
        return cast(ModalProjection, self.proj[self.names[index]])


def drop_modalities(mask: Tensor, p: float) -> Tensor:
    """Drop each present modality of each sample with probability ``p``, keeping at least one per sample.

    Args:
        mask: (B, M) bool presence.
        p: Drop probability.

    Returns:
        (B, M) bool, a subset of ``mask`` with at least one True in each row that had one.

    """
    kept = mask & (torch.rand(mask.shape, device=mask.device) >= p)  # (B, M)
    lost = ~kept.any(dim=1, keepdim=True)  # (B, 1) rows that lost everything
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0)  # (B, M)
    one = F.one_hot(scores.argmax(dim=1), mask.shape[1]).bool() & mask  # (B, M) one random present modality
    return torch.where(lost, one, kept)


def masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over modalities with missing ones at weight 0: (B, M) logits, (B, M) bool mask → (B, M) float32."""
    return logits.float().masked_fill(~mask, float("-inf")).softmax(dim=-1)


def weighted_sum(parts: Mapping[int, Tensor], weights: Tensor) -> Tensor:
    """Σ_m w_m · part_m over the given parts: parts (B, W, ...) by modality index, weights (B, M)."""
    total: Tensor | None = None
    for i, part in parts.items():
        w = weights[:, i].to(part.dtype).view(-1, *([1] * (part.dim() - 1)))  # (B, 1, ...)
        total = w * part if total is None else total + w * part
    if total is None:
        msg = "weighted_sum needs at least one part"
        raise MLAInputError(msg)
    return total


def gate_input(pooled: Mapping[int, Tensor], mask: Tensor, width: int, *extra: Tensor) -> Tensor:
    """The gate's input: every modality's pooled (B, W) (zeros when missing or dropped), extras, and the mask.

    Returns:
        (B, M·W + Σ extra widths + M).

    """
    anchor = next(iter(pooled.values()))
    slots = []
    for i in range(mask.shape[1]):
        keep = mask[:, i : i + 1].to(anchor.dtype)  # (B, 1)
        slots.append(pooled[i] * keep if i in pooled else anchor.new_zeros(anchor.shape[0], width))
    return torch.cat([*slots, *(e.to(anchor.dtype) for e in extra), mask.to(anchor.dtype)], dim=1)


FUSIONS: Registry[Fusion] = Registry("fusion")


def register_fusion(name: str) -> Callable[[C], C]:
    """Register a fusion class under ``name`` (a decorator)."""
    return FUSIONS.register(name)


def create_fusion(name: str, **kwargs: Any) -> Fusion:
    """Build a registered fusion (``modalities=``, ``width=``, ``modality_dropout=``, its own options)."""
    return FUSIONS.create(name, **kwargs)


def list_fusions() -> list[str]:
    """Names accepted by :func:`create_fusion`, sorted."""
    return FUSIONS.names()
