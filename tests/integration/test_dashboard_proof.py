"""Every dashboard panel's query, evaluated by the real Prometheus against a real worker and gateway.

A gateway publishes synthetic captures to fresh topics, an inspection worker with the shipped fused
model (``crack-hffn``, so modal weights exist) inspects them, and a feeder adds records the worker cannot
use (a junk record → dead letter ``bad_headers``; a visible frame whose infrared partner never comes →
unpaired ``no_partner``). Both processes serve ``/metrics`` on a :class:`~workers.health.HealthServer`
registered with the local stack's Prometheus by file-based discovery (jobs ``inspector-worker`` and
``inspector-gateway``, target label ``line`` unique to this test). Once ``rate(...[1m])`` has enough
scrapes, each query of ``deploy/grafana/dashboards/inspection.json`` goes through ``/api/v1/query`` with
``$__rate_interval`` = ``1m``, ``$line`` = this test's line (so the data provably comes from these
processes, not from other tests) and any other variable = ``.*``. Each must parse and return at least one
series with a finite value. Panels in ``PENDING_PANELS`` (workers not built yet) are skipped, and the
output says so. The alert and recording rules of ``deploy/prometheus`` are evaluated too: they must parse
(the local stack does not load them, so alerts built on recording rules cannot return data here).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from prometheus_client import CollectorRegistry

from inspector.config import Settings
from inspector.frame import encode_frame
from inspector.sources import SyntheticSource
from tests.conftest import REPO, Stack
from tests.deploy.test_grafana_dashboards import load_dashboards
from tests.integration.frames import create_topics, fresh_settings, part
from workers.commands.worker import build_worker
from workers.gateway import Gateway
from workers.health import HealthServer
from workers.metrics import GatewayMetrics

pytestmark = pytest.mark.integration

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "inspection.json"
RULES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))
WARMUP_S = 35.0  # after both targets are up: a [1m] rate needs two scrapes of each series (scrape every 2 s)
SETTLE_S = 90.0  # then at most this long for every query to return data (a loaded CPU inspects slowly)
# Panels whose events this test causes on purpose: besides returning series, they must show a value above 0.
NONZERO = (
    "NG parts per minute", "Defect rate", "NG parts per minute by line", "Parts per minute by verdict",
    "Crack width distribution", "Defects per minute by class", "Frames consumed per second by worker",
    "Pairs inspected per second by worker", "Dead letters per second by reason", "Unpaired frames per second by reason",
    "Modal weights", "Frames published per second by gateway", "Publish latency (p50, p95, p99)",
)  # fmt: skip
Body = dict[str, Any]


def api(prometheus_url: str, expr: str) -> Body:
    """``/api/v1/query`` of ``expr`` now; the JSON body, also for a 400 (parse error)."""
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}") or {"status": "error", "error": str(exc)}


def substitute(expr: str, line: str) -> str:
    """Grafana's variables: ``$__rate_interval`` → ``1m``, ``$line`` → this test's line, others → ``.*``."""
    values = {"__rate_interval": "1m", "line": line}  # the line label is [a-z0-9-]: no regex metacharacters
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), ".*"), expr)


def finite(body: Body) -> list[float]:
    """The finite sample values of an instant-vector answer."""
    values = [float(series["value"][1]) for series in body.get("data", {}).get("result", [])]
    return [v for v in values if math.isfinite(v)]


@contextmanager
def scraped(
    stack: Stack, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]], job: str, line: str
) -> Iterator[HealthServer]:
    """Serve ``registry`` and register it with the stack's Prometheus until the block ends."""
    server = HealthServer(registry, ready, port=0)
    server.start()
    target = stack.targets_dir / f"{line}-{job}.json"
    partial = target.with_suffix(".json.partial")  # renamed into place: Prometheus never reads half a file
    partial.write_text(json.dumps([{"targets": [f"127.0.0.1:{server.port}"], "labels": {"job": job, "line": line}}]))
    partial.rename(target)
    try:
        yield server
    finally:
        target.unlink(missing_ok=True)
        server.stop()


