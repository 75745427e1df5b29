"""A prometheus-client endpoint scraped by the real Prometheus, read back through its query API."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.conftest import Stack

pytestmark = pytest.mark.integration


def query(prometheus_url: str, promql: str) -> list[dict]:  # type: ignore[type-arg]
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_endpoint_is_scraped_by_file_discovery(stack: Stack) -> None:
    registry = CollectorRegistry()
    frames = Counter("smoke_frames", "Frames seen by the smoke test.", registry=registry)
    frames.inc(42)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_port
    instance = f"smoke-{uuid.uuid4().hex[:8]}"
    target = stack.targets_dir / f"{instance}.json"
    target.write_text(
        json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "smoke", "instance": instance}}])
    )
    try:
        deadline = time.monotonic() + 45
        result: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline and not result:
            result = query(stack.prometheus_url, f'smoke_frames_total{{instance="{instance}"}}')
            time.sleep(0.5)
        assert result, "Prometheus never scraped the endpoint"
        assert float(result[0]["value"][1]) == 42.0
        assert result[0]["metric"]["job"] == "smoke"
        up = query(stack.prometheus_url, f'up{{instance="{instance}"}}')
        assert up and up[0]["value"][1] == "1"
    finally:
        target.unlink(missing_ok=True)
        server.shutdown()
        thread.join(timeout=5)
