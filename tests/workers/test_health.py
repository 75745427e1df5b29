from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from inspector.config import MetricsSettings
from workers.errors import WorkerError
from workers.health import HealthServer


class Readiness:
    def __init__(self) -> None:
        self.state: tuple[bool, str] = (False, "waiting for partition assignment")

    def __call__(self) -> tuple[bool, str]:
        return self.state


def get(port: int, path: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def server(registry: CollectorRegistry, readiness: Readiness) -> Iterator[HealthServer]:
    with HealthServer(registry, readiness) as running:
        yield running


def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    assert server.port > 0


def test_metrics_serves_the_registry(server: HealthServer, registry: CollectorRegistry) -> None:
    Counter("demo_events_total", "Events.", registry=registry).inc(3)

    status, content_type, body = get(server.port, "/metrics")

    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    assert "demo_events_total 3.0" in body


def test_healthz(server: HealthServer) -> None:
    assert get(server.port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_readyz_follows_the_callable(server: HealthServer, readiness: Readiness) -> None:
    status, _, body = get(server.port, "/readyz")
    assert (status, body) == (503, "waiting for partition assignment\n")

    readiness.state = (True, "model loaded, 4 partitions")
    status, _, body = get(server.port, "/readyz")
    assert (status, body) == (200, "model loaded, 4 partitions\n")

    readiness.state = (False, "redis unreachable")
    assert get(server.port, "/readyz")[0] == 503


def test_readyz_that_raises_answers_503_and_keeps_serving(registry: CollectorRegistry) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("redis ping timed out")

    with HealthServer(registry, broken) as server:
        status, _, body = get(server.port, "/readyz")
        assert status == 503
        assert "RuntimeError: redis ping timed out" in body
        assert get(server.port, "/healthz")[0] == 200


def test_unknown_path_is_404(server: HealthServer) -> None:
    status, _, body = get(server.port, "/nope")
    assert status == 404
    assert "/metrics" in body


def test_query_string_is_ignored(server: HealthServer) -> None:
    assert get(server.port, "/healthz?verbose=1")[0] == 200


def test_requests_are_not_written_to_stderr(server: HealthServer, capfd: pytest.CaptureFixture[str]) -> None:
    get(server.port, "/healthz")
    get(server.port, "/nope")
    assert capfd.readouterr().err == ""


def test_port_in_use_names_the_address_and_the_setting(registry: CollectorRegistry, readiness: Readiness) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(registry, readiness, port=port)
        with pytest.raises(WorkerError, match=rf"127\.0\.0\.1:{port}.*INSPECTOR__METRICS__PORT"):
            server.start()


def test_stop_frees_the_port(registry: CollectorRegistry, readiness: Readiness) -> None:
    server = HealthServer(registry, readiness)
    server.start()
    port = server.port
    assert get(port, "/healthz")[0] == 200
    server.stop()
    server.stop()  # idempotent

    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")
    again = HealthServer(registry, readiness, port=port)
    again.start()
    try:
        assert again.port == port
        assert get(port, "/healthz")[0] == 200
    finally:
        again.stop()


def test_from_settings(registry: CollectorRegistry, readiness: Readiness) -> None:
    settings = MetricsSettings(bind_address="127.0.0.1", port=0)
    with HealthServer.from_settings(settings, registry, readiness) as server:
        assert server.port > 0
        assert get(server.port, "/healthz")[0] == 200


def test_binds_the_configured_address_and_defaults_to_loopback(
    registry: CollectorRegistry, readiness: Readiness
) -> None:
    assert MetricsSettings().bind_address == "127.0.0.1"
    with HealthServer.from_settings(MetricsSettings(port=0), registry, readiness) as default:
        assert default._server is not None and default._server.server_address[0] == "127.0.0.1"
    settings = MetricsSettings(bind_address="127.0.0.2", port=0)  # another loopback address: not 127.0.0.1
    with HealthServer.from_settings(settings, registry, readiness) as server:
        assert server._server is not None and server._server.server_address[0] == "127.0.0.2"
        with urllib.request.urlopen(f"http://127.0.0.2:{server.port}/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass


def test_unbindable_address_names_the_setting(registry: CollectorRegistry, readiness: Readiness) -> None:
    server = HealthServer.from_settings(MetricsSettings(bind_address="192.0.2.1", port=0), registry, readiness)
    with pytest.raises(WorkerError, match="INSPECTOR__METRICS__BIND_ADDRESS"):
        server.start()
