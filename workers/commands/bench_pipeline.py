"""``inspector bench pipeline``: real Kafka + Redis + worker processes against the same model in a bare loop."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inspector.commands.common import console, err_console, fail
from inspector.errors import InspectorError
from workers.errors import WorkerError
from workers.pipeline_bench import PipelineBench, run_pipeline_bench


def bench_pipeline(
    out: Annotated[Path, typer.Option("--out", "-o", help="bench.json and the worker logs go here.")] = Path(
        "runs/bench-pipeline"
    ),
    model: Annotated[str, typer.Option("--model", "-m", help="Crack model (name or file).")] = "crack-concat",
    size: Annotated[int, typer.Option(min=64, help="Visible frame side in pixels (IR is 4x coarser).")] = 512,
    captures: Annotated[int, typer.Option(min=10, help="Captures drained in each throughput phase.")] = 120,
    load_seconds: Annotated[float, typer.Option(min=1, help="Length of each paced latency phase.")] = 30.0,
    partitions: Annotated[int, typer.Option(min=2, help="Partitions of the fresh frame topics.")] = 4,
    kafka: Annotated[str, typer.Option(help="Kafka bootstrap (the local stack by default).")] = "127.0.0.1:9092",
    redis_url: Annotated[str, typer.Option("--redis", help="Redis URL.")] = "redis://127.0.0.1:6379/0",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads of the one worker and the bare loop (default: every core).")
    ] = None,
    lanes: Annotated[int, typer.Option(min=1, help="inference.lanes of the workers and the bare loop.")] = 2,
) -> None:
    """Throughput with 1 and 2 workers and end-to-end latency at 50% and 90% load, beside a bare model loop.

    Needs the running stack (deploy/local/stack up). Every worker is a separate `inspector worker`
    process; one worker gets every core (--threads) and --lanes, two share them; the bare loop is the
    same worker step in this process with the one worker's threads and lanes. Topics and Redis keys
    are fresh for each phase. Prints JSON and a table for docs/BENCHMARKS.md. Synthetic frames.
    """
    logging.getLogger("kafka").setLevel(logging.WARNING)
    bench = PipelineBench(
        model=model, size=size, captures=captures, load_seconds=load_seconds, partitions=partitions, kafka=kafka,
        redis_url=redis_url, threads=threads, lanes=lanes,
    )  # fmt: skip
    try:
        figures = run_pipeline_bench(bench, out, progress=lambda line: err_console.print(f"[dim]{line}[/]"))
    except (WorkerError, InspectorError) as exc:
        fail(exc, code=1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(figures, indent=1) + "\n")
    console.print_json(json.dumps(figures))
    table = Table("measure", "value", "target", title=f"pipeline vs bare loop ({model}, {figures['frame']})")
    table.add_row("bare loop captures/s (the worker step alone)", f"{figures['bare_loop']['captures_per_s']:.2f}", "")
    table.add_row("1 worker captures/s", f"{figures['one_worker']['captures_per_s']:.2f}", "")
    table.add_row("2 workers captures/s", f"{figures['two_workers']['captures_per_s']:.2f}", "")
    peak = max(figures["one_worker"]["peak_rss_mib"], default=float("nan"))
    table.add_row("1 worker peak RSS MiB", f"{peak:.0f}", "<= 1536")
    table.add_row("pipeline / bare", f"{figures['pipeline_over_bare']:.2f}", ">= 0.90")
    table.add_row("2 workers / 1 (sharing the same cores)", f"{figures['two_over_one']:.2f}", "")
    for load, share in zip(figures["latency"], ("50%", "90%"), strict=True):
        table.add_row(
            f"e2e p50 / p99 ms at {share} ({load['rate_captures_per_s']:.2f}/s)",
            f"{load['end_to_end_ms_p50']:.0f} / {load['end_to_end_ms_p99']:.0f} (model {load['model_ms_p50']:.0f})",
            "",
        )
    table.add_row("p99 e2e / model at 50%", f"{figures['p99_over_model_at_50']:.2f}", "<= 3")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``inspector bench pipeline`` to the bench group."""
    from inspector.commands.bench import bench_app

    bench_app.command("pipeline")(bench_pipeline)
