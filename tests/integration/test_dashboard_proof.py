"""Every dashboard panel's query, evaluated by the real Prometheus against real workers of all four kinds.

A gateway publishes synthetic captures to fresh topics, an inspection worker with the shipped fused
model (``crack-hffn``, so modal weights exist) inspects them, and a feeder adds records the worker cannot
use (a junk record → dead letter ``bad_headers``; a visible frame whose infrared partner never comes →
unpaired ``no_partner``). A medical report worker (the shipped report model) gets a phantom CT study
(``inspector.medical.phantom``, zipped DICOM) every few seconds and now and then random bytes (dead letter
``not_dicom``); a VQA worker (the shipped ``vqa-hffn``) gets rendered scenes with questions and now and
then an empty question (refused ``empty_question``). Each worker serves ``/metrics`` on a
:class:`~workers.health.HealthServer` registered with the local stack's Prometheus by file-based
discovery (jobs ``inspector-worker``, ``inspector-gateway``, ``inspector-medical-worker`` and
``inspector-vqa-worker``, target label ``line`` unique to this test). Once ``rate(...[1m])`` has enough
scrapes, each query of ``deploy/grafana/dashboards/inspection.json`` goes through ``/api/v1/query`` with
``$__rate_interval`` = ``1m``, ``$line`` = this test's line (so the data provably comes from these
processes, not from other tests) and any other variable = ``.*``. Each must parse and return at least one
series with a finite value, and one above 0 where this test causes the events (:data:`NONZERO`). The
alert and recording rules of ``deploy/prometheus`` are evaluated too: they must parse; where the stack's
Prometheus has loaded them (``deploy/local/stack.py`` points it at them; a Prometheus started before that
has not), every loaded rule must also be healthy.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import redis
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from inspector.commands.medical import DEFAULT_MODEL as MEDICAL_MODEL
from inspector.config import Settings
from inspector.frame import encode_frame
from inspector.medical.phantom import make_study, write_dicom
from inspector.medical.report import load_profile, load_report_model
from inspector.sources import SyntheticSource
from inspector.vqa.data import build_set, encode_png
from tests.conftest import REPO, Stack
from tests.deploy.test_grafana_dashboards import load_dashboards
from tests.inspector.medical.conftest import TEST_FILES
from tests.integration.frames import create_topics, fresh_settings, part
from workers.commands.vqa_worker import SHIPPED as VQA_MODEL
from workers.commands.vqa_worker import build_worker as build_vqa_worker
from workers.commands.vqa_worker import ensure_topics as ensure_vqa_topics
from workers.commands.worker import build_worker
from workers.gateway import Gateway
from workers.health import HealthServer
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker, study_headers
from workers.metrics import GatewayMetrics
from workers.stores import ClaimedStore
from workers.vqa import VQATopics, VQAWorker

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
    "Medical studies reported per minute", "Medical report latency (p50, p95, p99)",
    "Medical rejected studies per second by reason", "Medical findings per minute by type",
    "Medical workers up and ready", "VQA requests and answers per minute", "VQA latency (p50, p95, p99)",
    "VQA refused requests per second by reason", "VQA inference latency (p50, p95, p99)",
    "VQA requests per model batch (p50, p95)", "VQA workers up and ready",
)  # fmt: skip
JOBS = {"inspector-worker", "inspector-gateway", "inspector-medical-worker", "inspector-vqa-worker"}
PHANTOM_SEEDS = (0, 2, 3)  # phantom studies with lesions the shipped report model finds
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


def phantom_studies(folder: Path) -> list[tuple[str, bytes]]:
    """``(StudyInstanceUID, zipped DICOM series)`` of a few phantom CT studies (about 0.5 MB each)."""
    studies = []
    for seed in PHANTOM_SEEDS:
        study = make_study(seed)
        write_dicom(study, folder / str(seed))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((folder / str(seed)).glob("*.dcm")):
                archive.write(path, path.name)
        studies.append((study.study_uid, buffer.getvalue()))
    return studies


def feed_medical(settings: Settings, topic: str, studies: list[tuple[str, bytes]], stop: threading.Event) -> None:
    """A study every 4 s; every third turn also random bytes (dead letter ``not_dicom``) and pydicom's real
    ``MR_small.dcm`` (reported, and counted outside the validated domain)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all", max_request_size=2**20)
    mr = (TEST_FILES / "MR_small.dcm").read_bytes()
    mr_uid = str(pydicom.dcmread(TEST_FILES / "MR_small.dcm", stop_before_pixels=True).StudyInstanceUID)
    try:
        turn = 0
        while not stop.is_set():
            uid, data = studies[turn % len(studies)]
            producer.send(topic, value=data, key=uid.encode(), headers=study_headers(uid, "zip", age=60))
            if turn % 3 == 0:
                junk = np.random.default_rng(turn).bytes(2000)
                producer.send(topic, value=junk, key=b"junk", headers=study_headers("1.2.826.0.1.3680043.8.498.1"))
                producer.send(topic, value=mr, key=mr_uid.encode(), headers=study_headers(mr_uid, "dicom"))
            producer.flush()
            turn += 1
            stop.wait(4.0)
    finally:
        producer.close()


