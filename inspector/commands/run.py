"""``inspector run``: the streaming line in one process — synthetic (or replayed) cameras → model → JSONL results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inspector.commands.common import console, err_console, fail
from inspector.commands.predict import load_model
from inspector.config import load_settings
from inspector.embedded import EmbeddedLine, LineReport
from inspector.errors import InspectorError
from inspector.results import JsonlResultStore
from inspector.stream import StreamCore, StreamPolicy


def summary(report: LineReport, model: str) -> dict[str, object]:
    """The figures of a run, JSON-ready."""
    e2e = [float(r["timings_ms"]["end_to_end"]) for r in report.results]
    inference = [float(r["timings_ms"].get("model", 0.0)) for r in report.results]
    return {
        "model": model,
        "captures": report.captures,
        "results": len(report.results),
        "verdicts": dict(report.verdicts),
        "unpaired": dict(report.unpaired),
        "rejected": dict(report.rejected),
        "seconds": round(report.seconds, 2),
        "captures_per_s": round(len(report.results) / report.seconds, 3) if report.seconds else 0.0,
        "end_to_end_ms_p50": round(float(np.percentile(e2e, 50)), 1) if e2e else None,
        "end_to_end_ms_p95": round(float(np.percentile(e2e, 95)), 1) if e2e else None,
        "model_ms_p50": round(float(np.percentile(inference, 50)), 1) if inference else None,
    }


def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.jsonl and NG overlays.")] = Path(
        "run-output"
    ),
    cameras: Annotated[
        str, typer.Option(help="Comma-separated camera ids (one visible + IR rig each).")
    ] = "rig-1,rig-2",
    count: Annotated[int, typer.Option(min=1, help="Captures to inspect (over all cameras).")] = 12,
    fps: Annotated[float, typer.Option(min=0, help="Captures per second per camera; 0 = as fast as possible.")] = 0.5,
    source: Annotated[str, typer.Option(help="synthetic (rendered here) or a data folder to replay.")] = "synthetic",
    preset: Annotated[str, typer.Option(help="Synthetic preset: clean, default or hard.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic parts.")] = 7,
    size: Annotated[int, typer.Option(min=64, help="Synthetic visible frame side in pixels.")] = 1024,
    model: Annotated[str, typer.Option("--model", "-m", help="Crack model (see `inspector models`).")] = "crack-concat",
    batch: Annotated[int, typer.Option(min=1, help="Pairs per micro-batch.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the inspection line in one process with no services: cameras → pairing → model → results.

    The gateway (synthetic parts rendered here, or a data folder replayed) encodes every capture as
    visible and infrared frame records, an in-process queue carries them, and the same pairing,
    batching, inspection and idempotent store code as the Kafka workers writes one JSON line per part
    to OUT/results.jsonl (and an overlay JPEG per NG part). Synthetic data: see docs/DATA.md.
    """
    from inspector.sources import FolderSource, SyntheticSource

    names = [c.strip() for c in cameras.split(",") if c.strip()]
    store = JsonlResultStore(out / "results.jsonl")
    first_seq = max((seq for _, seq in store.seen), default=0) + 1  # a second run into OUT continues the count
    try:
        lanes = load_settings().inference.lanes
        crack_model = load_model(model, lanes=lanes)  # runs as the settings' inference section says
        if source == "synthetic":
            console.print(f"rendering {min(8, count)} synthetic {preset} parts ({size} px) for {len(names)} camera(s)")
            frames = SyntheticSource(names, preset, seed, size, pool=min(8, count), start_seq=first_seq)
        else:
            frames = FolderSource(Path(source), names)  # type: ignore[assignment]
    except InspectorError as exc:
        fail(exc)
    core = StreamCore(crack_model, StreamPolicy(batch_pairs=batch, pair_timeout_ns=5 * 10**9, lanes=lanes))
    columns = (TextColumn("inspecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("run", total=count)
        line = EmbeddedLine(
            frames, core, store, fps=fps * len(names) if fps > 0 else None,
            on_result=lambda _doc: progress.advance(task),
        )  # fmt: skip
        report = line.run(count=count)
    figures = summary(report, crack_model.name)
    if as_json:
        console.print_json(json.dumps(figures))
        return
    table = Table("camera", "seq", "part", "verdict", "widest mm", "longest mm", "e2e ms", title="results (synthetic)")
    for doc in report.results[-20:]:
        defects = doc["defects"]
        widest = max((d["max_width_mm"] for d in defects), default=None)
        longest = max((d["length_mm"] for d in defects), default=None)
        table.add_row(
            doc["camera_id"], str(doc["seq"]), str(doc["part_id"]), doc["verdict"],
            f"{widest:.2f}" if widest is not None else "-", f"{longest:.1f}" if longest is not None else "-",
            f"{doc['timings_ms']['end_to_end']:.0f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{figures['results']} parts in {figures['seconds']} s ({figures['captures_per_s']}/s): {figures['verdicts']}; "
        f"end-to-end p50 {figures['end_to_end_ms_p50']} ms, p95 {figures['end_to_end_ms_p95']} ms; "
        f"unpaired {figures['unpaired'] or 0}, rejected {figures['rejected'] or 0} -> {out / 'results.jsonl'}"
    )


def register(app: typer.Typer) -> None:
    """Add ``inspector run``."""
    app.command("run")(run)
