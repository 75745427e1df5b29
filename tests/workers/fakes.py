"""In-memory stand-ins for Kafka and Redis clients, shared by every worker's unit tests.

They keep only what the workers use and record what happened, so a test can assert on it. The
real clients are exercised against real servers in ``tests/integration`` and ``tests/chaos``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import OffsetAndMetadata, TopicPartition

__all__ = [
    "FakeKafkaConsumer", "FakeModelRegistry", "FakeProducer", "FakeRedis", "FakeResultStore", "FullDiskEvidenceStore",
    "LabelledModel", "PlainRedis", "Record",
]  # fmt: skip


@dataclass
class Record:
    """A consumed record, as kafka-python's ``ConsumerRecord`` has it (offset set when appended)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0
    partition: int = 0
    offset: int = -1


class FakeKafkaConsumer:
    """A subscribed group member over in-memory partition logs: polls, seeks, commits, rebalances.

    Args:
        partitions: Partition count per topic (all assigned to this member at ``subscribe``).
        records: Records appended to their partitions' logs now.
        refuse_commits: Commits to refuse first (as a rebalance in progress would).

    Attributes:
        commits: Every accepted commit, as ``{(topic, partition): offset}``.
        committed: The latest committed offset per partition.
        polls: Calls to ``poll``, with their ``max_records``.

    """

    def __init__(self, partitions: dict[str, int], records: Iterable[Record] = (), *, refuse_commits: int = 0) -> None:
        self.partitions = partitions
        self.logs: dict[TopicPartition, list[Record]] = {
            TopicPartition(t, p): [] for t, n in partitions.items() for p in range(n)
        }
        self.positions: dict[TopicPartition, int] = dict.fromkeys(self.logs, 0)
        self.assigned: set[TopicPartition] = set()
        self.listener: Any = None
        self.subscribed: list[str] = []
        self.commits: list[dict[tuple[str, int], int]] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.refuse_commits = refuse_commits
        self.polls: list[int | None] = []
        self.closed = False
        for record in records:
            self.append(record)

    def append(self, record: Record) -> Record:
        """Add a record at the end of its partition; returns it with its offset."""
        log = self.logs[TopicPartition(record.topic, record.partition)]
        record.offset = len(log)
        log.append(record)
        return record

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """Join: the partitions of ``topics`` are assigned at the first poll, as kafka-python does."""
        self.listener, self.subscribed = listener, list(topics)

    def rebalance(self, assigned: set[TopicPartition]) -> None:
        """Revoke everything, then assign ``assigned`` (resuming from the committed offsets)."""
        if self.listener is not None and self.assigned:
            self.listener.on_partitions_revoked(list(self.assigned))
        kept = self.assigned & assigned
        self.assigned = set(assigned)
        for tp in assigned - kept:
            self.positions[tp] = self.committed.get((tp.topic, tp.partition), 0)
        if self.listener is not None:
            self.listener.on_partitions_assigned(list(assigned))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.polls.append(max_records)
        if not self.assigned and self.subscribed:
            self.rebalance({tp for tp in self.logs if tp.topic in self.subscribed})
        out: dict[TopicPartition, list[Record]] = {}
        room = max_records if max_records is not None else 500
        for tp in sorted(self.assigned):
            taken = self.logs[tp][self.positions[tp] : self.positions[tp] + room]
            if taken:
                out[tp] = taken
                self.positions[tp] += len(taken)
                room -= len(taken)
            if room <= 0:
                break
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], timeout_ms: int | None = None) -> None:
        from kafka.errors import RebalanceInProgressError

        assert timeout_ms is not None, "commits are bounded (workers.kafka.consumer.COMMIT_TIMEOUT_MS)"

        if self.refuse_commits:
            self.refuse_commits -= 1
            raise RebalanceInProgressError("injected")
        done = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
        self.commits.append(done)
        self.committed |= done

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return set(range(count)) if count else None

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return self.positions[tp]

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int = 0) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    def close(self, autocommit: bool = False, timeout_ms: int | None = None) -> None:
        assert timeout_ms is not None, "the close is bounded (workers.kafka.consumer.COMMIT_TIMEOUT_MS)"
        self.closed = True


@dataclass
class Future:
    """A send's result: ``get`` raises the injected error."""

    error: Exception | None = None

    def get(self, timeout: float = 0) -> None:
        if self.error is not None:
            raise self.error


