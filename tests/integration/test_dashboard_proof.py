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
``inspector-vqa-worker``, target label ``line`` unique to this test).

The review-and-retrain loop runs too: the inspection worker keeps evidence in ``tmp_path`` and follows a
model registry there; once it is scraped, the test promotes the model it already serves (a hot swap), runs
``crack-concat`` as a shadow on half the captures (agreements, disagreements) and then promotes a file that
is no model (a load failure: the worker keeps serving). The review station (``create_app``, served by
uvicorn on a free loopback port, job ``inspector-review``) gets a reviewer added through ``UserStore``, who
signs in over HTTP and decides the oldest undecided NG part every 2 s, confirm and false call in turn, through
the same form posts as a browser (CSRF token from the page); fewer than the NG parts arriving, so a backlog
remains.

Once ``rate(...[1m])`` has enough scrapes, each query of ``deploy/grafana/dashboards/inspection.json`` goes
through ``/api/v1/query`` with ``$__rate_interval`` = ``1m``, ``$__range`` = ``1h``, ``$line`` = this test's
line (so the data provably comes from these processes, not from other tests) and any other variable =
``.*``. Each must parse and return at least one series with a finite value, and one above 0 where this test
causes the events (:data:`NONZERO`). The
alert and recording rules of ``deploy/prometheus`` are evaluated too: they must parse; where the stack's
Prometheus has loaded them (``deploy/local/stack.py`` points it at them; a Prometheus started before that
has not), every loaded rule must also be healthy.
"""

from __future__ import annotations

import io
import itertools
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

import httpx
import numpy as np
import pydicom
import pytest
import redis
import uvicorn
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from inspector.commands.medical import DEFAULT_MODEL as MEDICAL_MODEL
from inspector.config import RegistrySettings, ReviewSettings, Settings
from inspector.dataset import list_ids
from inspector.frame import encode_frame
from inspector.medical.phantom import make_study, write_dicom
from inspector.medical.report import load_profile, load_report_model
from inspector.model import shipped_model_path
from inspector.sources import SyntheticSource
from inspector.vqa.data import build_set, encode_png
from tests.conftest import REPO, Stack, free_port
from tests.deploy.test_grafana_dashboards import load_dashboards
from tests.inspector.medical.conftest import TEST_FILES
from tests.integration.frames import create_topics, fresh_settings, part
from tests.workers.review_support import FAST_HASHER, csrf_of
from workers.commands.vqa_worker import SHIPPED as VQA_MODEL
from workers.commands.vqa_worker import build_worker as build_vqa_worker
from workers.commands.vqa_worker import ensure_topics as ensure_vqa_topics
from workers.commands.worker import build_worker
from workers.evidence import EvidenceStore
from workers.gateway import Gateway
from workers.health import HealthServer
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker, study_headers
from workers.metrics import GatewayMetrics
from workers.registry import ModelRegistry
from workers.review import UserStore, create_app
from workers.review.decisions import read_audit
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
    "False-call rate by model version", "Review decisions per minute by kind", "Review backlog",
    "Shadow agreement rate", "Model swaps and load failures (15m)", "Evidence written per minute",
    "Evidence folder size",
)  # fmt: skip
JOBS = {"inspector-worker", "inspector-gateway", "inspector-medical-worker", "inspector-vqa-worker", "inspector-review"}
PHANTOM_SEEDS = (0, 2, 3)  # phantom studies with lesions the shipped report model finds
REVIEWER, REVIEWER_PASSWORD = "proof", "proof-reviews-parts"
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
    """Grafana's variables: ``$__rate_interval`` → ``1m``, ``$__range`` → ``1h``, ``$line`` → this test's line,
    others → ``.*``."""
    values = {"__rate_interval": "1m", "__range": "1h", "line": line}  # the line label is [a-z0-9-]: no regex chars
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), ".*"), expr)


def finite(body: Body) -> list[float]:
    """The finite sample values of an instant-vector answer."""
    values = [float(series["value"][1]) for series in body.get("data", {}).get("result", [])]
    return [v for v in values if math.isfinite(v)]


@contextmanager
def registered(stack: Stack, port: int, job: str, line: str) -> Iterator[None]:
    """Register ``127.0.0.1:port`` with the stack's Prometheus (file-based discovery) until the block ends."""
    target = stack.targets_dir / f"{line}-{job}.json"
    partial = target.with_suffix(".json.partial")  # renamed into place: Prometheus never reads half a file
    partial.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": job, "line": line}}]))
    partial.rename(target)
    try:
        yield
    finally:
        target.unlink(missing_ok=True)


@contextmanager
def scraped(
    stack: Stack, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]], job: str, line: str
) -> Iterator[HealthServer]:
    """Serve ``registry`` and register it with the stack's Prometheus until the block ends."""
    server = HealthServer(registry, ready, port=0)
    server.start()
    try:
        with registered(stack, server.port, job, line):
            yield server
    finally:
        server.stop()


