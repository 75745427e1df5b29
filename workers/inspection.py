"""The inspection worker: Kafka frames → :class:`inspector.stream.StreamCore` → Redis results, offsets committed last.

    worker = InspectionWorker(settings, model, store, metrics=WorkerMetrics(registry))
    worker.run(timeout=60, count=500)      # or run() until stop() / SIGTERM

Delivery goes through :mod:`workers.kafka` and is at-least-once with no duplicates: a record's
offset is committed only once it is settled (its result stored, its dead letter acknowledged, or
deliberately skipped as a duplicate or unpaired frame), and the result store is idempotent per
``(camera_id, seq)``, so a re-delivered frame never produces a second result or stream entry. When
Redis (or the dead-letter topic) refuses, the worker holds (:class:`~workers.kafka.checkpoint.Checkpoint`):
it takes no new records, keeps polling one record and reading it again (so it stays in the group),
stops the pairing clock (a partner cannot arrive while nothing is read), retries with back-off from
``worker.store_retry_s`` doubling to 30 s, and commits nothing it has not stored. Results are the
line's record, so the worker holds for as long as Redis is away rather than dead-lettering them.

The worker joins group ``worker.group_id`` with the range assignor: both frame topics must have equal
partition counts so that partition *n* of ``frames.visible`` and of ``frames.infrared`` — which carry
the same cameras, by key — go to the same worker. It refuses to start otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from kafka import KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.range import RangePartitionAssignor

from inspector.calibration import Calibration
from inspector.config import Settings
from inspector.model import CrackModel
from inspector.results import RedisLayout, ResultStore
from inspector.stream import InspectedJob, Record, Rejection, ShadowModel, Step, StreamCore, StreamPolicy
from workers.alignment import PairingClock, StreamAlignment, within_budget
from workers.clients import kafka_consumer, kafka_producer
from workers.errors import WorkerError
from workers.evidence import EvidenceKeeper, EvidenceStore
from workers.kafka.checkpoint import Checkpoint, Outcome, Position
from workers.kafka.consumer import GroupConsumer, Partition
from workers.metrics import WorkerMetrics
from workers.model_watch import LoadedModel, ModelWatcher
from workers.shell import WorkerShell
from workers.widths import LoadMeter, WidthFamily

logger = logging.getLogger(__name__)

LAG_EVERY_S = 2.0


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


def check_topics(consumer: GroupConsumer, visible: str, infrared: str) -> int:
    """Both frame topics exist with equal partition counts; return the count, or raise :class:`WorkerError`."""
    counts = {topic: consumer.partitions_for(topic) for topic in (visible, infrared)}
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


def _where(position: Hashable) -> Position:
    """A record position as this worker builds it: ``(topic, partition, offset)``."""
    return cast(Position, position)


class _ResultSink:
    """The result store as the checkpoint's sink: one idempotent ``put`` per inspected capture.

    A capture's evidence is written first; a result whose evidence could not be written is stored
    without its ``evidence`` key (:class:`~workers.evidence.EvidenceKeeper`).
    """

    def __init__(self, store: ResultStore, evidence: EvidenceKeeper | None = None) -> None:
        self.store, self.evidence = store, evidence

    def write(self, jobs: Sequence[InspectedJob]) -> Iterator[bool]:
        for job in jobs:
            if self.evidence is not None:
                self.evidence.keep(job.document, job.evidence)
            yield self.store.put(job.document, job.overlay_jpeg)


class InspectionWorker(WorkerShell[WorkerReport]):
    """Consume frame pairs, inspect them, store results, commit offsets (see the module docs).

    Args:
        settings: Kafka, topic and worker settings.
        model: The crack model to run.
        store: Where results go (``RedisResultStore`` in production); ``put`` must be idempotent.
        metrics: Prometheus metrics; ``None`` records nothing.
        consumer: An unsubscribed consumer (tests); default: built from ``settings`` (and rebuilt by
            the stuck-member watchdog).
        producer: For dead letters and the optional results mirror; default: built from ``settings``.
        model_info: ``name``, ``version``, ``width``, ``backend``, ``sha256`` reported as a metric.
        widths: A width family (``worker.widths``): the worker switches variants by load; ``model``
            should be its active one.
        calibrations: Per ``camera_id``, the rig's calibration (IR mapping and scale).
        watcher: Follows the model registry (``registry.watch``): promoted models are swapped in
            between batches (:meth:`serve`), shadow models run beside the served one. Once a registry
            model serves, it runs alone: the width family stops stepping (a promoted model was chosen
            on purpose; stepping would replace it with a variant of the configured one).
        evidence: The evidence folder (``evidence.enabled``): every NG part and a share of OK parts keep
            their images there (docs/REVIEW.md); ``None`` keeps none.

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
        watcher: ModelWatcher | None = None,
        evidence: EvidenceStore | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        self.delivery = metrics.delivery if metrics is not None else None
        info = dict(model_info or {})
        cals = dict(calibrations or {})
        self.core = StreamCore(
            model, StreamPolicy.from_settings(
                settings.worker, lanes=settings.inference.lanes, evidence=settings.evidence if evidence else None
            ),
            model_width=info.get("width", 1.0),
            homographies={c: cal.homography for c, cal in cals.items()},
            scales={c: cal.mm_per_px for c, cal in cals.items()},
        )  # fmt: skip
        self.topics = {settings.topics.visible: "visible", settings.topics.infrared: "infrared"}
        self.monotonic_ns, self.wall_ns = monotonic_ns, wall_ns
        self.poll_records = settings.worker.max_poll_records  # lowered by _size_polls if inspection is slow
        self._pair_s: float | None = None
        max_skew_ms = settings.worker.pair_timeout_ms / 2
        self.alignment = StreamAlignment(settings.topics.visible, settings.topics.infrared, max_skew_ms)
        self.pairing_clock = PairingClock(max_waiting=max(512, 16 * settings.worker.max_poll_records))
        self.widths, self.load_meter = widths, LoadMeter()
        self.watcher = watcher
        self.evidence = (
            EvidenceKeeper(evidence, metrics, prune_every_s=settings.evidence.prune_every_s) if evidence else None
        )
        self.report = WorkerReport()
        self._last_lag = 0.0
        make = self._new_consumer if consumer is None else None
        self.consumer = self.group_consumer(
            make, list(self.topics), given=consumer, rejoin_after_s=settings.worker.rejoin_after_s
        )
        self._partitions = check_topics(self.consumer, settings.topics.visible, settings.topics.infrared)
        self.producer = producer or kafka_producer(settings.kafka, acks="all", linger_ms=5, retries=5)
        self.checkpoint = Checkpoint(
            self.consumer, self.producer, _ResultSink(store, self.evidence), dlq=settings.topics.dlq,
            retry_s=settings.worker.store_retry_s, metrics=self.delivery,
        )  # fmt: skip
        self.report.dlq = self.checkpoint.dead_letters
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

    def settled(self) -> int:
        """Captures whose result is stored."""
        return self.report.results

    # -- one turn of the loop ----------------------------------------------------------------------

    def step(self) -> None:
        """Apply a ready model swap, write what waits, poll both topics in step, pair, inspect due batches, commit."""
        self._follow_registry()
        if self.evidence is not None:
            self.evidence.prune_if_due(self.monotonic_ns() / 1e9)  # a clock check; the prune runs off the loop
        if not self.checkpoint.flush():
            self._hold()
            return
        wait_ms = 100 if not self.core.queued_pairs else max(1, self.settings.worker.batch_wait_ms / 2)
        polled = self.consumer.poll(int(wait_ms), max_records=self.poll_records)
        self.polled()
        lags = self.consumer.lags()
        take = self.alignment.admit({p: [m.timestamp for m in messages] for p, messages in polled.items()}, lags)
        sizes = {p: [(m.timestamp, len(m.value or b"")) for m in messages] for p, messages in polled.items()}
        take = within_budget(sizes, take, self.settings.worker.max_poll_bytes)  # bounds the frames decoded at once
        records: list[Record] = []
        for partition, messages in polled.items():
            modality, count = self.topics[partition[0]], take[partition]
            if count < len(messages):  # ahead of the partner topic, or over the byte budget: read these again later
                self.consumer.read_again(partition, messages[count].offset)
            for m in messages[:count]:
                position = (m.topic, m.partition, m.offset)
                self.checkpoint.consumed(position)
                records.append(Record(modality, m.key, m.value or b"", list(m.headers or []), position))  # type: ignore[arg-type]
        now = self.monotonic_ns()
        behind = any(v > 0 for v in lags.values())
        pairing = self.pairing_clock.tick(now, behind=behind, waiting=self.core.pairing_frames)
        step = self.core.feed(records, now_ns=now, wall_ns=self.wall_ns(), pairing_ns=pairing)
        self._count(step)
        self._reject(step.rejected)
        for frame in step.unpaired:
            if not frame.inspected:
                self.checkpoint.skip(_where(frame.position))
        while self.core.due(now_ns=self.monotonic_ns()):
            jobs, rejected = self.core.inspect_batch(wall_ns=self.wall_ns)
            self._inspected(jobs, rejected)
            if self.metrics is not None and jobs:
                self.metrics.batch_size.observe(len(jobs) + len(rejected) // 2)
                for job in jobs:
                    self.metrics.inference.observe(job.inference_s)
            self._size_polls(jobs)
        self.checkpoint.flush()
        self._observe()

    def _hold(self) -> None:
        """While writes are refused: stay in the group, take no record, let no pairing timeout run.

        The pairing clock stands still: a partner cannot arrive while nothing is read, so frames
        waiting for one must not be given up (docs/RELIABILITY.md, chaos scenario 3).
        """
        self.consumer.hold(self.checkpoint.retry_at)
        self.polled()
        self.pairing_clock.tick(self.monotonic_ns(), behind=True, waiting=0)
        self._observe()

    def _reject(self, rejected: Sequence[Rejection]) -> None:
        for rejection in rejected:
            rec = rejection.record
            where = _where(rec.position)
            letter = self.checkpoint.letter(
                where, rec.value, rec.key, rec.headers, str(rejection.reason), rejection.detail
            )
            self.checkpoint.add(letter)

    def _inspected(self, jobs: Sequence[InspectedJob], rejected: Sequence[Rejection]) -> None:
        self._reject(rejected)
        for job in jobs:

            def written(fresh: Any, job: InspectedJob = job) -> None:
                self._stored(job, bool(fresh))

            self.checkpoint.add(Outcome(tuple(_where(p) for p in job.positions), item=job, written=written))

    def _stored(self, job: InspectedJob, fresh: bool) -> None:
        """A result is in the store: count it, and mirror a new one to ``topics.results`` (not awaited)."""
        if not fresh:
            self.report.already_stored += 1
            return
        self.report.stored += 1
        if self.metrics is not None:
            self.metrics.observe_document(job.document)
        self._shadow_outcome(job)
        if self.settings.topics.results:
            key = str(job.document["camera_id"]).encode()
            self.producer.send(self.settings.topics.results, value=json.dumps(job.document).encode(), key=key)

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
        self.report.store_errors = self.checkpoint.store_errors
        if self.metrics is None:
            return
        self.metrics.assigned_partitions.set(len(self.consumer.assignment()))
        if time.monotonic() - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = time.monotonic()
        lags = self._broker_lags()
        self.metrics.set_lag(lags)
        self._adapt(sum(lags.values()))

    def _broker_lags(self) -> dict[Partition, int]:
        """Records left to read per assigned partition, from end offsets asked of the broker now.

        The client's cached high-water marks move only when a fetch response is accepted, and a seek
        discards the responses in flight, so under load they lag the broker by seconds
        (docs/BENCHMARKS.md, issue 19). The end offsets also feed the load meter, so that it counts
        what arrives, not what this worker managed to read. Falls back to the cached view when the
        broker does not answer.
        """
        ends = self.consumer.end_offsets()
        if ends is None:
            return self.consumer.lags()
        self.load_meter.offered(time.monotonic(), ends)
        return self.consumer.lags(ends)

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

    # -- the model registry (workers.model_watch) ---------------------------------------------------

    def _follow_registry(self) -> None:
        """Between batches: apply what the registry watcher has ready (a new model, a shadow, its end)."""
        if self.watcher is None:
            return
        change = self.watcher.poll(self.monotonic_ns() / 1e9)
        if change.active is not None:
            self.serve(change.active)
        if change.shadow is not None:
            entry = change.shadow.entry
            self.core.shadow = ShadowModel(change.shadow.model, entry.fraction or 0.0, entry.sha256)
            logger.info("shadow model %s (sha256 %s) on %.0f%% of captures", entry.path, entry.sha256,
                        100 * (entry.fraction or 0.0))  # fmt: skip
        elif change.shadow_cleared:
            self.core.shadow = None
            logger.info("shadow run ended")

    def serve(self, loaded: LoadedModel) -> None:
        """Serve a registry model from the next batch on; results already inspected keep the SHA they came from.

        Called between batches only (the lanes are idle), so no capture is inspected by half a swap.
        """
        old = str((getattr(self.core.model, "metadata", None) or {}).get("sha256", "")) or self.core.model.name
        info = loaded.info()
        self.core.model, self.core.model_width = loaded.model, loaded.width
        if self.widths is not None:
            logger.info("a registry model serves: the width family stops stepping")
            self.widths = None
        logger.info("model swapped: %s -> %s (%s, promoted by %s at %s)", old, loaded.entry.sha256,
                    loaded.entry.path, loaded.entry.who, loaded.entry.when)  # fmt: skip
        if self.metrics is not None:
            self.metrics.set_model(info["name"], info["version"], info["width"], info["backend"], info["sha256"])
            self.metrics.model_swaps.inc()

    def _shadow_outcome(self, job: InspectedJob) -> None:
        """Count a fresh result's shadow comparison; a disagreement goes to ``{prefix}:review:shadow``.

        A refused XADD is logged and the result stands: the review queue is not the line's record.
        """
        if job.shadow is None:
            return
        agree = bool(job.shadow["agree"])
        if self.metrics is not None:
            self.metrics.shadow_comparisons.labels(agree=str(agree).lower()).inc()
        if agree or self.watcher is None:
            return
        document = job.document
        key = RedisLayout(prefix=self.settings.redis.key_prefix).result_key(document["camera_id"], document["seq"])
        try:
            self.watcher.registry.review_disagreement(
                key, str(document["verdict"]), str(job.shadow["verdict"]), str(job.shadow["sha256"])
            )
        except Exception as exc:  # Redis refused: the result is stored, only the review entry is lost
            logger.error("cannot queue the shadow disagreement on %s for review: %s", key, exc)

    # -- rebalances and shutdown -------------------------------------------------------------------

    def forget(self, partitions: set[Partition]) -> None:
        """Partitions went to another worker: drop their frames and pairs in hand, uncommitted.

        kafka-python keeps the fetch position of a partition that is revoked and assigned back, so
        frames in hand for a partition this worker keeps stay valid.
        """
        self.core.forget(lambda position: _where(position)[:2] in partitions)
        self.alignment.forget(list(partitions))

    def forget_all(self) -> None:
        """The consumer is replaced: drop every frame and pair in hand, uncommitted.

        The group reads them again from the committed offsets (this worker, once it has rejoined, or
        another); results already stored are found there and not stored twice.
        """
        self.core.forget(lambda _position: True)
        self.alignment.forget(list(self.alignment.latest))
        self.report.consumer_rebuilds += 1
        if self.metrics is not None:
            self.metrics.assigned_partitions.set(0)

    def drain(self) -> None:
        """On stop: inspect the pairs already formed, write and commit them; unpaired frames stay uncommitted."""
        while self.core.queued_pairs:
            self._inspected(*self.core.inspect_batch(wall_ns=self.wall_ns))
        self.checkpoint.drain(self.drain_s)
        self.report.store_errors = self.checkpoint.store_errors
