"""``inspector threshold``: choose a model's operating point on validation parts and store it in the model.

1. **Pixel threshold**: pixel F1 (2 px tolerance) of the whole validation parts, summed over parts, at
   thresholds 0.10 ... 0.90; the best one is written into the model file's metadata, and every later
   load uses it (the probabilities are shifted in logit space so that it lands at 0.5).
2. **Verdict rules**: with that threshold, the measured-width cut and the least mean crack probability
   that minimise escapes plus false rejects on the same parts (:func:`inspector.verdict.choose_rules`);
   stored as ``verdict_rules`` and used wherever no rules are given (workers, ``inspector run``).

Validation data only: never a held-out set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.common import console, fail
from inspector.dataset import DataError, list_ids, read_sample
from inspector.errors import InspectorError
from inspector.evaluate import THRESHOLDS, PixelCounts, tolerant_counts, truth_verdict
from inspector.measure import measure_cracks
from inspector.mla_model import load_crack_model
from inspector.pipeline import inspect_pair
from inspector.verdict import LabelledPart, VerdictRules, choose_rules, score_rules

RULE_WIDTHS_MM = tuple(round(0.14 + 0.02 * k, 2) for k in range(7))  # 0.14 ... 0.26 mm
RULE_SCORES = (0.0, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def best_threshold(totals: dict[float, PixelCounts], low: float = 0.1, high: float = 0.9) -> float:
    """The threshold in [low, high] with the highest F1 (the lower one on a tie)."""
    candidates = sorted(t for t in totals if low <= t <= high)
    if not candidates:
        raise ValueError(f"no threshold between {low} and {high}")
    return max(candidates, key=lambda t: (totals[t].f1, -t))


def at_threshold(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities shifted in logit space so that ``threshold`` lands at 0.5, as a loaded model does."""
    p = np.clip(probability, 1e-6, 1 - 1e-6)
    shift = np.log(threshold / (1.0 - threshold))
    return np.asarray(1.0 / (1.0 + np.exp(shift - np.log(p / (1.0 - p)))), dtype=np.float32)


def threshold(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained crack model (.pt); updated in place.")],
    val: Annotated[Path, typer.Option("--val", help="Validation folder (never the held-out set).")],
    limit: Annotated[int | None, typer.Option(help="Only N validation parts, spread over the folder.")] = None,
    pixel_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.05,
            max=0.95,
            help="Keep this pixel threshold instead of the best-F1 one (0.5: where a model trained on true masks "
            "draws the true crack edge, so widths stay unbiased) and choose only the verdict rules.",
        ),
    ] = None,
) -> None:
    """Choose the pixel threshold (best validation F1) and the verdict rules (fewest escapes + false rejects).

    Both are stored in the model file; every later load uses them.
    """
    import mla

    if model.suffix != ".pt" or not model.is_file():
        fail(f"--model {model}: give a trained .pt file")
    try:
        crack = load_crack_model(model)
        crack.threshold, crack.logit_offset = 0.5, 0.0  # judge the raw probabilities
        ids = list_ids(val)
        if limit is not None and limit < len(ids):
            ids = ids[:: max(len(ids) // limit, 1)][:limit]
        totals = {float(t): PixelCounts() for t in {*THRESHOLDS, *([pixel_threshold] if pixel_threshold else [])}}
        maps = []  # (probability, meta) of every part, for the verdict rules
        for sample_id in track(ids, description="validation parts", console=console, transient=True):
            sample = read_sample(val, sample_id)
            if sample.mask is None:
                raise DataError(f"{sample_id}: no mask; validation parts need ground truth")
            _, probability = inspect_pair(
                sample.visible, sample.infrared, sample.meta.homography, sample.meta.mm_per_px, crack
            )
            for t, total in list(totals.items()):
                totals[t] = total + tolerant_counts(probability >= t, sample.mask)
            maps.append((probability, sample.meta))
    except (DataError, InspectorError, mla.MLAError) as exc:
        fail(exc)
    chosen = best_threshold(totals) if pixel_threshold is None else float(pixel_threshold)
    parts = [
        LabelledPart(
            cracks=tuple(measure_cracks(at_threshold(probability, chosen), meta.mm_per_px)),
            truly_ng=truth_verdict(meta, VerdictRules()) == "NG",
            clean=meta.is_clean,
        )
        for probability, meta in maps
    ]
    ranked = choose_rules(parts, RULE_WIDTHS_MM, RULE_SCORES)
    best, spec = ranked[0], score_rules(parts, VerdictRules())
    net = mla.load_model(model)
    metadata = mla.load_metadata(model) | {
        "threshold": chosen,
        "threshold_choice": {
            "data": str(val),
            "parts": len(ids),
            "val_f1_at_threshold": round(totals[chosen].f1, 4),
            "val_f1_at_0.5": round(totals[0.5].f1, 4),
        },
        "verdict_rules": best.rules.model_dump(),
        "verdict_rules_choice": {
            "data": str(val),
            "parts": len(parts),
            "escape_rate": round(best.escape_rate, 4),
            "false_reject_rate": round(best.false_reject_rate, 4),
            "at_specification": {
                "escape_rate": round(spec.escape_rate, 4),
                "false_reject_rate": round(spec.false_reject_rate, 4),
            },
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
    rules = Table("min width (mm)", "min score", "escape rate", "false-reject rate", title="verdict rules, best first")
    for candidate in [*ranked[:5], spec]:
        r = candidate.rules
        mark = " (specification)" if candidate is spec else ""
        rules.add_row(f"{r.min_width_mm:.2f}{mark}", f"{r.min_score:.2f}", f"{candidate.escape_rate:.3f}",
                      f"{candidate.false_reject_rate:.3f}")  # fmt: skip
    console.print(rules)
    console.print(f"verdict rules {best.rules.model_dump()} on {len(parts)} validation parts -> {model}")


def register(app: typer.Typer) -> None:
    """Add ``threshold`` to the CLI."""
    app.command("threshold")(threshold)
