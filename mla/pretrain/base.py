"""What every pre-training stage shares: the encoders it trains, reading a batch, the loss contract.

A stage is one ``nn.Module`` holding the **same encoder objects** as the :class:`~mla.model.MLAModel`
(under ``encoders.<modality>``, the names the model's state dict uses) plus throw-away heads of its
own. Training the stage trains the model's encoders in place: nothing is copied back.

A batch is a mapping (or an object with attributes) of modality name to input: ``{"visible": (B, 1, T, T),
"infrared": (B, 1, T/4, T/4)}``, ``{"image": (B, 3, H, W), "text": list[str]}``. Numpy arrays are
accepted; other keys (a ``mask``, labels) are ignored: pre-training is unsupervised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, cast

import numpy as np
import torch
from torch import Tensor, nn

from mla.encoders import Encoder
from mla.errors import MLAConfigError, MLAInputError

__all__ = ["Batch", "LossFn", "PretrainStage", "has_tokens", "is_image_like", "stage_loss"]

logger = logging.getLogger(__name__)

Batch: TypeAlias = Any
"""A mapping or attribute object of modality inputs (see the module docstring)."""

StageOutput: TypeAlias = tuple[Tensor, dict[str, float]]
LossFn: TypeAlias = Callable[["PretrainStage", Batch], StageOutput]


def is_image_like(encoder: Encoder) -> bool:
    """Whether the encoder takes an image and gives a pyramid (``conv_pyramid``, ``ir_pyramid``, …)."""
    return bool(encoder.size_multiple) and encoder.spec.spatial


def has_tokens(encoder: Encoder) -> bool:
    """Whether the encoder gives per-token features (``text``)."""
    return encoder.spec.token_dim is not None


class PretrainStage(nn.Module):
    """Base of the stages: the shared encoders and reading a batch.

    Args:
        encoders: Modality name → encoder, e.g. ``{m: model.encoder(m) for m in model.modalities}``; they
            are shared, not copied.
        seed: Seed of a private CPU generator for masks and sampled positions; None draws from torch's
            global generator, which :class:`mla.train.Trainer` seeds and checkpoints (bit-for-bit resumes).

    """

    def __init__(self, encoders: Mapping[str, Encoder], seed: int | None = None) -> None:
        super().__init__()
        if not encoders:
            msg = "a pre-training stage needs at least one encoder"
            raise MLAConfigError(msg)
        self.encoders = nn.ModuleDict(dict(encoders))
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def encoder(self, name: str) -> Encoder:
        """The (shared) encoder of modality ``name``."""
        return cast(Encoder, self.encoders[name])

    def __call__(self, batch: Batch) -> StageOutput:
        """Run :meth:`forward` with the module hooks (typed for callers)."""
        return cast(StageOutput, super().__call__(batch))

    def forward(self, batch: Batch) -> StageOutput:
        """The stage's loss and metrics on a batch."""
        raise NotImplementedError

    def inputs(self, batch: Batch, names: Sequence[str]) -> dict[str, Tensor]:
        """The present inputs of ``names``, checked and converted by their encoders, on the encoders' device.

        Raises:
            MLAInputError: None of ``names`` is in the batch, an input is invalid, batch sizes differ, or
                the image grids do not meet at their scales.

        """
        prepared: dict[str, Tensor] = {}
        for name in names:
            value = batch.get(name) if isinstance(batch, Mapping) else getattr(batch, name, None)
            if value is None:
                continue
            encoder = self.encoder(name)
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            weight = next(iter(encoder.parameters()), None)
            if isinstance(value, Tensor) and weight is not None:
                value = value.to(weight.device)
            prepared[name] = encoder.prepare(value, name)
        if not prepared:
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            msg = f"the batch holds none of {', '.join(names)} (got {keys})"
            raise MLAInputError(msg)
        sizes = {name: int(x.shape[0]) for name, x in prepared.items()}
        if len(set(sizes.values())) > 1:
            msg = f"modalities have different batch sizes: {sizes}"
            raise MLAInputError(msg)
        self.reference_size(prepared)
        return prepared

    def reference_size(self, prepared: Mapping[str, Tensor]) -> tuple[int, int] | None:
        """The reference (visible) (H, W) of the image inputs, which must agree; None without images.

        Raises:
            MLAInputError: Two image inputs do not meet at their scales.

        """
        found: tuple[str, tuple[int, int]] | None = None
        for name, x in prepared.items():
            encoder = self.encoder(name)
            if not is_image_like(encoder):
                continue
            size = (int(x.shape[-2]) * encoder.scale, int(x.shape[-1]) * encoder.scale)
            if found is None:
                found = (name, size)
            elif size != found[1]:
                msg = (
                    f"{name} ({x.shape[-2]}×{x.shape[-1]} at scale {encoder.scale}) does not meet {found[0]} "
                    f"(reference {found[1][0]}×{found[1][1]}): {name} must be "
                    f"{found[1][0] // encoder.scale}×{found[1][1] // encoder.scale}"
                )
                raise MLAInputError(msg)
        return found[1] if found is not None else None


def stage_loss(stage: PretrainStage, batch: Batch) -> StageOutput:
    """``loss_fn(module, batch) -> (loss, metrics)`` for :class:`mla.train.Trainer`: the stage's own loss."""
    return stage(batch)
