"""The VQA worker: Kafka ``vqa.requests`` → decode → answer in batches → Redis (TTL) [+ reply topic] → commit.

    worker = VQAWorker(model, AnswerStore(redis_client), consumer, producer, VQATopics(), metrics=VQAMetrics(registry))
    worker.run(timeout=60, count=100)      # or run() until stop() / SIGTERM

Delivery is at-least-once: offsets are committed after every answer and dead letter of a poll is
written; storing an answer twice writes the same key again. A request the model cannot answer (no
id, empty question, unknown words, random bytes, a grey or non-square image, a ``reply_to`` topic not
on the allow-list) goes to the dead-letter topic with ``dlq_reason`` and, when its id is readable, an
error document to its Redis key; the worker carries on. When Redis or Kafka refuse a write the worker
retries what failed with back-off (``retry_s`` doubling to 30 s), ``write_attempts`` times in all;
then each request whose answer is still unwritten is dead-lettered as ``write_failed``, so a write
that can never succeed does not wedge the worker. Should the dead-letter topic refuse too, the worker
holds (back-off, nothing committed) until it takes them. The contract is in :mod:`inspector.vqa.requests`.

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
from inspector.vqa.requests import (
    VQARequest,
    answer_document,
    error_document,
    is_topic_name,
    parse_request,
    request_id_of,
)
from workers.errors import WorkerError
from workers.shell import Backoff, WorkerShell, dead_letter_headers
from workers.stores import Claim, ClaimedStore

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
    """Where requests come from, where dead letters and (optionally) all answers go, and where a request may ask.

    Attributes:
        requests: The request topic.
        dlq: The dead-letter topic.
        replies: Also publish every answer here.
        allowed_replies: The topics a request's ``reply_to`` header may name, besides ``replies``;
            empty: none (a request naming another is dead-lettered as ``reply_to_not_allowed``).

    Raises:
        WorkerError: A name is not a Kafka topic name.

    """

    requests: str = "vqa.requests"
    dlq: str = "vqa.dlq"
    replies: str | None = None
    allowed_replies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = (self.requests, self.dlq, self.replies, *self.allowed_replies)
        bad = [repr(name) for name in names if name is not None and not is_topic_name(name)]
        if bad:
            msg = (
                f"{', '.join(bad)}: not a Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -): "
                "fix --topic, --dlq, --reply-topic or --allow-reply-to"
            )
            raise WorkerError(msg)

    @property
    def reply_topics(self) -> frozenset[str]:
        """The topics a request's ``reply_to`` may name: ``allowed_replies`` and ``replies``."""
        return frozenset(self.allowed_replies) | ({self.replies} if self.replies else frozenset())


class AnswerStore(ClaimedStore):
    """Answer documents in Redis as JSON at ``{prefix}:{request_id}`` with a TTL, written once per record.

    Args:
        client: A ``redis.Redis``.
        prefix: Key prefix (also of the ``{prefix}:stream`` of answers written).
        ttl_s: Seconds an answer is kept.

    """

    def __init__(self, client: Any, prefix: str = "vqa:answer", ttl_s: int = 24 * 3600) -> None:
        super().__init__(client, prefix, ttl_s)

    def key(self, request_id: str) -> str:
        """The Redis key of a request's answer."""
        return f"{self.prefix}:{request_id}"

    def claim(self, record: str, document: dict[str, Any]) -> Claim:
        """The write of ``document`` for the record ``topic/partition/offset``."""
        request_id = str(document["request_id"])
        return Claim(record, self.key(request_id), request_id, json.dumps(document))

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
    record: str


@dataclass
class _Sent:
    """An answered request: its record's send time (seconds), the request, and its record's key and headers."""

    at: float
    request: VQARequest
    key: bytes | None
    headers: list[tuple[str, bytes]]
    record: str

    def letter(self, reason: str, detail: str) -> _Dead:
        """The dead letter of this request."""
        return _Dead(self.key, self.request.image, self.headers, reason, detail, self.request.request_id, self.record)


