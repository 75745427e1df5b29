"""``tabular``: an MLP over a float vector of measurements or metadata.

::

    x (B, F) ──Linear─LayerNorm─GELU──▶ (B, C) ──[Linear─LayerNorm─GELU] × (depth − 1)──▶ vector (B, C)

Features should be standardised by the caller (zero mean, unit deviation over the data set).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from mla.encoders.base import Encoder, FeatureSpec, ModalFeatures, check_finite, register_encoder
from mla.errors import MLAConfigError, MLAInputError

logger = logging.getLogger(__name__)


@register_encoder("tabular")
class TabularEncoder(Encoder):
    """An MLP encoder for (B, F) float features.

    Args:
        in_channels: F, the number of features.
        width: Output width C.
        depth: Linear layers, at least 1.
        dropout: Dropout after each hidden layer.

    """

    def __init__(self, in_channels: int, width: int = 64, depth: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or depth < 1:
            msg = f"tabular needs in_channels, width and depth ≥ 1, got {in_channels}, {width}, {depth}"
            raise MLAConfigError(msg)
        self.in_channels = in_channels
        self.spec = FeatureSpec(vector_dim=width)
        layers: list[nn.Module] = []
        for index in range(depth):
            layers += [nn.Linear(in_channels if index == 0 else width, width), nn.LayerNorm(width), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.mlp = nn.Sequential(*layers)

    def prepare(self, value: object, name: str) -> Tensor:
        """Check a (B, F) float tensor without NaN or Inf."""
        if not isinstance(value, Tensor) or value.dim() != 2 or not value.is_floating_point():
            got = f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            msg = f"{name} must be a (B, {self.in_channels}) floating-point tensor, got {got}"
            raise MLAInputError(msg)
        if value.shape[1] != self.in_channels:
            msg = f"{name} has {value.shape[1]} features but its encoder takes {self.in_channels}"
            raise MLAInputError(msg)
        check_finite(value, name)
        return value

    def forward(self, x: Tensor) -> ModalFeatures:
        """(B, F) → vector (B, C)."""
        vector = self.mlp(x)  # (B, C)
        return ModalFeatures(vector=vector)

    def example(self, batch: int, image_size: int) -> Tensor:
        """A random (batch, F) input."""
        weight = next(self.parameters())
        return torch.randn(batch, self.in_channels, device=weight.device, dtype=weight.dtype)
