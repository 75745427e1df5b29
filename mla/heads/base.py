"""What every head takes (:class:`HeadInput`) and the head registry.

A head turns the fused representation into one task's output tensor. Heads are built with
``create_head(name, width=W, modalities={name: FeatureSpec}, **options)`` and called with a
:class:`HeadInput`; ``MLAModel`` does both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn

from mla.encoders.base import ModalFeatures
from mla.fusion.base import FusionOutput
from mla.registry import Registry

logger = logging.getLogger(__name__)

C = TypeVar("C", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class HeadInput:
    """Everything a head may read.

    Attributes:
        fused: The fusion's output (vector, weights, pyramid).
        features: The per-modality features of the present modalities.
        image_size: (H, W) of the reference (visible) grid, or None when no spatial modality is given.
        tokens: (B, T) token ids for teacher forcing (the ``sequence`` head), else None.

    """

    fused: FusionOutput
    features: Mapping[str, ModalFeatures] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None
    tokens: Tensor | None = None


class Head(nn.Module):
    """Base of the registered heads.

    Attributes:
        needs_levels: The head reads the fused pyramid, so a spatial modality must be present.

    """

    needs_levels: bool = False

    def forward(self, inputs: HeadInput) -> Tensor:
        """The head's output for a batch."""
        raise NotImplementedError


HEADS: Registry[Head] = Registry("head")


def register_head(name: str) -> Callable[[C], C]:
    """Register a head class under ``name`` (a decorator)."""
    return HEADS.register(name)


def create_head(name: str, **kwargs: Any) -> Head:
    """Build a registered head (``width=``, ``modalities=``, its own options)."""
    return HEADS.create(name, **kwargs)


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head`, sorted."""
    return HEADS.names()
