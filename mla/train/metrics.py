"""Training metrics as JSON lines, and their curves as a PNG.

Each line of ``out_dir/metrics.jsonl`` is one record: ``{"split": "train", "step": 100, "epoch": 0,
"lr": 0.0003, "loss": 0.41, "grad_norm": 1.2, "wall_s": 12.5, ...the loss function's metrics}`` every
``log_every`` steps (averaged over the window), and ``{"split": "eval", "step": 500, "epoch": 1,
"wall_s": 60.1, ...what evaluate() returned}`` after each evaluation.

    plot_metrics("runs/a/metrics.jsonl", "runs/a/curves.png")
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["BOOKKEEPING", "MetricsLog", "MetricsWindow", "plot_metrics", "read_metrics"]

BOOKKEEPING = frozenset({"split", "step", "epoch", "wall_s"})
"""Record keys that are not metrics (never plotted as curves)."""


class MetricsLog:
    """Appends records to a JSON-lines file, one flushed line per record.

    Args:
        path: the file; its folder is created, an existing file is appended to.

    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as a line (non-finite floats are written as ``null``)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean, sort_keys=False) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop records of steps after ``step`` (a run resumed from an earlier checkpoint redoes them).

        Returns:
            How many records were dropped.

        """
        if not self.path.is_file():
            return 0
        records = read_metrics(self.path)
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        if len(kept) != len(records):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(self.path)
        return len(records) - len(kept)


class MetricsWindow:
    """Running means of step records over a logging window; NaN and inf values are left out."""

    def __init__(self) -> None:
        self._sums: dict[str, tuple[float, int]] = {}

    def add(self, record: Mapping[str, float]) -> None:
        """Count one step's values."""
        for key, value in record.items():
            if math.isfinite(value):
                total, count = self._sums.get(key, (0.0, 0))
                self._sums[key] = (total + value, count + 1)

    def means(self, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, float]:
        """The mean of each key over the steps where it was finite."""
        return {k: total / count for k, (total, count) in self._sums.items() if k not in exclude}

    def clear(self) -> None:
        """Start a new window."""
        self._sums.clear()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read every record of a JSON-lines metrics file (blank and truncated last lines are ignored)."""
    records: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return records


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list[float], list[float]]:
    points = [
        (float(r["step"]), float(r[key]))
        for r in records
        if r.get("split") == split and isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
    ]
    return [p[0] for p in points], [p[1] for p in points]


def plot_metrics(jsonl_path: str | Path, png_path: str | Path) -> Path:
    """Draw every metric of a metrics file against the step, one panel each, into a PNG.

    Panels: ``loss`` (train, and eval when ``evaluate`` returns a ``loss``; log scale), ``lr``, then every other
    metric, train and eval on the same axes when they share a name. Uses matplotlib's Agg canvas
    directly (no pyplot, no display, no global backend change).

    Args:
        jsonl_path: a file written by :class:`MetricsLog`.
        png_path: the image to write; its folder is created.

    Returns:
        The PNG path.

    """
    from matplotlib.figure import Figure

    records = read_metrics(jsonl_path)
    names: list[str] = ["loss", "lr"]
    for record in records:
        for key, value in record.items():
            if key not in BOOKKEEPING and key not in names and isinstance(value, int | float):
                names.append(key)
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        for split, style in (("train", "-"), ("eval", "o-")):
            xs, ys = _series(records, split, name)
            if xs:
                ax.plot(xs, ys, style, label=split, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
            if name == "lr":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
            if name == "loss" and all(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    target = Path(png_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    return target
