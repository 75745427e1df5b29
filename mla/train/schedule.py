"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr_ratio * lr``.

``lr_at(step, cfg)`` is the whole schedule as a pure function; :func:`build_scheduler` applies it
through a ``LambdaLR`` so that its state travels in checkpoints like any other scheduler's.
"""

from __future__ import annotations

import math

import torch

from mla.train.config import TrainConfig

__all__ = ["build_scheduler", "lr_at"]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Warm-up rises linearly from ``lr / warmup_steps`` at step 0 to ``lr`` at step ``warmup_steps - 1``;
    then a half cosine falls from ``lr`` to ``min_lr_ratio * lr``, reached at ``total_steps`` and kept
    after it.

    Args:
        step: optimizer steps already taken (0 for the first update).
        cfg: the training configuration (``lr``, ``warmup_steps``, ``total_steps``, ``min_lr_ratio``).

    Returns:
        The learning rate.

    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / decay_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that gives every parameter group the learning rate ``lr_at(step, cfg)``.

    The optimizer's groups must start at ``cfg.lr`` (as :func:`mla.train.optim.build_optimizer` makes them);
    call ``scheduler.step()`` once after each optimizer step.

    Args:
        optimizer: the optimizer to drive.
        cfg: the training configuration.

    Returns:
        The scheduler; it has already set the learning rate of step 0.

    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, cfg) / cfg.lr)
