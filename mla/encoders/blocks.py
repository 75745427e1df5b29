"""Small convolution blocks shared by encoders, fusions and heads.

``ConvBNAct`` is a conv, batch norm and activation; ``SeparableBlock`` is the cheap workhorse: a 3×3
depthwise conv (optionally strided) and a 1×1 pointwise conv, with a residual when the shape allows.
A 3×3 separable block costs ``H·W·(9·C_in + C_in·C_out)`` MACs instead of ``H·W·9·C_in·C_out``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mla.errors import MLAConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``silu``, ``gelu``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        msg = f"unknown activation {name!r}: choose one of {', '.join(sorted(ACTIVATIONS))}"
        raise MLAConfigError(msg) from None


class ConvBNAct(nn.Sequential):
    """Conv (no bias) → BatchNorm → activation; ``act=None`` leaves the activation out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "silu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class SeparableBlock(nn.Module):
    """Depthwise 3×3 (stride 1 or 2) → pointwise 1×1, with a residual when stride is 1 and widths match.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        stride: 1 keeps the size, 2 halves it.
        act: Activation name.

    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, act: str = "silu") -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, act=act)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, act=None)
        self.residual = stride == 1 and in_channels == out_channels
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, C_out, H / stride, W / stride)."""
        y: Tensor = self.pointwise(self.depthwise(x))  # (B, C_out, H', W')
        if self.residual:
            y = y + x
        out: Tensor = self.act(y)
        return out


def separable_stages(
    inputs: Sequence[int], widths: Sequence[int], strides: Sequence[int], depths: Sequence[int], act: str
) -> nn.ModuleList:
    """Pyramid stages: one (optionally strided) :class:`SeparableBlock` into each width, then ``depth - 1`` more."""
    return nn.ModuleList(
        nn.Sequential(
            SeparableBlock(c_in, c_out, stride, act),
            *(SeparableBlock(c_out, c_out, 1, act) for _ in range(depth - 1)),
        )
        for c_in, c_out, stride, depth in zip(inputs, widths, strides, depths, strict=True)
    )


def upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) to (B, C, *size)."""
    return F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=False)  # sizes may be symbolic
