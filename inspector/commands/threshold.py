"""``inspector threshold``: choose a model's decision threshold on validation parts and store it in the model.

Pixel F1 (2 px tolerance) of the whole validation parts, summed over parts, at thresholds 0.10 ...
0.90; the best one is written into the model file's metadata, and every later load uses it (the
probabilities are shifted in logit space so that it lands at 0.5). Validation data only: never a
held-out set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.common import console, fail
from inspector.dataset import DataError, list_ids, read_sample
from inspector.errors import InspectorError
from inspector.evaluate import THRESHOLDS, PixelCounts, tolerant_counts
from inspector.mla_model import load_crack_model
from inspector.pipeline import inspect_pair


def best_threshold(totals: dict[float, PixelCounts], low: float = 0.1, high: float = 0.9) -> float:
    """The threshold in [low, high] with the highest F1 (the lower one on a tie)."""
    candidates = sorted(t for t in totals if low <= t <= high)
    if not candidates:
        raise ValueError(f"no threshold between {low} and {high}")
    return max(candidates, key=lambda t: (totals[t].f1, -t))


def threshold(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained crack model (.pt); updated in place.")],
    val: Annotated[Path, typer.Option("--val", help="Validation folder (never the held-out set).")],
    limit: Annotated[int | None, typer.Option(help="Only N validation parts, spread over the folder.")] = None,
) -> None:
    """Choose the decision threshold with the best validation pixel F1 and store it in the model file."""
    import mla

    if model.suffix != ".pt" or not model.is_file():
        fail(f"--model {model}: give a trained .pt file")
    try:
        crack = load_crack_model(model)
        crack.threshold, crack.logit_offset = 0.5, 0.0  # judge the raw probabilities
        ids = list_ids(val)
        if limit is not None and limit < len(ids):
            ids = ids[:: max(len(ids) // limit, 1)][:limit]
        totals = {float(t): PixelCounts() for t in THRESHOLDS}
        for sample_id in track(ids, description="validation parts", console=console, transient=True):
            sample = read_sample(val, sample_id)
            if sample.mask is None:
                raise DataError(f"{sample_id}: no mask; validation parts need ground truth")
            _, probability = inspect_pair(
                sample.visible, sample.infrared, sample.meta.homography, sample.meta.mm_per_px, crack
            )
            for t, total in list(totals.items()):
                totals[t] = total + tolerant_counts(probability >= t, sample.mask)
    except (DataError, InspectorError, mla.MLAError) as exc:
        fail(exc)
    chosen = best_threshold(totals)
    net = mla.load_model(model)
    metadata = mla.load_metadata(model) | {
        "threshold": chosen,
        "threshold_choice": {
            "data": str(val),
            "parts": len(ids),
            "val_f1_at_threshold": round(totals[chosen].f1, 4),
            "val_f1_at_0.5": round(totals[0.5].f1, 4),
        },
    }
    mla.save_model(net, model, metadata=metadata)
    table = Table("threshold", "precision", "recall", "F1", title=f"{model.name} on {len(ids)} validation parts")
    for t in sorted(totals):
        mark = " <" if t == chosen else ""
        table.add_row(f"{t:.2f}{mark}", f"{totals[t].precision:.3f}", f"{totals[t].recall:.3f}", f"{totals[t].f1:.3f}")
    console.print(table)
    console.print(
        f"threshold {chosen:.2f} (validation F1 {totals[chosen].f1:.3f}; at 0.5: {totals[0.5].f1:.3f}) -> {model}"
    )


def register(app: typer.Typer) -> None:
    """Add ``threshold`` to the CLI."""
    app.command("threshold")(threshold)
