"""A rich progress bar for the training loop: steps, loss, learning rate, steps per second, time left."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["StepProgress"]


class _RateColumn(ProgressColumn):
    """Optimizer steps per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- it/s" if speed is None else f"{speed:.2f} it/s", style="progress.data.speed")


class StepProgress:
    """Progress of optimizer steps, shown on stderr; silent when disabled.

    Args:
        total: the last step of the run.
        start: the step the run starts from (non-zero when resuming).
        enabled: show the bar; ``None`` shows it only when stderr is a terminal.

    """

    def __init__(self, total: int, start: int = 0, enabled: bool | None = None) -> None:
        show = sys.stderr.isatty() if enabled is None else enabled
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not show,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", lr="-")

    def __enter__(self) -> StepProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float, lr: float) -> None:
        """Show that ``step`` optimizer steps are done, with the last loss and learning rate."""
        self._progress.update(self._task, completed=step, loss=f"{loss:.4g}", lr=f"{lr:.3g}")
