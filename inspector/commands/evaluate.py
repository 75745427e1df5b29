"""``inspector eval``: compare a predictions folder with a data folder's ground truth."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from inspector.commands.common import console, err_console, fail
from inspector.dataset import DataError, list_ids, read_image, read_sample
from inspector.errors import InspectorError
from inspector.evaluate import EvaluationReport, SampleEvaluation, evaluate_sample, summarize
from inspector.pipeline import to_grey
from inspector.pod import PodResult
from inspector.report import GalleryItem, overlay, plot_pod, plot_pr_curves, save_gallery
from inspector.verdict import Verdict, VerdictRules


def json_safe(value: Any) -> Any:
    """NaN → None so that the JSON is valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


@dataclass
class FolderEvaluation:
    """Per-sample evaluations of a predictions folder, and the samples that could not be evaluated."""

    evaluations: list[SampleEvaluation]
    failures: list[tuple[str, str]]

    def report(self) -> EvaluationReport:
        """The set's figures."""
        return summarize(self.evaluations)


def read_prediction(predictions: Path, sample_id: str) -> tuple[np.ndarray, Verdict]:
    """The (H, W) float probability and the verdict predicted for one sample."""
    probability = read_image(predictions / f"{sample_id}.pred.png", np.uint8, "prediction").astype(np.float32) / 255
    result_path = predictions / f"{sample_id}.result.json"
    try:
        verdict = json.loads(result_path.read_text())["verdict"]
    except FileNotFoundError:
        raise DataError(f"{result_path}: missing result file") from None
    except (ValueError, KeyError):
        raise DataError(f"{result_path}: not a result document (no verdict)") from None
    if verdict not in ("OK", "NG"):
        raise DataError(f"{result_path}: verdict must be OK or NG, found {verdict!r}")
    return probability, "OK" if verdict == "OK" else "NG"


