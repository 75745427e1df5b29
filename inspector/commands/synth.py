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
    "Capture variation (--blur-px, --gain, --gamma, --noise-dn, --jpeg-quality): one fixed level of what another "
    "camera's optics and sensor do, applied to every finished 8-bit visible image; the same seed gives the same "
    "parts, so sets at several levels differ only in the optics. The mask and the JSON ground truth (crack widths "
    "included) do not change: a crack is as wide as it is however the camera renders it.\n\n"
    "Example: inspector synth --out data/train --count 5000 --preset hard --seed 1 --workers 2\n\n"
    "Example: inspector synth --out data/blur1 --count 40 --seed 9005 --blur-px 1.0"
)

CAPTURE_PANEL = "Capture variation (visible image only; ground truth unchanged)"
CAPTURE_FIELDS = {  # option name -> SynthConfig field
    "--blur-px": "psf_blur_px",
    "--gain": "gain",
    "--gamma": "gamma",
    "--noise-dn": "sensor_noise_dn",
    "--jpeg-quality": "jpeg_quality",
}


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


def capture_overrides(
    settings: dict[str, Any],
    blur_px: float | None,
    gain: float | None,
    gamma: float | None,
    noise_dn: float | None,
    jpeg_quality: int | None,
) -> dict[str, Any]:
    """Add the capture-variation options that were given to the ``--set`` overrides (a field set twice: error)."""
    given = zip(CAPTURE_FIELDS.items(), (blur_px, gain, gamma, noise_dn, jpeg_quality), strict=True)
    merged = dict(settings)
    for (option, field), value in given:
        if value is None:
            continue
        if field in settings:
            raise typer.BadParameter(f"{option} and --set {field}=... both set {field}: give only one")
        merged[field] = value
    return merged


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
    blur_px: Annotated[
        float | None,
        typer.Option(
            "--blur-px",
            min=0.0,
            max=3.0,
            help="Capture: extra Gaussian point-spread blur of the visible image, sigma in visible px (0-3; "
            "0 = none). The mask and the true widths stay as they are.",
            rich_help_panel=CAPTURE_PANEL,
        ),
    ] = None,
    gain: Annotated[
        float | None,
        typer.Option(
            "--gain",
            min=0.1,
            max=10.0,
            help="Capture: exposure gain on the 8-bit visible image, clipped at 255 (1 = none).",
            rich_help_panel=CAPTURE_PANEL,
        ),
    ] = None,
    gamma: Annotated[
        float | None,
        typer.Option(
            "--gamma",
            min=0.2,
            max=5.0,
            help="Capture: response curve 255 * (x / 255) ** GAMMA (1 = none; < 1 brightens the darks).",
            rich_help_panel=CAPTURE_PANEL,
        ),
    ] = None,
    noise_dn: Annotated[
        float | None,
        typer.Option(
            "--noise-dn",
            min=0.0,
            max=50.0,
            help="Capture: extra Gaussian sensor (read) noise, DN r.m.s. on the 0-255 scale (0 = none).",
            rich_help_panel=CAPTURE_PANEL,
        ),
    ] = None,
    jpeg_quality: Annotated[
        int | None,
        typer.Option(
            "--jpeg-quality",
            min=1,
            max=100,
            help="Capture: re-encode the visible image as JPEG at this quality (1-100; default: none). "
            "The files stay PNG.",
            rich_help_panel=CAPTURE_PANEL,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Generate a synthetic visible + infrared crack data set (exit 2 on bad input)."""
    try:
        settings = capture_overrides(_overrides(overrides or []), blur_px, gain, gamma, noise_dn, jpeg_quality)
        config = get_preset(preset, **settings)
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
