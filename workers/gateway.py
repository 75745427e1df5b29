"""The camera gateway: captures from a source → frames → the co-partitioned Kafka frame topics.

Wiring only; the captures and their encoding come from :mod:`inspector.sources`::

    gateway = Gateway(settings, SyntheticSource(["rig-1"]), GatewayMetrics(registry), fps=5)
    report = gateway.run(count=100)          # or until timeout, the source ends, SIGTERM or Ctrl-C

Each frame is one record: key ``camera_id``, value the encoded pixels, headers ``Frame.to_headers()``
(docs/MESSAGES.md). The producer is idempotent with ``acks=all``, so its own retries never duplicate
a frame. A frame is *published* once the broker acknowledged it; publish latency is send → ack.

A restarted gateway must not publish a trigger number twice: a camera's counter keeps counting
while the gateway is down, and the workers store one result per ``(camera_id, seq)``, so a reused
seq would be taken for a re-delivery of the old capture and the new part never inspected. Sources
that make up their own counter (the synthetic one) therefore resume after the highest seq already in
the frame topics (:func:`last_published_seqs`), which is exactly what the broker acknowledged —
frames still in the producer's buffer when a gateway died were never published.
Nothing stops the run but its limits and signals: a capture the source lost, a frame that could not be
encoded, a send the broker refused (after the producer's retries) or a frame that found more than
``max_pending_bytes`` waiting for acknowledgement (the broker is down or too slow: the gateway drops
new frames rather than hold the camera or grow without bound) is counted as dropped, by reason.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, cast

import numpy as np

from inspector.config import Settings, TopicSettings
from inspector.frame import FrameEncodeError
from inspector.sources import Capture, SourceError, capture_to_records, pace
from workers.clients import ClientError, kafka_admin, kafka_consumer, kafka_producer
from workers.errors import WorkerError
from workers.kafka.topics import TopicSpec, partition_counts, with_admin
from workers.kafka.topics import ensure_topics as ensure_kafka_topics
from workers.metrics import DROP_REASONS, MODALITIES, GatewayMetrics

__all__ = ["Gateway", "GatewayReport", "ensure_topics", "last_published_seqs", "make_producer", "prepare_topics"]

logger = logging.getLogger(__name__)

_LATENCY_WINDOW = 100_000  # frames whose publish latency the report's percentiles cover
_MAX_ERRORS = 10  # distinct error messages kept for the report
_RECORD_OVERHEAD = 64 * 1024  # room for key, headers and batch framing above the pixel bytes


@dataclass
class GatewayReport:
    """What a gateway run did.

    Attributes:
        captures: Items taken from the source (captures, and captures it reported lost).
        published: Frames acknowledged by the broker, by modality.
        dropped: Frames lost, by reason (``source_error`` counts captures the source lost).
        source_reconnects: Times the source reopened its camera.
        seconds: Duration of the run.
        publish_p50_ms: Median send → ack latency (``None`` before the first ack).
        publish_p95_ms: 95th percentile of the same.
        stop_reason: ``count``, ``timeout``, ``signal``, ``stopped`` (:meth:`Gateway.stop`), ``source_end``
            or ``source_failed``.
        errors: The first distinct error messages, for the person running it.

    """

    captures: int = 0
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    source_reconnects: int = 0
    seconds: float = 0.0
    publish_p50_ms: float | None = None
    publish_p95_ms: float | None = None
    stop_reason: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def frames_published(self) -> int:
        """All frames the broker acknowledged."""
        return sum(self.published.values())

    @property
    def frames_dropped(self) -> int:
        """All frames (and lost captures) counted as dropped."""
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able values."""
        return {
            "captures": self.captures,
            "published": dict(self.published),
            "dropped": dict(self.dropped),
            "frames_published": self.frames_published,
            "frames_dropped": self.frames_dropped,
            "source_reconnects": self.source_reconnects,
            "seconds": round(self.seconds, 3),
            "publish_p50_ms": self.publish_p50_ms,
            "publish_p95_ms": self.publish_p95_ms,
            "stop_reason": self.stop_reason,
            "errors": list(self.errors),
        }


