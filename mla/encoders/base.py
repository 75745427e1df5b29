"""What every encoder returns (:class:`ModalFeatures`), promises (:class:`FeatureSpec`) and checks.

An encoder turns one modality's raw input into features. Image-like encoders give a three-level
spatial pyramid (fine, mid, coarse) at strides 4, 8 and 16 of the *reference grid* (the visible
image), so pyramids of different modalities meet level by level; every encoder gives a pooled
vector; sequence encoders also give tokens::

    levels   fine (B, C0, H/4, W/4)   mid (B, C1, H/8, W/8)   coarse (B, C2, H/16, W/16)
    vector   (B, C)
    tokens   (B, T, C) with token_mask (B, T)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from mla.errors import MLAInputError
from mla.registry import Registry

logger = logging.getLogger(__name__)

NUM_LEVELS = 3
REFERENCE_STRIDES = (4, 8, 16)  # of the pyramid levels, in reference (visible) pixels

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class ModalFeatures:
    """The features of one modality for a batch.

    Attributes:
        vector: (B, C) pooled summary; every encoder gives one.
        levels: (fine, mid, coarse), each (B, C_l, H_l, W_l) at reference strides 4, 8, 16; None for
            modalities without space (text, tabular).
        tokens: (B, T, C) per-token features of sequence modalities, else None.
        token_mask: (B, T) bool, True on real tokens (False on padding), with ``tokens``.
        present: (B,) bool, False where this modality is to be treated as missing for a sample
            (set from the model's ``presence`` input); None means present for every sample.

    """

    vector: Tensor
    levels: tuple[Tensor, ...] | None = None
    tokens: Tensor | None = None
    token_mask: Tensor | None = None
    present: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """B."""
        return self.vector.shape[0]  # a SymInt under export: no int()

    @property
    def spatial(self) -> bool:
        """Whether the features have a pyramid."""
        return self.levels is not None


@dataclass(frozen=True)
class FeatureSpec:
    """The sizes an encoder's :class:`ModalFeatures` will have, known before any input is seen.

    Fusions and heads build their projections from these.

    Attributes:
        vector_dim: C of ``vector``.
        level_channels: C_l of each pyramid level, or None when the modality has no space.
        token_dim: C of ``tokens``, or None when the modality has no tokens.

    """

    vector_dim: int
    level_channels: tuple[int, ...] | None = None
    token_dim: int | None = None

    @property
    def spatial(self) -> bool:
        """Whether the modality has a pyramid."""
        return self.level_channels is not None


class Encoder(nn.Module):
    """Base of the registered encoders.

    Subclasses set :attr:`spec`, and for image-like inputs :attr:`scale` and :attr:`size_multiple`,
    and implement :meth:`prepare`, :meth:`forward` and :meth:`example`.

    Attributes:
        spec: The sizes of the features this encoder returns.
        scale: Reference (visible) pixels per input pixel along each axis: 1 for the visible camera,
            4 for an infrared camera with a 4× coarser grid.
        size_multiple: Input height and width must be multiples of this (0 when the input has no space).
        in_channels: Channels (or features) of the raw input, where that is fixed.

    """

    spec: FeatureSpec
    scale: int = 1
    size_multiple: int = 0
    in_channels: int = 1

    def prepare(self, value: object, name: str) -> Tensor:
        """Check a raw input and turn it into the tensor :meth:`forward` takes.

        Args:
            value: What the caller passed for this modality.
            name: The modality's name, for messages.

        Raises:
            MLAInputError: The input has the wrong type, shape, size or values.

        """
        raise NotImplementedError

    def forward(self, x: Tensor) -> ModalFeatures:
        """Features of a prepared batch."""
        raise NotImplementedError

    def example(self, batch: int, image_size: int) -> Any:
        """A valid input for a batch of ``batch``, ``image_size`` being the reference image side."""
        raise NotImplementedError


ENCODERS: Registry[Encoder] = Registry("encoder")


def register_encoder(name: str) -> Callable[[F], F]:
    """Register an encoder class under ``name`` (a decorator)."""
    return ENCODERS.register(name)


def create_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build a registered encoder; an unknown name lists the valid ones."""
    return ENCODERS.create(name, **kwargs)


def list_encoders() -> list[str]:
    """Names accepted by :func:`create_encoder`, sorted."""
    return ENCODERS.names()


def check_image(value: object, name: str, in_channels: int, multiple: int, *, finite: bool = True) -> Tensor:
    """Check an image batch: a floating (B, C, H, W) tensor with C channels, H and W multiples of ``multiple``.

    Args:
        value: The candidate input.
        name: The modality's name, for messages.
        in_channels: The channel count the encoder was built for.
        multiple: Height and width must be multiples of this.
        finite: Also reject NaN and Inf values (one device synchronisation).

    Returns:
        ``value``, unchanged.

    Raises:
        MLAInputError: With what was expected and what to do.

    """
    if not isinstance(value, Tensor):
        msg = f"{name} must be a torch.Tensor of shape (B, {in_channels}, H, W), got {type(value).__name__}"
        raise MLAInputError(msg)
    if value.dim() != 4:
        hint = " (add a batch dimension with x[None])" if value.dim() == 3 else ""
        msg = f"{name} must have shape (B, {in_channels}, H, W), got {tuple(value.shape)}{hint}"
        raise MLAInputError(msg)
    if not value.is_floating_point():
        msg = f"{name} must be a floating-point tensor, got {value.dtype} (convert with x.float(), scaled to [0, 1])"
        raise MLAInputError(msg)
    channels, height, width = value.shape[1:]  # no int(): symbolic sizes must stay symbolic under export
    if channels != in_channels:
        msg = f"{name} has {channels} channels but its encoder takes {in_channels}: shape {tuple(value.shape)}"
        raise MLAInputError(msg)
    if height % multiple or width % multiple:
        need_h, need_w = (-(-size // multiple) * multiple for size in (height, width))
        msg = (
            f"{name} is {height}×{width} but its height and width must be multiples of {multiple} "
            f"(the pyramid's coarsest stride): pad or crop to e.g. {need_h}×{need_w}"
        )
        raise MLAInputError(msg)
    if finite and not torch.compiler.is_compiling():  # a data-dependent branch cannot be exported
        check_finite(value, name)
    return value


def check_finite(value: Tensor, name: str) -> None:
    """Raise :class:`MLAInputError` when ``value`` holds NaN or Inf."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        msg = f"{name} holds {bad} NaN or Inf values: fill or mask them before the model (e.g. torch.nan_to_num)"
        raise MLAInputError(msg)
