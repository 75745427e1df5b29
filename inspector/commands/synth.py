"""``inspector synth``: generate a synthetic visible + infrared data set (see docs/DATA.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from inspector.dataset import SampleMeta
from inspector.errors import InspectorError
from inspector.synth import SetSummary, generate_set, get_preset, list_presets

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

HELP = (
    "Generate a synthetic visible + infrared crack data set in the inspector.sample/1 format.\n\n"
    "Each sample is a metal part seen by a visible camera (8-bit grey, or RGB with --rgb) and an infrared camera "
    "4x coarser (16-bit counts; cracks appear warm), with its crack mask and JSON ground truth: crack polylines "
    "and widths in mm, distractors, the IR-to-visible homography, timestamps. Sample i of a seed is the same "
    "whatever --count, --start or --workers.\n\n"
    "Presets: clean (strong contrast, few distractors), default, hard (crack-like scratches and faint cracks: "
    "only the IR tells them apart). See docs/DATA.md.\n\n"
    "Example: inspector synth --out data/train --count 5000 --preset hard --seed 1 --workers 2"
)


def _overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (numbers, [low, high], {...}) is used as such."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE, e.g. --set crack_contrast=[0.2,0.5]")
        try:
            found[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            found[key.strip()] = raw
    return found


def _table(summary: SetSummary) -> Table:
    table = Table("", "value", title=f"synthetic set in {summary.out}", show_header=False)
    table.add_row("samples", str(summary.count))
    table.add_row("cracks", str(summary.cracks))
    table.add_row("clean parts", str(summary.clean_parts))
    table.add_row("distractors", str(summary.distractors))
    for label, n in summary.width_bins.items():
        table.add_row(f"cracks, max width {label} mm", str(n))
    table.add_row("pairs/s", f"{summary.pairs_per_s:.2f}")
    return table


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the samples to (created if needed).")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of samples.")] = 100,
    preset: Annotated[str, typer.Option("--preset", "-p", help=f"Preset: {', '.join(list_presets())}.")] = "default",
    seed: Annotated[int, typer.Option("--seed", "-s", min=0, help="Set seed: same seed, same data.")] = 0,
    start: Annotated[int, typer.Option("--start", min=0, help="Index of the first sample (extend a set).")] = 0,
    mm_per_px: Annotated[
        float, typer.Option("--mm-per-px", min=0.005, max=1.0, help="Visible calibration, mm per pixel.")
    ] = 0.05,
    size: Annotated[int, typer.Option("--size", help="Visible frame side in pixels (a multiple of 4).")] = 1024,
    clean_fraction: Annotated[
        float | None,
        typer.Option(
            "--clean-fraction", min=0.0, max=1.0, help="Share of parts without cracks (default: the preset's, 0.3)."
        ),
    ] = None,
    rgb: Annotated[bool, typer.Option("--rgb", help="8-bit RGB visible images instead of grey.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes (one per core).")] = 1,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a preset parameter, KEY=VALUE (repeatable), e.g. max_branches=0."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Generate a synthetic visible + infrared crack data set (exit 2 on bad input)."""
    try:
        config = get_preset(preset, **_overrides(overrides or []))
        with Progress(
            TextColumn("[bold]synth[/] {task.fields[preset]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[cracks]} cracks"),
            TimeRemainingColumn(),
            console=err_console,
            disable=as_json,
            transient=True,
        ) as progress:
            task = progress.add_task("synth", total=count, preset=config.name, cracks=0)
            cracks = 0

            def advance(meta: SampleMeta) -> None:
                nonlocal cracks
                cracks += len(meta.cracks)
                progress.update(task, advance=1, cracks=cracks)

            summary = generate_set(
                out,
                count,
                seed,
                config,
                start=start,
                mm_per_px=mm_per_px,
                size=size,
                rgb=rgb,
                clean_fraction=clean_fraction,
                workers=workers,
                progress=advance,
            )
    except (InspectorError, typer.BadParameter) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] could not write to {out}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(data=summary.to_dict())
    else:
        console.print(_table(summary))


def register(app: typer.Typer) -> None:
    """Add ``synth`` to the ``inspector`` CLI."""
    app.command("synth", help=HELP, no_args_is_help=True)(synth)