@contextmanager
def review_station(settings: Settings, registry: CollectorRegistry, users: UserStore) -> Iterator[str]:
    """``inspector review``'s app on ``review.bind_address:review.port``, served by uvicorn in a thread; its URL."""
    client = redis.Redis.from_url(settings.redis.url)
    app = create_app(settings, redis=client, evidence=EvidenceStore.from_settings(settings.evidence),
                     registry=registry, users=users, secret=uuid.uuid4().hex)  # fmt: skip
    host, port = settings.review.bind_address, settings.review.port
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="review-station", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert server.started, f"the review station did not start on {host}:{port}"
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        client.close()


def review_parts(url: str, decided: list[str], stop: threading.Event) -> None:
    """Sign in as the reviewer, then every 2 s decide the oldest undecided NG part: confirm and false call in turn."""
    kinds = itertools.cycle(["confirm", "false_call"])
    with httpx.Client(base_url=url, timeout=10) as client:
        token = csrf_of(client.get("/signin").text)
        form = {"username": REVIEWER, "password": REVIEWER_PASSWORD, "csrf_token": token}
        answer = client.post("/signin", data=form)
        assert answer.status_code == 303, f"sign-in refused: {answer.status_code} {answer.text[:200]}"
        token = csrf_of(client.get("/").text)  # the session's token, as the queue page carries it
        while not stop.is_set():
            entries = client.get("/api/queue").json()["entries"]
            waiting = [e for e in entries if e["source"] == "ng" and not e["decision"]]
            if waiting:
                oldest, kind = waiting[-1], next(kinds)
                answer = client.post(
                    f"/part/{oldest['camera_id']}/{oldest['seq']}/decision",
                    data={"kind": kind, "csrf_token": token},
                    headers={"Accept": "application/json"},
                )
                assert answer.status_code == 200, f"decision refused: {answer.status_code} {answer.text[:200]}"
                decided.append(kind)
            stop.wait(2.0)


def follow_the_registry(settings: Settings, swaps: Callable[[], float | None], broken: Path) -> None:
    """Promote the model the worker serves (a hot swap), shadow it with crack-concat on half the captures, and once
    the swap is done promote ``broken``, a file that is no model (a load failure; the served model stays)."""
    client = redis.Redis.from_url(settings.redis.url)
    try:
        registry = ModelRegistry(client, settings.redis.key_prefix, settings.registry.models_dir)
        registry.promote(Path(str(shipped_model_path(settings.worker.model))), who="proof")
        registry.shadow(Path(str(shipped_model_path("crack-concat"))), fraction=0.5, who="proof")
        deadline = time.monotonic() + 60
        while not swaps() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert swaps(), "the worker did not swap in the promoted model within 60 s"
        registry.promote(broken, who="proof")
    finally:
        client.close()


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
    review_files = tmp_path / "review"
    settings = base.model_copy(update={
        "worker": base.worker.model_copy(update={"model": "crack-hffn"}),
        "evidence": base.evidence.model_copy(update={"root": tmp_path / "evidence", "prune_every_s": 5.0}),
        "registry": RegistrySettings(models_dir=tmp_path / "models", poll_s=0.5),
        "review": ReviewSettings(bind_address="127.0.0.1", port=free_port(), users_file=review_files / "users.yaml",
                                 labels=review_files / "labels", audit_log=review_files / "audit.jsonl"),
    })  # fmt: skip
    create_topics(settings)
    users = UserStore(settings.review.users_file, FAST_HASHER)
    users.add(REVIEWER, "reviewer", REVIEWER_PASSWORD)
    no_model = tmp_path / "broken" / "crack-broken.pt"
    no_model.parent.mkdir()
    no_model.write_bytes(b"not a model: promoted to see the workers refuse it")
    decided: list[str] = []
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
            review_station(settings, registries["inspector-review"], users) as review_url,
            registered(stack, settings.review.port, "inspector-review", line),
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
                run_in_thread("reviewer", lambda: review_parts(review_url, decided, stop), errors),
            ]  # fmt: skip
            wait_until_up(stack, line)
            scraped_at = time.monotonic()  # every counter was scraped at its start: increase() sees what follows
            swaps = registries["inspector-worker"].get_sample_value
            follow_the_registry(settings, lambda: swaps("inspector_worker_model_swaps_total"), no_model)
            time.sleep(max(0.0, WARMUP_S - (time.monotonic() - scraped_at)))
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
    value = registries["inspector-review"].get_sample_value
    assert {"confirm", "false_call"} <= set(decided), f"the reviewer decided {decided}"
    assert value("inspector_review_decisions_total", {"kind": "false_call"}) == decided.count("false_call")
    assert len(read_audit(settings.review.audit_log)) == len(decided), "every decision is in the audit log"
    assert list_ids(settings.review.labels), "decisions on parts with evidence became training samples"
    assert value("inspector_review_label_failures_total") == 0, "the station found the evidence the worker wrote"
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
