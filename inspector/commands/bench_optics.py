"""``inspector bench optics``: models against a sweep of camera optics (blur, noise, gain, gamma, JPEG).

Widths are measured from pixels, and blur widens what a threshold sees. This benchmark generates the
same held-out parts once per sweep level (:mod:`inspector.synth.sweep`; only the capture variation of
the visible image differs, the ground truth does not), runs every model on every level and reports,
per row: pixel F1, recall of cracks >= 0.2 mm, escape and false-reject rates, the width bias and MAE
on found cracks >= 0.2 mm, a90/95 when the report has a POD fit, and whether the row meets the width
targets (|bias| <= 0.02 mm, MAE <= 0.04 mm). Sets are kept in ``--out`` and reused when their settings
match.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from inspector.commands.bench import bench_app, emit, machine
from inspector.commands.common import console, err_console, fail
from inspector.commands.evaluate import FolderEvaluation, evaluate_folder, json_safe
from inspector.commands.predict import load_model, predict_folder
from inspector.dataset import SampleMeta, list_ids
from inspector.errors import InspectorError
from inspector.model import CrackModel
from inspector.synth import SynthConfig, generate_set, get_preset, list_presets
from inspector.synth.sweep import SweepLevel, sweep_levels

MIN_HELD_OUT_SEED = 9000
"""Training and tuning sets use seeds below this; held-out sets must not."""
MIN_WIDTH_MM = 0.2  # the defect size: bias and MAE are taken on found cracks at least this wide
MAX_ABS_BIAS_MM = 0.02
MAX_MAE_MM = 0.04
SETTINGS_FILE = "optics.settings.json"  # two dots: not a sample id for inspector.dataset.list_ids
SETTINGS_SCHEMA = "inspector.bench-optics-set/1"
HELP = (
    "Models against an optics sweep: the same held-out parts at each blur (and noise, gain, gamma, JPEG) level.\n\n"
    "Each level is one held-out set of the same parts (same --preset, --seed, --count), seen through one capture "
    "variation of the visible image (see `inspector synth --help`); the ground truth is the same at every level. "
    "The blur rows come first; --noise-dn, --gain, --gamma and --jpeg add rows that vary one factor from the "
    "identity. Sets are kept in --out/data and reused when their settings match.\n\n"
    f"Per model and level: pixel F1, recall of cracks >= {MIN_WIDTH_MM} mm, escape and false-reject rates, the "
    f"max-width bias and MAE on found cracks >= {MIN_WIDTH_MM} mm (targets at every level: |bias| <= "
    f"{MAX_ABS_BIAS_MM} mm, MAE <= {MAX_MAE_MM} mm), and a90/95 when a POD fit exists. Writes bench.json and "
    "width_vs_blur.png (bias and MAE against blur) into --out. Exit 2 on bad input, e.g. a seed below "
    f"{MIN_HELD_OUT_SEED}: held-out data must never share seeds with training or tuning.\n\n"
    "Example: inspector bench optics --models baseline,runs/fused/model.pt --blur 0,0.5,1.0,1.5 --jpeg 50"
)


def parse_values(option: str, text: str | None) -> list[float]:
    """``0,0.5,1.0`` as floats; None or empty: no values.

    Raises:
        typer.BadParameter: a value that is not a number, naming the option.

    """
    values = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise typer.BadParameter(f"{option}: {item.strip()!r} is not a number (give e.g. 0,0.5,1.0)") from None
    return values


def set_settings(config: SynthConfig, count: int, seed: int, mm_per_px: float, size: int) -> dict[str, Any]:
    """What makes a level's set: the full generator config and the set's arguments."""
    return {
        "schema": SETTINGS_SCHEMA,
        "count": count,
        "seed": seed,
        "mm_per_px": mm_per_px,
        "size": size,
        "config": config.model_dump(mode="json"),
    }


def existing_set_matches(folder: Path, settings: dict[str, Any]) -> bool:
    """True when ``folder`` holds a complete set written with exactly these settings."""
    path = folder / SETTINGS_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return bool(found == settings and len(list_ids(folder)) == settings["count"])


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def score_row(level: SweepLevel, evaluated: FolderEvaluation) -> dict[str, Any]:
    """The figures of one model on one level, and whether they meet the width targets."""
    report = evaluated.report()
    bias = report.measurement["max_width_bias_mm_ge_0_2"]
    mae = report.measurement["max_width_mae_mm_ge_0_2"]
    a90_95 = report.pod.fit.a90_95_mm if report.pod.fit is not None else None
    bias_ok = _finite(bias) is not None and abs(bias) <= MAX_ABS_BIAS_MM
    mae_ok = _finite(mae) is not None and mae <= MAX_MAE_MM
    return {
        "label": level.label,
        "factor": level.factor,
        "value": level.value,
        "samples": report.samples,
        "pixel_f1": report.pixel["f1"],
        "crack_recall_ge_0_2": report.defect_crack_recall["recall"],
        "cracks_ge_0_2": report.defect_crack_recall["cracks"],
        "escape_rate": report.parts["escape_rate"],
        "false_reject_rate": report.parts["false_reject_rate"],
        "width_bias_mm_ge_0_2": bias,
        "width_mae_mm_ge_0_2": mae,
        "a90_95_mm": _finite(a90_95),
        "bias_ok": bias_ok,
        "mae_ok": mae_ok,
        "meets": bias_ok and mae_ok,
        "failed": len(evaluated.failures),
    }


def _or_nan(value: Any) -> float:
    number = _finite(value)
    return float("nan") if number is None else number


def _fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    number = _finite(value)
    if number is None:
        return "-"
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def _mark(ok: bool, text: str) -> str:
    return f"[green]{text}[/]" if ok else f"[red]{text}[/]"


def sweep_table(label: str, rows: Sequence[dict[str, Any]]) -> Table:
    """One model's rows: the figures per sweep level, the width figures marked against their targets."""
    table = Table(
        "level", "F1", "rec≥0.2", "escape", "FR", "bias mm", "MAE mm", "a90/95", "ok",
        title=f"{label}: optics sweep, {rows[0]['samples'] if rows else 0} parts, "
        f"{rows[0]['cracks_ge_0_2'] if rows else 0} cracks ≥ {MIN_WIDTH_MM} mm",
        caption=f"found cracks ≥ {MIN_WIDTH_MM} mm: ok = |bias| ≤ {MAX_ABS_BIAS_MM} mm and MAE ≤ {MAX_MAE_MM} mm; "
        "FR = false rejects of clean parts",
    )  # fmt: skip
    for row in rows:
        table.add_row(
            row["label"],
            _fmt(row["pixel_f1"]),
            _fmt(row["crack_recall_ge_0_2"]),
            _fmt(row["escape_rate"]),
            _fmt(row["false_reject_rate"]),
            _mark(row["bias_ok"], _fmt(row["width_bias_mm_ge_0_2"], 4, signed=True)),
            _mark(row["mae_ok"], _fmt(row["width_mae_mm_ge_0_2"], 4)),
            _fmt(row["a90_95_mm"]),
            _mark(row["meets"], "yes" if row["meets"] else "no"),
        )
    return table