@dataclass(frozen=True)
class _Out:
    """One record to produce; ``owner``: the answered request (index into the batch) it replies for, else None."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    owner: int | None = None


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
        write_attempts: Tries to store and send a batch's answers before the unwritten ones are
            dead-lettered as ``write_failed`` (7: about a minute of back-off).
        retry_s: First back-off after a refused write; doubles up to 30 s.
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
        write_attempts: int = 7,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if write_attempts < 1:
            raise WorkerError(f"write_attempts must be at least 1, got {write_attempts}")
        self.model, self.store, self.consumer, self.producer = model, store, consumer, producer
        self.topics = topics or VQATopics()
        self.metrics, self.batch, self.clock = metrics, batch, clock
        self.write_attempts, self.retry_s = write_attempts, retry_s
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
        failed = self._write(documents, dead, sent)
        now = self.clock()
        for index, item in enumerate(sent):
            if index in failed:
                continue
            self.report.answered += 1
            if self.metrics is not None:
                self.metrics.answers.inc()
                self.metrics.latency.observe(max(0.0, now - item.at))
        for letter in [*dead, *failed.values()]:
            self.report.errors[letter.reason] += 1
            if self.metrics is not None:
                self.metrics.errors.labels(letter.reason).inc()
            logger.info("request %s refused: %s (%s)", letter.request_id or "?", letter.reason, letter.detail)
        self._commit()
        return len(records)

    def handle(self, records: Sequence[Any]) -> tuple[list[dict[str, Any]], list[_Dead], list[_Sent]]:
        """Answer documents, dead letters, and the answered requests (in the documents' order)."""
        good: list[tuple[_Sent, Any]] = []
        dead: list[_Dead] = []
        for m in records:
            headers = [(str(k), bytes(v or b"")) for k, v in (m.headers or [])]
            record = f"{m.topic}/{m.partition}/{m.offset}"
            try:
                request = parse_request(m.key, m.value, headers, reply_topics=self.topics.reply_topics)
                self.model.tokenizer.encode(request.question)
                image = decode_image(request.image, self.model.side)
            except VQAInputError as exc:
                rid = request_id_of(m.key, headers)
                dead.append(_Dead(m.key, m.value or b"", headers, exc.reason, str(exc), rid, record))
                continue
            at = m.timestamp / 1000 if m.timestamp else self.clock()
            good.append((_Sent(at, request, m.key, headers, record), image))
        documents: list[dict[str, Any]] = []
        if not good:
            return documents, dead, []
        started = time.perf_counter()
        try:
            answers = self.model.answer([image for _, image in good], [item.request.question for item, _ in good])
        except Exception as exc:  # a model failure must not stop the worker: dead-letter the batch
            logger.exception("model call failed for %d requests", len(good))
            detail = f"{type(exc).__name__}: {exc}"
            return documents, dead + [item.letter("model_error", detail) for item, _ in good], []
        took = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.inference.observe(took)
            self.metrics.batch.observe(len(good))
        now = self.clock()
        for (item, _), answer in zip(good, answers, strict=True):
            latency_ms = (now - item.at) * 1000
            documents.append(answer_document(item.request, answer.to_dict(), self.info, latency_ms, now))
        return documents, dead, [item for item, _ in good]

    def _write(self, documents: list[dict[str, Any]], dead: list[_Dead], sent: list[_Sent]) -> dict[int, _Dead]:
        """Store answers and error documents, send dead letters and replies; the requests given up on.

        What fails is retried with back-off, and only what failed (a reply already sent is not sent
        again), ``write_attempts`` times in all. Then every answered request whose answer is still
        unstored or unsent is dead-lettered as ``write_failed`` (returned by its index in ``sent``),
        and the dead letters are sent until the dead-letter topic takes them: the caller commits only
        once every request is written or dead-lettered.

        Raises:
            WorkerError: Asked to stop while a write was still refused (nothing is committed).

        """
        now = self.clock()
        unstored = [self.store.claim(item.record, document) for document, item in zip(documents, sent, strict=True)]
        unstored += [
            self.store.claim(d.record, error_document(d.request_id, d.reason, d.detail, now))
            for d in dead
            if d.request_id
        ]
        outgoing = [self._dead_letter(letter) for letter in dead]
        for owner, (document, item) in enumerate(zip(documents, sent, strict=True)):
            outgoing += self._replies(document, item.request.reply_to, owner)
        backoff, why = Backoff(self.retry_s), ""
        for attempt in range(self.write_attempts):
            if attempt:
                self._wait(backoff, f"could not write {len(documents)} answers ({why})")
            if unstored:
                try:
                    self.store.put_many(unstored)
                    unstored = []
                except Exception as exc:  # Redis refusing: keep the answers, retry, commit nothing meanwhile
                    why = f"Redis: {type(exc).__name__}: {exc}"
                    self._refused()
                    continue
            outgoing, why = self._send(outgoing)
            if not outgoing:
                return {}
            self._refused()
        given_up = range(len(sent)) if unstored else sorted({o.owner for o in outgoing if o.owner is not None})
        detail = f"the answer could not be written in {self.write_attempts} attempts: {why}"
        failed = {index: sent[index].letter("write_failed", detail) for index in given_up}
        logger.error("giving up on %d answers after %d attempts: %s", len(failed), self.write_attempts, why)
        outgoing = [o for o in outgoing if o.owner is None] + [self._dead_letter(d) for d in failed.values()]
        while True:
            outgoing, why = self._send(outgoing)
            if not outgoing:
                return failed
            self._refused()
            self._wait(backoff, f"the dead-letter topic {self.topics.dlq} refuses {len(outgoing)} records ({why})")

    def _send(self, outgoing: list[_Out]) -> tuple[list[_Out], str]:
        """Produce records and wait for the broker's acknowledgements; those it did not take, and why."""
        futures: list[tuple[_Out, Any]] = []
        failed: list[_Out] = []
        why = ""
        for out in outgoing:
            try:
                futures.append((out, self.producer.send(out.topic, value=out.value, key=out.key, headers=out.headers)))
            except Exception as exc:  # kafka-python raises on send for a topic it cannot get metadata for
                failed.append(out)
                why = f"{out.topic}: {type(exc).__name__}: {exc}"
        if futures:
            try:
                self.producer.flush(timeout=10)
            except Exception as exc:  # a timeout: the futures not done fail below
                why = f"flush: {type(exc).__name__}: {exc}"
        for out, future in futures:
            try:
                future.get(timeout=10)
            except Exception as exc:  # the broker refused (a forbidden topic) or timed out
                failed.append(out)
                why = f"{out.topic}: {type(exc).__name__}: {exc}"
        return failed, why

    def _refused(self) -> None:
        self.report.store_errors += 1
        if self.metrics is not None:
            self.metrics.store_errors.inc()

    def _wait(self, backoff: Backoff, problem: str) -> None:
        """Back off before trying again; refuse to when asked to stop (nothing is committed)."""
        if self._stopping:
            raise WorkerError(f"stopping: {problem}; nothing past it is committed, the next worker reads it again")
        logger.warning("%s; retrying in %.0f s", problem, backoff.seconds)
        backoff.wait()

    def _dead_letter(self, letter: _Dead) -> _Out:
        headers = dead_letter_headers(letter.headers, letter.reason, letter.detail)
        return _Out(self.topics.dlq, letter.value, letter.key, headers)

    def _replies(self, document: dict[str, Any], reply_to: str | None, owner: int) -> list[_Out]:
        body = json.dumps(document).encode()
        key = str(document["request_id"]).encode()
        targets = {t for t in (self.topics.replies, reply_to) if t}
        return [_Out(topic, body, key, owner=owner) for topic in sorted(targets)]

    def _commit(self) -> None:
        try:
            self.consumer.commit()
        except Exception as exc:  # a rebalance in progress: the next owner re-reads and rewrites the same keys
            logger.warning("offset commit failed (%s); the answers are stored, re-delivery is harmless", exc)
