"""The VQA worker: Kafka ``vqa.requests`` → decode → answer in batches → Redis (TTL) [+ reply topics] → commit.

    worker = VQAWorker(model, AnswerStore(redis_client), consumer, producer, VQATopics(), metrics=VQAMetrics(registry))
    worker.run(timeout=60, count=100)      # or run() until stop() / SIGTERM

Delivery goes through :mod:`workers.kafka`: a request's offset is committed once its answer is stored
(written once per record: :class:`~workers.stores.ClaimedStore`) and its replies acknowledged, or
once its dead letter is. A request the model cannot answer (no id, empty question, unknown words,
random bytes, a grey or non-square image, a ``reply_to`` topic not on the allow-list) goes to the
dead-letter topic with ``dlq_reason`` and, when its id is readable, an error document to its Redis
key; the worker carries on. When Redis or Kafka refuse a write the worker holds (polls nothing new,
keeps its partitions) and retries what failed with back-off (``retry_s`` doubling to 30 s),
``write_attempts`` times in all; then each request still unwritten is dead-lettered as
``write_failed``, so a write that can never succeed does not wedge the worker. Should the
dead-letter topic refuse too, the worker holds until it takes them. Replies are at-least-once
(a record read again after a crash is replied to again; its answer is not stored twice). The
request contract is in :mod:`inspector.vqa.requests`.

Metrics (``VQAMetrics(registry)``):

* ``inspector_vqa_requests_total``: request records read.
* ``inspector_vqa_answers_total``: answers stored.
* ``inspector_vqa_latency_seconds``: record timestamp → answer stored.
* ``inspector_vqa_inference_seconds``: one batched model call.
* ``inspector_vqa_batch_requests``: requests per model call.
* ``inspector_vqa_model_info{fusion,sha256}``.
* the delivery metrics (:mod:`workers.kafka.metrics`) under ``inspector_vqa``: ``dlq_total{reason}``
  (:data:`inspector.vqa.errors.REASONS` and ``write_failed``), ``store_errors_total``, ``holding``,
  ``ready``, ``last_poll_timestamp_seconds``, ``consumer_rebuilds_total``, ``orphaned_joins_total``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, Info
from prometheus_client import Counter as PromCounter

from inspector.vqa.data import decode_image
from inspector.vqa.errors import REASONS, VQAInputError
from inspector.vqa.model import VQAModel
from inspector.vqa.requests import (
    answer_document,
    error_document,
    is_topic_name,
    parse_request,
    request_id_of,
)
from workers.errors import WorkerError
from workers.kafka.checkpoint import Checkpoint, Outcome, Outgoing, Position
from workers.kafka.metrics import DeliveryMetrics
from workers.shell import WorkerShell
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
        self.model = Info("inspector_vqa_model", "The VQA model this worker serves.", registry=r)
        self.delivery = DeliveryMetrics(r, "inspector_vqa", REASONS)


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
    already_stored: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    store_errors: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        rate = self.answered / self.seconds if self.seconds > 0 else 0.0
        return {
            "requests": self.requests, "answered": self.answered, "already_stored": self.already_stored,
            "errors": dict(self.errors),
            "store_errors": self.store_errors, "seconds": round(self.seconds, 3), "answers_per_s": round(rate, 2),
        }  # fmt: skip


class VQAWorker(WorkerShell[VQAReport]):
    """Answer VQA requests from Kafka (see the module docs).

    Args:
        model: The VQA model.
        store: Where answers go.
        consumer: An unsubscribed ``KafkaConsumer`` (offsets committed by hand; tests pass a fake),
            or ``None`` with ``make_consumer``.
        producer: A ``KafkaProducer`` for dead letters and replies.
        topics: Topic names.
        make_consumer: Builds a fresh consumer, now and whenever the watchdog replaces a stuck one.
        metrics: Prometheus metrics; None records nothing.
        batch: Most requests per model call (and per poll).
        write_attempts: Refused rounds of writes before a request still unwritten is dead-lettered
            as ``write_failed`` (7: about a minute of back-off).
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
        make_consumer: Callable[[], Any] | None = None,
        metrics: VQAMetrics | None = None,
        batch: int = 16,
        write_attempts: int = 7,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if write_attempts < 1:
            raise WorkerError(f"write_attempts must be at least 1, got {write_attempts}")
        self.model, self.store, self.producer = model, store, producer
        self.topics = topics or VQATopics()
        self.metrics, self.batch, self.clock = metrics, batch, clock
        self.delivery = metrics.delivery if metrics is not None else None
        self.consumer = self.group_consumer(make_consumer, [self.topics.requests], given=consumer)
        self.checkpoint = Checkpoint(
            self.consumer, producer, store, dlq=self.topics.dlq, retry_s=retry_s, give_up_after=write_attempts,
            metrics=self.delivery,
        )  # fmt: skip
        self.report = VQAReport(errors=self.checkpoint.dead_letters)
        self.info = {"fusion": model.fusion, "sha256": model.sha256[:16]}
        logger.info("serving %s VQA model (sha256 %s)", model.fusion, model.sha256)
        if metrics is not None:
            metrics.model.info(self.info)

    def settled(self) -> int:
        """Requests answered (now or before) or refused."""
        return self.report.answered + self.report.already_stored + sum(self.report.errors.values())

    def step(self) -> int:
        """Poll once (or hold while writes are refused), answer what came, write, commit; records taken."""
        if not self.checkpoint.flush():
            self.consumer.hold(self.checkpoint.retry_at)
            self.polled()
            self.report.store_errors = self.checkpoint.store_errors
            return 0
        polled = self.consumer.poll(200, max_records=self.batch)
        self.polled()
        records = [m for messages in polled.values() for m in messages]
        if records:
            self.report.requests += len(records)
            if self.metrics is not None:
                self.metrics.requests.inc(len(records))
            for m in records:
                self.checkpoint.consumed((m.topic, m.partition, m.offset))
            for outcome in self.handle(records):
                self.checkpoint.add(outcome)
            self.checkpoint.flush()
        self.report.store_errors = self.checkpoint.store_errors
        return len(records)

    def handle(self, records: Sequence[Any]) -> list[Outcome]:
        """What each request became: an answer to store and reply, or a dead letter (with an error document)."""
        good: list[tuple[Any, list[tuple[str, bytes]], Any, Any]] = []
        outcomes: list[Outcome] = []
        for m in records:
            headers = [(str(k), bytes(v or b"")) for k, v in (m.headers or [])]
            try:
                request = parse_request(m.key, m.value, headers, reply_topics=self.topics.reply_topics)
                self.model.tokenizer.encode(request.question)
                image = decode_image(request.image, self.model.side)
            except VQAInputError as exc:
                outcomes.append(self._refused(m, headers, exc.reason, str(exc), request_id_of(m.key, headers)))
                continue
            good.append((m, headers, request, image))
        if not good:
            return outcomes
        started = time.perf_counter()
        try:
            answers = self.model.answer([image for *_, image in good], [request.question for _, _, request, _ in good])
        except Exception as exc:  # a model failure must not stop the worker: dead-letter the batch
            logger.exception("model call failed for %d requests", len(good))
            detail = f"{type(exc).__name__}: {exc}"
            return outcomes + [self._refused(m, h, "model_error", detail, r.request_id) for m, h, r, _ in good]
        if self.metrics is not None:
            self.metrics.inference.observe(time.perf_counter() - started)
            self.metrics.batch.observe(len(good))
        now = self.clock()
        for (m, headers, request, _), answer in zip(good, answers, strict=True):
            at = m.timestamp / 1000 if m.timestamp else now
            document = answer_document(request, answer.to_dict(), self.info, (now - at) * 1000, now)
            position: Position = (m.topic, m.partition, m.offset)
            body, key = json.dumps(document).encode(), request.request_id.encode()
            replies = [
                Outgoing(t, body, key) for t in sorted({t for t in (self.topics.replies, request.reply_to) if t})
            ]

            def give_up(detail: str, m: Any = m, headers: Any = headers, rid: str = request.request_id) -> Outcome:
                return self._refused(m, headers, "write_failed", detail, rid, store_error=False)

            def written(fresh: Any, at: float = at) -> None:
                self._answered(at, bool(fresh))

            outcomes.append(Outcome(
                (position,), item=self.store.claim(_record(position), document), produce=replies,
                written=written, give_up=give_up,
            ))  # fmt: skip
        return outcomes

    def _refused(
        self, m: Any, headers: list[tuple[str, bytes]], reason: str, detail: str, request_id: str | None,
        *, store_error: bool = True,
    ) -> Outcome:  # fmt: skip
        """The dead letter of a request, with its error document when its id is readable."""
        position: Position = (m.topic, m.partition, m.offset)
        letter = self.checkpoint.letter(position, m.value, m.key, headers, reason, detail)
        logger.info("request %s refused: %s (%s)", request_id or "?", reason, detail)
        if request_id and store_error:  # best effort: a store that never takes it does not hold the dead letter back
            plain = Outcome(letter.positions, produce=list(letter.produce), reason=reason)
            letter.item = self.store.claim(_record(position), error_document(request_id, reason, detail, self.clock()))
            letter.give_up = lambda _detail: plain
        return letter

    def _answered(self, at: float, fresh: bool) -> None:
        if not fresh:  # stored before a crash or a rebalance: this record was read again, written once
            self.report.already_stored += 1
            return
        self.report.answered += 1
        if self.metrics is not None:
            self.metrics.answers.inc()
            self.metrics.latency.observe(max(0.0, self.clock() - at))


def _record(position: Position) -> str:
    """A record's identity for the store's claims: ``topic/partition/offset``."""
    return "/".join(map(str, position))
