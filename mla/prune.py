"""Structured channel pruning that physically removes channels, on torch-pruning's dependency graph.

Masks alone give no speed-up: a pruned channel must leave every tensor that touches it (the conv
that makes it, the BN that scales it, the depthwise conv and the residual add that pass it on, the
projections and concatenations that read it, in both encoders). torch-pruning's
``DependencyGraph`` finds those groups by tracing one forward pass; this module chooses what to
prune and keeps the model loadable::

    pruned = prune(model, example, criterion="taylor", ratio=0.4, loss_fn=loss, batches=batches)
    save_model(pruned, "crack-40.pt")      # the pruned shapes travel in the checkpoint
    load_model("crack-40.pt")              # rebuilt with the pruned shapes, weights_only=True

Criteria (per output channel, summed over the channel's group):

- ``taylor``: |w · ∂L/∂w|, the first-order estimate of the loss change when the channel is removed,
  accumulated over a few batches of the task loss;
- ``l1``: the L1 norm of the channel's weights;
- ``bn_scale``: |γ| of the BatchNorm that follows the conv.

Heads' output layers and the modal gates' output layers are never pruned (their outputs are classes
and modalities, not features); the fused width shared by every modality is pruned as one group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mla.errors import MLAConfigError
from mla.fusion.base import modal_weights_as_constants
from mla.model import MLAModel, MLAOutput
from mla.profile import count_macs, count_parameters
from mla.shapes import sync_widths

logger = logging.getLogger(__name__)

CRITERIA = ("taylor", "l1", "bn_scale")


class _Outputs(nn.Module):
    """Every tensor of an :class:`MLAOutput` as a tuple, so the traced graph reaches every layer."""

    def __init__(self, model: MLAModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Tensor) -> tuple[Tensor, ...]:
        out: MLAOutput = self.model(**inputs)
        return (out.fused, out.modal_weights, *out.outputs.values())


@dataclass(frozen=True)
class PruneReport:
    """Sizes before and after one :func:`prune` call."""

    criterion: str
    ratio: float
    parameters_before: int
    parameters_after: int
    macs_before: int
    macs_after: int

    @property
    def mac_ratio(self) -> float:
        """MACs after / before (0.4 means 2.5x fewer)."""
        return self.macs_after / max(self.macs_before, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON and checkpoint metadata."""
        return {
            "criterion": self.criterion,
            "ratio": self.ratio,
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "mac_ratio": round(self.mac_ratio, 4),
        }


def protected_layers(model: MLAModel) -> list[nn.Module]:
    """Layers whose outputs are not features: each head's last layer and each modal gate's last layer."""
    keep: list[nn.Module] = []
    for head in model.heads.values():
        layers = [m for m in head.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if layers:
            keep.append(layers[-1])
    gates = getattr(model.fusion, "gates", None) or getattr(model.fusion, "gate", None)
    for gate in gates if isinstance(gates, nn.ModuleList) else [gates] if gates is not None else []:
        layers = [m for m in gate.modules() if isinstance(m, nn.Linear)]
        if layers:
            keep.append(layers[-1])
    return keep


def _importance(criterion: str) -> Any:
    import torch_pruning as tp

    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    if criterion == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    msg = f"unknown pruning criterion {criterion!r}: choose one of {', '.join(CRITERIA)}"
    raise MLAConfigError(msg)


def prune(
    model: MLAModel,
    example: Mapping[str, Tensor],
    *,
    ratio: float,
    criterion: str = "taylor",
    global_pruning: bool = False,
    loss_fn: Callable[[MLAModel, Any], Tensor] | None = None,
    batches: Iterable[Any] = (),
    round_to: int | None = 4,
) -> PruneReport:
    """Remove ``ratio`` of the prunable channels of ``model`` in place.

    Args:
        model: The model; pruned in place and left in eval mode.
        example: Example inputs by modality name (small shapes are enough to trace).
        ratio: Share of channels removed from each group (``global_pruning=False``) or overall.
        criterion: ``taylor``, ``l1`` or ``bn_scale``.
        global_pruning: Rank channels across layers (can empty some layers more than others).
        loss_fn: ``loss_fn(model, batch) -> scalar`` for the ``taylor`` gradients.
        batches: The batches over which ``taylor`` accumulates gradients (a few are enough).
        round_to: Keep channel counts multiples of this (friendlier to vectorised kernels).

    Raises:
        MLAConfigError: Unknown criterion, a ratio outside [0, 1), or ``taylor`` without a loss and batches.

    """
    import torch_pruning as tp

    if not 0.0 <= ratio < 1.0:
        msg = f"pruning ratio must lie in [0, 1), got {ratio}"
        raise MLAConfigError(msg)
    importance = _importance(criterion)
    batches = list(batches)
    if criterion == "taylor" and (loss_fn is None or not batches):
        msg = "the taylor criterion needs loss_fn and at least one batch (it ranks channels by |w · dL/dw|)"
        raise MLAConfigError(msg)
    model.eval()
    inputs = dict(example)
    params_before, macs_before = count_parameters(model), count_macs(model, **inputs)
    traced = _Outputs(model)
    priors = [p for n, p in model.named_parameters() if n.endswith("prior")]  # per modality, never pruned
    with modal_weights_as_constants():
        pruner = tp.pruner.MetaPruner(
            traced,
            example_inputs=inputs,
            importance=importance,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            ignored_layers=[*protected_layers(model), *priors],
            unwrapped_parameters=[(p, p.dim() - 1) for p in priors] or None,
            round_to=round_to,
        )
    if criterion == "taylor" and loss_fn is not None:
        model.zero_grad()
        with torch.enable_grad():  # eval mode: BN statistics stay, no modality dropout
            for batch in batches:
                loss_fn(model, batch).backward()  # type: ignore[no-untyped-call]
        for parameter in model.parameters():  # layers the task loss does not reach rank lowest, not crash
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
    pruner.step()
    model.zero_grad(set_to_none=True)
    sync_widths(model)
    setattr(model, "pruned", True)  # noqa: B010  (save_model then records the new shapes)
    report = PruneReport(
        criterion=criterion,
        ratio=ratio,
        parameters_before=params_before,
        parameters_after=count_parameters(model),
        macs_before=macs_before,
        macs_after=count_macs(model, **inputs),
    )
    logger.info(
        "pruned %.0f%% (%s): %d -> %d parameters, MACs x%.2f",
        100 * ratio, criterion, report.parameters_before, report.parameters_after, report.mac_ratio,
    )  # fmt: skip
    return report


def ratio_for_speedup(model: MLAModel, example: Mapping[str, Tensor], speedup: float, step: float = 0.05) -> float:
    """The smallest ratio (on a grid of ``step``) whose pruned copy has at most ``1/speedup`` of the MACs.

    MACs fall roughly with the square of the kept share, but channel counts are rounded, so the
    curve has steps; a grid search on copies (``l1``, cheap) is robust where bisection is not.

    Raises:
        MLAConfigError: ``speedup`` ≤ 1, or no ratio below 0.95 reaches it.

    """
    import copy

    if speedup <= 1.0:
        msg = f"target speed-up must be > 1, got {speedup}"
        raise MLAConfigError(msg)
    goal = 1.0 / speedup
    ratio = step
    while ratio < 0.95:
        if prune(copy.deepcopy(model), example, ratio=ratio, criterion="l1").mac_ratio <= goal:
            return round(ratio, 4)
        ratio += step
    msg = f"no pruning ratio below 0.95 gives {speedup}x fewer MACs: ask for less"
    raise MLAConfigError(msg)
