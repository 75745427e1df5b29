"""The training configuration: one frozen, validated model, saved in every checkpoint as plain types.

cfg = TrainConfig(lr=3e-4, total_steps=2_000, warmup_steps=100, accum_steps=4, amp=True, device="auto")
cfg.model_dump()                    # plain dict, stored in checkpoints
TrainConfig.from_dict(d)            # back, with a TrainConfigError naming the field on a bad value
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mla.train.errors import DeviceError, TrainConfigError

__all__ = ["TrainConfig", "resolve_device", "steps_for_epochs"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class TrainConfig(BaseModel):
    """How to train: optimizer, schedule, precision, accumulation, logging and checkpoints.

    Attributes:
        lr: peak learning rate, reached at the end of warm-up.
        min_lr_ratio: floor of the cosine decay, as a fraction of ``lr``.
        weight_decay: AdamW decoupled weight decay, applied to weights only (not biases, norms).
        betas: AdamW ``(beta1, beta2)``.
        eps: AdamW epsilon.
        warmup_steps: optimizer steps of linear warm-up.
        total_steps: optimizer steps in the whole run (see :func:`steps_for_epochs`).
        accum_steps: micro-batches whose gradients are averaged into one optimizer step.
        amp: mixed precision: bf16 autocast on CPU, fp16 autocast with a GradScaler on CUDA.
        grad_clip: clip the global gradient norm to this value; ``None`` disables clipping.
        seed: seed of python, numpy and torch at the start of a fresh run.
        deterministic: deterministic cuDNN algorithms on CUDA (see :func:`mla.seed.seed_everything`).
        log_every: optimizer steps between lines in ``metrics.jsonl`` (averaged over the window).
        eval_every: optimizer steps between evaluations; 0 evaluates only at the end.
        checkpoint_every: optimizer steps between checkpoints; 0 saves only at the end.
        keep_checkpoints: how many of the most recent checkpoints to keep on disk.
        on_nonfinite: ``"raise"`` stops with an error naming the step; ``"skip"`` drops that step's update.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)
    total_steps: int = Field(..., gt=0)
    accum_steps: int = Field(1, ge=1)
    amp: bool = False
    grad_clip: float | None = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)
    deterministic: bool = True
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    on_nonfinite: Literal["raise", "skip"] = "raise"
    device: str = "auto"

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            msg = f"expected two numbers in [0, 1), e.g. (0.9, 0.999); got {value}"
            raise ValueError(msg)
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not _DEVICE.match(value):
            msg = f'expected "cpu", "cuda", "cuda:N" or "auto"; got {value!r}'
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.warmup_steps > self.total_steps:
            msg = f"warmup_steps ({self.warmup_steps}) must not exceed total_steps ({self.total_steps})"
            raise ValueError(msg)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from plain types (a checkpoint's ``config``, a YAML section).

        Args:
            data: field names to values; unknown keys are rejected.

        Returns:
            The validated config.

        Raises:
            TrainConfigError: a key is unknown or a value is out of range; the message names each.

        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
            msg = f"invalid training configuration: {problems}"
            raise TrainConfigError(msg) from exc


def resolve_device(name: str) -> torch.device:
    """Turn a config's device name into a ``torch.device`` that exists on this machine.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available, else CPU).

    Returns:
        The device to train on.

    Raises:
        DeviceError: CUDA was asked for and is not available, or the index is out of range.

    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            msg = (
                f'device "{name}" was configured but CUDA is not available here '
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
                'set device to "cpu" or "auto", or install a CUDA build of torch'
            )
            raise DeviceError(msg)
        if device.index is not None and device.index >= torch.cuda.device_count():
            msg = f'device "{name}" does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)'
            raise DeviceError(msg)
    return device


def steps_for_epochs(epochs: int, batches_per_epoch: int, accum_steps: int = 1) -> int:
    """Optimizer steps for a number of epochs (accumulation carries over epoch ends).

    Args:
        epochs: passes over the data.
        batches_per_epoch: micro-batches in one pass (``len(loader)``).
        accum_steps: micro-batches per optimizer step.

    Returns:
        The ``total_steps`` to configure, at least 1.

    """
    return max(1, math.ceil(epochs * batches_per_epoch / accum_steps))
