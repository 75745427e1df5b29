"""``inspector worker``: consume frame pairs from Kafka, inspect them, store results in Redis, serve metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import CollectorRegistry
from rich.table import Table

from inspector.calibration import Calibration, load_calibration
from inspector.commands.common import console, fail
from inspector.config import Settings
from inspector.errors import InspectorError
from inspector.model import CrackModel, create_model
from inspector.results import RedisLayout, RedisResultStore
from workers.clients import redis_client
from workers.commands.service import start_service
from workers.errors import WorkerError
from workers.evidence import EvidenceStore
from workers.inspection import InspectionWorker, WorkerReport
from workers.metrics import WorkerMetrics
from workers.model_watch import watcher_from_settings
from workers.widths import WidthFamily

logger = logging.getLogger(__name__)


def model_info(model: CrackModel, settings: Settings) -> dict[str, Any]:
    """What the worker reports about its model: name, version, width, backend, SHA-256 of the file."""
    metadata = dict(getattr(model, "metadata", {}) or {})
    return {
        "name": model.name,
        "version": model.version,
        "width": float(metadata.get("width", 1.0)),
        "backend": str(metadata.get("backend", settings.inference.backend)),
        "sha256": str(metadata.get("sha256", "")),
    }


def width_family(settings: Settings) -> WidthFamily | None:
    """The pruned family of ``worker.widths`` (widest first), when ``worker.model`` is its widest member.

    A ``worker.model`` set to another model (e.g. by ``INSPECTOR__WORKER__MODEL``) runs alone, with a warning.
    """
    widths = settings.worker.widths
    if not widths:
        return None
    if widths[0] != settings.worker.model:
        logger.warning(
            "worker.model %s is not the widest of worker.widths %s: running it alone, without width steps",
            settings.worker.model, list(widths),
        )  # fmt: skip
        return None
    return WidthFamily.load(settings)


def build_worker(settings: Settings, registry: CollectorRegistry) -> InspectionWorker:
    """The model, the Redis store, the metrics and the worker, all from settings.

    With ``registry.watch``, a model promoted in the registry (``inspector promote``) serves instead of
    ``worker.model`` and its width family; if it fails to load, ``worker.model`` serves (logged). With
    ``evidence.enabled`` the worker keeps evidence under ``evidence.root`` (created if missing).
    """
    client = redis_client(settings.redis)
    metrics = WorkerMetrics(registry)
    watcher = watcher_from_settings(settings, client, metrics)
    promoted = watcher.load_active_now() if watcher is not None else None
    if promoted is not None:
        logger.info("serving the registry's active model %s (sha256 %s) instead of worker.model %s",
                    promoted.entry.path, promoted.entry.sha256, settings.worker.model)  # fmt: skip
    family = width_family(settings) if promoted is None else None
    if promoted is not None:
        model: CrackModel = promoted.model
    elif family is not None:
        model = family.active
    else:
        model = create_model(settings.worker.model, inference=settings.inference.model_dump())
    store = RedisResultStore(client, RedisLayout(prefix=settings.redis.key_prefix, ttl_s=settings.redis.result_ttl_s))
    info = promoted.info() if promoted else family.info() if family else model_info(model, settings)
    calibrations = read_calibrations(settings.worker.calibration_dir) if settings.worker.calibration_dir else {}
    return InspectionWorker(
        settings, model, store, metrics=metrics, model_info=info, widths=family, calibrations=calibrations,
        watcher=watcher, evidence=EvidenceStore.from_settings(settings.evidence) if settings.evidence.enabled else None,
    )  # fmt: skip


def read_calibrations(folder: Path) -> dict[str, Calibration]:
    """Every ``{camera_id}.yaml`` calibration in ``folder`` (from ``inspector calibrate``)."""
    if not folder.is_dir():
        raise WorkerError(f"worker.calibration_dir {folder} is not a folder of {{camera_id}}.yaml calibrations")
    return {path.stem: load_calibration(path) for path in sorted(folder.glob("*.yaml"))}


def report_table(report: WorkerReport) -> Table:
    """A short summary of a run for people."""
    table = Table("frames", "pairs", "results stored", "already stored", "dead letters", "unpaired", "seconds")
    table.add_row(
        str(report.frames), str(report.pairs), str(report.stored), str(report.already_stored),
        ", ".join(f"{k} {v}" for k, v in report.dlq.items()) or "0",
        ", ".join(f"{k} {v}" for k, v in report.unpaired.items()) or "0", f"{report.seconds:.1f}",
    )  # fmt: skip
    return table


def worker(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings; default $INSPECTOR_CONFIG, else defaults.")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many results (default: run on).")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Consume frames.visible + frames.infrared as one consumer group, inspect every pair, store results in Redis.

    Start as many workers as the frame topics have partitions (topics.partitions); each owns whole
    partitions, so both frames of a capture reach the same worker. Results go to Redis
    (inspector:result:{camera_id}:{seq}, stream inspector:results), offsets are committed only after
    the results are stored, and /metrics, /healthz and /readyz are served on
    metrics.bind_address:metrics.port. SIGTERM stops polling, drains, commits and exits.
    """
    from inspector.cli import settings_or_exit

    settings = settings_or_exit(config)
    registry = CollectorRegistry()
    try:
        inspection = build_worker(settings, registry)
    except (InspectorError, WorkerError) as exc:
        fail(exc)
    except Exception as exc:  # the broker or Redis unreachable at start: say where
        fail(f"cannot start the worker ({type(exc).__name__}: {exc}); is Kafka at {settings.kafka.bootstrap} up?")

    server = start_service(inspection, settings, registry, "draining and stopping")
    console.print(
        f"worker in group {settings.worker.group_id}: model {inspection.core.model.name}, "
        f"metrics on http://{settings.metrics.bind_address}:{server.port}/metrics"
    )
    try:
        report = inspection.run(timeout=duration, count=count)
    finally:
        server.stop()
    if as_json:
        console.print_json(
            data={
                "frames": report.frames, "pairs": report.pairs, "stored": report.stored,
                "already_stored": report.already_stored, "dlq": dict(report.dlq), "unpaired": dict(report.unpaired),
                "store_errors": report.store_errors, "consumer_rebuilds": report.consumer_rebuilds,
                "seconds": round(report.seconds, 3),
            }
        )  # fmt: skip
    else:
        console.print(report_table(report))


def register(app: typer.Typer) -> None:
    """Add ``inspector worker``."""
    app.command("worker")(worker)