def plot_width_vs_blur(rows_by_model: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """Width bias and MAE (found cracks >= 0.2 mm) against blur, one line per model, targets shaded."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bias_ax, mae_ax) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    bias_ax.axhspan(-MAX_ABS_BIAS_MM, MAX_ABS_BIAS_MM, color="tab:green", alpha=0.15, label=f"±{MAX_ABS_BIAS_MM} mm")
    bias_ax.axhline(0.0, color="grey", lw=0.8)
    mae_ax.axhspan(0.0, MAX_MAE_MM, color="tab:green", alpha=0.15, label=f"≤ {MAX_MAE_MM} mm")
    for name, rows in rows_by_model.items():
        blur = [r for r in rows if r["factor"] == "blur"]
        xs = [r["value"] for r in blur]
        bias_ax.plot(xs, [_or_nan(r["width_bias_mm_ge_0_2"]) for r in blur], marker="o", label=name)
        mae_ax.plot(xs, [_or_nan(r["width_mae_mm_ge_0_2"]) for r in blur], marker="o", label=name)
    bias_ax.set(xlabel="PSF blur sigma (px)", ylabel="max-width bias (mm), measured - true")
    mae_ax.set(xlabel="PSF blur sigma (px)", ylabel="max-width MAE (mm)")
    mae_ax.set_ylim(bottom=0.0)
    for ax in (bias_ax, mae_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def make_level_set(
    folder: Path, config: SynthConfig, settings: dict[str, Any], workers: int, label: str, show_progress: bool
) -> bool:
    """Generate one level's set into ``folder`` unless it is already there; True when it was generated.

    Raises:
        InspectorError: ``folder`` holds something this command did not write (it is never deleted).

    """
    if existing_set_matches(folder, settings):
        if show_progress:
            err_console.print(f"reusing the {label} set in {folder}", highlight=False)
        return False
    if folder.exists():
        if not (folder / SETTINGS_FILE).is_file() and any(folder.iterdir()):
            raise InspectorError(
                f"{folder} holds files that bench optics did not write: give another --out (nothing was deleted)"
            )
        shutil.rmtree(folder)  # a set of ours with other settings, or an interrupted one
    folder.mkdir(parents=True)
    marker = folder / SETTINGS_FILE
    marker.write_text(json.dumps(settings | {"complete": False}, indent=1) + "\n")  # ours, not yet complete
    columns = (TextColumn(f"synth {label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, disable=not show_progress, transient=True) as progress:
        task = progress.add_task("synth", total=settings["count"])

        def advance(_: SampleMeta) -> None:
            progress.advance(task)

        generate_set(
            folder,
            settings["count"],
            settings["seed"],
            config,
            mm_per_px=settings["mm_per_px"],
            size=settings["size"],
            workers=workers,
            progress=advance,
        )
    marker.write_text(json.dumps(settings, indent=1) + "\n")  # the settings alone: the set is complete
    if show_progress:
        err_console.print(f"generated the {label} set in {folder}", highlight=False)
    return True


def make_sets(
    root: Path,
    levels: Sequence[SweepLevel],
    configs: dict[str, SynthConfig],
    count: int,
    seed: int,
    mm_per_px: float,
    size: int,
    workers: int,
    show_progress: bool,
) -> dict[str, Path]:
    """Each distinct level's set under ``root/{level.key}`` (generated once, then reused); folders by key."""
    folders: dict[str, Path] = {}
    for level in levels:
        if level.key not in folders:
            folders[level.key] = root / level.key
            settings = set_settings(configs[level.key], count, seed, mm_per_px, size)
            make_level_set(folders[level.key], configs[level.key], settings, workers, level.label, show_progress)
    return folders


def score_levels(
    label: str,
    model: CrackModel,
    levels: Sequence[SweepLevel],
    folders: dict[str, Path],
    predictions: Path,
    show_progress: bool,
) -> list[dict[str, Any]]:
    """Predict and score every level's set with one model; one row per level (exit 1 if one is unusable)."""
    rows = []
    for level in levels:
        if show_progress:
            err_console.print(f"{label}: {level.label}", highlight=False)
        where = predictions / level.key
        outcome = predict_folder(folders[level.key], where, model, show_progress=show_progress)
        if outcome.failures:
            err_console.print(
                f"[yellow]{label}, {level.label}: {len(outcome.failures)} samples failed[/], e.g. {outcome.failures[0]}"
            )
        evaluated = evaluate_folder(folders[level.key], where, show_progress=show_progress)
        if not evaluated.evaluations:
            fail(f"{label} on {level.label}: nothing could be evaluated", code=1)
        rows.append(score_row(level, evaluated))
    return rows


def level_entry(level: SweepLevel, folder: Path) -> dict[str, Any]:
    """A level as bench.json lists it: label, factor, value, the capture fields and its set."""
    return {
        "label": level.label,
        "factor": level.factor,
        "value": level.value,
        "capture": level.overrides,
        "data": str(folder),
    }


@bench_app.command("optics", help=HELP)
def bench_optics(
    models: Annotated[
        str, typer.Option(help="Comma-separated model names (see `inspector models`) or trained .pt files.")
    ] = "baseline",
    blur: Annotated[
        str, typer.Option(help="PSF blur levels, Gaussian sigma in visible px (0-3), comma-separated.")
    ] = "0,0.5,1.0,1.5",
    noise_dn: Annotated[
        str | None, typer.Option("--noise-dn", help="Extra rows: sensor read noise, DN r.m.s., e.g. 2,5.")
    ] = None,
    gain: Annotated[str | None, typer.Option(help="Extra rows: exposure gain, e.g. 0.7,1.4.")] = None,
    gamma: Annotated[str | None, typer.Option(help="Extra rows: response-curve gamma, e.g. 0.8,1.25.")] = None,
    jpeg: Annotated[str | None, typer.Option(help="Extra rows: JPEG quality 1-100, e.g. 50,80.")] = None,
    preset: Annotated[str, typer.Option(help=f"Synthetic preset: {', '.join(list_presets())}.")] = "default",
    count: Annotated[int, typer.Option(min=1, help="Parts per level (the same parts at every level).")] = 40,
    seed: Annotated[
        int, typer.Option(help=f"Held-out set seed, >= {MIN_HELD_OUT_SEED} (training and tuning use lower seeds).")
    ] = 9005,
    mm_per_px: Annotated[float, typer.Option(min=0.005, max=1.0, help="Visible calibration, mm per pixel.")] = 0.05,
    size: Annotated[int, typer.Option(help="Visible frame side in pixels (a multiple of 4).")] = 1024,
    workers: Annotated[int, typer.Option(min=1, help="Generator worker processes (one per core).")] = 1,
    out: Annotated[
        Path | None,
        typer.Option(help="Keep the sets, predictions, bench.json and the plot here; sets are reused (default: temp)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON document.")] = False,
) -> None:
    """Models against an optics sweep: the same held-out parts at each blur (and noise, gain, gamma, JPEG) level."""
    if seed < MIN_HELD_OUT_SEED:
        fail(
            f"--seed {seed}: held-out data must never overlap the training and tuning seeds (< {MIN_HELD_OUT_SEED}); "
            f"use a seed >= {MIN_HELD_OUT_SEED}, e.g. the default 9005"
        )
    try:
        levels = sweep_levels(
            blur=parse_values("--blur", blur),
            noise=parse_values("--noise-dn", noise_dn),
            gain=parse_values("--gain", gain),
            gamma=parse_values("--gamma", gamma),
            jpeg=parse_values("--jpeg", jpeg),
        )
        configs = {level.key: get_preset(preset, **level.overrides) for level in levels}  # all checked up front
        # count 0: checks the frame size and calibration before anything is written
        generate_set(Path("."), 0, seed, configs[levels[0].key], mm_per_px=mm_per_px, size=size)
    except (InspectorError, typer.BadParameter) as exc:
        fail(exc)
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        fail("--models: give at least one model name or .pt file, e.g. --models baseline")
    loaded = {(Path(n).stem if n.endswith(".pt") else n): (n, load_model(n)) for n in names}
    work = out or Path(tempfile.mkdtemp(prefix="inspector-bench-optics-"))
    show = not as_json
    try:
        folders = make_sets(work / "data", levels, configs, count, seed, mm_per_px, size, workers, show)
    except InspectorError as exc:
        fail(exc)
    except OSError as exc:
        fail(f"could not write the held-out sets to {work / 'data'}: {exc}", code=1)
    rows_by_model = {
        label: score_levels(label, model, levels, folders, work / "predictions" / label, show)
        for label, (_, model) in loaded.items()
    }
    plot = work / "width_vs_blur.png"
    plot_width_vs_blur(rows_by_model, plot, f"width of found cracks ≥ {MIN_WIDTH_MM} mm against blur ({preset})")
    document = {
        "benchmark": "optics",
        "preset": preset,
        "count": count,
        "seed": seed,
        "mm_per_px": mm_per_px,
        "size": size,
        "targets": {"min_width_mm": MIN_WIDTH_MM, "max_abs_bias_mm": MAX_ABS_BIAS_MM, "max_mae_mm": MAX_MAE_MM},
        "levels": [level_entry(level, folders[level.key]) for level in levels],
        "models": {
            label: {"model": loaded[label][0], "meets_all": all(r["meets"] for r in rows), "rows": rows}
            for label, rows in rows_by_model.items()
        },
        "out": str(work),
        "plot": str(plot),
        "machine": machine(),
    }
    (work / "bench.json").write_text(json.dumps(json_safe(document), indent=1) + "\n")
    if show:
        for label, rows in rows_by_model.items():
            console.print(sweep_table(label, rows))
    emit(document, None, as_json)
    if show:
        console.print(f"sets, predictions, bench.json and {plot.name} in {work}")