def evaluate_folder(
    data: Path, predictions: Path, rules: VerdictRules | None = None, show_progress: bool = True
) -> FolderEvaluation:
    """Evaluate every sample of ``data`` that has a mask, against ``predictions``."""
    evaluations: list[SampleEvaluation] = []
    failures: list[tuple[str, str]] = []
    ids = list_ids(data)
    columns = (TextColumn("evaluate"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, disable=not show_progress, transient=True) as progress:
        task = progress.add_task("evaluate", total=len(ids))
        for sample_id in ids:
            progress.advance(task)
            try:
                sample = read_sample(data, sample_id)
                if sample.mask is None:
                    raise DataError(f"{sample_id}: no {sample_id}.mask.png, nothing to compare with")
                probability, verdict = read_prediction(predictions, sample_id)
                if probability.shape != sample.mask.shape:
                    raise DataError(f"{sample_id}: prediction {probability.shape} and mask {sample.mask.shape} differ")
                evaluations.append(evaluate_sample(sample.meta, sample.mask, probability, verdict, rules))
            except (DataError, InspectorError) as exc:
                failures.append((sample_id, str(exc)))
    return FolderEvaluation(evaluations=evaluations, failures=failures)


def score_model(model: Any, data: Path, work: Path, limit: int | None) -> dict[str, float]:
    """Predict ``limit`` held-out parts into ``work`` and score them: pixel F1, recall ≥ 0.2 mm, false rejects, a90/95.

    ``a90_95_mm`` is NaN where the POD fit gives none (see ``report.pod.reason``).
    """
    from inspector.commands.predict import predict_folder

    predict_folder(data, work, model, limit, show_progress=False)
    report = evaluate_folder(data, work, show_progress=False).report()
    fit = report.pod.fit
    return {
        "pixel_f1": report.pixel["f1"],
        "defect_crack_recall": report.defect_crack_recall["recall"],
        "false_reject_rate": report.parts["false_reject_rate"],
        "a90_95_mm": fit.a90_95_mm if fit is not None and fit.a90_95_mm is not None else math.nan,
    }


def write_figures(
    data: Path, predictions: Path, report: EvaluationReport, out: Path, name: str, gallery_size: int = 8
) -> list[Path]:
    """PR curve, POD curve and gallery of the worst cases for one model; returns the files written."""
    written = [out / "pr_curve.png", out / "pod.png", out / "worst.png"]
    plot_pr_curves({name: report.pr_curve}, written[0], f"{name} on {data.name}: pixel PR, {report.samples} samples")
    plot_pod({name: report.pod}, written[1], f"{name} on {data.name}: probability of detection (hit/miss)")
    items = []
    for sample_id in report.worst[:gallery_size]:
        sample = read_sample(data, sample_id)
        probability, verdict = read_prediction(predictions, sample_id)
        rgb = overlay(to_grey(sample.visible), probability >= 0.5, sample.mask, size=384)
        truth = "NG" if any(c.max_width_mm >= 0.2 for c in sample.meta.cracks) else "OK"
        items.append(GalleryItem(f"{sample_id}\ntruth {truth} / predicted {verdict}", rgb))
    save_gallery(items, written[2], f"{name}: worst {len(items)} of {report.samples}")
    return written


def pod_cell(result: PodResult, key: str) -> float | str:
    """A POD size (``a50_mm``, ``a90_mm`` or ``a90_95_mm``) for a table; "n/a" and, for a90/95, the reason."""
    size = getattr(result.fit, key) if result.fit is not None else None
    if size is not None:
        return float(size)
    return f"n/a: {result.reason}" if key == "a90_95_mm" else "n/a"


def report_table(reports: dict[str, EvaluationReport]) -> Table:
    """Side-by-side figures of one or more models."""
    table = Table("figure", *reports)
    rows: list[tuple[str, Any]] = [
        ("pixel precision @0.5", lambda r: r.pixel["precision"]),
        ("pixel recall @0.5", lambda r: r.pixel["recall"]),
        ("pixel F1 @0.5", lambda r: r.pixel["f1"]),
    ]
    for bin_name in ("<0.1", "0.1-0.2", "0.2-0.3", ">=0.3"):
        rows.append((f"crack recall {bin_name} mm", lambda r, b=bin_name: r.recall_by_width[b]["recall"]))
    rows += [
        ("width MAE mm (>=0.2)", lambda r: r.measurement["max_width_mae_mm_ge_0_2"]),
        ("length rel. error", lambda r: r.measurement["length_rel_error"]),
        ("escape rate (NG judged OK)", lambda r: r.parts["escape_rate"]),
        ("false-reject rate (clean)", lambda r: r.parts["false_reject_rate"]),
        ("POD a50 (mm)", lambda r: pod_cell(r.pod, "a50_mm")),
        ("POD a90 (mm)", lambda r: pod_cell(r.pod, "a90_mm")),
        ("POD a90/95 (mm)", lambda r: pod_cell(r.pod, "a90_95_mm")),
    ]
    for label, get in rows:
        table.add_row(label, *(v if isinstance(v := get(r), str) else f"{v:.3f}" for r in reports.values()))
    return table


def pod_contrast_table(reports: dict[str, EvaluationReport]) -> Table:
    """POD by visible contrast and by IR excess (terciles): found / cracks and a90 per bin and model.

    A bin where even wide cracks are missed holds cracks the sensors barely show; a bin where they are
    found shows that the misses elsewhere are the model's.
    """
    table = Table("bin", *reports, title="POD by crack contrast: found/cracks, a90 (mm)")
    for kind, label in (("pod_by_contrast", "visible contrast"), ("pod_by_ir_delta", "IR excess (counts)")):
        bins = [getattr(r, kind) for r in reports.values()]
        for index in range(max((len(b) for b in bins), default=0)):
            first = next(b[index] for b in bins if len(b) > index)
            cells = []
            for model_bins in bins:
                if len(model_bins) <= index:
                    cells.append("-")
                    continue
                result = model_bins[index].result
                a90 = pod_cell(result, "a90_mm")
                cells.append(f"{result.hits}/{result.n}, " + (f"{a90:.3f}" if isinstance(a90, float) else "n/a"))
            table.add_row(f"{label} {first.low:.3g}-{first.high:.3g}", *cells)
    return table


def compare_models(
    models: list[str], folders: list[Path], out: Path, limit: int | None, show_progress: bool
) -> dict[str, dict[str, EvaluationReport]]:
    """Predict and score every model on every data folder: ``{folder: {model: report}}``.

    Predictions go to ``out/{model stem}/{folder name}``; each model decides with its own verdict
    rules (its operating point), as the worker does.
    """
    from inspector.commands.predict import predict_folder
    from inspector.model import create_model

    reports: dict[str, dict[str, EvaluationReport]] = {}
    for name in models:
        model = create_model(name)
        label = Path(name).stem
        for folder in folders:
            predictions = out / label / folder.name
            predict_folder(folder, predictions, model, limit, show_progress=show_progress)
            evaluation = evaluate_folder(folder, predictions, show_progress=False)
            if not evaluation.evaluations:
                raise DataError(f"{folder}: no sample could be evaluated, e.g. {evaluation.failures[:1]}")
            reports.setdefault(str(folder), {})[label] = evaluation.report()
    return reports


def comparison_table(reports: dict[str, dict[str, EvaluationReport]]) -> Table:
    """One row per data folder and model: the figures a promotion is decided on."""
    table = Table(
        "data", "model", "parts", "pixel F1", "crack recall >=0.2 mm", "escape rate", "false-reject rate",
        "POD a90/95 (mm)", title="models side by side (each with its own verdict rules)",
    )  # fmt: skip
    for folder, by_model in reports.items():
        for model, r in by_model.items():
            a90_95 = pod_cell(r.pod, "a90_95_mm")
            table.add_row(
                Path(folder).name, model, str(r.samples), f"{r.pixel['f1']:.3f}",
                f"{r.defect_crack_recall['recall']:.3f}", f"{r.parts['escape_rate']:.3f}",
                f"{r.parts['false_reject_rate']:.3f}", a90_95 if isinstance(a90_95, str) else f"{a90_95:.3f}",
            )  # fmt: skip
    return table


def evaluate_command(
    data: Annotated[
        list[Path],
        typer.Option("--data", help="Data folder with ground truth ({id}.json, {id}.mask.png); repeat with --model."),
    ],
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Folder written by predict-dir (one --data).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Predict with this model and score it (repeatable: e.g. the current model, then a candidate).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write eval.json and the PNGs (default: PREDICTIONS/eval, or runs/eval with --model).",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="With --model: only the first N samples per folder.")] = None,
    min_width_mm: Annotated[float, typer.Option(help="Verdict rule: NG from this max width.")] = 0.2,
    min_length_mm: Annotated[float, typer.Option(help="Verdict rule: NG from this length.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    r"""Pixel P/R/F1 (2 px tolerance), crack recall per width bin, measurement errors, part verdict rates.

    Two ways: score a predictions folder (--predictions, from `inspector predict-dir`) against one
    --data folder; or compare models (--model, repeatable) on data folders (--data, repeatable) in
    one table, e.g. the serving model and a fine-tuned candidate on the reviewed parts and on the
    synthetic held-out set:

        inspector eval --model crack-concat --model runs/candidate.pt \\
            --data data/review/labels --data data/heldout-default
    """
    if model:
        if predictions is not None:
            fail("give --model (predict and score) or --predictions (score a folder), not both")
        compare_command(model, data, out or Path("runs/eval"), limit, as_json)
        return
    if predictions is None:
        fail("give --predictions FOLDER (from `inspector predict-dir`) or --model NAME to predict here")
    if len(data) != 1:
        fail(f"--predictions scores one --data folder; {len(data)} given (use --model to compare on several)")
    if not predictions.is_dir():
        fail(f"predictions folder {predictions} does not exist: run `inspector predict-dir` first")
    rules = VerdictRules(min_width_mm=min_width_mm, min_length_mm=min_length_mm)
    try:
        folder = evaluate_folder(data[0], predictions, rules, show_progress=not as_json)
    except DataError as exc:
        fail(exc)
    if not folder.evaluations:
        fail(f"nothing to evaluate: {len(folder.failures)} samples failed, e.g. {folder.failures[:1]}", code=1)
    report = folder.report()
    out = out or predictions / "eval"
    out.mkdir(parents=True, exist_ok=True)
    document = json_safe(report.to_dict() | {"failed": [{"id": i, "error": e} for i, e in folder.failures]})
    (out / "eval.json").write_text(json.dumps(document, indent=1) + "\n")
    figures = write_figures(data[0], predictions, report, out, predictions.name)
    if as_json:
        console.print_json(json.dumps(document))
    else:
        console.print(report_table({predictions.name: report}))
        console.print(pod_contrast_table({predictions.name: report}))
        console.print(f"wrote {out / 'eval.json'}, " + ", ".join(str(f) for f in figures))
    for sample_id, error in folder.failures:
        err_console.print(f"[yellow]not evaluated[/] {sample_id}: {error}", highlight=False)
    if folder.failures:
        raise typer.Exit(1)


def compare_command(models: list[str], data: list[Path], out: Path, limit: int | None, as_json: bool) -> None:
    """``inspector eval --model A --model B --data ...``: one table, and ``out/compare.json``."""
    try:
        reports = compare_models(models, data, out, limit, show_progress=not as_json)
    except (DataError, InspectorError) as exc:
        fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    document = json_safe(
        {folder: {name: r.to_dict() for name, r in by_model.items()} for folder, by_model in reports.items()}
    )
    (out / "compare.json").write_text(json.dumps(document, indent=1) + "\n")
    if as_json:
        console.print_json(json.dumps(document))
    else:
        console.print(comparison_table(reports))
        console.print(f"wrote {out / 'compare.json'}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the CLI."""
    app.command("eval")(evaluate_command)
