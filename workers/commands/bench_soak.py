"""``inspector bench soak``: minutes at a steady share of the measured maximum; memory growth and lag trend."""

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
from workers.soak import RSS_TARGET_PCT, SoakPlan, run_soak


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def bench_soak(
    minutes: Annotated[float, typer.Option(min=0.05, help="Length of the paced soak.")] = 10.0,
    warmup_minutes: Annotated[
        float | None, typer.Option(min=0.0, help="Left out of the memory and lag figures (default: 2, or a fifth).")
    ] = None,
    load: Annotated[float, typer.Option(min=0.05, max=1.5, help="Share of the measured maximum to offer.")] = 0.8,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="Captures/s to offer instead of measuring the maximum.")
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Crack model (name or file).")] = "baseline",
    size: Annotated[int, typer.Option(min=64, help="Visible frame side in pixels (IR is 4x coarser).")] = 128,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    max_seconds: Annotated[
        float, typer.Option(min=5.0, help="Seconds the maximum is measured over (after a 30 s warm-up).")
    ] = 90.0,
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="Captures without a result before the gateway waits (maximum phase).")
    ] = 128,
    out: Annotated[Path, typer.Option("--out", "-o", help="6-soak.json and the logs go here.")] = Path("runs/chaos"),
    keep: Annotated[bool, typer.Option(help="Keep the soak's topics and Redis keys (deleted by default).")] = False,
    name: Annotated[
        str, typer.Option(help="Scenario id: the figures go to OUT/NAME.json (and that row of RELIABILITY.md).")
    ] = "6-soak",
    kafka: Annotated[str, typer.Option(help="Kafka bootstrap (the local stack by default).")] = "127.0.0.1:9092",
    redis_url: Annotated[str, typer.Option("--redis", help="Redis URL.")] = "redis://127.0.0.1:6379/0",
) -> None:
    """Soak the pipeline: measure the workers' maximum, then offer LOAD x that rate for MINUTES.

    The maximum is measured in the soak's own set-up: the workers and the gateway share the machine,
    and the gateway waits whenever MAX_IN_FLIGHT captures have no result yet, so it offers exactly
    what the workers store; the stored rate over MAX_SECONDS (after 30 s) is the maximum.
    Needs the running stack (deploy/local/stack up). Reports each worker's resident memory growth
    after the warm-up (target < 5%), the lag trend (it must not grow), and an audit of Redis against
    Kafka (lost and duplicated results). Prints JSON and a table; writes OUT/NAME.json (6-soak.json), which
    `python -m tests.chaos.report` puts in docs/RELIABILITY.md. Synthetic frames.
    """
    logging.getLogger("kafka").setLevel(logging.WARNING)
    warm = warmup_minutes if warmup_minutes is not None else min(2.0, minutes / 5)
    if warm >= minutes:
        fail(f"--warmup-minutes ({warm:g}) must be shorter than --minutes ({minutes:g})")
    plan = SoakPlan(
        minutes=minutes, warmup_minutes=warm, load=load, rate=rate, model=model, size=size, workers=workers,
        max_seconds=max_seconds, max_in_flight=max_in_flight, keep=keep, name=name, kafka=kafka, redis_url=redis_url,
    )  # fmt: skip
    try:
        figures = run_soak(plan, out / "logs" / name, progress=lambda line: err_console.print(f"[dim]{line}[/]"))
    except (WorkerError, InspectorError) as exc:
        fail(exc, code=1)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=1) + "\n")
    console.print_json(json.dumps({k: v for k, v in figures.items() if not k.endswith("_series")}))
    table = Table("measure", "value", "target", title=f"soak ({model}, {figures['frame']})")
    if figures["max_captures_per_s"] is not None:
        table.add_row("measured maximum, captures/s", f"{figures['max_captures_per_s']:.2f}", "")
    table.add_row("offered, captures/s", f"{figures['offered_captures_per_s']:.2f}", f"{load:.0%} of the maximum")
    table.add_row("captures sent / results stored", f"{figures['captures_sent']} / {figures['results_stored']}", "")
    table.add_row("lost / duplicated", f"{figures['lost']} / {figures['duplicated']}", "0 / 0")
    for row in figures["rss"]["per_worker"]:
        first, last = row["rss_first_mib"], row["rss_last_mib"]
        span = "-" if first is None or last is None else f"{first:.0f} → {last:.0f} MiB"
        table.add_row(f"worker {row['worker']} RSS after warm-up", f"{span} ({_pct(row['growth_pct'])})", "")
    met = "met" if figures["rss_target_met"] else "missed"
    table.add_row("RSS growth (worst worker)", _pct(figures["rss_growth_pct"]), f"< {RSS_TARGET_PCT:g}% — {met}")
    lag = figures["lag"]
    if lag["slope_per_min"] is not None:
        grows = "grows" if lag["grows"] else "does not grow"
        table.add_row("lag trend, records/min", f"{lag['slope_per_min']:+.2f} (max {lag['max']})", grows)
        table.add_row("mean lag first / last minute", f"{lag['mean_first_min']:.1f} / {lag['mean_last_min']:.1f}", "")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``inspector bench soak`` to the bench group."""
    from inspector.commands.bench import bench_app

    bench_app.command("soak")(bench_soak)
