"""``segmentation``: fused pyramid → light decoder → per-pixel logits at the reference resolution.

::

    coarse (B, W, H/16, W/16) ─up─┐
    mid    (B, W, H/8,  W/8)  ────+─▶ SeparableBlock ─▶ (B, W, H/8, W/8) ─up─┐
    fine   (B, W, H/4,  W/4)  ───────────────────────────────────────────────+─▶ SeparableBlock ─▶ (B, W, H/4, W/4)
    ─bilinear ×2─▶ SeparableBlock ─▶ (B, W/2, H/2, W/2)
    ─bilinear ×2─▶ SeparableBlock ─▶ (B, W/4, H, W) ─1×1 conv─▶ logits (B, K, H, W)

With ``decoder="shuffle"`` nothing runs above stride 4: after the two lateral blocks a 1×1
classifier gives 16·K channels per fine cell, and ``PixelShuffle(4)`` lays them out as the 4×4
pixels of that cell (the inverse of the ``unshuffle_pyramid`` stem)::

    fine-level x (B, W, H/4, W/4) ─1×1 conv─▶ (B, 16·K, H/4, W/4) ─PixelShuffle(4)─▶ logits (B, K, H, W)

(H, W) is the reference (visible) input's size. The classifier bias starts at ``logit(prior)`` so a
rare foreground (cracks) starts with a low probability everywhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mla.encoders.base import FeatureSpec
from mla.encoders.blocks import SeparableBlock, upsample
from mla.errors import MLAConfigError, MLAInputError
from mla.heads.base import Head, HeadInput, register_head

logger = logging.getLogger(__name__)

DECODERS = ("bilinear", "shuffle")
SHUFFLE = 4  # reference pixels per fine-level cell along each axis


@register_head("segmentation")
class SegmentationHead(Head):
    """A light FPN-style decoder to full-resolution logits.

    Args:
        width: Fused width W.
        modalities: The model's modalities (unused).
        classes: Output channels K (1 for a binary mask).
        hidden: Width at stride 2 (default W/2); stride 1 uses half of it.
        prior: Initial foreground probability, sets the classifier bias.
        act: Activation of the conv blocks.
        decoder: ``bilinear`` (upsample and convolve at strides 2 and 1) or ``shuffle`` (classify each
            stride-4 cell into its 4×4 pixels; no work at full resolution).

    """

    needs_levels = True

    def __init__(
        self,
        width: int,
        modalities: Mapping[str, FeatureSpec] | None = None,
        classes: int = 1,
        hidden: int | None = None,
        prior: float = 0.01,
        act: str = "silu",
        decoder: str = "bilinear",
    ) -> None:
        super().__init__()
        if classes < 1 or not 0.0 < prior < 1.0:
            msg = f"segmentation needs classes ≥ 1 and 0 < prior < 1, got {classes} and {prior}"
            raise MLAConfigError(msg)
        if decoder not in DECODERS:
            msg = f"unknown segmentation decoder {decoder!r}: choose one of {', '.join(DECODERS)}"
            raise MLAConfigError(msg)
        self.decoder = decoder
        self.lateral = nn.ModuleList(SeparableBlock(width, width, 1, act) for _ in range(2))  # mid, fine
        if decoder == "shuffle":
            self.classifier = nn.Conv2d(width, SHUFFLE * SHUFFLE * classes, 1)
            self.shuffle = nn.PixelShuffle(SHUFFLE)
        else:
            half = hidden or max(width // 2, 4)
            quarter = max(half // 2, 4)
            self.up_half = SeparableBlock(width, half, 1, act)
            self.up_full = SeparableBlock(half, quarter, 1, act)
            self.classifier = nn.Conv2d(quarter, classes, 1)
        if self.classifier.bias is not None:
            nn.init.constant_(self.classifier.bias, -math.log((1.0 - prior) / prior))

    def forward(self, inputs: HeadInput) -> Tensor:
        """Fused pyramid → logits (B, K, H, W) at the reference resolution."""
        if inputs.fused.levels is None:
            msg = "the segmentation head needs an image-like modality, but none was given"
            raise MLAInputError(msg)
        fine, mid, coarse = inputs.fused.levels[:3]
        x = self.lateral[0](mid + upsample(coarse, mid.shape[-2:]))  # (B, W, H/8, W/8)
        x = self.lateral[1](fine + upsample(x, fine.shape[-2:]))  # (B, W, H/4, W/4)
        if self.decoder == "shuffle":
            shuffled: Tensor = self.shuffle(self.classifier(x))  # (B, 16·K, H/4, W/4) → (B, K, H, W)
            return shuffled
        height, width = inputs.image_size or (4 * fine.shape[-2], 4 * fine.shape[-1])
        x = self.up_half(upsample(x, (height // 2, width // 2)))  # (B, W/2, H/2, W/2)
        x = self.up_full(upsample(x, (height, width)))  # (B, W/4, H, W)
        logits: Tensor = self.classifier(x)  # (B, K, H, W)
        return logits

    def probability(self, inputs: HeadInput) -> Tensor:
        """Sigmoid of the logits, (B, K, H, W) in [0, 1]."""
        return torch.sigmoid(self.forward(inputs))
