"""Moving a batch, whatever its structure, to the training device."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import torch

__all__ = ["move_to_device"]

T = TypeVar("T")


def move_to_device(batch: T, device: torch.device | str, *, non_blocking: bool = False) -> T:
    """Move every tensor of a batch to a device, keeping the batch's structure.

    Tensors inside dicts (any mapping), lists, tuples, named tuples and dataclass instances are moved,
    at any depth; everything else (strings, numbers, ``None``) is returned as it is.

    Args:
        batch: a tensor or a container of them.
        device: where the tensors go.
        non_blocking: asynchronous copies from pinned memory (CUDA).

    Returns:
        A batch of the same structure and types on ``device``.

    """
    if isinstance(batch, torch.Tensor):
        return cast(T, batch.to(device, non_blocking=non_blocking))
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device, non_blocking=non_blocking) for k, v in batch.items()}
        return cast(T, moved if type(batch) is dict else cast(Any, type(batch))(moved))
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return cast(T, type(batch)(*(move_to_device(v, device, non_blocking=non_blocking) for v in batch)))
    if isinstance(batch, list | tuple):
        return cast(T, type(batch)(move_to_device(v, device, non_blocking=non_blocking) for v in batch))
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: move_to_device(getattr(batch, f.name), device, non_blocking=non_blocking)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return cast(T, dataclasses.replace(batch, **changes))
    return batch