def feed_vqa(settings: Settings, topic: str, side: int, stop: threading.Event) -> None:
    """Every 2 s two questions about rendered scenes and one empty question (refused ``empty_question``)."""
    data = build_set(4, seed=4242, side=side)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all", linger_ms=5)
    try:
        turn = 0
        while not stop.is_set():
            for k in range(2):
                row = (2 * turn + k) % len(data.questions)
                rid = f"proof-{turn}-{k}"
                headers = [("request_id", rid.encode()), ("question", data.questions[row].encode())]
                png = encode_png(data.images[data.scene_index[row]])
                producer.send(topic, value=png, key=rid.encode(), headers=headers)
            headers = [("request_id", f"proof-{turn}-empty".encode()), ("question", b"")]
            producer.send(topic, value=encode_png(data.images[0]), key=b"empty", headers=headers)
            producer.flush()
            turn += 1
            stop.wait(2.0)
    finally:
        producer.close()


def medical_worker(settings: Settings, tag: str, registry: CollectorRegistry) -> MedicalWorker:
    """The shipped report model on fresh topics (2 partitions for the studies) and its own Redis prefix."""
    config = MedicalConfig(
        topic=f"medical-{tag}", dlq=f"medical-dlq-{tag}", group_id=f"medical-{tag}", key_prefix=f"test-{tag}-medical",
        ttl_s=600, max_inline_bytes=900_000,
    )  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
    try:
        admin.create_topics([NewTopic(config.topic, 2, 1), NewTopic(config.dlq, 1, 1)])
    finally:
        admin.close()
    model, tokenizer, info = load_report_model(MEDICAL_MODEL)
    info.pop("metadata", None)
    store = ClaimedStore(redis.Redis.from_url(settings.redis.url), config.key_prefix, config.ttl_s)
    return MedicalWorker(
        settings, config, model, tokenizer, store, metrics=MedicalMetrics(registry), info=info,
        profile=load_profile(MEDICAL_MODEL),
    )  # fmt: skip


def vqa_worker(settings: Settings, tag: str, registry: CollectorRegistry) -> VQAWorker:
    """The shipped VQA model on fresh topics, as ``inspector vqa-worker`` builds it."""
    topics = VQATopics(requests=f"vqa-{tag}", dlq=f"vqa-dlq-{tag}")
    ensure_vqa_topics(settings, topics, partitions=2)
    return build_vqa_worker(
        settings, registry, VQA_MODEL, topics, group=f"vqa-{tag}", prefix=f"test-{tag}:vqa:answer", ttl_s=600, batch=4
    )


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
        if jobs >= JOBS:
            return
        time.sleep(1.0)
    pytest.fail(f"Prometheus did not scrape all four targets of line {line} within {timeout:.0f} s", pytrace=False)


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


