"""Audit a stream end to end: what the frame topics hold against what Redis stored, and the group's lag.

Used by the fault-injection tests (``tests/chaos``) and ``inspector bench soak``; it reads, never
writes::

    contents = read_frame_topics(settings)                 # every frame record of both topics
    stored, entries = read_results(client, prefix)         # result keys, result-stream entries
    duplicated, unexpected = count_duplicates([c for c, _ in entries], contents.complete)
    lost = contents.complete - stored

    monitor = LagMonitor(settings, partitions=4)           # a thread sampling the consumer group
    monitor.start(); ...; monitor.stop(); monitor.samples  # end offsets and committed offsets

The result stream (``{prefix}:results``) is what downstream systems read, one entry per stored
result; its entry ids are the Redis server's clock at the write, which makes them the store times.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inspector.config import Settings
from workers.errors import WorkerError

logger = logging.getLogger(__name__)

Capture = tuple[str, int]
Partition = tuple[str, int]


@dataclass
class KafkaContents:
    """What the frame topics (and the dead-letter topic) hold.

    Attributes:
        frames: Frame records read.
        modalities: Per capture ``(camera_id, seq)``, how many records of each modality.
        positions: Per frame-topic partition, ``(offset, capture)`` of each record.
        dead_letters: Records in the dead-letter topic.

    """

    frames: int = 0
    modalities: dict[Capture, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    positions: dict[Partition, list[tuple[int, Capture]]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: int = 0

    @property
    def complete(self) -> set[Capture]:
        """Captures with both a visible and an infrared frame: the ones a worker can inspect."""
        return {c for c, m in self.modalities.items() if m["visible"] and m["infrared"]}

    @property
    def incomplete(self) -> set[Capture]:
        """Captures with only one of their frames (e.g. a gateway died between the two sends)."""
        return set(self.modalities) - self.complete

    @property
    def duplicate_frames(self) -> int:
        """Frame records beyond the first per ``(camera_id, seq, modality)``."""
        return sum(n - 1 for m in self.modalities.values() for n in m.values() if n > 1)


def read_frame_topics(settings: Settings, idle_timeout_s: float = 60.0) -> KafkaContents:
    """Every record of both frame topics and the dead-letter topic, from the beginning to the current end.

    Raises:
        WorkerError: No progress for ``idle_timeout_s`` before the end was reached (a partial read
            would make sent captures look lost, or stored ones look unexpected).

    """
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    contents = KafkaContents()
    consumer = KafkaConsumer(
        **settings.kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
        fetch_max_bytes=64 * 2**20, max_partition_fetch_bytes=16 * 2**20,
    )  # fmt: skip
    topics = settings.topics
    try:
        names = (topics.visible, topics.infrared, topics.dlq)
        parts = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            return contents
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        last_progress = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() - last_progress > idle_timeout_s:
                left = {f"{tp.topic}/{tp.partition}": ends[tp] - consumer.position(tp) for tp in parts}
                msg = f"reading the frame topics back stalled for {idle_timeout_s:.0f} s; records left: {left}"
                raise WorkerError(msg)
            for tp, batch in consumer.poll(timeout_ms=500, max_records=20_000).items():
                last_progress = time.monotonic()
                for record in batch:
                    if tp.topic == topics.dlq:
                        contents.dead_letters += 1
                        continue
                    headers = {name: (value or b"").decode(errors="replace") for name, value in record.headers}
                    capture = (headers.get("camera_id", ""), int(headers.get("seq") or 0))
                    contents.frames += 1
                    contents.modalities[capture][headers.get("modality", "")] += 1
                    contents.positions[(tp.topic, tp.partition)].append((record.offset, capture))
    finally:
        consumer.close()
    return contents


def _capture_of(key: str) -> Capture:
    camera, seq = key.rsplit(":", 2)[-2:]
    return camera, int(seq)


def read_results(client: Any, prefix: str) -> tuple[set[Capture], list[tuple[Capture, float]]]:
    """The result keys under ``prefix``, and every result-stream entry as ``(capture, Redis time in s)``."""
    stored = {_capture_of(key.decode()) for key in client.scan_iter(f"{prefix}:result:*", count=1000)}
    entries = []
    last = "-"
    while True:
        chunk = client.xrange(f"{prefix}:results", min=last, max="+", count=10_000)
        if last != "-":
            chunk = chunk[1:]  # the entry we started from
        if not chunk:
            break
        for entry_id, fields in chunk:
            entries.append((_capture_of(fields[b"key"].decode()), int(entry_id.decode().split("-")[0]) / 1000))
        last = chunk[-1][0].decode()
    return stored, entries


def capture_times(client: Any, prefix: str, captures: Iterable[Capture]) -> dict[Capture, float]:
    """When each capture was taken (epoch seconds), from its stored result document."""
    import json

    wanted = list(captures)
    times: dict[Capture, float] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        values = client.mget([f"{prefix}:result:{camera}:{seq}" for camera, seq in chunk])
        for capture, raw in zip(chunk, values, strict=True):
            if raw is not None:
                times[capture] = json.loads(raw)["capture_ts_ns"] / 1e9
    return times


def count_duplicates(entries: Iterable[Capture], sent: set[Capture]) -> tuple[int, int]:
    """``(duplicated, unexpected)``: stream entries beyond one per capture, and entries for captures never sent."""
    counts = Counter(entries)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    unexpected = sum(1 for capture in counts if capture not in sent)
    return duplicated, unexpected


@dataclass
class LagSample:
    """One reading of the consumer group: wall-clock time, end and committed offsets per partition."""

    t: float
    end: dict[Partition, int]
    committed: dict[Partition, int]

    @property
    def lag(self) -> int:
        """Records not yet committed, all partitions."""
        return sum(max(0, self.end[p] - self.committed.get(p, 0)) for p in self.end)


def commits_ahead_of_store(
    samples: Iterable[LagSample], contents: KafkaContents, stored_at: dict[Capture, float], slack_s: float = 0.1
) -> int:
    """Frame records seen committed before their capture's result was in Redis (commit-after-store broken).

    A record below a partition's committed offset at sample time ``t`` must belong to a capture
    stored before ``t`` (``slack_s`` for the millisecond stream ids). Frames of incomplete
    captures are skipped: a worker settles them unpaired, without a result.
    """
    never, incomplete = float("inf"), contents.incomplete
    ordered = {p: sorted(records) for p, records in contents.positions.items()}
    ahead: set[tuple[Partition, int]] = set()
    for sample in samples:
        for partition, records in ordered.items():
            below = bisect.bisect_left([offset for offset, _ in records], sample.committed.get(partition, 0))
            for offset, capture in records[:below]:
                if capture not in incomplete and stored_at.get(capture, never) > sample.t + slack_s:
                    ahead.add((partition, offset))
    return len(ahead)


class LagMonitor(threading.Thread):
    """Samples the consumer group ``worker.group_id`` every ``every`` seconds (a daemon thread).

    A sample holds the end offsets and the committed offsets of every partition of both frame
    topics (or of ``topics``, e.g. a medical or VQA request topic). Each sample runs in a
    short-lived thread of its own and is given up after ``deadline_s`` (the admin client can block
    far longer while the broker restarts): it then counts in ``failures`` and the next sample starts
    with a fresh admin client, so samples resume as soon as the broker answers again.
    """

    def __init__(
        self,
        settings: Settings,
        partitions: int,
        every: float = 0.5,
        deadline_s: float = 2.0,
        topics: Sequence[str] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="lag-monitor")
        self.settings, self.every, self.deadline_s = settings, every, deadline_s
        self.samples: list[LagSample] = []
        self.failures = 0
        self._halt = threading.Event()
        self._admin: Any = None
        self._lock = threading.Lock()  # between a sample that answers late and the loop giving up on it
        watched = topics or (settings.topics.visible, settings.topics.infrared)
        self._partitions = [(topic, p) for topic in watched for p in range(partitions)]

    def stop(self) -> None:
        """End the thread (waits for the sample in progress)."""
        self._halt.set()
        self.join(timeout=30)
        self._close(self._admin)

    def run(self) -> None:
        """Sample until stopped."""
        while not self._halt.is_set():
            box: dict[str, Any] = {}
            attempt = threading.Thread(target=self._attempt, args=(self._admin, box), daemon=True, name="lag-sample")
            attempt.start()
            attempt.join(timeout=self.deadline_s)
            with self._lock:
                box["abandoned"] = attempt.is_alive()  # a late answer closes its own client
            if "sample" in box and not box["abandoned"]:
                self.samples.append(box["sample"])
                self._admin = box["admin"]
            else:
                self.failures += 1
                self._admin = None
                logger.debug("lag sample failed: %s", box.get("error", "timed out"))
            self._halt.wait(self.every)

    def _attempt(self, admin: Any, box: dict[str, Any]) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import OffsetSpec
        from kafka.structs import TopicPartition

        group = self.settings.worker.group_id
        try:
            if admin is None:
                admin = KafkaAdminClient(
                    **self.settings.kafka.client_kwargs(), request_timeout_ms=3000, reconnect_backoff_max_ms=1000
                )
            ends = admin.list_partition_offsets({TopicPartition(t, p): OffsetSpec.LATEST for t, p in self._partitions})
            if any(v.offset < 0 for v in ends.values()) or len(ends) < len(self._partitions):
                raise ValueError(f"no end offset for some partitions yet: {ends}")  # leaders not elected yet
            committed = admin.list_group_offsets(group).get(group, {})
            sample = LagSample(
                time.time(),
                {(tp.topic, tp.partition): int(v.offset) for tp, v in ends.items()},
                {(tp.topic, tp.partition): int(v.offset) for tp, v in committed.items() if v.offset >= 0},
            )
        except Exception as exc:  # the broker restarting, a coordinator moving: a fresh client next time
            box["error"] = exc
            self._close(admin)
            return
        with self._lock:
            if box.get("abandoned"):
                self._close(admin)
                return
            box["sample"], box["admin"] = sample, admin

    @staticmethod
    def _close(admin: Any) -> None:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
