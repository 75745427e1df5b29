"""The inspection worker: Kafka frames → :class:`inspector.stream.StreamCore` → Redis results, offsets committed last.

    worker = InspectionWorker(settings, model, store, metrics=WorkerMetrics(registry))
    worker.run(timeout=60, count=500)      # or run() until stop() / SIGTERM

Delivery is at-least-once with no duplicates: a record's offset is committed only once it is
settled (its result stored, its dead letter acknowledged, or deliberately skipped as a duplicate or
unpaired frame), and the result store is idempotent per ``(camera_id, seq)``, so a re-delivered frame
never produces a second result or stream entry. When Redis (or the dead-letter topic) refuses, the
worker holds: it takes no new records, keeps polling (so it stays in the group), stops the pairing
timeout (a partner cannot arrive while nothing is read), retries with back-off from
``worker.store_retry_s`` doubling to 30 s, and commits nothing it has not stored.

The worker joins group ``worker.group_id`` with the range assignor: both frame topics must have equal
partition counts so that partition *n* of ``frames.visible`` and of ``frames.infrared`` — which carry
the same cameras, by key — go to the same worker. It refuses to start otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from inspector.calibration import Calibration
from inspector.config import Settings
from inspector.model import CrackModel
from inspector.results import ResultStore, StoreError
from inspector.stream import InspectedJob, Record, Rejection, Step, StreamCore, StreamPolicy
from workers.alignment import PairingClock, StreamAlignment, within_budget
from workers.clients import kafka_consumer, kafka_producer
from workers.errors import WorkerError
from workers.metrics import WorkerMetrics
from workers.offsets import OffsetTracker, Partition
from workers.shell import MAX_BACKOFF_S, WorkerShell, dead_letter_headers
from workers.widths import LoadMeter, WidthFamily

logger = logging.getLogger(__name__)

LAG_EVERY_S = 2.0
HOLD_POLL_MS = 250  # how often a worker that cannot store polls (to stay in its group) without taking records


@dataclass
class WorkerReport:
    """What a :meth:`InspectionWorker.run` call did."""

    frames: int = 0
    pairs: int = 0
    stored: int = 0
    already_stored: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    unpaired: Counter[str] = field(default_factory=Counter)
    store_errors: int = 0
    consumer_rebuilds: int = 0
    seconds: float = 0.0

    @property
    def results(self) -> int:
        """Captures settled by a stored result (new, or found already stored)."""
        return self.stored + self.already_stored


def check_topics(consumer: KafkaConsumer, visible: str, infrared: str) -> int:
    """Both frame topics exist with equal partition counts; return the count, or raise :class:`WorkerError`."""
    counts = {topic: consumer.partitions_for_topic(topic) for topic in (visible, infrared)}
    missing = [topic for topic, parts in counts.items() if not parts]
    if missing:
        msg = (
            f"Kafka topic(s) {', '.join(missing)} do not exist: start `inspector gateway` once (it creates them) "
            "or create both with equal partition counts"
        )
        raise WorkerError(msg)
    n_visible, n_infrared = len(counts[visible] or ()), len(counts[infrared] or ())
    if n_visible != n_infrared:
        msg = (
            f"Kafka topics {visible} ({n_visible} partitions) and {infrared} ({n_infrared}) must have equal "
            f"partition counts so both frames of a capture reach the same worker: recreate {infrared} with "
            f"{n_visible} partitions (or {visible} with {n_infrared})"
        )
        raise WorkerError(msg)
    return n_visible


def _where(position: Hashable) -> tuple[str, int, int]:
    """A record position as this worker builds it: ``(topic, partition, offset)``."""
    topic, partition, offset = cast(tuple[str, int, int], position)
    return topic, partition, offset


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: InspectionWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.worker.revoke([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.worker.assigned()


class InspectionWorker(WorkerShell[WorkerReport]):
    """Consume frame pairs, inspect them, store results, commit offsets (see the module docs).

    Args:
        settings: Kafka, topic and worker settings.
        model: The crack model to run.
        store: Where results go (``RedisResultStore`` in production); ``put`` must be idempotent.
        metrics: Prometheus metrics; ``None`` records nothing.
        consumer: A ready consumer (tests); default: one built from ``settings``.
        producer: For dead letters and the optional results mirror; default: built from ``settings``.
        model_info: ``name``, ``version``, ``width``, ``backend``, ``sha256`` reported as a metric.
        widths: A width family (``worker.widths``): the worker switches variants by load; ``model``
            should be its active one.
        calibrations: Per ``camera_id``, the rig's calibration (IR mapping and scale).

    """

    def __init__(
        self,
        settings: Settings,
        model: CrackModel,
        store: ResultStore,
        *,
        metrics: WorkerMetrics | None = None,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        model_info: dict[str, Any] | None = None,
        widths: WidthFamily | None = None,
        calibrations: Mapping[str, Calibration] | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        info = dict(model_info or {})
        cals = dict(calibrations or {})
        self.core = StreamCore(
            model, StreamPolicy.from_settings(settings.worker, lanes=settings.inference.lanes),
            model_width=info.get("width", 1.0),
            homographies={c: cal.homography for c, cal in cals.items()},
            scales={c: cal.mm_per_px for c, cal in cals.items()},
        )  # fmt: skip
        self.topics = {settings.topics.visible: "visible", settings.topics.infrared: "infrared"}
        self.consumer = consumer or self._new_consumer()
        self.producer = producer or kafka_producer(settings.kafka, acks="all", linger_ms=5, retries=5)
        self.monotonic_ns, self.wall_ns = monotonic_ns, wall_ns
        self.offsets = OffsetTracker()
        self.poll_records = settings.worker.max_poll_records  # lowered by _size_polls if inspection is slow
        self._pair_s: float | None = None
        max_skew_ms = settings.worker.pair_timeout_ms / 2
        self.alignment = StreamAlignment(settings.topics.visible, settings.topics.infrared, max_skew_ms)
        self.pairing_clock = PairingClock(max_waiting=max(512, 16 * settings.worker.max_poll_records))
        self.widths, self.load_meter = widths, LoadMeter()
        self.unstored: list[InspectedJob] = []
        self.dead: list[Rejection] = []
        self.report = WorkerReport()
        self._retry_at = 0.0
        self._backoff = settings.worker.store_retry_s
        self._healthy = True
        self._last_lag = 0.0
        self._revoked: set[Partition] = set()
        self.rejoin_after_s = settings.worker.rejoin_after_s
        self._partitions = check_topics(self.consumer, settings.topics.visible, settings.topics.infrared)
        self.consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        if consumer is None:
            self.consumer_factory = self._subscribed_consumer
        if metrics is not None and info:
            metrics.set_model(
                str(info.get("name", "")), str(info.get("version", "")), float(info.get("width", 1.0)),
                str(info.get("backend", "")), str(info.get("sha256", "")),
            )  # fmt: skip

    def _new_consumer(self) -> KafkaConsumer:
        worker = self.settings.worker
        return kafka_consumer(
            self.settings.kafka,
            group_id=worker.group_id,
            partition_assignment_strategy=[RangePartitionAssignor],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=worker.max_poll_records,
            max_poll_interval_ms=worker.max_poll_interval_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    def _subscribed_consumer(self) -> KafkaConsumer:
        consumer = self._new_consumer()
        consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        return consumer

    # -- lifecycle ---------------------------------------------------------------------------------

    def settled(self) -> int:
        """Captures whose result is stored."""
        return self.report.results

    def unhealthy(self) -> str | None:
        """Not ready while the result store or the dead-letter topic refuses writes."""
        return None if self._healthy else "result store or dead-letter topic unavailable; retrying"

    # -- one turn of the loop ----------------------------------------------------------------------

    def step(self) -> None:
        """Settle what waits, poll both topics in step, pair, inspect due batches, store, commit."""
        self._settle_pending()
        if not self._healthy:
            self._hold()
            return
        wait_ms = 100 if not self.core.queued_pairs else max(1, self.settings.worker.batch_wait_ms / 2)
        polled = self.consumer.poll(timeout_ms=int(wait_ms), max_records=self.poll_records)
        self._last_poll = time.monotonic()
        lags = self._lags()
        take = self.alignment.admit(
            {(tp.topic, tp.partition): [m.timestamp for m in messages] for tp, messages in polled.items()}, lags
        )
        sizes = {
            (tp.topic, tp.partition): [(m.timestamp, len(m.value or b"")) for m in messages]
            for tp, messages in polled.items()
        }
        take = within_budget(sizes, take, self.settings.worker.max_poll_bytes)  # bounds the frames decoded at once
        records: list[Record] = []
        for tp, messages in polled.items():
            modality, count = self.topics[tp.topic], take[(tp.topic, tp.partition)]
            if count < len(messages):  # ahead of the partner topic, or over the byte budget: read these again later
                self.consumer.seek(tp, messages[count].offset)
            for m in messages[:count]:
                self.offsets.consumed((tp.topic, tp.partition), m.offset)
                position = (tp.topic, tp.partition, m.offset)
                records.append(Record(modality, m.key, m.value or b"", list(m.headers or []), position))  # type: ignore[arg-type]
        now = self.monotonic_ns()
        behind = any(v > 0 for v in lags.values())
        pairing = self.pairing_clock.tick(now, behind=behind, waiting=self.core.pairing_frames)
        step = self.core.feed(records, now_ns=now, wall_ns=self.wall_ns(), pairing_ns=pairing)
        self._count(step)
        self.dead += step.rejected
        for frame in step.unpaired:
            if not frame.inspected:
                self._settle(frame.position)
        while self.core.due(now_ns=self.monotonic_ns()):
            jobs, rejected = self.core.inspect_batch(wall_ns=self.wall_ns)
            self.dead += rejected
            self.unstored += jobs
            if self.metrics is not None and jobs:
                self.metrics.batch_size.observe(len(jobs) + len(rejected) // 2)
                for job in jobs:
                    self.metrics.inference.observe(job.inference_s)
            self._size_polls(jobs)
        self._settle_pending()
        self._commit()
        self._observe()

    def _hold(self) -> None:
        """While the store refuses writes: stay in the group, take no record, let no pairing timeout run.

        The worker does not ``pause()`` its partitions: kafka-python 3.0 can leave a resumed
        partition parked and never fetch it again (after a 3 s outage in
        ``test_frames_waiting_for_a_partner_survive_a_redis_outage`` the infrared partition was never
        read again). It polls at most one record and seeks back to it, a few times a
        second. The pairing clock stands still: a partner cannot arrive while nothing is read, and
        before this a paused worker's stale high-water marks said it had read everything, so frames
        waiting for a partner were given up, committed, and their partners dropped as late (chaos
        scenario 3 lost 432 captures).
        """
        polled = self.consumer.poll(timeout_ms=HOLD_POLL_MS, max_records=1)
        self._last_poll = time.monotonic()
        for tp, messages in polled.items():
            if messages:
                self.consumer.seek(tp, messages[0].offset)  # read it again once the store is back
        self.pairing_clock.tick(self.monotonic_ns(), behind=True, waiting=0)
        self._commit()
        self._observe()
        time.sleep(max(0.0, min(HOLD_POLL_MS / 1000, self._retry_at - time.monotonic())))

    def _size_polls(self, jobs: list[InspectedJob]) -> None:
        """Take no more records per poll than can be inspected in a quarter of ``max_poll_interval_ms``.

        A poll's records are inspected before the next poll; if that took longer than the broker's
        ``max_poll_interval_ms`` the worker would be thrown out of the group mid-batch. Two records
        make a capture, timed by a running mean of the model time per capture.
        """
        if not jobs:
            return
        per_pair = sum(job.inference_s for job in jobs) / len(jobs)
        self._pair_s = per_pair if self._pair_s is None else 0.8 * self._pair_s + 0.2 * per_pair
        budget_s = self.settings.worker.max_poll_interval_ms / 1000 / 4
        fit = 2 * int(budget_s / max(self._pair_s, 1e-6))
        self.poll_records = max(2, min(self.settings.worker.max_poll_records, fit))

    def _lags(self, ends: Mapping[TopicPartition, int] | None = None) -> dict[Partition, int]:
        """Records left to read per assigned partition (1 when unknown).

        ``ends``: end offsets asked of the broker; without them, the client's cached high-water marks.
        """
        lags: dict[Partition, int] = {}
        for tp in self.consumer.assignment() if ends is None else ends:
            high = self.consumer.highwater(tp) if ends is None else int(ends[tp])
            try:
                position = self.consumer.position(tp, timeout_ms=100)
            except KafkaError:
                position = None
            lags[(tp.topic, tp.partition)] = 1 if high is None or position is None else max(0, high - position)
        return lags

    def _settle_pending(self) -> None:
        """Send dead letters and store results; on failure pause, back off and keep them for the next try."""
        if not (self.unstored or self.dead) or time.monotonic() < self._retry_at:
            return
        try:
            self._send_dead_letters()
            self._store_results()
        except (StoreError, KafkaError) as exc:
            self.report.store_errors += 1
            if self.metrics is not None:
                self.metrics.store_errors.inc()
            logger.warning(
                "could not settle %d records: %s; retrying in %.1f s",
                len(self.unstored) + len(self.dead),
                exc,
                self._backoff,
            )
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)
            self._healthy = False
            return
        if not self._healthy:
            logger.info("result store reachable again; resuming")
        self._healthy, self._backoff = True, self.settings.worker.store_retry_s

    def _send_dead_letters(self) -> None:
        if not self.dead:
            return
        futures = []
        for rejection in self.dead:
            rec = rejection.record
            topic, partition, offset = _where(rec.position)
            headers = dead_letter_headers(
                rec.headers, str(rejection.reason), rejection.detail, topic=topic, partition=partition, offset=offset
            )
            futures.append(self.producer.send(self.settings.topics.dlq, value=rec.value, key=rec.key, headers=headers))
        self.producer.flush(timeout=10)
        for future in futures:
            future.get(timeout=10)  # raises the KafkaError that made a send fail
        for rejection in self.dead:
            self.report.dlq[str(rejection.reason)] += 1
            if self.metrics is not None:
                self.metrics.dlq.labels(reason=str(rejection.reason)).inc()
            self._settle(rejection.record.position)
        self.dead = []

    def _store_results(self) -> None:
        while self.unstored:
            job = self.unstored[0]
            fresh = self.store.put(job.document, job.overlay_jpeg)
            if fresh:
                self.report.stored += 1
                if self.metrics is not None:
                    self.metrics.observe_document(job.document)
                if self.settings.topics.results:
                    key = str(job.document["camera_id"]).encode()
                    self.producer.send(self.settings.topics.results, value=json.dumps(job.document).encode(), key=key)
            else:
                self.report.already_stored += 1
            for position in job.positions:
                self._settle(position)
            self.unstored.pop(0)

    def _settle(self, position: Hashable) -> None:
        topic, partition, offset = _where(position)
        self.offsets.settled((topic, partition), offset)

    def _commit(self, only: set[Partition] | None = None) -> None:
        moves = self.offsets.committable()
        if only is not None:
            moves = {p: o for p, o in moves.items() if p in only}
        if not moves:
            return
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in moves.items()}
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance in progress, or the broker away: commit again next turn
            logger.warning("offset commit failed (%s); will retry", exc)
            return
        self.offsets.mark_committed(moves)

    def _count(self, step: Step) -> None:
        self.report.frames += sum(step.frames.values())
        self.report.pairs += step.pairs
        for frame in step.unpaired:
            self.report.unpaired[frame.reason] += 1
        if self.metrics is None:
            return
        for modality, n in step.frames.items():
            self.metrics.frames.labels(modality=modality).inc(n)
        self.metrics.pairs.inc(step.pairs)
        for frame in step.unpaired:
            self.metrics.unpaired.labels(reason=frame.reason).inc()

    def _observe(self) -> None:
        if self.metrics is None:
            return
        self.metrics.last_poll.set(time.time())
        self.metrics.ready.set(1 if self.ready()[0] else 0)
        if time.monotonic() - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = time.monotonic()
        lags = self._broker_lags()
        self.metrics.set_lag(lags)
        self._adapt(sum(lags.values()))

    def _broker_lags(self) -> dict[Partition, int]:
        """Records left to read per assigned partition, from end offsets asked of the broker now.

        The client's cached high-water marks (:meth:`_lags`) move only when a fetch response is
        accepted, and a seek discards the responses in flight, so under load they lag the broker by
        seconds: a worker judged its backlog empty while the broker held 186 records
        (docs/BENCHMARKS.md, issue 19). The end offsets also feed the load meter, so that it counts
        what arrives, not what this worker managed to read. Falls back to the cached view when the
        broker does not answer.
        """
        partitions = list(self.consumer.assignment())
        if not partitions:
            return {}
        try:
            ends = self.consumer.end_offsets(partitions, timeout_ms=1000)
        except KafkaError as exc:
            logger.debug("end offsets unavailable (%s): using the cached high-water marks", exc)
            return self._lags()
        self.load_meter.offered(time.monotonic(), {(tp.topic, tp.partition): int(end) for tp, end in ends.items()})
        return self._lags(ends)

    def _adapt(self, lag_records: int) -> None:
        """Let the width policy pick the variant for the current load (``worker.widths``)."""
        if self.widths is None:
            return
        index, changed = self.widths.decide(self.load_meter.load(time.monotonic(), lag_records))
        if not changed:
            return
        self.core.model, self.core.model_width = self.widths.active, self.widths.width
        info = self.widths.info()
        logger.info(
            "load %s: switching to width variant %d (%s, width %.2f)",
            self.load_meter.load(time.monotonic(), lag_records),
            index,
            info["name"],
            info["width"],
        )
        if self.metrics is not None:
            self.metrics.set_model(info["name"], info["version"], info["width"], info["backend"], info["sha256"])

    # -- rebalances and shutdown -------------------------------------------------------------------

    def revoke(self, partitions: list[Partition]) -> None:
        """Partitions may be leaving; what happens to their frames in hand is decided at the new assignment.

        Nothing is committed here: kafka-python 3 runs this listener inside its own network loop,
        where a synchronous commit can stall the rejoin. Every turn of the loop has already committed
        what was settled, so the next owner re-reads at most the frames that were in hand.
        """
        self._revoked |= set(partitions)

    def assigned(self) -> None:
        """The new assignment: drop in-flight state of partitions that went to another worker.

        kafka-python keeps the fetch position of a partition that is revoked and assigned back, so
        frames in hand for a partition this worker keeps stay valid; those of a partition that moved
        are dropped, uncommitted, for the new owner to read again.
        """
        assignment = self.consumer.assignment()
        mine = {(tp.topic, tp.partition) for tp in assignment}
        gone, self._revoked = self._revoked - mine, set()
        if gone:

            def moved(position: Hashable) -> bool:
                return _where(position)[:2] in gone

            self.core.forget(moved)
            self.unstored = [job for job in self.unstored if not any(moved(p) for p in job.positions)]
            self.dead = [r for r in self.dead if not moved(r.record.position)]
            self.offsets.forget(gone)
            self.alignment.forget(list(gone))
        logger.info("partitions assigned: %s (gone: %s)", sorted(mine), sorted(gone))
        if self.metrics is not None:
            self.metrics.assigned_partitions.set(len(assignment))

    def forget_all(self) -> None:
        """The consumer is replaced: drop every frame, pair, result and dead letter in hand, uncommitted.

        The group reads them again from the committed offsets (this worker, once it has rejoined, or
        another); results already stored are found there and not stored twice.
        """
        self.core.forget(lambda _position: True)
        self.unstored, self.dead, self._revoked = [], [], set()
        self.offsets = OffsetTracker()
        self.alignment.forget(list(self.alignment.latest))
        self.report.consumer_rebuilds += 1
        if self.metrics is not None:
            self.metrics.assigned_partitions.set(0)

    def drain(self) -> None:
        """On stop: inspect the pairs already formed, settle and commit them; unpaired frames stay uncommitted."""
        while self.core.queued_pairs:
            jobs, rejected = self.core.inspect_batch(wall_ns=self.wall_ns)
            self.unstored += jobs
            self.dead += rejected
        deadline = time.monotonic() + 30
        while (self.unstored or self.dead) and time.monotonic() < deadline:
            self._retry_at = 0.0
            self._settle_pending()
            if self.unstored or self.dead:
                time.sleep(0.5)
        self._commit()
