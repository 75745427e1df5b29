"""Hooks into the training loop, and two ready-made ones that stop training early.

A callback subclasses :class:`Callback` and overrides what it needs; it may call
``trainer.request_stop(reason)``: the loop then stops after the current step, evaluates and saves a
checkpoint as it does at the end of a full run.

    Trainer(..., callbacks=[EarlyStopping("iou", mode="max", patience=3)])
    Trainer(..., callbacks=[StopWhen(lambda step, m: m["loss"] < 1e-3)])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mla.train.engine import Trainer

__all__ = ["Callback", "EarlyStopping", "StopWhen"]

logger = logging.getLogger(__name__)


class Callback:
    """Base of the loop's hooks; every method does nothing unless overridden."""

    def on_fit_start(self, trainer: Trainer[Any, Any]) -> None:
        """Called once before the first step (after a resume has restored the state)."""

    def on_step_end(self, trainer: Trainer[Any, Any], record: Mapping[str, float]) -> None:
        """Called after every optimizer step with that step's ``loss``, ``lr``, ``grad_norm`` and metrics."""

    def on_evaluate(self, trainer: Trainer[Any, Any], metrics: Mapping[str, float]) -> None:
        """Called after every evaluation with what ``evaluate(model)`` returned."""

    def on_checkpoint(self, trainer: Trainer[Any, Any], path: Path) -> None:
        """Called after a checkpoint has been written."""

    def on_fit_end(self, trainer: Trainer[Any, Any]) -> None:
        """Called once when the loop ends, after the last evaluation and checkpoint."""


class StopWhen(Callback):
    """Stop when a condition on the step and its metrics holds.

    Args:
        condition: ``condition(step, metrics) -> bool``; the metrics are the step's training record
            (``on="train"``) or the evaluation's result (``on="eval"``).
        on: which metrics the condition looks at.

    """

    def __init__(
        self, condition: Callable[[int, Mapping[str, float]], bool], on: Literal["train", "eval"] = "train"
    ) -> None:
        self.condition = condition
        self.on = on

    def _check(self, trainer: Trainer[Any, Any], metrics: Mapping[str, float]) -> None:
        if self.condition(trainer.step, metrics):
            trainer.request_stop(f"stop condition met at step {trainer.step}")

    def on_step_end(self, trainer: Trainer[Any, Any], record: Mapping[str, float]) -> None:
        """Check the condition on a training record."""
        if self.on == "train":
            self._check(trainer, record)

    def on_evaluate(self, trainer: Trainer[Any, Any], metrics: Mapping[str, float]) -> None:
        """Check the condition on an evaluation."""
        if self.on == "eval":
            self._check(trainer, metrics)


class EarlyStopping(Callback):
    """Stop when an evaluation metric has not improved for ``patience`` evaluations.

    Its memory is not in checkpoints: after a resume the patience counts again from zero.

    Args:
        monitor: the key of ``evaluate(model)``'s result to watch.
        mode: ``"min"`` when lower is better (a loss), ``"max"`` when higher is (IoU, F1).
        patience: evaluations without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.

    """

    def __init__(self, monitor: str, mode: Literal["min", "max"] = "min", patience: int = 3, min_delta: float = 0.0):
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_evaluations = 0

    def on_evaluate(self, trainer: Trainer[Any, Any], metrics: Mapping[str, float]) -> None:
        """Count evaluations without improvement and stop after ``patience`` of them."""
        if self.monitor not in metrics:
            logger.warning("EarlyStopping: evaluate() returned no %r (it returned %s)", self.monitor, sorted(metrics))
            return
        value = float(metrics[self.monitor])
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.bad_evaluations = value, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations >= self.patience:
            trainer.request_stop(
                f"{self.monitor} has not improved on {self.best:.6g} for {self.bad_evaluations} evaluations"
            )
