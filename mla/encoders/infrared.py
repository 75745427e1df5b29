"""``ir_pyramid``: the infrared encoder, run at the infrared camera's own resolution.

Infrared is natively ``scale``× coarser than visible (4× here). Rather than upsampling it 4× to
concatenate it with the visible image, the encoder starts at IR resolution and places its levels at
IR strides 4/scale, 8/scale, 16/scale, i.e. 1, 2, 4 for ``scale=4``: exactly the visible pyramid's
strides 4, 8, 16. A 256×256 visible tile pairs with a 64×64 IR tile::

    visible (B, 1, 256, 256) → fine 64×64   mid 32×32   coarse 16×16
    infrared (B, 1, 64, 64)  → fine 64×64   mid 32×32   coarse 16×16   (stride 1, 2, 4 of the IR input)

Raw IR counts sit on an arbitrary offset (ambient temperature, emissivity), so each sample is
standardised per channel (zero mean, unit deviation) before the stem unless ``normalize=False``.
"""

from __future__ import annotations

import logging

from torch import Tensor

from mla.encoders.base import register_encoder
from mla.encoders.pyramid import ConvPyramid

logger = logging.getLogger(__name__)


@register_encoder("ir_pyramid")
class InfraredPyramid(ConvPyramid):
    """A :class:`~mla.encoders.pyramid.ConvPyramid` for a coarser thermal grid, standardising each sample.

    Args:
        in_channels: Input channels (1 for a thermal camera).
        width: Channels of the fine level; mid and coarse have 2× and 4×.
        depths: Blocks per stage (fine, mid, coarse).
        scale: Visible pixels per IR pixel along each axis: 4 (default), 2 or 1.
        act: Activation: ``silu``, ``relu`` or ``gelu``.
        normalize: Standardise each sample and channel over its pixels first.

    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        depths: tuple[int, ...] = (2, 2, 2),
        scale: int = 4,
        act: str = "silu",
        normalize: bool = True,
    ) -> None:
        super().__init__(in_channels=in_channels, width=width, depths=depths, scale=scale, act=act)
        self.standardize = normalize

    def normalize(self, x: Tensor) -> Tensor:
        """(B, C, h, w) → the same, each sample and channel at zero mean and unit deviation when enabled."""
        if not self.standardize:
            return x
        mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        std = x.std(dim=(2, 3), keepdim=True, unbiased=False)  # (B, C, 1, 1)
        return (x - mean) / (std + 1e-5)
