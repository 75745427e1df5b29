"""The VQA worker: Kafka ``vqa.requests`` → decode → answer in batches → Redis (TTL) [+ reply topic] → commit.

    worker = VQAWorker(model, AnswerStore(redis_client), consumer, producer, VQATopics(), metrics=VQAMetrics(registry))
    worker.run(timeout=60, count=100)      # or run() until stop() / SIGTERM

Delivery is at-least-once: offsets are committed after every answer and dead letter of a poll is
written; storing an answer twice writes the same key again. A request the model cannot answer (no
id, empty question, unknown words, random bytes, a grey or non-square image) goes to the dead-letter
topic with ``dlq_reason`` and, when its id is readable, an error document to its Redis key; the worker
carries on. When Redis or Kafka refuse a write the worker retries with back-off (1 s doubling to 30 s)
and commits nothing it has not written. The contract is in :mod:`inspector.vqa.requests`.

Metrics (``VQAMetrics(registry)``):

* ``inspector_vqa_requests_total``: request records read.
* ``inspector_vqa_answers_total``: answers stored.
* ``inspector_vqa_errors_total{reason}``: refused requests by reason (:data:`inspector.vqa.errors.REASONS`).
* ``inspector_vqa_latency_seconds``: record timestamp → answer stored.
* ``inspector_vqa_inference_seconds``: one batched model call.
* ``inspector_vqa_batch_requests``: requests per model call.
* ``inspector_vqa_store_errors_total``, ``inspector_vqa_ready``, ``inspector_vqa_model_info{fusion,sha256}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info
from prometheus_client import Counter as PromCounter

from inspector.vqa.data import decode_image
from inspector.vqa.errors import REASONS, VQAInputError
from inspector.vqa.model import VQAModel
from inspector.vqa.requests import VQARequest, answer_document, error_document, parse_request, request_id_of
from workers.shell import Backoff, WorkerShell, dead_letter_headers

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class VQAMetrics:
    """The VQA worker's metrics on ``registry`` (see the module docs)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = PromCounter("inspector_vqa_requests_total", "VQA request records read.", registry=r)
        self.answers = PromCounter("inspector_vqa_answers_total", "VQA answers stored.", registry=r)
        self.errors = PromCounter("inspector_vqa_errors_total", "Refused VQA requests.", ["reason"], registry=r)
        self.latency = Histogram(
            "inspector_vqa_latency_seconds", "Request record timestamp to answer stored.", buckets=LATENCY_BUCKETS_S,
            registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "inspector_vqa_inference_seconds", "One batched model call.", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.batch = Histogram(
            "inspector_vqa_batch_requests", "Requests per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.store_errors = PromCounter("inspector_vqa_store_errors_total", "Writes refused (retried).", registry=r)
        self.ready = Gauge("inspector_vqa_ready", "1 when the worker is ready, else 0.", registry=r)
        self.model = Info("inspector_vqa_model", "The VQA model this worker serves.", registry=r)
        for reason in REASONS:
            self.errors.labels(reason)


@dataclass(frozen=True)
class VQATopics:
    """Where requests come from and where dead letters and (optionally) all answers go."""

    requests: str = "vqa.requests"
    dlq: str = "vqa.dlq"
    replies: str | None = None


class AnswerStore:
    """Answer documents in Redis as JSON strings at ``{prefix}:{request_id}`` with a TTL.

    Args:
        client: A ``redis.Redis``.
        prefix: Key prefix.
        ttl_s: Seconds an answer is kept.

    """

    def __init__(self, client: Any, prefix: str = "vqa:answer", ttl_s: int = 24 * 3600) -> None:
        self.client, self.prefix, self.ttl_s = client, prefix, ttl_s

    def key(self, request_id: str) -> str:
        """The Redis key of a request's answer."""
        return f"{self.prefix}:{request_id}"

    def put_many(self, documents: Sequence[dict[str, Any]]) -> None:
        """Write documents in one round trip (idempotent: the same key again)."""
        pipe = self.client.pipeline(transaction=False)
        for document in documents:
            pipe.set(self.key(str(document["request_id"])), json.dumps(document), ex=self.ttl_s)
        pipe.execute()

    def get(self, request_id: str) -> dict[str, Any] | None:
        """A stored document, or None."""
        raw = self.client.get(self.key(request_id))
        return None if raw is None else dict(json.loads(raw))


@dataclass
class VQAReport:
    """What a :meth:`VQAWorker.run` call did."""

    requests: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    store_errors: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        rate = self.answered / self.seconds if self.seconds > 0 else 0.0
        return {
            "requests": self.requests, "answered": self.answered, "errors": dict(self.errors),
            "store_errors": self.store_errors, "seconds": round(self.seconds, 3), "answers_per_s": round(rate, 2),
        }  # fmt: skip


@dataclass
class _Dead:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str
    detail: str
    request_id: str | None


@dataclass
class _Sent:
    at: float  # the request record's timestamp, seconds
    reply_to: str | None


class VQAWorker(WorkerShell[VQAReport]):
    """Answer VQA requests from Kafka (see the module docs).

    Args:
        model: The VQA model.
        store: Where answers go.
        consumer: A ``KafkaConsumer`` subscribed to ``topics.requests`` (offsets committed by hand).
        producer: A ``KafkaProducer`` for dead letters and replies.
        topics: Topic names.
        metrics: Prometheus metrics; None records nothing.
        batch: Most requests per model call (and per poll).
        clock: Wall-clock seconds (tests pass a fake one).

    """

    def __init__(
        self,
        model: VQAModel,
        store: AnswerStore,
        consumer: Any,
        producer: Any,
        topics: VQATopics | None = None,
        *,
        metrics: VQAMetrics | None = None,
        batch: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model, self.store, self.consumer, self.producer = model, store, consumer, producer
        self.topics = topics or VQATopics()
        self.metrics, self.batch, self.clock = metrics, batch, clock
        self.report = VQAReport()
        self.info = {"fusion": model.fusion, "sha256": model.sha256[:16]}
        logger.info("serving %s VQA model (sha256 %s)", model.fusion, model.sha256)
        if metrics is not None:
            metrics.model.info(self.info)

    def settled(self) -> int:
        """Requests answered or refused."""
        return self.report.answered + sum(self.report.errors.values())

    def step(self) -> int:
        """Poll once, answer what came, write, commit; the number of records handled."""
        polled = self.consumer.poll(timeout_ms=200, max_records=self.batch)
        self.polled()
        records = [m for messages in polled.values() for m in messages]
        if not records:
            return 0
        self.report.requests += len(records)
        if self.metrics is not None:
            self.metrics.requests.inc(len(records))
        documents, dead, sent = self.handle(records)
        self._write(documents, dead, sent)
        now = self.clock()
        for item in sent:
            self.report.answered += 1
            if self.metrics is not None:
                self.metrics.answers.inc()
                self.metrics.latency.observe(max(0.0, now - item.at))
        for letter in dead:
            self.report.errors[letter.reason] += 1
            if self.metrics is not None:
                self.metrics.errors.labels(letter.reason).inc()
            logger.info("request %s refused: %s (%s)", letter.request_id or "?", letter.reason, letter.detail)
        self._commit()
        return len(records)

    def handle(self, records: Sequence[Any]) -> tuple[list[dict[str, Any]], list[_Dead], list[_Sent]]:
        """Answer documents, dead letters, and each answer's record send time and reply topic."""
        good: list[tuple[VQARequest, Any, float]] = []
        dead: list[_Dead] = []
        for m in records:
            headers = [(str(k), bytes(v or b"")) for k, v in (m.headers or [])]
            try:
                request = parse_request(m.key, m.value, headers)
                self.model.tokenizer.encode(request.question)
                image = decode_image(request.image, self.model.side)
            except VQAInputError as exc:
                rid = request_id_of(m.key, headers)
                dead.append(_Dead(m.key, m.value or b"", headers, exc.reason, str(exc), rid))
                continue
            good.append((request, image, m.timestamp / 1000 if m.timestamp else self.clock()))
        documents: list[dict[str, Any]] = []
        if not good:
            return documents, dead, []
        started = time.perf_counter()
        try:
            answers = self.model.answer([g[1] for g in good], [g[0].question for g in good])
        except Exception as exc:  # a model failure must not stop the worker: dead-letter the batch
            logger.exception("model call failed for %d requests", len(good))
            detail = f"{type(exc).__name__}: {exc}"
            for request, _, _ in good:
                rid = request.request_id
                headers = [("request_id", rid.encode()), ("question", request.question.encode())]
                dead.append(_Dead(rid.encode(), request.image, headers, "model_error", detail, rid))
            return documents, dead, []
        took = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.inference.observe(took)
            self.metrics.batch.observe(len(good))
        now = self.clock()
        for (request, _, sent), answer in zip(good, answers, strict=True):
            latency_ms = (now - sent) * 1000
            documents.append(answer_document(request, answer.to_dict(), self.info, latency_ms, now))
        return documents, dead, [_Sent(sent, request.reply_to) for request, _, sent in good]

    def _write(self, documents: list[dict[str, Any]], dead: list[_Dead], sent: list[_Sent]) -> None:
        """Store answers and error documents, send replies and dead letters; retry with back-off until done."""
        now = self.clock()
        errors = [error_document(d.request_id, d.reason, d.detail, now) for d in dead if d.request_id]
        backoff = Backoff()
        while True:
            try:
                self.store.put_many(documents + errors)
                futures = [self._send_dead(letter) for letter in dead]
                for document, item in zip(documents, sent, strict=True):
                    futures += self._send_replies(document, item.reply_to)
                self.producer.flush(timeout=10)
                for future in futures:
                    future.get(timeout=10)
                return
            except Exception as exc:  # Redis or Kafka refusing: keep the answers, retry, commit nothing meanwhile
                self.report.store_errors += 1
                if self.metrics is not None:
                    self.metrics.store_errors.inc()
                if self._stopping:
                    logger.warning("stopping with %d answers unwritten: %s", len(documents), exc)
                    raise
                logger.warning(
                    "could not write %d answers: %s; retrying in %.0f s", len(documents), exc, backoff.seconds
                )
                backoff.wait()

    def _send_dead(self, letter: _Dead) -> Any:
        headers = dead_letter_headers(letter.headers, letter.reason, letter.detail)
        return self.producer.send(self.topics.dlq, value=letter.value, key=letter.key, headers=headers)

    def _send_replies(self, document: dict[str, Any], reply_to: str | None) -> list[Any]:
        body = json.dumps(document).encode()
        key = str(document["request_id"]).encode()
        targets = {t for t in (self.topics.replies, reply_to) if t}
        return [self.producer.send(topic, value=body, key=key) for topic in sorted(targets)]

    def _commit(self) -> None:
        try:
            self.consumer.commit()
        except Exception as exc:  # a rebalance in progress: the next owner re-reads and rewrites the same keys
            logger.warning("offset commit failed (%s); the answers are stored, re-delivery is harmless", exc)