@dataclass
class FakeProducer:
    """Records what it takes; ``refuse`` maps a topic to how many sends it refuses (-1: all of them)."""

    sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    closed: bool = False

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> Future:
        if self.refuse.get(topic, 0):
            self.refuse[topic] -= 1
            self.refused.append(topic)
            return Future(RuntimeError(f"TopicAuthorizationFailedError: {topic} (injected)"))
        self.sent.append((topic, value, key, list(headers or [])))
        return Future()

    def to(self, topic: str) -> list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]:
        """What was sent to ``topic``."""
        return [s for s in self.sent if s[0] == topic]

    def flush(self, timeout: float = 0) -> None:
        return None

    def close(self, timeout: float = 0) -> None:
        self.closed = True


class _ClaimScript:
    """The one Lua script the claimed store registers (``workers.stores``), run in memory."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    def __call__(self, keys: list[str], args: list[Any], client: FakeRedis | None = None) -> Any:
        op = ("claim", keys, args)
        return self.redis._apply(op) if client is None else client._queue(op)


@dataclass
class FakeRedis:
    """A Redis client that refuses ``failures`` round trips first, then keeps data in ``data``.

    Attributes:
        data: Key → (value bytes, ttl seconds or None).
        streams: Stream key → list of entries (field dicts).
        failures: Round trips (``execute``) still to refuse with a ``ConnectionError``.
        round_trips: Round trips attempted.

    """

    failures: int = 0
    data: dict[str, tuple[bytes, int | None]] = field(default_factory=dict)
    streams: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    round_trips: int = 0
    _pending: list[tuple[str, list[str], list[Any]]] = field(default_factory=list)

    def register_script(self, script: str) -> _ClaimScript:
        assert "SET', KEYS[1], '1', 'NX'" in script, "FakeRedis runs only the claimed store's script"
        return _ClaimScript(self)

    def pipeline(self, transaction: bool = False) -> FakeRedis:
        self._pending = []
        return self

    def _queue(self, op: tuple[str, list[str], list[Any]]) -> FakeRedis:
        self._pending.append(op)
        return self

    def set(self, key: str, value: str | bytes, ex: int | None = None) -> FakeRedis:
        return self._queue(("set", [key], [value, ex]))

    def execute(self) -> list[Any]:
        self.round_trips += 1
        pending, self._pending = self._pending, []
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down (injected)")
        return [self._apply(op) for op in pending]

    def _apply(self, op: tuple[str, list[str], list[Any]]) -> Any:
        kind, keys, args = op
        if kind == "set":
            value = args[0].encode() if isinstance(args[0], str) else args[0]
            self.data[keys[0]] = (value, args[1])
            return True
        claim, document, stream = keys
        if claim in self.data:
            return 0
        self.data[claim] = (b"1", int(args[1]))
        self.data[document] = (str(args[0]).encode(), int(args[1]))
        self.streams.setdefault(stream, []).append({"id": str(args[3]), "key": document})
        return 1

    def get(self, key: str) -> bytes | None:
        return self.data[key][0] if key in self.data else None


@dataclass
class FakeResultStore:
    """The inspection result store in memory: idempotent per ``(camera_id, seq)``; refuses ``failures`` puts first."""

    failures: int = 0
    results: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    entries: list[tuple[str, int]] = field(default_factory=list)  # the result stream
    refused: int = 0

    def put(self, document: dict[str, Any], overlay_jpeg: bytes | None = None) -> bool:
        from inspector.results import StoreError

        if self.failures:
            self.failures -= 1
            self.refused += 1
            raise StoreError("redis down (injected)")
        key = (str(document["camera_id"]), int(document["seq"]))
        if key in self.results:
            return False
        self.results[key] = document
        self.entries.append(key)
        return True


class LabelledModel:
    """A crack model with a file identity (``metadata.sha256``, ``width``) that predicts like another, or sees nothing.

    Args:
        name: Its name.
        sha256: The digest its results name (``document["model"]["sha256"]``).
        like: A model to predict like (e.g. ``create_model("baseline")``); ``None`` sees no crack anywhere.
        width: Share of channels, as a pruned model's metadata has it.

    """

    version = "1"

    def __init__(self, name: str, sha256: str, like: Any = None, width: float = 1.0) -> None:
        self.name, self.like = name, like
        self.metadata = {"sha256": sha256, "backend": "fake", "width": width}
        self.calls = 0

    def predict(self, inputs: Any) -> Any:
        import numpy as np

        from inspector.model import ModelOutput

        self.calls += 1
        if self.like is not None:
            return self.like.predict(inputs)
        return ModelOutput(np.zeros(inputs.visible.shape[:2], np.float32))


@dataclass
class FakeModelRegistry:
    """What a worker reads of :class:`workers.registry.ModelRegistry`, in memory.

    Attributes:
        entry: The active entry (``active()``).
        shadow: The shadow entry (``shadow_entry()``).
        reads: Calls to ``active()``.
        fail_reads: Reads still to refuse with a ``ConnectionError``.
        reviews: Disagreements queued (``review_disagreement`` fields).
        refuse_reviews: Refuse every ``review_disagreement`` with a ``ConnectionError``.

    """

    entry: Any = None
    shadow: Any = None
    reads: int = 0
    fail_reads: int = 0
    reviews: list[dict[str, str]] = field(default_factory=list)
    refuse_reviews: bool = False

    def active(self) -> Any:
        self.reads += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise ConnectionError("redis down (injected)")
        return self.entry

    def shadow_entry(self) -> Any:
        return self.shadow

    def review_disagreement(self, key: str, verdict: str, shadow_verdict: str, shadow_sha: str) -> None:
        if self.refuse_reviews:
            raise ConnectionError("redis down (injected)")
        fields = {"key": key, "verdict": verdict, "shadow_verdict": shadow_verdict, "shadow_sha": shadow_sha}
        self.reviews.append(fields)


@dataclass
class PlainRedis:
    """The plain Redis commands the review station uses, in memory, answering bytes as ``redis.Redis`` does.

    Strings (``get``, ``set``, ``mget``, ``delete``) and streams (``xadd``, ``xrevrange``, ``xlen``); ``type``
    and ``ping``. TTLs are recorded, never applied. ``down`` makes every command raise ``ConnectionError``.
    """

    strings: dict[str, bytes] = field(default_factory=dict)
    ttls: dict[str, int | None] = field(default_factory=dict)
    streams: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = field(default_factory=dict)
    down: bool = False

    @staticmethod
    def _bytes(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("redis down (injected)")

    def ping(self) -> bool:
        self._check()
        return True

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.strings.get(key)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.strings.get(k) for k in keys]

    def set(self, key: str, value: Any, ex: int | None = None) -> bool:
        self._check()
        self.strings[key], self.ttls[key] = self._bytes(value), ex
        return True

    def delete(self, *keys: str) -> int:
        self._check()
        return sum(self.strings.pop(k, None) is not None or self.streams.pop(k, None) is not None for k in keys)

    def type(self, key: str) -> bytes:
        self._check()
        return b"string" if key in self.strings else b"stream" if key in self.streams else b"none"

    def xadd(self, stream: str, fields: dict[str, Any], **_options: Any) -> bytes:
        self._check()
        entries = self.streams.setdefault(stream, [])
        entry_id = f"{len(entries) + 1}-0".encode()
        entries.append((entry_id, {self._bytes(k): self._bytes(v) for k, v in fields.items()}))
        return entry_id

    def xrevrange(self, stream: str, max: str = "+", min: str = "-", count: int | None = None) -> list[Any]:
        self._check()
        newest = list(reversed(self.streams.get(stream, [])))
        return newest[:count] if count is not None else newest

    def xlen(self, stream: str) -> int:
        self._check()
        return len(self.streams.get(stream, []))

    def close(self) -> None:
        return None


class FullDiskEvidenceStore:
    """An evidence folder on a full disk: ``write`` raises ``OSError(ENOSPC)`` for the first ``failures`` bundles.

    Wraps a real :class:`workers.evidence.EvidenceStore` (which writes once the disk "has room").
    """

    def __init__(self, store: Any, failures: int = 1_000_000) -> None:
        self.store, self.failures, self.refused = store, failures, 0
        self.root = store.root

    def write(self, bundle: Any) -> bool:
        import errno

        if self.failures:
            self.failures -= 1
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return bool(self.store.write(bundle))

    def prune(self, now_s: float) -> Any:
        return self.store.prune(now_s)