def _unequal(topics: TopicSettings, visible: int, infrared: int) -> WorkerError:
    wanted = max(visible, infrared)
    smaller = topics.visible if visible < infrared else topics.infrared
    msg = (
        f"Kafka topics {topics.visible} ({visible} partitions) and {topics.infrared} ({infrared}) must have equal "
        f"partition counts, so that both frames of a capture land in the same partition number: recreate {smaller} "
        f"with {wanted} partitions (delete it; the gateway creates a missing frame topic with as many partitions as "
        f"the other), or add partitions with `kafka-topics.sh --alter --topic {smaller} --partitions {wanted}` "
        "once both topics are drained (keys move to other partitions)"
    )
    return WorkerError(msg)


def ensure_topics(
    admin: Any, topics: TopicSettings, *, max_message_bytes: int | None = None, timeout_ms: int = 30_000
) -> dict[str, int]:
    """Create the frame topics and the dead-letter topic if missing; check that the frame topics are co-partitioned.

    A missing frame topic is created with as many partitions as the other one has, or with
    ``topics.partitions`` when both are missing; the dead-letter topic with ``topics.partitions``.

    Args:
        admin: A ``kafka.KafkaAdminClient``.
        topics: Topic names, partition count and replication factor.
        max_message_bytes: ``max.message.bytes`` of created topics (large frames need more than the
            broker's 1 MiB default); ``None`` keeps the broker's default.
        timeout_ms: How long to wait for created topics to have leaders.

    Returns:
        The partition count of each of the three topics.

    Raises:
        WorkerError: The frame topics have unequal partition counts (the message says how to fix
            it), two topic settings name the same topic, or the broker refused to create one.

    """
    names = [topics.visible, topics.infrared, topics.dlq]
    if len(set(names)) != 3:
        msg = f"topics.visible, topics.infrared and topics.dlq must be three different topics, got {names}"
        raise WorkerError(msg)
    found = partition_counts(admin, names)
    visible, infrared = found.get(topics.visible), found.get(topics.infrared)
    if visible is not None and infrared is not None and visible != infrared:
        raise _unequal(topics, visible, infrared)
    frame_partitions = visible or infrared or topics.partitions
    wanted = {name: frame_partitions for name in names[:2] if name not in found}
    if topics.dlq not in found:
        wanted[topics.dlq] = topics.partitions
    if wanted:
        configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
        specs = [TopicSpec(name, count, topics.replication, configs) for name, count in wanted.items()]
        found = ensure_kafka_topics(admin, [*specs, *(TopicSpec(n) for n in names)], timeout_ms=timeout_ms)
        if found.get(topics.visible) != found.get(topics.infrared):
            raise _unequal(topics, found.get(topics.visible, 0), found.get(topics.infrared, 0))
    if found[topics.visible] != topics.partitions:
        logger.info(
            "frame topics have %d partitions (topics.partitions=%d applies only when creating them)",
            found[topics.visible],
            topics.partitions,
        )
    return found


def _max_message_bytes(settings: Settings) -> int:
    """The largest record the gateway sends: what a worker accepts plus room for key and headers."""
    return settings.worker.max_record_bytes + _RECORD_OVERHEAD


def make_producer(settings: Settings) -> Any:
    """An idempotent ``KafkaProducer`` (``acks=all``) with the gateway's compression and linger.

    Raises:
        WorkerError: No broker answers at ``kafka.bootstrap``, or it refuses the login.

    """
    gateway = settings.gateway
    return kafka_producer(
        settings.kafka,
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,  # the most idempotence allows while keeping order
        compression_type=None if gateway.compression == "none" else gateway.compression,
        linger_ms=gateway.linger_ms,
        max_request_size=_max_message_bytes(settings),
        max_block_ms=10_000,  # a send waits at most this long for topic metadata
    )


