"""``inspector gateway``: publish camera captures to the Kafka frame topics (see docs/MESSAGES.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from inspector.cli import ConfigOption, JsonOption, settings_or_exit
from inspector.commands.common import console, err_console, fail
from inspector.config import Settings
from inspector.errors import InspectorError
from inspector.sources import FolderSource, Source, SourceError, SyntheticSource, VideoSource, check_cameras
from inspector.synth import list_presets
from workers.errors import WorkerError
from workers.gateway import Gateway, GatewayReport, last_published_seqs
from workers.genicam import GenICamSource
from workers.health import HealthServer
from workers.metrics import GatewayMetrics

HELP = (
    "Publish captures to the co-partitioned Kafka frame topics (topics.visible, topics.infrared), one record per "
    "frame: key = camera id, value = the encoded image, headers = its metadata (docs/MESSAGES.md). Creates the "
    "frame topics and the dead-letter topic when missing, and refuses frame topics with unequal partition counts.\n\n"
    "Sources: synthetic (a pool of --size parts rendered once and cycled; one capture per camera in turn), "
    "folder (replays an `inspector synth` data folder from --path), video (one camera through OpenCV: --path is a "
    "device index such as 0, an rtsp:// URL or a video file; reconnects with back-off; frames have no trigger "
    "counter, so the worker pairs a visible and an infrared stream of one rig by time).\n\n"
    "--fps is captures per second per camera (default gateway.fps; 0 = as fast as possible; a live video stream is "
    "not paced unless --fps is given). Stops after --count captures, after --duration seconds, at the end of a "
    "folder or video file, or on Ctrl-C / SIGTERM (outstanding frames are flushed first).\n\n"
    "Exit codes: 0 every frame published; 1 frames were dropped, the source failed or Kafka is unusable; "
    "2 bad options or configuration.\n\n"
    "Example: inspector gateway --source synthetic --cameras rig-1,rig-2 --fps 5 --duration 60 --size 512"
)


class SourceKind(StrEnum):
    """Where captures come from."""

    synthetic = "synthetic"
    folder = "folder"
    video = "video"
    genicam = "genicam"


class ModalityChoice(StrEnum):
    """Which camera a video source is."""

    visible = "visible"
    infrared = "infrared"


def _cameras(text: str | None, default: list[str] | None) -> list[str] | None:
    if text is None:
        return default
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise typer.BadParameter("give camera ids separated by commas, e.g. rig-1,rig-2", param_hint="--cameras")
    try:
        return check_cameras(names)  # before any broker is asked anything
    except SourceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cameras") from None


def _looks_like_file(uri: str) -> bool:
    """A path (not a device index, URL or GStreamer pipeline)."""
    return not uri.isdigit() and "://" not in uri and "!" not in uri


def _build_source(
    kind: SourceKind,
    *,
    path: str | None,
    cameras: list[str] | None,
    preset: str,
    seed: int,
    size: int,
    start_seq: int = 1,
    modality: ModalityChoice,
    mm_per_px: float | None,
    loop: bool,
    settings: Settings | None = None,
    fps: float | None = None,
) -> Source:
    if kind is SourceKind.genicam:
        rigs = (settings or Settings()).cameras
        return GenICamSource(rigs, fps=fps or (settings or Settings()).gateway.fps, start_seq=start_seq)
    if kind is SourceKind.synthetic:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True) as bar:
            task = bar.add_task("rendering synthetic parts", total=None)

            def rendered(done: int, total: int) -> None:
                bar.update(task, description=f"rendering synthetic parts {done}/{total}")

            return SyntheticSource(cameras or ["rig-1"], preset, seed, size, start_seq=start_seq, progress=rendered)
    if path is None:
        raise typer.BadParameter(f"--source {kind.value} needs --path", param_hint="--path")
    if kind is SourceKind.folder:
        return FolderSource(Path(path), cameras, loop=loop)
    if _looks_like_file(path) and not Path(path).is_file():
        raise typer.BadParameter(f"video file {path} does not exist", param_hint="--path")
    camera_ids = cameras or ["rig-1"]
    if len(camera_ids) != 1:
        raise typer.BadParameter("a video source is one camera: give one camera id", param_hint="--cameras")
    if modality is ModalityChoice.visible and mm_per_px is None:
        logging.getLogger(__name__).warning(
            "no --mm-per-px: workers reject visible frames without a calibration unless they have a default"
        )
    return VideoSource(path, camera_ids[0], modality=modality.value, mm_per_px=mm_per_px, loop=loop)


def _first_seq(source: SourceKind, start_seq: int | None, settings: Settings, cameras: str | None) -> int | None:
    """The first trigger seq: as given, or one past the seqs already in the frame topics (synthetic, genicam)."""
    if start_seq is not None:
        return start_seq
    if source is SourceKind.synthetic:  # continue the count (see workers/gateway.py)
        return _resume_seq(settings, _cameras(cameras, None) or ["rig-1"])
    if source is SourceKind.genicam and settings.cameras:  # the same for the rigs' cameras
        return _resume_seq(settings, [rig.id for rig in settings.cameras])
    return None


def _rig_readiness(frames: Source, metrics: GatewayMetrics) -> Callable[[], tuple[bool, str]]:
    """``readyz`` of the gateway: per GenICam rig (and the ``rig_ready`` gauge), else always ready."""
    if not isinstance(frames, GenICamSource):
        return lambda: (True, "publishing")

    def mark(rig: str, ready: bool) -> None:
        metrics.rig_ready.labels(rig).set(int(ready))

    frames.on_ready = mark
    for rig, ready in dict(frames.ready).items():
        mark(rig, ready)
    return frames.readiness


def _resume_seq(settings: Settings, cameras: list[str]) -> int:
    """One past the highest seq of ``cameras`` already in the frame topics (1 when they hold none)."""
    highest = last_published_seqs(settings, cameras)
    if highest:
        err_console.print(f"[dim]resuming after seq {max(highest.values())} (already in {settings.topics.visible})[/]")
    return max(highest.values(), default=0) + 1


def _rate(source: Source, fps: float | None, settings: Settings) -> float | None:
    """Items per second for the whole source: per-camera fps times the cameras that take turns."""
    if isinstance(source, VideoSource) and not source.is_file and fps is None:
        return None  # a live camera paces itself
    per_camera = settings.gateway.fps if fps is None else fps
    if per_camera <= 0:
        return None
    cameras = getattr(source, "cameras", None) or [None]  # a folder without --cameras counts as one
    return per_camera * len(cameras)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(report: GatewayReport, settings: Settings) -> Table:
    table = Table("", "value", title="gateway", show_header=False)
    table.add_row("captures", str(report.captures))
    for modality, n in report.published.items():
        table.add_row(f"published {modality} → {getattr(settings.topics, modality)}", str(n))
    for reason, n in report.dropped.items():
        table.add_row(f"dropped: {reason}", f"[red]{n}[/]" if n else "0")
    table.add_row("source reconnects", str(report.source_reconnects))
    rate = report.captures / report.seconds if report.seconds > 0 else 0.0
    table.add_row("seconds", f"{report.seconds:.1f} ({rate:.1f} captures/s)")
    table.add_row("publish latency p50 / p95 ms", f"{_ms(report.publish_p50_ms)} / {_ms(report.publish_p95_ms)}")
    table.add_row("stopped by", report.stop_reason)
    return table


def gateway(
    source: Annotated[
        SourceKind,
        typer.Option(
            "--source", "-s", help="synthetic, folder, video, or genicam (the rigs of the `cameras:` section)."
        ),
    ] = (SourceKind.synthetic),
    path: Annotated[
        str | None, typer.Option("--path", help="folder: the data folder; video: device index, URL or file.")
    ] = None,
    cameras: Annotated[
        str | None,
        typer.Option(
            "--cameras", help="Comma-separated camera ids, e.g. rig-1,rig-2 (folder default: each sample's own)."
        ),
    ] = None,
    fps: Annotated[
        float | None, typer.Option("--fps", min=0.0, help="Captures per second per camera; 0 = unpaced.")
    ] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after this many captures.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.0, help="Stop after this many seconds.")] = None,
    config: ConfigOption = None,
    preset: Annotated[str, typer.Option("--preset", help=f"Synthetic preset: {', '.join(list_presets())}.")] = (
        "default"
    ),
    seed: Annotated[int, typer.Option("--seed", min=0, help="Synthetic seed: same seed, same parts.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Synthetic visible frame side in px (a multiple of 4).")] = 1024,
    start_seq: Annotated[
        int | None,
        typer.Option(
            "--start-seq",
            min=1,
            help="Synthetic: first trigger seq (default: one past the highest seq of these cameras already in the "
            "frame topics, so a restarted gateway publishes no seq twice; 1 on empty topics).",
        ),
    ] = None,
    modality: Annotated[
        ModalityChoice, typer.Option("--modality", help="Video: which camera of the rig this stream is.")
    ] = ModalityChoice.visible,
    mm_per_px: Annotated[
        float | None, typer.Option("--mm-per-px", min=0.0, help="Video: visible calibration to send with frames.")
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Folder or video file: start again at the end.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", min=0, max=65535, help="Serve /metrics and /healthz on this port (0: a free one)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Publish camera captures to the Kafka frame topics."""
    settings = settings_or_exit(config)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        start_seq = _first_seq(source, start_seq, settings, cameras)
        frames = _build_source(
            source,
            path=path,
            cameras=_cameras(cameras, None),
            preset=preset,
            seed=seed,
            size=size,
            start_seq=start_seq or 1,
            modality=modality,
            mm_per_px=mm_per_px,
            loop=loop,
            settings=settings,
            fps=fps,
        )
    except (InspectorError, typer.BadParameter, WorkerError) as exc:
        fail(exc, code=1 if isinstance(exc, WorkerError) else 2)  # WorkerError: Kafka unreachable while resuming
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    readiness = _rig_readiness(frames, metrics)
    paced = None if source is SourceKind.genicam else _rate(frames, fps, settings)  # cameras pace themselves
    runner = Gateway(settings, frames, metrics, fps=paced)
    server = None
    if metrics_port is not None:
        server = HealthServer(registry, readiness, host=settings.metrics.bind_address, port=metrics_port)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]gateway[/] {task.fields[line]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json,
        transient=True,
    ) as progress:
        task = progress.add_task("gateway", total=count, line="connecting")

        def show(report: GatewayReport) -> None:
            line = f"{report.captures} captures, {report.frames_published} frames published"
            if report.frames_dropped:
                line += f", [red]{report.frames_dropped} dropped[/]"
            progress.update(task, completed=report.captures, line=line)

        try:
            if server is not None:
                server.start()
            report = runner.run(count=count, timeout=duration, progress=show)
        except WorkerError as exc:
            frames.close()
            progress.stop()
            fail(exc, code=1)
        finally:
            if server is not None:
                server.stop()
    if as_json:
        console.print_json(data=report.to_dict())
    else:
        console.print(_table(report, settings))
        for message in report.errors:
            err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
    if report.frames_dropped or report.stop_reason == "source_failed":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``gateway`` to the ``inspector`` CLI."""
    app.command("gateway", help=HELP)(gateway)
