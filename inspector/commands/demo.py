"""``inspector demo``: the main job on its embedded default, with no services.

Generates a small synthetic line (visible + IR pairs with ground truth), inspects every part with a
crack model, prints a verdict table and the evaluation against the ground truth, and writes an
overlay per part plus a gallery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from inspector.commands.common import console, err_console, fail
from inspector.commands.evaluate import evaluate_folder, read_prediction, report_table
from inspector.commands.predict import load_model, predict_folder
from inspector.dataset import read_sample
from inspector.errors import InspectorError
from inspector.evaluate import truth_verdict
from inspector.pipeline import to_grey
from inspector.report import GalleryItem, overlay, save_gallery, save_rgb
from inspector.verdict import VerdictRules


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the data, predictions and overlays.")] = Path(
        "demo-output"
    ),
    count: Annotated[int, typer.Option(min=1, max=500, help="Parts on the synthetic line.")] = 12,
    preset: Annotated[str, typer.Option(help="Synthetic preset: clean, default or hard.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic line.")] = 7,
    model: Annotated[str, typer.Option("--model", "-m", help="Crack model (see `inspector models`).")] = "crack-concat",
) -> None:
    """Generate a small synthetic line, inspect every part, print verdicts and write overlays."""
    from inspector.synth import SynthError, generate_set

    crack_model = load_model(model)
    data, predictions, overlays = out / "data", out / "predictions", out / "overlays"
    console.print(f"[bold]1/3[/] generating {count} synthetic parts ({preset} preset, seed {seed}) -> {data}")
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=err_console, transient=True) as progress:
            task = progress.add_task("synth", total=count)
            generate_set(data, count, seed=seed, preset=preset, progress=lambda _: progress.advance(task))
    except (SynthError, InspectorError) as exc:
        fail(exc)
    console.print(f"[bold]2/3[/] inspecting with {crack_model.name} -> {predictions}")
    outcome = predict_folder(data, predictions, crack_model)
    if outcome.failures:
        fail(f"{len(outcome.failures)} parts failed: {outcome.failures[0]}", code=1)

    console.print("[bold]3/3[/] comparing with the ground truth")
    rules = VerdictRules()
    table = Table(
        "part", "verdict", "truth", "cracks", "widest mm", "longest mm", "true widest mm",
        title=f"parts {preset}-{seed}-*: verdicts and measurements (truth from the synthetic ground truth)",
    )  # fmt: skip
    items = []
    for result in outcome.results:
        sample = read_sample(data, result.sample_id)
        truth = truth_verdict(sample.meta, rules)
        probability, _ = read_prediction(predictions, result.sample_id)
        rgb = overlay(to_grey(sample.visible), probability >= 0.5, sample.mask, size=512)
        save_rgb(overlays / f"{result.sample_id}.png", rgb)
        items.append(GalleryItem(f"{result.sample_id}\n{result.verdict} (truth {truth})", rgb))
        colour = "green" if result.verdict == truth else "bold red"
        table.add_row(
            result.sample_id.rsplit("-", 1)[-1],
            f"[{colour}]{result.verdict}[/]",
            truth,
            str(len(result.cracks)),
            f"{max((c.max_width_mm for c in result.cracks), default=0):.3f}",
            f"{max((c.length_mm for c in result.cracks), default=0):.2f}",
            f"{max((c.max_width_mm for c in sample.meta.cracks), default=0):.3f}",
        )
    console.print(table)
    report = evaluate_folder(data, predictions, rules, show_progress=False).report()
    console.print(report_table({crack_model.name: report}))
    save_gallery(items, out / "gallery.png", f"{crack_model.name} on a synthetic {preset} line")
    console.print(
        f"overlays: {overlays}/*.png and {out / 'gallery.png'} (green: missed, red: false, yellow: found). "
        "The data is synthetic (see docs/DATA.md)."
    )


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)
