"""``inspector bench …``: figures for docs/BENCHMARKS.md, printed as a short table and as JSON.

Machines here are shared and noisy: speeds are medians over repeats, and models are compared side by
side in one run on the same held-out data.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from inspector.commands.common import console, err_console, fail
from inspector.commands.evaluate import (
    evaluate_folder,
    json_safe,
    pod_cell,
    pod_contrast_table,
    report_table,
    write_figures,
)
from inspector.commands.predict import load_model, predict_folder
from inspector.dataset import DataError, iter_samples, list_ids, read_sample
from inspector.evaluate import WIDTH_BINS, EvaluationReport, match_cracks, width_bin
from inspector.model import CrackModel, ModelInput
from inspector.pipeline import to_grey
from inspector.registration import warp_to_visible
from inspector.report import plot_pod, plot_pr_curves

bench_app = typer.Typer(help="Benchmarks: print a table and JSON, for docs/BENCHMARKS.md.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print only the JSON document.")]


def machine() -> dict[str, Any]:
    """Where a figure was measured."""
    import os

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def emit(document: dict[str, Any], table: Table | None, as_json: bool) -> None:
    """Print the table (unless --json) and the JSON document."""
    document = json_safe(document)
    if table is not None and not as_json:
        console.print(table)
    console.print_json(json.dumps(document))


@bench_app.command("measure")
def bench_measure(
    data: Annotated[Path, typer.Option("--data", help="Data folder with ground-truth masks.")],
    as_json: JsonOption = False,
) -> None:
    """Accuracy of the measuring code alone: measure the ground-truth masks, compare with the truth."""
    errors: dict[str, list[float]] = {"max": [], "mean": [], "length_rel": []}
    per_bin: dict[str, list[float]] = {name: [] for name, _, _ in WIDTH_BINS}
    failures, samples = 0, 0
    t0 = time.perf_counter()
    try:
        for sample in iter_samples(data):
            if isinstance(sample, DataError) or sample.mask is None:
                failures += 1
                continue
            samples += 1
            mask = sample.mask
            for m in match_cracks(sample.meta.cracks, mask, mask.astype(np.float32), sample.meta.mm_per_px):
                if not m.found or m.measured is None:
                    continue
                t, p = m.truth, m.measured
                per_bin[width_bin(t.max_width_mm)].append(p.max_width_mm - t.max_width_mm)
                if t.max_width_mm >= 0.2:
                    errors["max"].append(p.max_width_mm - t.max_width_mm)
                    errors["mean"].append(p.mean_width_mm - t.mean_width_mm)
                    errors["length_rel"].append((p.length_mm - t.length_mm) / t.length_mm)
    except DataError as exc:
        fail(exc)

    def mae(values: list[float]) -> float:
        return float(np.mean(np.abs(values))) if values else float("nan")

    document = {
        "benchmark": "measure",
        "data": str(data),
        "samples": samples,
        "failed": failures,
        "cracks_ge_0_2mm": len(errors["max"]),
        "max_width_mae_mm_ge_0_2": mae(errors["max"]),
        "max_width_bias_mm_ge_0_2": float(np.mean(errors["max"])) if errors["max"] else float("nan"),
        "mean_width_mae_mm_ge_0_2": mae(errors["mean"]),
        "length_rel_mae_ge_0_2": mae(errors["length_rel"]),
        "max_width_mae_mm_by_bin": {k: mae(v) for k, v in per_bin.items()},
        "cracks_by_bin": {k: len(v) for k, v in per_bin.items()},
        "seconds": time.perf_counter() - t0,
        "machine": machine(),
    }
    table = Table("measurement on ground-truth masks", "value")
    table.add_row("cracks >= 0.2 mm", str(document["cracks_ge_0_2mm"]))
    table.add_row("max-width MAE (mm), >= 0.2 mm", f"{document['max_width_mae_mm_ge_0_2']:.4f}")
    table.add_row("mean-width MAE (mm), >= 0.2 mm", f"{document['mean_width_mae_mm_ge_0_2']:.4f}")
    table.add_row("length relative MAE, >= 0.2 mm", f"{document['length_rel_mae_ge_0_2']:.3f}")
    for name, value in document["max_width_mae_mm_by_bin"].items():  # type: ignore[attr-defined]
        table.add_row(f"max-width MAE (mm), bin {name}", f"{value:.4f}")
    emit(document, table, as_json)


def latency_512(model: CrackModel, data: Path, repeats: int = 10) -> float:
    """Median milliseconds of ``model.predict`` on a 512x512 crop (visible + its IR) of the first sample."""
    sample = read_sample(data, list_ids(data)[0], with_mask=False)
    grey = to_grey(sample.visible)[:512, :512]
    scale = grey.shape[0] // 4
    ir = sample.infrared[:scale, :scale]
    homography = sample.meta.homography
    inputs = ModelInput(
        visible=grey,
        infrared=warp_to_visible(ir, homography, grey.shape),
        mm_per_px=sample.meta.mm_per_px,
        infrared_raw=ir,
        ir_to_visible=homography,
    )
    times = []
    for index in range(repeats + 2):
        t0 = time.perf_counter()
        model.predict(inputs)
        if index >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def model_size(model: CrackModel) -> dict[str, Any]:
    """Parameters and MACs per 512x512 tile of a learned model (None for the classical ones)."""
    inner = getattr(model, "model", None)
    if inner is None:
        return {"parameters": None, "macs_per_512_tile": None}
    from inspector.training import describe

    return describe(inner)


def summary_table(results: dict[str, dict[str, EvaluationReport]], document_models: dict[str, Any]) -> Table:
    """One row per model: the headline figures on every data folder, then size and latency."""
    folders = list(next(iter(results.values())))
    headers = (f"{f}\nF1 / rec>=0.2 / FR / wMAE / a90/95 mm" for f in folders)
    table = Table("model", *headers, "params", "GMAC/512²", "ms/512²")
    for label, reports in results.items():
        cells = []
        for folder in folders:
            r = reports[folder]
            cells.append(
                f"{r.pixel['f1']:.3f} / {r.defect_crack_recall['recall']:.3f} / "
                f"{r.parts['false_reject_rate']:.3f} / {r.measurement['max_width_mae_mm_ge_0_2']:.3f} / "
                + (f"{a:.3f}" if isinstance(a := pod_cell(r.pod, "a90_95_mm"), float) else "n/a")
            )
        info = document_models[label]
        params = f"{info['parameters']:,}" if info["parameters"] else "-"
        macs = f"{info['macs_per_512_tile'] / 1e9:.2f}" if info["macs_per_512_tile"] else "-"
        table.add_row(label, *cells, params, macs, f"{info['median_ms_per_512_pair']:.0f}")
    return table


@bench_app.command("models")
def bench_models(
    data: Annotated[str, typer.Option("--data", help="Held-out data folder(s) with ground truth, comma-separated.")],
    models: Annotated[
        str, typer.Option(help="Comma-separated model names or trained model files, compared side by side.")
    ] = "baseline,baseline-ir",
    out: Annotated[Path | None, typer.Option(help="Keep predictions and figures here (default: a temp dir).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N samples of each folder.")] = None,
    without_ir: Annotated[bool, typer.Option(help="Withhold the IR images (an IR camera down).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Run several models on the same held-out data and compare every figure side by side.

    With several data folders (e.g. the default and hard presets at two resolutions) every model
    runs on each, and a last table puts one row per model: pixel F1, recall of cracks >= 0.2 mm,
    false-reject rate on clean parts, width MAE, parameters, MACs and latency per 512x512 pair.
    """
    folders = [Path(d.strip()) for d in data.split(",") if d.strip()]
    for folder in folders:
        if not folder.is_dir():
            fail(f"--data {folder} is not a folder: make it with `inspector synth` (see docs/BENCHMARKS.md)")
    names = [m.strip() for m in models.split(",") if m.strip()]
    work = out or Path(tempfile.mkdtemp(prefix="inspector-bench-"))
    results: dict[str, dict[str, EvaluationReport]] = {}
    document_models: dict[str, Any] = {}
    for name in names:
        label = Path(name).stem if name.endswith(".pt") else name
        model = load_model(name)
        results[label], per_folder = {}, {}
        for folder in folders:
            where = work / folder.name / label if len(folders) > 1 else work / label
            outcome = predict_folder(folder, where, model, limit, show_progress=not as_json, without_ir=without_ir)
            if outcome.failures:
                err_console.print(
                    f"[yellow]{label}: {len(outcome.failures)} samples failed[/], e.g. {outcome.failures[0]}"
                )
            evaluated = evaluate_folder(folder, where, show_progress=not as_json)
            if not evaluated.evaluations:
                fail(f"{label} on {folder}: nothing could be evaluated", code=1)
            report = results[label][folder.name] = evaluated.report()
            write_figures(folder, where, report, where / "eval", label)
            model_ms = [r.timings_ms["model"] for r in outcome.results]
            per_folder[folder.name] = report.to_dict() | {
                "median_model_ms_per_pair": statistics.median(model_ms) if model_ms else float("nan")
            }
        document_models[label] = {
            "model": name,
            "data": per_folder,
            "median_ms_per_512_pair": latency_512(model, folders[0]),
            **model_size(model),
        }
    for folder in folders:
        reports = {label: results[label][folder.name] for label in results}
        where = work / folder.name if len(folders) > 1 else work
        plot_pr_curves(
            {n: r.pr_curve for n, r in reports.items()}, where / "pr_curves.png", f"pixel PR on {folder.name}"
        )
        plot_pod({n: r.pod for n, r in reports.items()}, where / "pod_curves.png", f"POD (hit/miss) on {folder.name}")
        if not as_json:
            table = report_table(reports)
            table.title = str(folder)
            table.add_row(
                "median model ms / full pair",
                *(f"{document_models[n]['data'][folder.name]['median_model_ms_per_pair']:.0f}" for n in reports),
            )
            console.print(table)
            console.print(pod_contrast_table(reports))
    document = {
        "benchmark": "models",
        "data": [str(f) for f in folders],
        "without_ir": without_ir,
        "out": str(work),
        "models": document_models,
        "machine": machine(),
    }
    (work / "bench.json").write_text(json.dumps(json_safe(document), indent=1) + "\n")
    emit(document, summary_table(results, document_models), as_json)
    if not as_json:
        console.print(f"figures in {work} (pr_curves.png, pod_curves.png, */eval/worst.png, */eval/pod.png)")