def feed_bad_records(settings: Settings, stop: threading.Event) -> None:
    """Every 2 s a junk record (dead letter) and a visible frame whose infrared partner never comes (unpaired)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all", linger_ms=5)
    try:
        seq = 1
        while not stop.is_set():
            producer.send(settings.topics.visible, value=b"not a frame", key=b"rig-junk", headers=[("schema", b"x")])
            visible, _ = part(seq)
            frame, data = encode_frame(
                visible, camera_id="rig-orphan", modality="visible", seq=seq, capture_ts_ns=time.time_ns(),
                mm_per_px=0.05,
            )  # fmt: skip
            producer.send(settings.topics.visible, value=data, key=b"rig-orphan", headers=frame.to_headers())
            producer.flush()
            seq += 1
            stop.wait(2.0)
    finally:
        producer.close()


def run_in_thread(name: str, target: Callable[[], object], errors: list[str]) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except Exception as exc:  # reported by the test, not lost in the thread
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread


def wait_until_up(stack: Stack, line: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = api(stack.prometheus_url, f'up{{line="{line}"}} == 1')
        jobs = {series["metric"]["job"] for series in up.get("data", {}).get("result", [])}
        if jobs >= {"inspector-worker", "inspector-gateway"}:
            return
        time.sleep(1.0)
    pytest.fail(f"Prometheus did not scrape both targets of line {line} within {timeout:.0f} s", pytrace=False)


def shows_data(title: str, body: Body) -> bool:
    """A finite value, and one above 0 for the panels in NONZERO."""
    values = finite(body)
    return bool(values) and (title not in NONZERO or any(v > 0 for v in values))


def evaluate_panels(stack: Stack, line: str, queries: list[tuple[str, str]]) -> dict[str, Body]:
    """Evaluate every query, retrying those without data until SETTLE_S passes; the last answer of each."""
    answers: dict[str, Body] = {}
    deadline = time.monotonic() + SETTLE_S
    while True:
        for title, expr in queries:
            if expr not in answers or not shows_data(title, answers[expr]):
                answers[expr] = api(stack.prometheus_url, substitute(expr, line))
        if all(shows_data(title, answers[expr]) for title, expr in queries) or time.monotonic() > deadline:
            return answers
        time.sleep(3.0)


def cleanup(settings: Settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
    try:
        admin.delete_topics([settings.topics.visible, settings.topics.infrared, settings.topics.dlq])
    finally:
        admin.close()
    client = redis.Redis.from_url(settings.redis.url)
    for key in client.scan_iter(f"{settings.redis.key_prefix}:*"):
        client.delete(key)


def test_every_panel_query_returns_data_from_real_workers(stack: Stack) -> None:
    dashboards = load_dashboards()
    model = json.loads(DASHBOARD.read_text())
    panels = list(dashboards.panel_queries(model))
    proven = [(title, expr) for title, expr in panels if title not in dashboards.PENDING_PANELS]
    assert len(proven) >= 30, "the dashboard lost panels"

    base = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=2, pair_timeout_ms=500)
    settings = base.model_copy(update={"worker": base.worker.model_copy(update={"model": "crack-hffn"})})
    create_topics(settings)
    line = f"proof-{uuid.uuid4().hex[:8]}"
    worker_registry, gateway_registry = CollectorRegistry(), CollectorRegistry()
    worker = build_worker(settings, worker_registry)
    source = SyntheticSource(["rig-1", "rig-2"], size=256, pool=4, seed=7)  # about half the parts are NG
    gateway = Gateway(settings, source, GatewayMetrics(gateway_registry), fps=1.0)
    stop = threading.Event()
    errors: list[str] = []
    try:
        with (
            scraped(stack, worker_registry, worker.ready, "inspector-worker", line),
            scraped(stack, gateway_registry, lambda: (True, "publishing"), "inspector-gateway", line),
        ):
            threads = [
                run_in_thread("worker", lambda: worker.run(timeout=300), errors),
                run_in_thread("gateway", lambda: gateway.run(timeout=300), errors),
                run_in_thread("feeder", lambda: feed_bad_records(settings, stop), errors),
            ]
            wait_until_up(stack, line)
            time.sleep(WARMUP_S)
            answers = evaluate_panels(stack, line, proven)
            rules = {expr: api(stack.prometheus_url, expr) for expr in rule_exprs()}
            stop.set()
            worker.stop()
            gateway.stop()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        stop.set()
        worker.stop()
        gateway.stop()
        cleanup(settings)

    report(line, proven, answers, rules, dashboards.PENDING_PANELS)
    assert not errors, errors
    failed = [
        f"{title}: {expr} -> {answers[expr].get('error') or 'no finite value (or only 0 where NONZERO wants more)'}"
        for title, expr in proven
        if answers[expr].get("status") != "success" or not shows_data(title, answers[expr])
    ]
    assert not failed, "panels without data:\n" + "\n".join(failed)
    broken = [f"{expr}: {body.get('error')}" for expr, body in rules.items() if body.get("status") != "success"]
    assert not broken, "rules that do not evaluate:\n" + "\n".join(broken)


def rule_exprs() -> list[str]:
    """The expression of every recording and alert rule in deploy/prometheus/rules."""
    return [
        rule["expr"]
        for path in RULES
        for group in yaml.safe_load(Path(path).read_text())["groups"]
        for rule in group["rules"]
    ]


def report(
    line: str, proven: list[tuple[str, str]], answers: dict[str, Body], rules: dict[str, Body], pending: dict[str, str]
) -> None:
    """Print what each query returned (shown with ``-s`` or when the test fails)."""
    print(f"\nline={line}: {len(proven)} panel queries evaluated, {len(pending)} pending panels skipped")
    for title, expr in proven:
        body = answers[expr]
        result = body.get("data", {}).get("result", [])
        values = ", ".join(f"{v:.4g}" for v in finite(body)[:4])
        print(f"  [{body.get('status')}] {len(result)} series [{values}]  {title}: {substitute(expr, line)}")
    for title, reason in pending.items():
        print(f"  SKIPPED (pending) {title}: {reason}")
    print(f"rules: {len(rules)} expressions evaluated by the running Prometheus (not loaded there)")
    for expr, body in rules.items():
        series = len(body.get("data", {}).get("result", []))
        print(f"  [{body.get('status')}] {series} series  {' '.join(expr.split())}")
