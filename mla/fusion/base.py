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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
        if not torch.compiler.is_compiling() and len({int(b) for b in sizes.values()}) > 1:
            msg = f"modalities have different batch sizes: {sizes}"
            raise MLAInputError(msg)
        first = next(iter(found.values())).vector
        mask = torch.zeros(first.shape[0], len(self.names), dtype=torch.bool, device=first.device)
        mask[:, list(found)] = True  # (B, M)
        for i, f in found.items():
            if f.present is not None:  # the model's presence input: absent for some samples
                mask[:, i] = f.present
        if self.training and self.modality_dropout > 0:
            mask = drop_modalities(mask, self.modality_dropout)
        return found, mask

    def level_sizes(self, found: Mapping[int, ModalFeatures]) -> list[tuple[int, int]] | None:
        """(H_l, W_l) of each pyramid level, from the first present spatial modality; None if none is."""
        for features in found.values():
            if features.levels is not None:
                return [(t.shape[-2], t.shape[-1]) for t in features.levels[:NUM_LEVELS]]  # symbolic under export
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


class _Tracing:
    """Whether the modal weights enter :func:`weighted_sum` as constants (see :func:`modal_weights_as_constants`)."""

    constant_weights = False


@contextmanager
def modal_weights_as_constants() -> Iterator[None]:
    """Treat the modal weights as constants in :func:`weighted_sum` while a graph is traced for pruning.

    A weight is one scalar per sample and modality, not a channel; but a tracer that follows
    element-wise products (torch-pruning's dependency graph) would otherwise tie the fused width W to
    the gate's M outputs and refuse to prune W at all. Only for tracing: training needs the gradient.
    """
    before = _Tracing.constant_weights
    _Tracing.constant_weights = True
    try:
        yield
    finally:
        _Tracing.constant_weights = before


def weighted_sum(parts: Mapping[int, Tensor], weights: Tensor) -> Tensor:
    """Σ_m w_m · part_m over the given parts: parts (B, W, ...) by modality index, weights (B, M)."""
    total: Tensor | None = None
    if _Tracing.constant_weights:
        weights = weights.detach()
    for i, part in parts.items():
        w = weights[:, i].to(part.dtype).view(-1, *([1] * (part.dim() - 1)))  # (B, 1, ...)
        total = w * part if total is None else total + w * part
    if total is None:
        msg = "weighted_sum needs at least one part"
        raise MLAInputError(msg)
    return total


class ModalGate(nn.Module):
    """The gate of ``dma`` and ``hffn``: logits over the M modalities of each sample.

    It reads every modality's pooled (B, W) feature (nothing from a missing or dropped one), optional
    extra (B, W) context and the (B, M) presence mask. It is one Linear over their concatenation,
    GELU, then Linear(hidden, M) — but the first layer is kept as one bias-free Linear per slot plus
    one for the mask, and summed. The result is the same; the difference is for pruning: a pruner
    that removes channels of W then finds one consumer per slot (torch-pruning cannot map one channel
    group repeated inside a concatenation). Checkpoints of the concatenated form load unchanged
    (``_load_from_state_dict`` splits their first layer).

    Args:
        count: M, the number of modalities.
        width: W of each pooled feature.
        extras: How many extra (B, W) context inputs the gate takes.
        hidden: Hidden width (default W).

    """

    def __init__(self, count: int, width: int, extras: int = 0, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or width
        self.count, self.extras = count, extras
        self.slots = nn.ModuleList(nn.Linear(width, hidden, bias=False) for _ in range(count + extras))
        self.presence = nn.Linear(count, hidden)  # the first layer's mask columns and its bias
        self.act = nn.GELU()
        self.out = nn.Linear(hidden, count)

    def forward(self, pooled: Mapping[int, Tensor], mask: Tensor, *extra: Tensor) -> Tensor:
        """Logits (B, M) from pooled {m: (B, W)}, the (B, M) bool mask and extras (B, W)."""
        anchor = next(iter(pooled.values()))
        h: Tensor = self.presence(mask.to(anchor.dtype))  # (B, hidden)
        for i, feature in pooled.items():
            h = h + self.slots[i](feature * mask[:, i : i + 1].to(anchor.dtype))  # a dropped modality adds 0
        for j, context in enumerate(extra):
            h = h + self.slots[self.count + j](context.to(anchor.dtype))
        logits: Tensor = self.out(self.act(h))  # (B, M)
        return logits

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        first = state_dict.pop(f"{prefix}0.weight", None)
        if first is not None:  # the concatenated form: Sequential(Linear(M·W + E·W + M, hidden), GELU, Linear)
            width = int(cast(nn.Linear, self.slots[0]).in_features)
            for k in range(self.count + self.extras):
                state_dict[f"{prefix}slots.{k}.weight"] = first[:, k * width : (k + 1) * width]
            state_dict[f"{prefix}presence.weight"] = first[:, -self.count :]
            state_dict[f"{prefix}presence.bias"] = state_dict.pop(f"{prefix}0.bias")
            state_dict[f"{prefix}out.weight"] = state_dict.pop(f"{prefix}2.weight")
            state_dict[f"{prefix}out.bias"] = state_dict.pop(f"{prefix}2.bias")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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
