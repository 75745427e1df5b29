"""Stage 2: cross-modal alignment with a symmetric InfoNCE loss and a learnable temperature.

Two image modalities are aligned **densely**, at a pyramid level where their grids meet (the fine level
of a visible and an IR pyramid have the same size by design); an image and a text (or any modality
without a pyramid) are aligned by their pooled vectors::

    visible ─conv_pyramid─► fine (B, C_v, H/4, W/4) ─┐ the same N positions per image
    infrared ─ir_pyramid──► fine (B, C_i, H/4, W/4) ─┤ (B·N, C_v), (B·N, C_i)
                                                     ▼ throw-away MLP heads, L2-normalised
    z_v, z_i (B·N, D)    logits = z_v z_iᵀ / τ     loss = (CE(logits) + CE(logitsᵀ)) / 2
                         positives: co-located pairs; negatives: every other position and image in the batch

    image ─► vector (B, C) ─► z (B, D)  ─┐ same loss over the batch
    text  ─► vector (B, C) ─► z (B, D)  ─┘

τ is learned per pair as a log-scale (as CLIP) and clamped to ``[min_temperature, max_temperature]``.
Neighbouring cells look alike, so nearby negatives are hard; sampling a few dozen positions per image
keeps most negatives far apart. With ``mask_ratio > 0`` the inputs are masked as in stage 1 (one mask for
all modalities) and positions are drawn from the visible cells only.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mla.encoders import Encoder, ModalFeatures
from mla.encoders.base import NUM_LEVELS, REFERENCE_STRIDES
from mla.errors import MLAConfigError, MLAInputError
from mla.pretrain.base import Batch, PretrainStage, StageOutput, has_tokens, is_image_like
from mla.pretrain.masking import PatchMask, fill_masked, random_patch_mask

__all__ = [
    "AlignmentStage",
    "LearnableTemperature",
    "ProjectionHead",
    "alignment_loss",
    "default_pairs",
    "gather_positions",
    "info_nce",
    "sample_positions",
]

logger = logging.getLogger(__name__)


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> StageOutput:
    """Symmetric InfoNCE between rows of ``a`` and ``b``: row i of one is the positive of row i of the other.

    Args:
        a: (N, D) embeddings of one modality (normalised here).
        b: (N, D) embeddings of the other, in the same order.
        logit_scale: 1 / temperature. Similarities and logits are computed in float32, also under autocast.

    Returns:
        ``(loss, metrics)``: the mean of both directions' cross-entropy, and ``acc`` (top-1 of both
        directions), ``pos_sim`` and ``neg_sim`` (mean cosine of positives and of negatives).

    """
    with torch.autocast(a.device.type, enabled=False):  # similarities in float32 even under AMP
        a = F.normalize(a.float(), dim=-1)
        b = F.normalize(b.float(), dim=-1)
        sim = a @ b.t()  # (N, N) cosines
        logits = sim * logit_scale
    target = torch.arange(len(a), device=a.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    with torch.no_grad():
        acc = ((logits.argmax(dim=1) == target).float().mean() + (logits.argmax(dim=0) == target).float().mean()) / 2
        pos = sim.diagonal().mean()
        count = len(a)
        neg = (sim.sum() - sim.diagonal().sum()) / max(count * count - count, 1)
    return loss, {"acc": float(acc), "pos_sim": float(pos), "neg_sim": float(neg)}


class LearnableTemperature(nn.Module):
    """A learned temperature τ, stored as ``log(1/τ)`` and clamped to ``[minimum, maximum]`` when read.

    Args:
        initial: τ at the start (0.07 as CLIP).
        minimum: The smallest τ (the largest logit scale, 100 as CLIP).
        maximum: The largest τ.

    """

    def __init__(self, initial: float = 0.07, minimum: float = 0.01, maximum: float = 1.0) -> None:
        super().__init__()
        if not 0 < minimum <= initial <= maximum:
            msg = f"need 0 < minimum ≤ initial ≤ maximum temperature, got {minimum}, {initial}, {maximum}"
            raise MLAConfigError(msg)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / initial)))
        self.bounds = (math.log(1.0 / maximum), math.log(1.0 / minimum))

    def forward(self) -> Tensor:
        """The logit scale 1/τ, clamped (a scalar)."""
        return self.log_scale.clamp(*self.bounds).exp()

    @property
    def temperature(self) -> float:
        """τ as used now."""
        return float(1.0 / self().detach())


class ProjectionHead(nn.Sequential):
    """Linear → GELU → Linear: the throw-away projection of one modality's features into the shared space."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))


