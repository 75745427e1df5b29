"""``/metrics``, ``/healthz`` and ``/readyz`` served from a daemon thread.

* ``/metrics``: the registry in the Prometheus text format.
* ``/healthz``: 200 ``ok`` while the process serves requests (liveness).
* ``/readyz``: 200 with the reason when ``ready()`` returns ``(True, reason)``, else 503 with the
  reason; a ``ready()`` that raises answers 503 with the error (readiness).
* anything else: 404.

Usage::

    with HealthServer.from_settings(settings.metrics, registry, ready=worker.readiness) as server:
        ...  # server.port is the bound port (useful with port 0)
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from inspector.config import MetricsSettings
from workers.errors import WorkerError

__all__ = ["HealthServer", "HealthServerError"]

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
_TEXT = "text/plain; charset=utf-8"


class HealthServerError(WorkerError):
    """The health/metrics endpoint could not be served."""


class _Server(ThreadingHTTPServer):
    """HTTP server that carries what the handler answers from."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, ready: Readiness) -> None:
        self.registry = registry
        self.ready = ready
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Answers the three paths; everything else is 404."""

    server: _Server

    def do_GET(self) -> None:
        """Serve one GET."""
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            try:
                ok, reason = self.server.ready()
            except Exception as exc:  # a readiness probe must answer, whatever the check does
                ok, reason = False, f"readiness check failed: {type(exc).__name__}: {exc}"
            self._send(200 if ok else 503, f"{reason}\n".encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, status: int, body: bytes, content_type: str = _TEXT) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests at debug level instead of writing them to stderr."""
        log.debug("%s - " + format, self.address_string(), *args)


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon thread.

    Args:
        registry: Registry exported on ``/metrics``.
        ready: Returns ``(ready, reason)``; called on every ``/readyz`` request, so keep it cheap.
        host: Address to bind.
        port: Port to bind; 0 picks a free one (read it back from ``port`` after ``start``).

    """

    def __init__(
        self, registry: CollectorRegistry, ready: Readiness, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: MetricsSettings, registry: CollectorRegistry, ready: Readiness) -> HealthServer:
        """A server on ``settings.bind_address:settings.port``."""
        return cls(registry, ready, host=settings.bind_address, port=settings.port)

    @property
    def port(self) -> int:
        """The bound port once started, else the port asked for."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            HealthServerError: The address is in use or cannot be bound.

        """
        if self._server is not None:
            return
        address = f"{self._host}:{self._requested_port}"
        try:
            server = _Server((self._host, self._requested_port), self._registry, self._ready)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                msg = (
                    f"cannot serve /metrics on {address}: the port is in use by another process; "
                    "set INSPECTOR__METRICS__PORT to a free port (or 0 to pick one)"
                )
            else:
                msg = (
                    f"cannot serve /metrics on {address}: {exc.strerror or exc}; "
                    "check INSPECTOR__METRICS__BIND_ADDRESS and INSPECTOR__METRICS__PORT"
                )
            raise HealthServerError(msg) from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"health-{self.port}", daemon=True)
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", self._host, self.port)

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
