"""Layer shapes of a pruned model: recorded in its checkpoint, re-applied when it is loaded.

A pruned model no longer matches the shapes its configuration builds. :func:`structure` records the
size attributes of every resizable layer (plain ints and lists, so the checkpoint still loads with
``weights_only=True``); :func:`apply_structure` resizes a freshly built model to them before its
state dict is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

_SHAPE_ATTRIBUTES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.ConvTranspose2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm2d: ("num_features",),
    nn.BatchNorm1d: ("num_features",),
    nn.LayerNorm: ("normalized_shape",),
    nn.GroupNorm: ("num_channels", "num_groups"),
}


def structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The size attributes of every resizable layer, by module name."""
    found: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attributes = _SHAPE_ATTRIBUTES.get(type(module))
        if attributes:
            found[name] = {a: _plain(getattr(module, a)) for a in attributes}
    widths = {name: int(m.width) for name, m in model.named_modules() if isinstance(getattr(m, "width", None), int)}
    if widths:
        found["__widths__"] = widths
    return found


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def apply_structure(model: nn.Module, shapes: Mapping[str, Any], state: Mapping[str, Tensor]) -> None:
    """Resize ``model``'s layers to a pruned checkpoint's shapes so that ``state`` loads into it."""
    modules = dict(model.named_modules())
    for name, attributes in shapes.items():
        if name == "__widths__":
            continue
        module = modules.get(name)
        if module is None:
            continue
        for attribute, value in attributes.items():
            setattr(module, attribute, tuple(value) if isinstance(value, list) else value)
        for pname, tensor in list(module.named_parameters(recurse=False)):
            saved = state.get(f"{name}.{pname}" if name else pname)
            if saved is not None and saved.shape != tensor.shape:
                setattr(module, pname, nn.Parameter(torch.empty(saved.shape, dtype=tensor.dtype)))
        for bname, buffer in list(module.named_buffers(recurse=False)):
            saved = state.get(f"{name}.{bname}" if name else bname)
            if saved is not None and buffer is not None and saved.shape != buffer.shape:
                module.register_buffer(bname, torch.empty(saved.shape, dtype=buffer.dtype))
    for name, width in dict(shapes.get("__widths__", {})).items():
        if name in modules:
            setattr(modules[name], "width", width)  # noqa: B010


def sync_widths(model: nn.Module) -> None:
    """After pruning, set each fusion's ``width`` to what its projections now give."""
    for module in model.modules():
        projections = getattr(module, "proj", None)
        if isinstance(getattr(module, "width", None), int) and isinstance(projections, nn.ModuleDict):
            for projection in projections.values():
                vector = getattr(projection, "vector", None)
                linear = vector[0] if isinstance(vector, nn.Sequential) else None
                if isinstance(linear, nn.Linear):
                    setattr(module, "width", linear.out_features)  # noqa: B010
                    break