@bench_app.command("synth")
def bench_synth(
    preset: Annotated[str, typer.Option(help="Synthetic preset.")] = "default",
    count: Annotated[int, typer.Option(min=1, help="Pairs per repeat.")] = 30,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats; the median is reported.")] = 3,
    size: Annotated[int, typer.Option(help="Visible frame side in pixels.")] = 1024,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Generator speed: pairs per second written to disk, median over repeats."""
    from inspector.synth import SynthError, generate_set

    rates = []
    try:
        for repeat in range(repeats):
            with tempfile.TemporaryDirectory(prefix="inspector-synth-") as tmp:
                summary = generate_set(Path(tmp), count, seed=repeat, preset=preset, size=size, workers=workers)
                rates.append(count / summary.seconds)
    except SynthError as exc:
        fail(exc)
    document = {
        "benchmark": "synth",
        "preset": preset,
        "size": size,
        "workers": workers,
        "count": count,
        "repeats": repeats,
        "pairs_per_s_median": statistics.median(rates),
        "pairs_per_s": rates,
        "machine": machine(),
    }
    table = Table("generator", "value")
    table.add_row(f"{preset}, {size}x{size}, {workers} worker(s)", f"{statistics.median(rates):.1f} pairs/s (median)")
    emit(document, table, as_json)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` group to the CLI (``bench labels`` lives in its own module)."""
    from inspector.commands import (  # noqa: F401  (sub-commands)
        bench_labels,
        bench_model,
        bench_optics,
        bench_review,
        bench_step,
    )

    app.add_typer(bench_app, name="bench")