def prepare_topics(settings: Settings) -> dict[str, int]:
    """Create or check the topics of ``settings`` with a short-lived admin client (see :func:`ensure_topics`)."""
    return cast(
        dict[str, int],
        with_admin(
            lambda: kafka_admin(settings.kafka), settings.kafka.bootstrap,
            lambda admin: ensure_topics(admin, settings.topics, max_message_bytes=_max_message_bytes(settings)),
        ),
    )  # fmt: skip


def last_published_seqs(settings: Settings, cameras: Iterable[str] | None = None, window: int = 64) -> dict[str, int]:
    """The highest trigger ``seq`` already in the frame topics, per camera id (only ``cameras`` when given).

    Reads the last ``window`` records of every partition of both frame topics (a consumer without a
    group, nothing committed): enough when these cameras are the latest writers of their partitions,
    as a restarted gateway's own cameras are. Missing topics read as empty.

    Raises:
        WorkerError: Kafka cannot be reached.

    """
    from kafka.errors import KafkaError
    from kafka.structs import TopicPartition

    wanted = None if cameras is None else set(cameras)
    highest: dict[str, int] = {}
    consumer = kafka_consumer(settings.kafka, group_id=None, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (settings.topics.visible, settings.topics.infrared)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return highest
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        left = {tp for tp in partitions if ends[tp] > starts[tp]}
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - window))
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for message in messages:
                    headers = dict(message.headers or [])
                    camera, seq = headers.get("camera_id"), headers.get("seq")
                    if camera is None or seq is None or not seq.isdigit():
                        continue
                    name = camera.decode(errors="replace")
                    if wanted is None or name in wanted:
                        highest[name] = max(highest.get(name, 0), int(seq))
                if consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        if left:
            msg = f"could not read the end of {sorted(f'{tp.topic}/{tp.partition}' for tp in left)} within 30 s"
            raise WorkerError(msg)
    except KafkaError as exc:
        raise ClientError(f"lost Kafka at {settings.kafka.bootstrap} while reading the frame topics: {exc}") from exc
    finally:
        consumer.close()
    return highest