def cleanup(settings: Settings, topics: list[str], prefixes: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
    try:
        existing = set(admin.list_topics())
        admin.delete_topics([t for t in topics if t in existing])
    finally:
        admin.close()
    client = redis.Redis.from_url(settings.redis.url)
    for prefix in prefixes:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def loaded_rules(prometheus_url: str) -> dict[str, list[Body]]:
    """The rule groups of deploy/prometheus the running Prometheus has loaded: group name → its rules."""
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    ours = {group["name"] for path in RULES for group in yaml.safe_load(Path(path).read_text())["groups"]}
    return {group["name"]: group["rules"] for group in groups if group["name"] in ours}


def test_every_panel_query_returns_data_from_real_workers(stack: Stack, tmp_path: Path) -> None:
    dashboards = load_dashboards()
    model = json.loads(DASHBOARD.read_text())
    proven = list(dashboards.panel_queries(model))
    assert len(proven) >= 50, "the dashboard lost panels"

    base = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=2, pair_timeout_ms=500)
    settings = base.model_copy(update={"worker": base.worker.model_copy(update={"model": "crack-hffn"})})
    create_topics(settings)
    tag = settings.redis.key_prefix.removeprefix("test-")
    line = f"proof-{uuid.uuid4().hex[:8]}"
    registries = {job: CollectorRegistry() for job in sorted(JOBS)}
    worker = build_worker(settings, registries["inspector-worker"])
    source = SyntheticSource(["rig-1", "rig-2"], size=256, pool=4, seed=7)  # about half the parts are NG
    gateway = Gateway(settings, source, GatewayMetrics(registries["inspector-gateway"]), fps=1.0)
    medical = medical_worker(settings, tag, registries["inspector-medical-worker"])
    vqa = vqa_worker(settings, tag, registries["inspector-vqa-worker"])
    studies = phantom_studies(tmp_path)
    stop = threading.Event()
    errors: list[str] = []
    services = (worker, gateway, medical, vqa)
    try:
        with (
            scraped(stack, registries["inspector-worker"], worker.ready, "inspector-worker", line),
            scraped(stack, registries["inspector-gateway"], lambda: (True, "publishing"), "inspector-gateway", line),
            scraped(stack, registries["inspector-medical-worker"], medical.ready, "inspector-medical-worker", line),
            scraped(stack, registries["inspector-vqa-worker"], vqa.ready, "inspector-vqa-worker", line),
        ):
            threads = [
                run_in_thread("worker", lambda: worker.run(timeout=300), errors),
                run_in_thread("gateway", lambda: gateway.run(timeout=300), errors),
                run_in_thread("feeder", lambda: feed_bad_records(settings, stop), errors),
                run_in_thread("medical", lambda: medical.run(timeout=300), errors),
                run_in_thread("medical-feeder", lambda: feed_medical(settings, medical.config.topic, studies, stop),
                              errors),
                run_in_thread("vqa", lambda: vqa.run(timeout=300), errors),
                run_in_thread("vqa-feeder", lambda: feed_vqa(settings, vqa.topics.requests, vqa.model.side, stop),
                              errors),
            ]  # fmt: skip
            wait_until_up(stack, line)
            time.sleep(WARMUP_S)
            answers = evaluate_panels(stack, line, proven)
            rules = {expr: api(stack.prometheus_url, expr) for expr in rule_exprs()}
            loaded = loaded_rules(stack.prometheus_url)
            stop.set()
            for service in services:
                service.stop()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        stop.set()
        for service in services:
            service.stop()
        cleanup(
            settings,
            [settings.topics.visible, settings.topics.infrared, settings.topics.dlq, medical.config.topic,
             medical.config.dlq, vqa.topics.requests, vqa.topics.dlq],
            [f"{settings.redis.key_prefix}:", f"{medical.config.key_prefix}:", f"test-{tag}:vqa:"],
        )  # fmt: skip

    report(line, proven, answers, rules, loaded)
    assert not errors, errors
    assert medical.report.stored > 0 and vqa.report.answered > 0, "the medical and VQA workers did their work"
    failed = [
        f"{title}: {expr} -> {answers[expr].get('error') or 'no finite value (or only 0 where NONZERO wants more)'}"
        for title, expr in proven
        if answers[expr].get("status") != "success" or not shows_data(title, answers[expr])
    ]
    assert not failed, "panels without data:\n" + "\n".join(failed)
    broken = [f"{expr}: {body.get('error')}" for expr, body in rules.items() if body.get("status") != "success"]
    assert not broken, "rules that do not evaluate:\n" + "\n".join(broken)
    unhealthy = [
        f"{r['name']}: {r.get('lastError')}" for group in loaded.values() for r in group if r["health"] == "err"
    ]
    assert not unhealthy, "loaded rules that fail in Prometheus:\n" + "\n".join(unhealthy)


def rule_exprs() -> list[str]:
    """The expression of every recording and alert rule in deploy/prometheus/rules."""
    return [
        rule["expr"]
        for path in RULES
        for group in yaml.safe_load(Path(path).read_text())["groups"]
        for rule in group["rules"]
    ]


def report(
    line: str,
    proven: list[tuple[str, str]],
    answers: dict[str, Body],
    rules: dict[str, Body],
    loaded: dict[str, list[Body]],
) -> None:
    """Print what each query returned (shown with ``-s`` or when the test fails)."""
    print(f"\nline={line}: {len(proven)} panel queries evaluated")
    for title, expr in proven:
        body = answers[expr]
        result = body.get("data", {}).get("result", [])
        values = ", ".join(f"{v:.4g}" for v in finite(body)[:4])
        print(f"  [{body.get('status')}] {len(result)} series [{values}]  {title}: {substitute(expr, line)}")
    state = f"{len(loaded)} of their groups loaded there" if loaded else "not loaded there (started before the rules)"
    print(f"rules: {len(rules)} expressions evaluated by the running Prometheus; {state}")
    for name, group in loaded.items():
        print(f"  group {name}: " + ", ".join(f"{r['name']} {r.get('state', r['health'])}" for r in group))
    for expr, body in rules.items():
        series = len(body.get("data", {}).get("result", []))
        print(f"  [{body.get('status')}] {series} series  {' '.join(expr.split())}")
