"""One fault-injection run of a request/response worker kind (medical reports, VQA answers) on real processes.

The test process publishes requests at a steady rate to a fresh 4-partition topic (a background
thread, ``acks=all``), ``inspector medical-worker`` or ``inspector vqa-worker`` processes answer them
into Redis, one fault is injected mid-stream, and Redis is then compared with what Kafka holds::

    with ServiceRun(chaos_stack, MEDICAL, "1-sigkill-worker", "SIGKILL one of two workers",
                    requests=140, rate=2.0) as run:
        victim, _ = run.start_workers(2)          # fails the run if the group does not settle: no retry
        run.start_load()
        run.wait_stored(0.4)
        run.fault("SIGKILL worker-0")
        victim.kill()
        run.fault_over()
        run.resolve_victim()                      # the partitions it held: the recovery figures' subject
        figures = run.finish()                    # drain, stop, count, write runs/chaos/medical-1-sigkill-worker.json

What is counted (no process's own report decides the verdict):

- **sent**: request records read back from the request topic after the run, by id (the VQA
  ``request_id`` header, the medical ``study_uid`` header = StudyInstanceUID); records beyond the
  first per id are ``duplicate_requests_in_kafka``.
- **stored**: sent ids whose document is in Redis (a VQA error document does not count).
- **lost** = sent − stored.
- **duplicated**: entries of the store's stream ``{prefix}:stream`` beyond the first per id, plus
  entries for ids never sent. A worker appends one entry per document it stores for the first time
  for a Kafka record; a re-delivered record adds nothing (:mod:`workers.stores`), so a second entry
  is a second result to downstream readers.
- **commits ahead of store**: records seen below the group's committed offset (lag monitor) before
  their id's first stream entry (Redis's clock at the write). Must be 0.
- **mid-stream evidence**: results stored before the fault, requests sent and results stored after
  it — without them the fault did not happen mid-stream and the run proves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from inspector.config import KafkaSettings, Settings, WorkerSettings
from tests.chaos.harness import (
    OUT,
    PrivateStack,
    Proc,
    abort_unsettled,
    forget_figures,
    machine,
    now_utc,
    recovery_lag_s,
    wait_for,
    write_failure,
    write_figures,
)
from workers.audit import KafkaContents, LagMonitor, commits_ahead_of_store, count_duplicates
from workers.clients import kafka_admin, kafka_consumer, kafka_producer

PARTITIONS = 4
SETTLE_S = 90.0  # two workers load their models on two cores, then join

Payload = tuple[str, bytes, list[tuple[str, bytes]]]  # id, value, headers


@dataclass(frozen=True)
class WorkerKind:
    """What differs between the request/response workers under test.

    Attributes:
        name: ``medical`` or ``vqa`` (the figures' ``worker_kind``).
        command: The ``workers.cli`` sub-command.
        group_option: Its consumer-group option.
        id_header: The request header that names a request (the stream entries' ``id``).
        unit: What one request is, for the report.
        model: The model the worker serves, for the report.

    """

    name: str
    command: str
    group_option: str
    id_header: str
    unit: str
    model: str

    def document_key(self, prefix: str, request_id: str) -> str:
        """The Redis key of a request's document (``--prefix`` of the worker)."""
        return f"{prefix}:report:{request_id}" if self.name == "medical" else f"{prefix}:{request_id}"

    def answered(self, document: dict[str, Any]) -> bool:
        """Whether a stored document is a result (a VQA error document is not)."""
        return "error" not in document if self.name == "vqa" else bool(document)


MEDICAL = WorkerKind("medical", "medical-worker", "--group-id", "study_uid", "studies", "medical-report.pt (shipped)")
VQA = WorkerKind("vqa", "vqa-worker", "--group", "request_id", "requests", "vqa-hffn.pt (shipped)")


def medical_payloads(count: int, folder: Path, seed: int) -> list[Payload]:
    """``count`` synthetic phantom CT studies written as DICOM under ``folder``, as claim-check requests."""
    from inspector.medical.phantom import make_study, write_dicom
    from workers.medical import study_headers

    payloads = []
    for index in range(count):
        study = make_study(seed + index)
        path = folder / f"study-{index}"
        write_dicom(study, path)
        payloads.append((study.study_uid, str(path).encode(), study_headers(study.study_uid, "claim")))
    return payloads


def vqa_payloads(count: int, tag: str) -> list[Payload]:
    """``count`` VQA requests (PNG scene + question), each with its own ``request_id``."""
    from inspector.vqa.data import build_set, encode_png

    data = build_set(max(1, count // 10 + 1), seed=31_337)
    pngs = [encode_png(image) for image in data.images]
    payloads = []
    for index in range(count):
        row = index % len(data)
        rid = f"chaos-{tag}-{index}"
        headers = [("request_id", rid.encode()), ("question", data.questions[row].encode())]
        payloads.append((rid, pngs[int(data.scene_index[row])], headers))
    return payloads


@dataclass(eq=False)  # threads are hashed by identity
class Load(threading.Thread):
    """Publishes payloads at ``rate`` per second with ``acks=all`` (a daemon thread); the test's producer.

    Attributes:
        failures: Sends the broker did not acknowledge (their text).
        done_t: When the last send was acknowledged.

    """

    settings: Settings
    topic: str
    payloads: list[Payload]
    rate: float
    failures: list[str] = field(default_factory=list)
    done_t: float | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name="chaos-load")

    def run(self) -> None:
        """Send every payload on schedule, then flush."""
        producer = kafka_producer(self.settings.kafka, acks="all", linger_ms=5, retries=10)
        futures = []
        start = time.monotonic()
        try:
            for index, (rid, value, headers) in enumerate(self.payloads):
                delay = start + index / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(producer.send(self.topic, value=value, key=rid.encode(), headers=headers))
            producer.flush(timeout=120)
            for future in futures:
                try:
                    future.get(timeout=10)
                except Exception as exc:  # counted; the read-back decides what was sent
                    self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            producer.close(timeout=10)
            self.done_t = time.time()


@dataclass
class Requests:
    """What the request topic (and the dead-letter topic) hold after a run."""

    ids: Counter[str] = field(default_factory=Counter)
    positions: dict[tuple[str, int], list[tuple[int, tuple[str, int]]]] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    dead_letters: int = 0


def read_requests(settings: Settings, topic: str, dlq: str, id_header: str, idle_timeout_s: float = 60.0) -> Requests:
    """Every record of the request and dead-letter topics, from the beginning to the current end.

    Raises:
        AssertionError: No progress for ``idle_timeout_s`` before the end was reached.

    """
    from kafka.structs import TopicPartition

    found = Requests()
    consumer = kafka_consumer(
        settings.kafka, group_id=None, enable_auto_commit=False, fetch_max_bytes=64 * 2**20,
        max_partition_fetch_bytes=16 * 2**20,
    )  # fmt: skip
    try:
        parts = [TopicPartition(t, p) for t in (topic, dlq) for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        last_progress = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() - last_progress < idle_timeout_s, f"reading {topic} back stalled"
            for tp, batch in consumer.poll(timeout_ms=500, max_records=5_000).items():
                last_progress = time.monotonic()
                for record in batch:
                    if tp.topic == dlq:
                        found.dead_letters += 1
                        continue
                    rid = dict(record.headers or []).get(id_header, b"").decode(errors="replace")
                    found.ids[rid] += 1
                    found.positions.setdefault((tp.topic, tp.partition), []).append((record.offset, (rid, 0)))
                    found.partition_of.setdefault(rid, tp.partition)
                    found.sent_at.setdefault(rid, record.timestamp / 1000)
    finally:
        consumer.close()
    return found


def read_stream(client: Any, stream: str) -> list[tuple[str, str, float]]:
    """Every entry of a store's stream as ``(id, key, Redis time in s)``."""
    entries: list[tuple[str, str, float]] = []
    last = "-"
    while True:
        chunk = client.xrange(stream, min=last, max="+", count=10_000)
        if last != "-":
            chunk = chunk[1:]  # the entry we started from
        if not chunk:
            return entries
        for entry_id, fields in chunk:
            t = int(entry_id.decode().split("-")[0]) / 1000
            entries.append((fields[b"id"].decode(), fields[b"key"].decode(), t))
        last = chunk[-1][0].decode()


def stream_duplicates(entries: list[tuple[str, str, float]], sent: set[str]) -> int:
    """Stream entries beyond the first per id, plus entries for ids never sent: results seen twice downstream."""
    duplicated, unexpected = count_duplicates(((rid, 0) for rid, _, _ in entries), {(r, 0) for r in sent})
    return duplicated + unexpected


def stored_ids(client: Any, kind: WorkerKind, prefix: str, ids: list[str]) -> set[str]:
    """The ids among ``ids`` whose result document is in Redis."""
    found = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for rid, raw in zip(chunk, client.mget([kind.document_key(prefix, r) for r in chunk]), strict=True):
            if raw is not None and kind.answered(json.loads(raw)):
                found.add(rid)
    return found


class ServiceRun:
    """One scenario of one worker kind: topics, Redis prefix, worker processes, load, monitor, figures.

    Args:
        stack: The private stack.
        kind: :data:`MEDICAL` or :data:`VQA`.
        scenario: Scenario id shared with the inspection scenarios, e.g. ``1-sigkill-worker``.
        title: What the fault is, for the report.
        requests: Requests published (each with its own id).
        rate: Requests per second offered.

    """

    def __init__(
        self, stack: PrivateStack, kind: WorkerKind, scenario: str, title: str, *, requests: int, rate: float
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.stack, self.kind, self.scenario, self.title, self.tag = stack, kind, scenario, title, tag
        self.name = f"{kind.name}-{scenario}"
        self.folder = OUT / "logs" / self.name
        self.topic, self.dlq = f"chaos-{kind.name}-{tag}", f"chaos-{kind.name}-dlq-{tag}"
        self.prefix = f"chaos-{tag}:{kind.name}"
        self.settings = Settings(
            kafka=KafkaSettings(bootstrap=stack.bootstrap), worker=WorkerSettings(group_id=f"chaos-{kind.name}-{tag}")
        )
        self.requests, self.rate = requests, rate
        self.client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
        self.monitor = LagMonitor(self.settings, PARTITIONS, topics=[self.topic])
        self.workers: list[Proc] = []
        self.load: Load | None = None
        self.data = Path(tempfile.mkdtemp(prefix=f"chaos-{kind.name}-"))
        self.payloads: list[Payload] = []
        self.fault_t: float | None = None
        self.fault_end_t: float | None = None
        self.fault_text = ""
        self.affected: set[int] = set(range(PARTITIONS))
        self.notes: dict[str, Any] = {}
        self.members: dict[str, set[int]] = {}
        self.started_at = time.time()
        self.figures_written = False

    # -- processes --------------------------------------------------------------------------------

    def __enter__(self) -> ServiceRun:
        forget_figures(self.name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        from kafka.admin import NewTopic

        admin = kafka_admin(self.settings.kafka)
        try:
            admin.create_topics([NewTopic(self.topic, PARTITIONS, 1), NewTopic(self.dlq, 1, 1)])
        finally:
            admin.close()
        t0 = time.monotonic()
        if self.kind is MEDICAL:
            self.payloads = medical_payloads(self.requests, self.data, seed=int(self.tag, 16) % 10**6 * 1000)
        else:
            self.payloads = vqa_payloads(self.requests, self.tag)
        self.notes["payloads_built_s"] = round(time.monotonic() - t0, 1)
        self.monitor.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and not self.figures_written:
            write_failure(self.name, self.title, self.kind.name, exc)
        for proc in self.workers:
            if proc.alive():
                proc.signal(signal.SIGCONT)
                proc.kill()
        if self.monitor.is_alive():
            self.monitor.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
        return env | {
            "INSPECTOR__KAFKA__BOOTSTRAP": self.stack.bootstrap,
            "INSPECTOR__REDIS__URL": self.stack.redis_url,
            "INSPECTOR__METRICS__PORT": "0",  # a free port each
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONFAULTHANDLER": "1",  # SIGABRT writes every thread's stack to the log
        }

    def _command(self) -> list[str]:
        kind = self.kind
        command = [sys.executable, "-m", "workers.cli", kind.command, "--json", "--topic", self.topic, "--dlq",
                   self.dlq, kind.group_option, self.settings.worker.group_id, "--prefix", self.prefix]  # fmt: skip
        if kind is MEDICAL:
            return [*command, "--claim-root", str(self.data)]
        return [*command, "--threads", "1", "--partitions", str(PARTITIONS)]

    def group(self) -> dict[str, Any]:
        """The broker's description of the worker group (``describe_groups``); empty when it cannot answer."""
        admin = None
        try:
            admin = kafka_admin(self.settings.kafka, request_timeout_ms=5000)
            group = self.settings.worker.group_id
            described: dict[str, Any] = admin.describe_groups([group]).get(group, {})
            return described
        except Exception:  # the broker busy or restarting: not settled yet
            return {}
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()

    @staticmethod
    def assignments(group: dict[str, Any]) -> dict[str, set[int]]:
        """Per member id, the request-topic partitions the broker has assigned it (none while it rebalances)."""
        owned: dict[str, set[int]] = {}
        for member in group.get("members", []):
            assignment = member.get("member_assignment")
            listed = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
            owned[member["member_id"]] = {p for a in listed for p in a["partitions"]}
        return owned

    def start_workers(self, n: int) -> list[Proc]:
        """Start ``n`` worker processes and wait until the group is Stable with each holding a disjoint share.

        Only once: a group that has not settled within :data:`SETTLE_S` fails the run (stacks via
        SIGABRT, logs kept as ``worker-N.stuck.log``).
        """
        first = len(self.workers)
        new = [Proc(f"worker-{first + i}", self._command(), self._env(), self.folder) for i in range(n)]
        self.workers += new
        seen: dict[str, Any] = {}

        def settled() -> bool:
            if not all(w.alive() for w in self.workers):
                return False
            seen["group"] = group = self.group()
            owned = list(self.assignments(group).values())
            return (
                group.get("group_state") == "Stable" and len(owned) == len(self.workers) and all(owned)
                and set().union(*owned) == set(range(PARTITIONS)) and sum(map(len, owned)) == PARTITIONS
            )  # fmt: skip

        t0 = time.monotonic()
        try:
            wait_for(settled, SETTLE_S, f"{n} {self.kind.name} workers to share the partitions", every=1.0)
        except AssertionError as exc:
            group = seen.get("group", {})
            state, owned = group.get("group_state"), self.assignments(group)
            raise AssertionError(f"{exc} (group {state}, assignments {owned})\n{abort_unsettled(new)}") from exc
        self.notes.setdefault("workers_settled_s", []).append(round(time.monotonic() - t0, 1))
        self.members = self.assignments(seen["group"])
        return new

    def resolve_victim(self, timeout: float = 60) -> None:
        """After a worker was killed: wait for the group to hold one member less, and note what the gone one held.

        The broker names members by id, not by process, so the killed worker's partitions are those of
        the member that left; they become :attr:`affected` (the recovery figures look at them).
        """
        before = dict(self.members)

        def fewer() -> bool:
            now = self.assignments(self.group())
            gone = set(before) - set(now)
            if gone and len(now) == len(before) - 1 and all(now.values()):
                self.affected = set().union(*(before[m] for m in gone))
                self.notes["partitions_moved_after_s"] = round(time.time() - (self.fault_t or 0), 1)
                return True
            return False

        wait_for(fewer, timeout, "the killed worker's partitions to move to the other worker", every=0.5)

    # -- the stream -------------------------------------------------------------------------------

    def start_load(self) -> Load:
        """Start publishing the requests at ``rate`` (a background thread)."""
        self.load = Load(self.settings, self.topic, self.payloads, self.rate)
        self.started_at = time.time()
        self.load.start()
        return self.load

    def stored_count(self) -> int:
        """Entries in the store's stream now (0 while Redis is down)."""
        try:
            return int(self.client.xlen(f"{self.prefix}:stream"))
        except redis.RedisError:
            return 0

    def wait_stored(self, share: float, timeout: float = 240) -> None:
        """Wait until ``share`` of the requests have results (the stream is mid-way)."""
        target = max(1, int(share * self.requests))
        try:
            wait_for(lambda: self.stored_count() >= target, timeout, f"{target} results in {self.prefix}:stream")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(p.tail() for p in self.workers)) from exc

    def fault(self, text: str) -> None:
        """The fault starts now."""
        self.fault_t, self.fault_text = time.time(), text

    def fault_over(self) -> None:
        """The fault is over (the service is back, the process is killed)."""
        self.fault_end_t = time.time()

    # -- the end ----------------------------------------------------------------------------------

    def finish(self, drain_timeout: float = 180) -> dict[str, Any]:
        """Let the load end, wait for the results, stop the workers, count, write the JSON, return it."""
        assert self.load is not None, "start_load() was never called"
        self.load.join(timeout=self.requests / self.rate + 120)
        found = read_requests(self.settings, self.topic, self.dlq, self.kind.id_header)
        try:
            wait_for(lambda: self.stored_count() >= len(found.ids), drain_timeout, "every request sent to be stored")
            wait_for(self._caught_up, 30, "the group to commit everything")
        except AssertionError as exc:
            self.notes["drain"] = str(exc)
        time.sleep(2)  # anything late would show up as an extra stream entry
        end_t = time.time()
        reports = [w.stop() for w in self.workers]
        self.monitor.stop()
        figures = self._figures(found, reports, end_t)
        write_figures(self.name, figures)
        self.figures_written = True
        self.notes["logs"] = "\n".join(p.tail(150 if p.stuck else 25) for p in self.workers)
        return figures

    def _caught_up(self) -> bool:
        samples = self.monitor.samples
        return bool(samples) and samples[-1].lag == 0 and samples[-1].t > time.time() - 2

    def _figures(self, found: Requests, reports: list[dict[str, Any] | None], end_t: float) -> dict[str, Any]:
        sent = set(found.ids) - {""}
        stored = stored_ids(self.client, self.kind, self.prefix, sorted(sent))
        entries = read_stream(self.client, f"{self.prefix}:stream")
        stored_at: dict[str, float] = {}
        for rid, _, t in entries:
            stored_at.setdefault(rid, t)
        contents = KafkaContents(positions=found.positions)  # one "capture" (id, 0) per request record
        ahead = commits_ahead_of_store(self.monitor.samples, contents, {(r, 0): t for r, t in stored_at.items()})
        start = self.started_at
        last_store = max(stored_at.values(), default=end_t)
        failures = self.load.failures if self.load else []
        figures: dict[str, Any] = {
            "scenario": self.scenario,
            "fault": self.title,
            "worker_kind": self.kind.name,
            "first_attempt": True,  # a group that does not settle fails the run; nothing is restarted
            "date": now_utc(),
            "machine": machine(),
            "model": self.kind.model,
            "unit": self.kind.unit,
            "partitions": PARTITIONS,
            "workers": len(self.workers),
            "offered_requests_per_s": self.rate,
            "duration_s": round(last_store - start, 1),
            "requests_requested": self.requests,
            "requests_sent": len(sent),
            "results_stored": len(stored),
            "lost": len(sent - stored),
            "lost_first": sorted(sent - stored)[:40],
            "duplicated": stream_duplicates(entries, sent),
            "stream_entries": len(entries),
            "duplicate_requests_in_kafka": sum(n - 1 for n in found.ids.values() if n > 1),
            "records_without_id": found.ids.get("", 0),
            "dead_letters": found.dead_letters,
            "producer_failures": len(failures),
            "worker_reports": sum(1 for r in reports if r),
            "store_errors": sum(int(r.get("store_errors", 0)) for r in reports if r),
            "commits_ahead_of_store": ahead,
            "lag_samples": len(self.monitor.samples),
            "lag_sample_failures": self.monitor.failures,
        }
        # evidence that the fault re-delivered records: read again, found claimed, written once
        figures["redelivered_already_stored"] = sum(int(r.get("already_stored", 0)) for r in reports if r)
        if self.fault_t is not None:
            fault_t, fault_end = self.fault_t, self.fault_end_t or self.fault_t
            after = [t for r, t in stored_at.items() if found.partition_of.get(r) in self.affected
                     and found.sent_at.get(r, 0.0) > fault_t]  # fmt: skip
            lag_s, ceiling, worst = recovery_lag_s(self.monitor.samples, fault_t, start + 5)
            figures |= {
                "fault_detail": self.fault_text,
                "fault_at_s": round(fault_t - start, 1),
                "fault_lasted_s": round(fault_end - fault_t, 1),
                "affected_partitions": sorted(self.affected),
                "stored_before_fault": sum(1 for t in stored_at.values() if t < fault_t),
                "sent_after_fault": sum(1 for r in sent if found.sent_at.get(r, 0.0) > fault_end),
                "stored_after_fault": sum(1 for t in stored_at.values() if t > fault_end),
                "affected_stored_after_fault": sum(
                    1 for r, t in stored_at.items() if t > fault_end and found.partition_of.get(r) in self.affected
                ),
                "recovery_first_result_s": round(min(after) - fault_t, 2) if after else None,
                "recovery_lag_s": lag_s,
                "lag_ceiling_before_fault": ceiling,
                "lag_worst_after_fault": worst,
            }
        figures["lag_series"] = [[round(s.t - start, 1), s.lag] for s in self.monitor.samples[::2] if s.t >= start]
        figures |= {k: v for k, v in self.notes.items() if k != "logs"}
        return figures


def assert_measured_no_loss_no_duplicates(figures: dict[str, Any], run: ServiceRun) -> None:
    """The verdict of every service scenario: something was measured, the fault was mid-stream, 0 lost, 0 twice."""
    summary = {k: v for k, v in figures.items() if k != "lag_series"}
    message = f"{json.dumps(summary, indent=1)}\n{run.notes.get('logs', '')}"
    assert figures["first_attempt"] is True, message
    assert figures["requests_sent"] > 0, message
    assert figures["requests_sent"] == figures["requests_requested"], message
    assert figures["stored_before_fault"] > 0, f"nothing was stored before the fault: not mid-stream\n{message}"
    assert figures["sent_after_fault"] > 0, f"no request was sent after the fault: not mid-stream\n{message}"
    assert figures["stored_after_fault"] > 0, f"nothing was stored after the fault\n{message}"
    assert figures["affected_stored_after_fault"] > 0, f"the affected partitions never recovered\n{message}"
    assert figures["lost"] == 0, message
    assert figures["duplicated"] == 0, message
    assert figures["stream_entries"] == figures["results_stored"], message
    assert figures["results_stored"] == figures["requests_sent"], message
    assert figures["duplicate_requests_in_kafka"] == 0, message
    assert figures["records_without_id"] == 0, message
    assert figures["dead_letters"] == 0, message
    assert figures["commits_ahead_of_store"] == 0, message
