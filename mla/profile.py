"""Cost figures of a module: parameters, multiply-accumulates (MACs) and CPU latency.

::

    count_parameters(model)                       # 312_345
    count_macs(model, **model.example_inputs())   # 0.6e9 for one forward pass
    measure_latency(model, model.example_inputs(), repeats=10)   # median seconds
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once).

    Args:
        module: Any module.
        trainable_only: Count only those with ``requires_grad``.

    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers (what a state dict file roughly takes)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def count_macs(module: nn.Module, *inputs: Any, **named: Any) -> int:
    """Multiply-accumulates of one forward pass, counted with forward hooks.

    Counts ``Conv2d`` (output elements × input channels per group × kernel area), ``Linear`` (output
    elements × input features) and ``MultiheadAttention`` (its four projections and the two attention
    products). Normalisation, activations, pooling and resizing are not counted (they are cheap
    element-wise work, though not free on a CPU).

    Args:
        module: The module to run (its mode is kept).
        inputs: Positional inputs of ``module``.
        named: Keyword inputs of ``module``.

    """
    total = 0

    def conv(layer: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(layer, nn.Conv2d)
        kernel = layer.kernel_size[0] * layer.kernel_size[1]
        total += out.numel() * (layer.in_channels // layer.groups) * kernel

    def linear(layer: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(layer, nn.Linear)
        total += out.numel() * layer.in_features

    def attention(layer: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        nonlocal total
        assert isinstance(layer, nn.MultiheadAttention)
        query, key = args[0], args[1]
        batch_first = layer.batch_first
        batch = query.shape[0] if batch_first else query.shape[1]
        lq = query.shape[1] if batch_first else query.shape[0]
        lk = key.shape[1] if batch_first else key.shape[0]
        dim = layer.embed_dim
        total += batch * (2 * lq * dim * dim + 2 * lk * dim * dim + 2 * lq * lk * dim)

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear))
        elif isinstance(layer, nn.MultiheadAttention):
            handles.append(layer.register_forward_hook(attention))
    try:
        # Grad mode on: PyTorch's fused Transformer fast path (eval + no grad) bypasses the submodules' hooks.
        with torch.enable_grad():
            module(*inputs, **named)
    finally:
        for handle in handles:
            handle.remove()
    return total


def measure_latency(module: nn.Module, inputs: Mapping[str, Any], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall-clock seconds of ``module(**inputs)`` under ``torch.inference_mode``.

    Args:
        module: The module (put it in eval mode first for inference figures).
        inputs: Keyword inputs.
        repeats: Timed runs.
        warmup: Untimed runs first.

    """
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            module(**inputs)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)
