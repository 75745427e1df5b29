"""``classification``: fused vector → class logits.

::

    vector (B, W) ──LayerNorm─Dropout─Linear──▶ logits (B, K)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor, nn

from mla.encoders.base import FeatureSpec
from mla.errors import MLAConfigError
from mla.heads.base import Head, HeadInput, register_head

logger = logging.getLogger(__name__)


@register_head("classification")
class ClassificationHead(Head):
    """A linear classifier on the fused vector.

    Args:
        width: Fused width W.
        modalities: The model's modalities (unused).
        num_classes: K.
        dropout: Dropout before the linear layer.

    """

    def __init__(
        self,
        width: int,
        modalities: Mapping[str, FeatureSpec] | None = None,
        num_classes: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            msg = f"num_classes must be ≥ 1, got {num_classes}"
            raise MLAConfigError(msg)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, inputs: HeadInput) -> Tensor:
        """Fused vector (B, W) → logits (B, K)."""
        logits: Tensor = self.fc(self.drop(self.norm(inputs.fused.vector)))  # (B, K)
        return logits
