"""Seeds and random-number-generator state for reproducible training.

    seed_everything(7)                 # python, numpy and torch (and every CUDA device) seeded
    state = rng_state()                # plain types and tensors: torch.load(..., weights_only=True) reads it
    ...
    set_rng_state(state)               # every generator back where it was

Generators you create yourself (``torch.Generator`` passed to a ``DataLoader``) are yours to save.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "seed_everything", "set_rng_state"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: the seed, any non-negative integer below 2**32.
        deterministic: on CUDA, make cuDNN pick deterministic algorithms and turn off its
            benchmark autotuner (reproducible, sometimes slower convolutions). No effect on CPU.

    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
    logger.debug("seeded python, numpy and torch with %d", seed)


def rng_state() -> dict[str, Any]:
    """The state of python's, numpy's and torch's global generators, as plain types and tensors.

    Returns:
        A dict that ``torch.save`` writes and ``torch.load(..., weights_only=True)`` reads back
        (numpy's key array is stored as an int64 tensor, no pickled numpy objects).

    """
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put every global generator back to a state taken by :func:`rng_state`.

    CUDA states are restored when this machine has the same number of CUDA devices; otherwise they
    are left alone (a run resumed on another machine keeps going, just not bit for bit).

    Args:
        state: what :func:`rng_state` returned (possibly after a save and load).

    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np.asarray(torch.as_tensor(np_state["key"]).numpy(), dtype=np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda_states = list(state.get("cuda", []))
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in cuda_states])
        else:
            logger.warning(
                "not restoring CUDA random state: saved for %d devices, this machine has %d",
                len(cuda_states),
                torch.cuda.device_count(),
            )
