"""``unshuffle_pyramid``: a pyramid that never convolves at full resolution (space-to-depth stem).

The visible image is rearranged, not filtered, down to the fine level: each 4×4 block of pixels
becomes 16 channels of one cell (``PixelUnshuffle``), so no information is lost and every convolution
runs at stride 4 or coarser. On a CPU a small CNN is bound by memory traffic on full-resolution
feature maps, not by arithmetic; this stem removes that traffic (docs/BENCHMARKS.md, issue 19)::

    input (B, C_in, H, W)
    unshuffle  PixelUnshuffle(4)             (B, 16·C_in, H/4, W/4)   a rearrangement, no arithmetic
    stem       ConvBNAct 3×3                 (B, w,  H/4,  W/4)
    stage 1    SeparableBlock × d1  → fine   (B, w,  H/4,  W/4)
    stage 2    SeparableBlock × d2  → mid    (B, 2w, H/8,  W/8)
    stage 3    SeparableBlock × d3  → coarse (B, 4w, H/16, W/16)
    vector     global average of coarse      (B, 4w)

Pair it with the ``segmentation`` head's ``decoder="shuffle"``, which returns from the fine level to
full resolution by the inverse rearrangement, so the sub-cell detail (a crack's edges inside a 4×4
cell) rides in the channels both ways. The default activation is ReLU, which onnxruntime and TensorRT
fuse into the convolution; SiLU costs a separate pass over every feature map.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from mla.encoders.base import REFERENCE_STRIDES, Encoder, FeatureSpec, ModalFeatures, check_image, register_encoder
from mla.encoders.blocks import ConvBNAct, separable_stages
from mla.errors import MLAConfigError

logger = logging.getLogger(__name__)

UNSHUFFLE = REFERENCE_STRIDES[0]  # the fine level's stride: 4 reference pixels per cell


@register_encoder("unshuffle_pyramid")
class UnshufflePyramid(Encoder):
    """A space-to-depth CNN pyramid for the reference (visible) image.

    Args:
        in_channels: Input channels (1 grey, 3 RGB).
        width: Channels of the fine level; mid and coarse have 2× and 4×.
        depths: Blocks per stage (fine, mid, coarse), each at least 1.
        scale: Must be 1: the levels sit at strides 4, 8, 16 of this input.
        act: Activation: ``relu`` (default, fused by inference runtimes), ``silu`` or ``gelu``.

    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        depths: tuple[int, ...] = (2, 2, 2),
        scale: int = 1,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if scale != 1:
            msg = f"unshuffle_pyramid reads the reference image itself (scale 1), got scale {scale}; use ir_pyramid"
            raise MLAConfigError(msg)
        if len(depths) != 3 or min(depths) < 1 or in_channels < 1 or width < 2:
            msg = f"need in_channels ≥ 1, width ≥ 2 and three depths ≥ 1, got {in_channels}, {width}, {tuple(depths)}"
            raise MLAConfigError(msg)
        widths = (width, 2 * width, 4 * width)
        self.scale = 1
        self.size_multiple = REFERENCE_STRIDES[-1]
        self.in_channels = in_channels
        self.spec = FeatureSpec(vector_dim=widths[-1], level_channels=widths)

        self.unshuffle = nn.PixelUnshuffle(UNSHUFFLE)
        self.stem = ConvBNAct(UNSHUFFLE * UNSHUFFLE * in_channels, width, 3, 1, act=act)
        inputs, strides = (width, *widths[:-1]), (1, 2, 2)
        self.stages = separable_stages(inputs, widths, strides, depths, act)

    def fold_stem(self) -> None:
        """Fold the space-to-depth into the stem convolution, in place: the same function, one operator.

        A k×k convolution over the unshuffled cells is a 4k×4k convolution of stride 4 over the
        pixels, with weight ``W'[o, c, 4·ky + by, 4·kx + bx] = W[o, 16·c + 4·by + bx, ky, kx]``. Runtimes
        then never transpose the full-resolution input (onnxruntime spent ~12% of a pruned model's
        time there) and read it straight into their blocked layout. For export; training keeps the
        unfolded form that pruning understands.
        """
        conv = self.stem[0]
        if not isinstance(conv, nn.Conv2d) or isinstance(self.unshuffle, nn.Identity):
            return
        out_channels, _, k, _ = conv.weight.shape
        weight = conv.weight.detach().view(out_channels, self.in_channels, UNSHUFFLE, UNSHUFFLE, k, k)
        weight = weight.permute(0, 1, 4, 2, 5, 3).reshape(out_channels, self.in_channels, UNSHUFFLE * k, UNSHUFFLE * k)
        folded = nn.Conv2d(self.in_channels, out_channels, UNSHUFFLE * k, UNSHUFFLE, UNSHUFFLE * (k // 2), bias=False)
        with torch.no_grad():
            folded.weight.copy_(weight)
        self.stem[0] = folded.to(conv.weight.device)
        self.unshuffle = nn.Identity()  # type: ignore[assignment]

    def prepare(self, value: object, name: str) -> Tensor:
        """Check a (B, in_channels, H, W) float batch with H and W multiples of 16."""
        return check_image(value, name, self.in_channels, self.size_multiple)

    def forward(self, x: Tensor) -> ModalFeatures:
        """(B, C_in, H, W) → levels at strides 4, 8, 16 and a (B, 4w) vector."""
        x = self.stem(self.unshuffle(x))  # (B, 16·C_in, H/4, W/4) → (B, w, H/4, W/4)
        levels = []
        for stage in self.stages:
            x = stage(x)  # fine (B, w, H/4, W/4), mid (B, 2w, H/8, W/8), coarse (B, 4w, H/16, W/16)
            levels.append(x)
        vector = x.mean(dim=(2, 3))  # (B, 4w)
        return ModalFeatures(vector=vector, levels=tuple(levels))

    def example(self, batch: int, image_size: int) -> Tensor:
        """A random (batch, in_channels, image_size, image_size) input on this encoder's device."""
        weight = next(self.parameters())
        return weight.new_empty(batch, self.in_channels, image_size, image_size).uniform_()