class Gateway:
    """Publish the captures of one source to the frame topics.

    Args:
        settings: Kafka connection, topic names, ``gateway`` (compression, linger, encoding).
        source: Captures (and :class:`~inspector.sources.SourceError` values for lost ones), e.g. a
            :class:`~inspector.sources.SyntheticSource`; its ``reconnects`` and ``close()`` are used
            when it has them.
        metrics: Where to count; ``None`` counts only in the report.
        producer: A ready ``KafkaProducer``-like object (tests); by default the gateway makes one
            (:func:`make_producer`) when it runs and closes it at the end.
        fps: Items per second taken from the source (all cameras together); ``None``: as fast as it yields.
        check_topics: Ensure the topics exist first (:func:`ensure_topics`); default: when the
            gateway makes its own producer.
        max_pending_bytes: Frame bytes that may wait for acknowledgement before new frames are dropped
            (``overflow``).
        flush_timeout_s: How long the end of a run waits for outstanding acknowledgements.
        clock: Monotonic clock in seconds (latency, timeout).

    """

    def __init__(
        self,
        settings: Settings,
        source: Iterable[Capture | SourceError],
        metrics: GatewayMetrics | None = None,
        producer: Any = None,
        *,
        fps: float | None = None,
        check_topics: bool | None = None,
        max_pending_bytes: int = 256 * 2**20,
        flush_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.producer = producer
        self.fps = fps
        self.check_topics = producer is None if check_topics is None else check_topics
        self.max_pending_bytes = max_pending_bytes
        self.flush_timeout_s = flush_timeout_s
        self.clock = clock
        self._stop = threading.Event()
        self._signalled = False
        self._lock = threading.Lock()  # acks arrive on the producer's I/O thread
        self._pending: dict[int, int] = {}  # record number -> bytes, until acked or failed
        self._pending_bytes = 0
        self._next_id = 0
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._report = GatewayReport()
        self._topic = {"visible": settings.topics.visible, "infrared": settings.topics.infrared}

    def stop(self) -> None:
        """Ask a running :meth:`run` to stop after the current capture (safe from any thread or a signal)."""
        self._stop.set()

    def run(
        self,
        count: int | None = None,
        timeout: float | None = None,
        *,
        progress: Callable[[GatewayReport], None] | None = None,
    ) -> GatewayReport:
        """Publish until ``count`` items were taken, ``timeout`` seconds passed, the source ended, or a signal.

        SIGTERM and SIGINT (when called in the main thread) stop the run; outstanding frames are then
        flushed for up to ``flush_timeout_s`` and the producer closed. A second signal aborts the flush.

        Args:
            count: Items to take from the source; ``None``: no limit.
            timeout: Seconds to run; ``None``: no limit.
            progress: Called with a snapshot of the report about five times a second, and at the end.

        Returns:
            The report.

        Raises:
            WorkerError: Kafka cannot be reached, or the topics are not usable (e.g. unequal partitions).

        """
        if self.check_topics:
            prepare_topics(self.settings)
        owned = self.producer is None
        if owned:
            self.producer = make_producer(self.settings)
        started = self.clock()
        deadline = None if timeout is None else started + timeout
        restore = self._install_signals()
        last_progress = started
        report = self._report
        try:
            for item in self._items():
                if self._stop.is_set():
                    report.stop_reason = "signal" if self._signalled else "stopped"
                    break
                if deadline is not None and self.clock() >= deadline:
                    report.stop_reason = "timeout"
                    break
                report.captures += 1
                self._handle(item)
                self._count_reconnects()
                if count is not None and report.captures >= count:
                    report.stop_reason = "count"
                    break
                if progress is not None and self.clock() - last_progress >= 0.2:
                    last_progress = self.clock()
                    progress(self.snapshot())
            else:
                report.stop_reason = report.stop_reason or "source_end"
        except SourceError as exc:
            report.stop_reason = "source_failed"
            self._note_error(str(exc))
            logger.error("%s", exc)
        finally:
            self._count_reconnects()
            self._finish(owned)
            restore()
            report.seconds = self.clock() - started
        final = self.snapshot()
        if progress is not None:
            progress(final)
        return final

    def snapshot(self) -> GatewayReport:
        """A copy of the report so far, with the latency percentiles."""
        with self._lock:
            report = self._report
            latencies = np.asarray(self._latencies, dtype=np.float64)
            copy = GatewayReport(
                captures=report.captures,
                published=dict(report.published),
                dropped=dict(report.dropped),
                source_reconnects=report.source_reconnects,
                seconds=report.seconds,
                stop_reason=report.stop_reason,
                errors=list(report.errors),
            )
        if latencies.size:
            copy.publish_p50_ms = round(float(np.percentile(latencies, 50)) * 1e3, 3)
            copy.publish_p95_ms = round(float(np.percentile(latencies, 95)) * 1e3, 3)
        return copy

    # -- one capture ------------------------------------------------------------------------------

    def _items(self) -> Iterator[Capture | SourceError]:
        return pace(self.source, self.fps, sleep=self._stop.wait)

    def _handle(self, item: Capture | SourceError) -> None:
        if isinstance(item, SourceError):
            if item.outcome == "camera_lost":  # not a frame: the source reopens the camera (counted in reconnects)
                self._count_reconnects()
                logger.warning("%s", item)
                return
            self._drop(item.outcome, item.frames, str(item))
            return
        try:
            records = capture_to_records(item, self.settings.gateway.encoding)
        except FrameEncodeError as exc:
            self._drop("encode_error", item.frame_count, f"camera {item.camera_id} seq={item.seq}: {exc}")
            return
        key = item.camera_id.encode()
        for frame, data in records:
            self._send(frame.modality, key, data, frame.to_headers())

    def _send(self, modality: str, key: bytes, data: bytes, headers: list[tuple[str, bytes]]) -> None:
        from kafka.errors import KafkaError

        size = len(data)
        with self._lock:
            if self._pending and self._pending_bytes + size > self.max_pending_bytes:
                overflow = True
            else:
                overflow = False
                number, self._next_id = self._next_id, self._next_id + 1
                self._pending[number] = size
                self._pending_bytes += size
        if overflow:
            detail = f"more than max_pending_bytes={self.max_pending_bytes} await acknowledgement (broker down or slow)"
            self._drop("overflow", 1, detail)
            return
        sent = self.clock()
        try:
            future = self.producer.send(self._topic[modality], key=key, value=data, headers=headers)
        except (KafkaError, ValueError, TypeError, AssertionError) as exc:  # e.g. no metadata in max_block_ms
            if self._settle(number) is not None:
                self._drop("publish_error", 1, f"send to {self._topic[modality]} failed: {type(exc).__name__}: {exc}")
            return
        future.add_callback(self._acked, number, modality, sent)
        future.add_errback(self._failed, number, modality)

    def _settle(self, number: int) -> int | None:
        """Forget a pending record; its size, or ``None`` when it was already settled."""
        with self._lock:
            size = self._pending.pop(number, None)
            if size is not None:
                self._pending_bytes -= size
            return size

    def _acked(self, number: int, modality: str, sent: float, _metadata: object) -> None:
        if self._settle(number) is None:
            return  # given up on at shutdown
        latency = self.clock() - sent
        with self._lock:
            self._report.published[modality] = self._report.published.get(modality, 0) + 1
            self._latencies.append(latency)
        if self.metrics is not None:
            self.metrics.published.labels(modality).inc()
            self.metrics.publish.observe(latency)

    def _failed(self, number: int, modality: str, exc: BaseException) -> None:
        if self._settle(number) is not None:
            self._drop("publish_error", 1, f"{self._topic[modality]}: {type(exc).__name__}: {exc}")

    def _drop(self, reason: str, frames: int, detail: str) -> None:
        with self._lock:
            self._report.dropped[reason] = self._report.dropped.get(reason, 0) + frames
        if self.metrics is not None:
            self.metrics.dropped.labels(reason).inc(frames)
        self._note_error(f"{reason}: {detail}")

    def _note_error(self, message: str) -> None:
        with self._lock:
            errors = self._report.errors
            new = message not in errors and len(errors) < _MAX_ERRORS
            if new:
                errors.append(message)
        if new:
            logger.warning("%s", message)

    def _count_reconnects(self) -> None:
        total = int(getattr(self.source, "reconnects", 0))
        with self._lock:
            delta = total - self._report.source_reconnects
            self._report.source_reconnects = total
        if delta > 0 and self.metrics is not None:
            self.metrics.source_reconnects.inc(delta)

    # -- start and end ----------------------------------------------------------------------------

    def _finish(self, owned: bool) -> None:
        """Flush, count what was never acknowledged, close the producer (if ours) and the source."""
        from kafka.errors import KafkaError

        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        except (KafkaError, KeyboardInterrupt) as exc:
            logger.warning("flush ended early: %s", exc)
        with self._lock:
            lost = len(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        if lost:
            self._drop("publish_error", lost, f"{lost} frame(s) not acknowledged within {self.flush_timeout_s:g} s")
        if owned:
            try:
                self.producer.close(timeout=5)
            except KafkaError as exc:  # pragma: no cover - closing is best effort
                logger.warning("closing the Kafka producer: %s", exc)
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    def _install_signals(self) -> Callable[[], None]:
        """Route SIGTERM/SIGINT to :meth:`stop` (main thread only); return what restores the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop waiting for the flush
            logger.info("%s received: stopping after the current capture", signal.Signals(signum).name)
            self._signalled = True
            self._stop.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
