"""``inspector predict`` (one pair) and ``inspector predict-dir`` (a data folder)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from inspector.calibration import load_calibration
from inspector.commands.common import console, err_console, fail
from inspector.config import load_settings
from inspector.dataset import DataError, list_ids, read_image, read_sample
from inspector.errors import InspectorError
from inspector.model import CrackModel, create_model, list_models
from inspector.pipeline import InspectionResult, inspect_pair, write_prediction
from inspector.verdict import VerdictRules

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Crack model: a registered name (see `inspector models`).")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder for {stem}.pred.png and {stem}.result.json.")]
MinWidthOption = Annotated[
    float | None,
    typer.Option(
        "--min-width-mm",
        help="Verdict rule: a crack measured this wide makes NG (default: the model's operating point, else 0.2).",
    ),
]
MinLengthOption = Annotated[
    float | None,
    typer.Option("--min-length-mm", help="Verdict rule: ... and this long (default: the model's, else 1 mm)."),
]


def rules_from(model: CrackModel, min_width_mm: float | None, min_length_mm: float | None) -> VerdictRules | None:
    """The rules the options ask for, on top of the model's own; None (the model's or the default) when none given."""
    if min_width_mm is None and min_length_mm is None:
        return None
    base = getattr(model, "verdict_rules", None) or VerdictRules()
    given = {"min_width_mm": min_width_mm, "min_length_mm": min_length_mm}
    return base.model_copy(update={k: v for k, v in given.items() if v is not None})


def load_model(name: str, *, lanes: int = 1) -> CrackModel:
    """Create a model (learned ones run as the settings' ``inference`` section says) or exit 2 listing the names.

    ``lanes``: pairs the caller inspects at once (``inference.lanes`` for a streaming line, 1 for one
    image after another); the CPU budget ``inference.threads`` is shared between them.
    """
    try:
        inference = load_settings().inference
        options = inference.model_dump(exclude_none=True) | {"lanes": lanes}
        return create_model(name, inference=options)
    except InspectorError as exc:
        fail(exc)


def stem_of(path: Path) -> str:
    """``part-7`` for ``part-7.visible.png``, else the name without its suffix."""
    name = path.name
    for suffix in (".visible.png", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def result_table(results: list[InspectionResult]) -> Table:
    """A short table: one row per part."""
    table = Table("part", "verdict", "cracks", "defects", "widest mm", "longest mm", "ms")
    for r in results:
        widest = max((c.max_width_mm for c in r.cracks), default=0.0)
        longest = max((c.length_mm for c in r.cracks), default=0.0)
        colour = "red" if r.verdict == "NG" else "green"
        table.add_row(
            r.sample_id,
            f"[{colour}]{r.verdict}[/]",
            str(len(r.cracks)),
            str(len(r.defects)),
            f"{widest:.3f}",
            f"{longest:.2f}",
            f"{r.timings_ms.get('total', 0):.0f}",
        )
    return table


def predict(
    visible: Annotated[Path, typer.Argument(help="Visible image (8-bit PNG/JPEG, grey or RGB).")],
    infrared: Annotated[Path, typer.Argument(help="Infrared image (16-bit PNG, radiometric counts).")],
    out: OutOption,
    calibration: Annotated[
        Path | None, typer.Option("--calibration", help="calibration.yaml from `inspector calibrate`.")
    ] = None,
    mm_per_px: Annotated[
        float | None,
        typer.Option("--mm-per-px", help="Visible scale when there is no calibration file (cameras assumed coaxial)."),
    ] = None,
    model: ModelOption = "baseline",
    min_width_mm: MinWidthOption = None,
    min_length_mm: MinLengthOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result JSON.")] = False,
) -> None:
    """Inspect one visible + infrared pair: crack map, measurements in mm and an OK/NG verdict."""
    if (calibration is None) == (mm_per_px is None):
        fail("give exactly one of --calibration FILE or --mm-per-px F")
    crack_model = load_model(model)
    try:
        vis = read_image(visible, np.uint8, "visible")
        ir = read_image(infrared, np.uint16, "infrared")
        homography, scale = None, mm_per_px
        if calibration is not None:
            cal = load_calibration(calibration)
            if tuple(cal.visible_shape) != vis.shape[:2] or tuple(cal.ir_shape) != ir.shape[:2]:
                raise InspectorError(
                    f"{calibration} is for visible {tuple(cal.visible_shape)} and IR {tuple(cal.ir_shape)} images, "
                    f"but {visible.name} is {vis.shape[:2]} and {infrared.name} is {ir.shape[:2]}"
                )
            homography, scale = cal.homography, cal.mm_per_px
        assert scale is not None
        stem = stem_of(visible)
        rules = rules_from(crack_model, min_width_mm, min_length_mm)
        result, probability = inspect_pair(vis, ir, homography, scale, crack_model, rules=rules, sample_id=stem)
        write_prediction(out, stem, probability, result)
    except InspectorError as exc:
        fail(exc)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        console.print(result_table([result]))
        console.print(f"wrote {out / (stem + '.pred.png')} and {out / (stem + '.result.json')}")


@dataclass
class BatchOutcome:
    """What a batch prediction did."""

    results: list[InspectionResult]
    failures: list[tuple[str, str]]
    seconds: float


def predict_folder(
    data: Path,
    out: Path,
    crack_model: CrackModel,
    limit: int | None = None,
    show_progress: bool = True,
    rules: VerdictRules | None = None,
    without_ir: bool = False,
) -> BatchOutcome:
    """Predict every sample of a data folder, going on past broken ones.

    ``without_ir`` withholds every infrared image, as when the IR camera is down.
    """
    ids = list_ids(data)[:limit]
    results: list[InspectionResult] = []
    failures: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, disable=not show_progress, transient=True) as progress:
        task = progress.add_task("predict", total=len(ids))
        for sample_id in ids:
            try:
                sample = read_sample(data, sample_id, with_mask=False)
                meta = sample.meta
                result, probability = inspect_pair(
                    sample.visible,
                    None if without_ir else sample.infrared,
                    meta.homography,
                    meta.mm_per_px,
                    crack_model,
                    rules=rules,
                    sample_id=sample_id,
                    part_id=meta.part_id,
                )
                write_prediction(out, sample_id, probability, result)
                results.append(result)
            except (DataError, InspectorError) as exc:
                failures.append((sample_id, str(exc)))
            progress.advance(task)
    return BatchOutcome(results=results, failures=failures, seconds=time.perf_counter() - t0)


def predict_dir(
    data: Annotated[Path, typer.Argument(help="A data folder ({id}.visible.png, {id}.infrared.png, {id}.json).")],
    out: OutOption,
    model: ModelOption = "baseline",
    limit: Annotated[int | None, typer.Option(help="Only the first N samples.")] = None,
    min_width_mm: MinWidthOption = None,
    min_length_mm: MinLengthOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Inspect every pair of a data folder; broken pairs are skipped and listed at the end (exit 1)."""
    crack_model = load_model(model)
    rules = rules_from(crack_model, min_width_mm, min_length_mm)
    try:
        outcome = predict_folder(data, out, crack_model, limit, show_progress=not as_json, rules=rules)
    except DataError as exc:
        fail(exc)
    ng = sum(r.verdict == "NG" for r in outcome.results)
    if as_json:
        summary = {
            "predicted": len(outcome.results),
            "ng": ng,
            "failed": [{"id": i, "error": e} for i, e in outcome.failures],
            "seconds": round(outcome.seconds, 2),
            "model": crack_model.name,
        }
        console.print_json(json.dumps(summary))
    else:
        console.print(f"{len(outcome.results)} parts inspected with {crack_model.name}: {ng} NG -> {out}")
        for sample_id, error in outcome.failures:
            err_console.print(f"[yellow]failed[/] {sample_id}: {error}", highlight=False)
    if outcome.failures:
        raise typer.Exit(1)


def models() -> None:
    """List the crack models that --model accepts."""
    for name in list_models():
        console.print(name)


def register(app: typer.Typer) -> None:
    """Add predict, predict-dir and models to the CLI."""
    app.command("predict")(predict)
    app.command("predict-dir")(predict_dir)
    app.command("models")(models)