def sample_positions(
    batch: int,
    height: int,
    width: int,
    count: int,
    *,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``count`` distinct flat positions per sample of a ``height``×``width`` map, drawn on the CPU.

    Args:
        batch: B.
        height: Rows of the feature map.
        width: Columns.
        count: N; fewer when ``exclude`` leaves fewer cells (every sample keeps the same number).
        exclude: (B, height, width) bool, cells never drawn (e.g. masked ones).
        generator: A CPU generator for reproducible draws; the global one when None.

    Returns:
        (B, N) int64 indices into the flattened map, on the CPU.

    """
    scores = torch.rand(batch, height * width, generator=generator)  # (B, HW) in [0, 1)
    available = height * width
    if exclude is not None:
        hidden = exclude.reshape(batch, -1).cpu()
        scores = scores.masked_fill(hidden, -1.0)
        available = int((~hidden).sum(dim=1).min())
    return scores.topk(min(count, available), dim=1).indices  # (B, N)


def gather_positions(features: Tensor, index: Tensor) -> Tensor:
    """(B, C, H, W) features at (B, N) flat positions → (B·N, C), sample-major."""
    b, c = features.shape[:2]
    flat = features.reshape(b, c, -1)  # (B, C, HW)
    picked = flat.gather(2, index.to(features.device).unsqueeze(1).expand(b, c, index.shape[1]))  # (B, C, N)
    return picked.transpose(1, 2).reshape(-1, c)  # (B·N, C)


def default_pairs(encoders: Mapping[str, Encoder]) -> list[tuple[str, str]]:
    """Every pair of modalities whose encoder has a pyramid or tokens, in the encoders' order."""
    names = [m for m, e in encoders.items() if is_image_like(e) or has_tokens(e)]
    return list(itertools.combinations(names, 2))


class AlignmentStage(PretrainStage):
    """Contrastive alignment of modality pairs: dense between image modalities, pooled otherwise.

    Args:
        encoders: Modality name → encoder (shared with the model, trained in place).
        pairs: Modality pairs to align; by default :func:`default_pairs`.
        level: Pyramid level of dense pairs: 0 fine (reference stride 4), 1 mid, 2 coarse.
        positions: Positions N sampled per image for dense pairs.
        dim: Width of the shared embedding space.
        temperature: Initial τ.
        min_temperature: Lower clamp of τ.
        max_temperature: Upper clamp of τ.
        mask_ratio: Hide this share of patches first (0 disables); positions avoid hidden cells.
        patch: Mask patch side in reference pixels, when masking.
        seed: Seed of a private generator; None uses torch's global one (see :class:`PretrainStage`).

    Raises:
        MLAConfigError: No pair, a pair naming a modality without an encoder, or a bad level.

    """

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        pairs: Sequence[tuple[str, str]] | None = None,
        *,
        level: int = 0,
        positions: int = 64,
        dim: int = 64,
        temperature: float = 0.07,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        mask_ratio: float = 0.0,
        patch: int = 16,
        seed: int | None = None,
    ) -> None:
        chosen = [(str(a), str(b)) for a, b in (default_pairs(encoders) if pairs is None else pairs)]
        if not chosen:
            msg = f"alignment needs two modalities with a pyramid or tokens; the model has {', '.join(encoders)}"
            raise MLAConfigError(msg)
        names = list(dict.fromkeys(m for pair in chosen for m in pair))
        unknown = sorted(set(names) - set(encoders))
        if unknown or any(a == b for a, b in chosen):
            msg = f"bad pairs {chosen}: name two different modalities among {', '.join(encoders)}"
            raise MLAConfigError(msg)
        if not 0 <= level < NUM_LEVELS or positions < 1 or not 0.0 <= mask_ratio < 1.0:
            msg = (
                f"need 0 ≤ level < {NUM_LEVELS}, positions ≥ 1 and 0 ≤ mask_ratio < 1; "
                f"got {level}, {positions}, {mask_ratio}"
            )
            raise MLAConfigError(msg)
        super().__init__({m: encoders[m] for m in names}, seed)
        self.pairs = chosen
        self.level, self.positions, self.mask_ratio, self.patch = level, positions, mask_ratio, patch
        self.heads = nn.ModuleDict()
        self.temperatures = nn.ModuleDict()
        for a, b in chosen:
            key = self.key(a, b)
            self.heads[key] = nn.ModuleDict({m: ProjectionHead(self.feature_dim(m, a, b), dim) for m in (a, b)})
            self.temperatures[key] = LearnableTemperature(temperature, min_temperature, max_temperature)
        logger.debug("alignment stage over %s at level %d", chosen, level)

    @staticmethod
    def key(a: str, b: str) -> str:
        """The name of pair (a, b) in :attr:`heads`, :attr:`temperatures` and the metrics."""
        return f"{a}_{b}"

    def dense(self, a: str, b: str) -> bool:
        """Whether the pair is aligned position by position (both modalities have a pyramid)."""
        return is_image_like(self.encoder(a)) and is_image_like(self.encoder(b))

    def feature_dim(self, name: str, a: str, b: str) -> int:
        """Channels of modality ``name``'s features in pair (a, b)."""
        spec = self.encoder(name).spec
        if self.dense(a, b) and spec.level_channels is not None:
            return spec.level_channels[self.level]
        return spec.vector_dim

    def forward(self, batch: Batch) -> StageOutput:
        """Mean InfoNCE over the pairs present in the batch; per pair ``{a}_{b}_nce``, ``_acc``, ``_pos_sim``, …."""
        inputs = self.inputs(batch, list(self.encoders))
        mask = self._mask(inputs)
        features = self.encode(inputs, mask)
        losses: list[Tensor] = []
        metrics: dict[str, float] = {}
        for a, b in self.pairs:
            if a not in features or b not in features:
                continue
            key = self.key(a, b)
            za, zb = self.embed(a, b, features, mask)
            temperature = cast(LearnableTemperature, self.temperatures[key])
            loss, found = info_nce(za, zb, temperature())
            losses.append(loss)
            metrics[f"{key}_nce"] = float(loss.detach())
            metrics.update({f"{key}_{k}": v for k, v in found.items()})
            metrics[f"{key}_temperature"] = temperature.temperature
        if not losses:
            msg = f"the batch holds no complete pair of {self.pairs} (it has {', '.join(inputs)})"
            raise MLAInputError(msg)
        return torch.stack(losses).mean(), metrics

    def encode(self, inputs: Mapping[str, Tensor], mask: PatchMask | None = None) -> dict[str, ModalFeatures]:
        """Features of each input, image inputs hidden by ``mask`` first when given."""
        features: dict[str, ModalFeatures] = {}
        for name, x in inputs.items():
            encoder = self.encoder(name)
            hidden = mask.pixels(encoder.scale).to(x.device) if mask is not None and is_image_like(encoder) else None
            features[name] = encoder(fill_masked(x, hidden) if hidden is not None else x)
        return features

    def embed(
        self, a: str, b: str, features: Mapping[str, ModalFeatures], mask: PatchMask | None = None
    ) -> tuple[Tensor, Tensor]:
        """The paired embeddings (N, D), (N, D) of pair (a, b): sampled co-located cells, or pooled vectors."""
        heads = cast(nn.ModuleDict, self.heads[self.key(a, b)])
        if not self.dense(a, b):
            return heads[a](features[a].vector), heads[b](features[b].vector)
        fa, fb = (_level(features[m], self.level, m) for m in (a, b))
        if fa.shape[-2:] != fb.shape[-2:]:
            sizes = f"{tuple(fa.shape[-2:])} for {a} and {tuple(fb.shape[-2:])} for {b}"
            msg = f"level {self.level} is {sizes}: the grids must meet"
            raise MLAInputError(msg)
        exclude = mask.cells(REFERENCE_STRIDES[self.level]) if mask is not None else None
        index = sample_positions(
            fa.shape[0], fa.shape[-2], fa.shape[-1], self.positions, exclude=exclude, generator=self.generator
        )
        return heads[a](gather_positions(fa, index)), heads[b](gather_positions(fb, index))

    def _mask(self, inputs: Mapping[str, Tensor]) -> PatchMask | None:
        size = self.reference_size(inputs)
        if self.mask_ratio <= 0.0 or size is None:
            return None
        batch = len(next(iter(inputs.values())))
        return random_patch_mask(batch, *size, patch=self.patch, ratio=self.mask_ratio, generator=self.generator)


def _level(features: ModalFeatures, level: int, name: str) -> Tensor:
    if features.levels is None:
        msg = f"the {name} encoder returned no pyramid"
        raise MLAInputError(msg)
    return features.levels[level]


def alignment_loss(stage: PretrainStage, batch: Batch) -> StageOutput:
    """``loss_fn(module, batch)`` for :class:`mla.train.Trainer` over an :class:`AlignmentStage`.

    Raises:
        MLAConfigError: ``stage`` is another kind of stage.

    """
    if not isinstance(stage, AlignmentStage):
        msg = f"alignment_loss needs an AlignmentStage, got {type(stage).__name__}"
        raise MLAConfigError(msg)
    return stage(batch)
