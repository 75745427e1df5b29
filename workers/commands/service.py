"""What every long-running worker command shares: signals that stop it gracefully, and its health server."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Protocol

from prometheus_client import CollectorRegistry

from inspector.commands.common import console, fail
from inspector.config import Settings
from workers.errors import WorkerError
from workers.health import HealthServer


class Service(Protocol):
    """A worker with a graceful stop, a readiness probe and a close."""

    def stop(self) -> None: ...  # noqa: D102

    def close(self) -> None: ...  # noqa: D102

    def ready(self) -> tuple[bool, str]: ...  # noqa: D102


def start_service(service: Service, settings: Settings, registry: CollectorRegistry, stopping: str) -> HealthServer:
    """Route SIGTERM/SIGINT to ``service.stop()`` (printing ``stopping``) and serve /metrics, /healthz, /readyz.

    Exits with the server's error (after closing the service) when the metrics address cannot be bound.
    """

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        console.print(f"signal {signal.Signals(signum).name}: {stopping}")
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = HealthServer.from_settings(settings.metrics, registry, service.ready)
    try:
        server.start()
    except WorkerError as exc:
        service.close()
        fail(exc)
    return server
