"""AdamW with decoupled weight decay on weights only: biases and normalisation parameters are not decayed.

A model can name more parameters to leave undecayed (positional embeddings, learned temperatures)
with a ``no_weight_decay()`` method returning their names, the convention timm uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mla.train.config import TrainConfig
from mla.train.errors import TrainError

__all__ = ["NORM_TYPES", "build_optimizer", "param_groups"]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
"""Module types whose parameters are never decayed."""


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split the trainable parameters into a decayed and an undecayed group.

    Not decayed: every parameter of a normalisation module (:data:`NORM_TYPES`), every bias, every
    parameter with fewer than two dimensions, and the names the model lists in ``no_weight_decay()``.
    Frozen parameters (``requires_grad=False``) are left out; a parameter shared by two modules appears once.

    Args:
        model: the module to train.
        weight_decay: the decay of the first group.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay, "names": [...]},
        {"params": undecayed, "weight_decay": 0.0, "names": [...]}]`` (empty groups left out).

    """
    skip: set[str] = set()
    hook = getattr(model, "no_weight_decay", None)
    if callable(hook):
        skip = set(hook())
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        undecayed = id(param) in norm_params or param.ndim < 2 or name.endswith(".bias") or name in skip
        (no_decay if undecayed else decay).append((name, param))
    groups = [
        {"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0, "names": [n for n, _ in no_decay]},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, every group starting at ``cfg.lr``.

    Args:
        model: the module to train, already on its device.
        cfg: the training configuration (``lr``, ``betas``, ``eps``, ``weight_decay``).

    Returns:
        The optimizer.

    Raises:
        TrainError: the model has no trainable parameters.

    """
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        msg = "the model has no trainable parameters (all have requires_grad=False)"
        raise TrainError(msg)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
