"""``conv_pyramid``: a compact depthwise-separable CNN giving a three-level pyramid.

The levels sit at strides 4, 8 and 16 of the reference (visible) grid. With ``scale=1`` (the input is
the visible image) that is strides 4, 8, 16 of the input; with ``scale=s`` (the input grid is ``s``×
coarser) the network starts with fewer downsamplings so the levels still land on the same grid::

    input (B, C_in, H, W)                       scale=1             scale=4 (e.g. infrared)
    stem      ConvBNAct 3×3                     (B, w/2, H/2, W/2)  (B, w/2, H, W)
    stage 1   SeparableBlock × d1   → fine      (B, w,  H/4, W/4)   (B, w,  H,   W)
    stage 2   SeparableBlock × d2   → mid       (B, 2w, H/8, W/8)   (B, 2w, H/2, W/2)
    stage 3   SeparableBlock × d3   → coarse    (B, 4w, H/16,W/16)  (B, 4w, H/4, W/4)
    vector    global average of coarse          (B, 4w)

With ``input_skip=True`` each level also carries the input averaged over its cells (C_in more
channels per level): a direct path for what the stack may learn to throw away, such as colour, which
a VQA model's encoder dropped while learning shapes and counts (docs/VQA.md).

The cost at 512×512 with ``w=32``, ``depths=(2, 2, 2)`` and one input channel is about 0.1 GMAC.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from mla.encoders.base import REFERENCE_STRIDES, Encoder, FeatureSpec, ModalFeatures, check_image, register_encoder
from mla.encoders.blocks import ConvBNAct, separable_stages
from mla.errors import MLAConfigError

logger = logging.getLogger(__name__)

SCALES = (1, 2, 4)


@register_encoder("conv_pyramid")
class ConvPyramid(Encoder):
    """A cheap CNN pyramid for image-like inputs.

    Args:
        in_channels: Input channels (1 grey, 3 RGB).
        width: Channels of the fine level; mid and coarse have 2× and 4×.
        depths: Blocks per stage (fine, mid, coarse), each at least 1.
        scale: Reference pixels per input pixel: 1, 2 or 4. The levels land at reference strides 4, 8
            and 16, i.e. input strides ``4/scale``, ``8/scale``, ``16/scale``.
        act: Activation: ``silu``, ``relu`` or ``gelu``.
        input_skip: Append the input, average-pooled to each level's grid, to that level.

    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 32,
        depths: tuple[int, ...] = (2, 2, 2),
        scale: int = 1,
        act: str = "silu",
        input_skip: bool = False,
    ) -> None:
        super().__init__()
        if scale not in SCALES:
            msg = f"scale must be one of {SCALES} (levels meet the visible strides 4, 8, 16), got {scale}"
            raise MLAConfigError(msg)
        if len(depths) != 3 or min(depths) < 1 or in_channels < 1 or width < 2:
            msg = f"need in_channels ≥ 1, width ≥ 2 and three depths ≥ 1, got {in_channels}, {width}, {tuple(depths)}"
            raise MLAConfigError(msg)
        fine_stride = REFERENCE_STRIDES[0] // scale  # input stride of the fine level: 4, 2 or 1
        stem_stride = 2 if fine_stride >= 2 else 1
        stem_width = max(width // 2, 4)
        widths = (width, 2 * width, 4 * width)
        self.scale = scale
        self.size_multiple = REFERENCE_STRIDES[-1] // scale
        self.in_channels = in_channels
        self.input_skip = input_skip
        self.level_strides = tuple(stride // scale for stride in REFERENCE_STRIDES)  # input pixels per level cell
        level_channels = tuple(c + in_channels for c in widths) if input_skip else widths
        self.spec = FeatureSpec(vector_dim=widths[-1], level_channels=level_channels)

        self.stem = ConvBNAct(in_channels, stem_width, 3, stem_stride, act=act)
        strides = (fine_stride // stem_stride, 2, 2)
        inputs = (stem_width, *widths[:-1])
        self.stages = separable_stages(inputs, widths, strides, depths, act)

    def prepare(self, value: object, name: str) -> Tensor:
        """Check a (B, in_channels, H, W) float batch with H and W multiples of :attr:`size_multiple`."""
        return check_image(value, name, self.in_channels, self.size_multiple)

    def normalize(self, x: Tensor) -> Tensor:
        """Input normalisation before the stem; the identity here."""
        return x

    def forward(self, x: Tensor) -> ModalFeatures:
        """(B, C_in, H, W) → levels at input strides 4/scale, 8/scale, 16/scale and a (B, 4w) vector."""
        given = self.normalize(x)
        x = self.stem(given)  # (B, w/2, H/2, W/2) for scale 1
        levels = []
        for stage, stride in zip(self.stages, self.level_strides, strict=True):
            x = stage(x)  # fine (B, w, H/4, W/4), mid (B, 2w, H/8, W/8), coarse (B, 4w, H/16, W/16)
            if self.input_skip:  # + (B, C_in, H_l, W_l): the input averaged over each cell
                levels.append(torch.cat([x, F.avg_pool2d(given, stride) if stride > 1 else given], dim=1))
            else:
                levels.append(x)
        vector = x.mean(dim=(2, 3))  # (B, 4w)
        return ModalFeatures(vector=vector, levels=tuple(levels))

    def example(self, batch: int, image_size: int) -> Tensor:
        """A random (batch, in_channels, image_size/scale, image_size/scale) input on this encoder's device."""
        side = image_size // self.scale
        weight = next(self.parameters())
        return torch.rand(batch, self.in_channels, side, side, device=weight.device, dtype=weight.dtype)
