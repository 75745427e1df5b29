"""``inspector bench cameras``: GenICam rigs of simulated GigE Vision cameras through the gateway: drops and CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inspector.commands.common import console, err_console, fail
from inspector.errors import InspectorError
from workers.camera_bench import CameraBench, run_camera_bench
from workers.errors import WorkerError


def bench_cameras(
    rigs: Annotated[int, typer.Option(min=1, max=8, help="Rigs (two simulated cameras each, 127.0.0.1 on).")] = 2,
    fps: Annotated[float, typer.Option(min=0.5, max=60, help="Line triggers per second, every rig.")] = 10.0,
    visible: Annotated[int, typer.Option(min=64, max=4096, help="Visible (Mono8) frame side in pixels.")] = 1024,
    infrared: Annotated[int, typer.Option(min=32, max=1024, help="Infrared (Mono16) frame side in pixels.")] = 256,
    seconds: Annotated[float, typer.Option(min=5, help="Measured seconds of each repeat (after a 5 s warm-up).")] = 60,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats; the table shows medians.")] = 3,
    loss: Annotated[int, typer.Option(min=0, max=1000, help="GVSP packets lost per thousand (simulator -r).")] = 0,
    kafka: Annotated[str, typer.Option(help="Kafka bootstrap (the local stack by default).")] = "127.0.0.1:9092",
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the JSON here too.")] = Path(
        "runs/bench-cameras/bench.json"
    ),
) -> None:
    """Drops and gateway CPU for RIGS x FPS line triggers of Mono8 + Mono16 frames from GigE Vision simulators.

    Starts two arv-fake-gv-camera-0.8 processes per rig on loopback addresses (added to lo if
    missing; needs root), fires their software triggers as one line trigger per rig, and runs the
    gateway (raw frames) into fresh topics of the running stack (deploy/local/stack up). Drops are
    triggers fired minus captures the broker acknowledged; gateway CPU is this process's CPU time
    over the measured window as a share of one core. Prints JSON and a table. Synthetic frames.
    """
    logging.getLogger("kafka").setLevel(logging.WARNING)
    bench = CameraBench(
        rigs=rigs, fps=fps, visible=visible, infrared=infrared, seconds=seconds, repeats=repeats,
        loss_per_thousand=loss, kafka=kafka,
    )  # fmt: skip
    try:
        figures = run_camera_bench(bench, progress=lambda line: err_console.print(f"[dim]{line}[/]"))
    except (WorkerError, InspectorError) as exc:
        fail(exc, code=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    console.print_json(json.dumps(figures))
    table = Table(
        "repeat", "triggers", "published", "drops", "gateway CPU", "simulators CPU", "single copy", "max skew ms"
    )
    for n, run in enumerate(figures["runs"], start=1):
        table.add_row(
            str(n), str(run["triggers"]), str(run["captures_published"]), str(run["drops"]),
            f"{run['gateway_cpu_core_share']:.0%}", f"{run['simulators_cpu_core_share']:.0%}",
            f"{run['single_copy_captures']}/{run['captures_seen']}", f"{run['max_pair_skew_ms']:.1f}",
        )  # fmt: skip
    median = figures["median"]
    table.add_row(
        "median", "", "", f"{median['drops']:g}", f"{median['gateway_cpu_core_share']:.0%}",
        f"{median['simulators_cpu_core_share']:.0%}", "", "",
    )  # fmt: skip
    table.title = f"{rigs} rig(s) x {fps:g} triggers/s, {figures['frame']} (synthetic, simulated cameras)"
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``inspector bench cameras`` to the bench group."""
    from inspector.commands.bench import bench_app

    bench_app.command("cameras")(bench_cameras)
