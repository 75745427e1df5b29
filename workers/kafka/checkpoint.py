"""The at-least-once contract, in one place: nothing is committed before what it became is written.

A worker turns the records it consumed into :class:`Outcome` objects (an item for its sink, records
to produce, or a dead letter) and hands them to a :class:`Checkpoint`, which

* tracks every consumed offset (:class:`~workers.kafka.offsets.OffsetTracker`) and commits, per
  partition, only up to the first record not yet settled;
* writes sink items first (in order, in one batch), then produces the outcome's records (replies,
  mirrors, dead letters) and waits for the broker's acknowledgements;
* settles an outcome once all its writes are done, and only then lets its offsets be committed;
* when a write is refused, **holds**: :attr:`Checkpoint.holding` is true, the worker polls nothing new
  (:meth:`~workers.kafka.consumer.GroupConsumer.hold` keeps the group membership) and the refused
  writes are retried after a back-off, ``retry_s`` doubling to 30 s. Only what failed is retried;
* gives up on an outcome after ``give_up_after`` refused rounds when configured: it is replaced by
  its dead letter (reason ``write_failed``). Dead letters themselves are never given up on: a
  dead-letter topic that refuses makes the worker hold until it takes them.

In the spirit of quix-streams' ``Checkpoint.commit()``::

    checkpoint = Checkpoint(consumer, producer, sink, dlq="vqa.dlq", metrics=delivery)
    checkpoint.consumed(("vqa.requests", 0, 41))
    checkpoint.add(Outcome((("vqa.requests", 0, 41),), item=claim, produce=[reply]))
    if not checkpoint.flush():      # writes what it can, commits what is settled
        consumer.hold(checkpoint.retry_at)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from workers.kafka.consumer import GroupConsumer, Partition
from workers.kafka.metrics import DeliveryMetrics
from workers.kafka.offsets import OffsetTracker

__all__ = ["MAX_BACKOFF_S", "Checkpoint", "Outcome", "Outgoing", "Position", "Sink", "dead_letter_headers"]

logger = logging.getLogger(__name__)

Position = tuple[str, int, int]  # (topic, partition, offset) of a consumed record
MAX_BACKOFF_S = 30.0
DETAIL_BYTES = 1_000


class Sink(Protocol):
    """Where a worker's items go (Redis); writes are idempotent, so a retried batch may repeat some."""

    def write(self, items: Sequence[Any]) -> Iterable[Any]:
        """Write ``items`` in order; one result per item written (raise, possibly mid-way, when refused)."""
        ...


@dataclass(frozen=True)
class Outgoing:
    """A record to produce: a reply, a mirror of a result, or a dead letter."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(eq=False)
class Outcome:
    """What consumed records became; their offsets are committed only once all of it is written.

    Attributes:
        positions: The records this outcome settles.
        item: For the sink; ``None``: nothing to store.
        produce: Records to produce once ``item`` is stored.
        reason: The dead-letter reason when this outcome is a dead letter (counted once written).
        written: Called with the sink's result (``None`` without an item) once everything is written.
        give_up: Builds the dead letter that replaces this outcome when its writes are given up on.

    """

    positions: tuple[Position, ...]
    item: Any = None
    produce: list[Outgoing] = field(default_factory=list)
    reason: str | None = None
    written: Callable[[Any], None] | None = None
    give_up: Callable[[str], Outcome] | None = None
    attempts: int = 0
    why: str = ""
    stored: bool = False
    result: Any = None

    @property
    def ready(self) -> bool:
        """Its sink item (if any) is stored."""
        return self.item is None or self.stored


def dead_letter_headers(
    headers: Sequence[tuple[str, bytes | None]] | None, reason: str, detail: str, position: Position | None = None
) -> list[tuple[str, bytes]]:
    """The record's own headers (earlier ``dlq_*`` dropped) plus ``dlq_reason``, ``dlq_detail`` and its origin."""
    kept = [(n, v) for n, v in (headers or []) if v is not None and not n.startswith("dlq_")]  # (name, bytes)
    added: dict[str, object] = {"dlq_reason": reason, "dlq_detail": detail[:DETAIL_BYTES]}
    if position is not None:
        added |= dict(zip(("dlq_topic", "dlq_partition", "dlq_offset"), position, strict=True))
    return kept + [(name, str(value).encode()) for name, value in added.items()]


class Checkpoint:
    """Offsets, writes, dead letters, commits and the hold policy of one worker (see the module docs).

    Args:
        consumer: The worker's group consumer (commits go through it).
        producer: A ``KafkaProducer`` for replies and dead letters.
        sink: Where outcome items go; ``None`` when no outcome has one.
        dlq: The dead-letter topic.
        retry_s: The first back-off after a refused write.
        give_up_after: Refused rounds after which an outcome is dead-lettered (``write_failed``);
            ``None``: hold until the sink takes it.
        metrics: Delivery metrics, or ``None``.
        clock: ``time.monotonic`` (tests pass their own).

    Attributes:
        dead_letters: Dead letters written, by reason.
        store_errors: Flushes in which a write was refused.
        retry_at: When (``clock()``) the refused writes are tried again.

    """

    def __init__(
        self,
        consumer: GroupConsumer,
        producer: Any,
        sink: Sink | None,
        *,
        dlq: str,
        retry_s: float = 1.0,
        give_up_after: int | None = None,
        metrics: DeliveryMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if give_up_after is not None and give_up_after < 1:
            raise ValueError(f"give_up_after must be at least 1, got {give_up_after}")
        self.consumer, self.producer, self.sink, self.dlq = consumer, producer, sink, dlq
        self.retry_s, self.give_up_after, self.metrics, self.clock = retry_s, give_up_after, metrics, clock
        self.offsets = OffsetTracker()
        self.outcomes: list[Outcome] = []
        self.dead_letters: Counter[str] = Counter()
        self.store_errors = 0
        self.retry_at = 0.0
        self._backoff = retry_s

    # -- what the worker reports -------------------------------------------------------------------

    def consumed(self, position: Position) -> None:
        """A record was taken; its offset waits until it is settled."""
        topic, partition, offset = position
        self.offsets.consumed((topic, partition), offset)

    def skip(self, position: Position) -> None:
        """A record is done with and needs no write (a duplicate, a frame given up on unpaired)."""
        topic, partition, offset = position
        self.offsets.settled((topic, partition), offset)

    def add(self, outcome: Outcome) -> None:
        """Write ``outcome`` at the next :meth:`flush`; its records settle once it is written."""
        self.outcomes.append(outcome)

    def letter(
        self, position: Position, value: bytes | None, key: bytes | None, headers: Any, reason: str, detail: str
    ) -> Outcome:
        """The dead letter of one record: its value, key and headers, plus the reason, detail and origin."""
        sent = dead_letter_headers(headers, reason, detail, position)
        return Outcome((position,), produce=[Outgoing(self.dlq, value or b"", key, sent)], reason=reason)

    @property
    def holding(self) -> bool:
        """Writes were refused and are not written yet: take no new records."""
        return bool(self.outcomes) and self._backoff > self.retry_s

    @property
    def pending(self) -> int:
        """Outcomes not yet written."""
        return len(self.outcomes)

    # -- writing and committing --------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> bool:
        """Write what is due, settle what is written, commit; False while holding (writes refused).

        ``force``: try now even before the back-off has run out (draining at a stop).
        """
        if self.outcomes and (force or self.clock() >= self.retry_at):
            self._write()
        elif not self.outcomes:
            self._backoff = self.retry_s
        self.commit()
        holding = self.holding
        if self.metrics is not None:
            self.metrics.holding.set(1 if holding else 0)
        return not holding

    def _write(self) -> None:
        if self.give_up_after is not None:
            self.outcomes = [self._given_up(o) for o in self.outcomes]
        why = ""
        todo = [o for o in self.outcomes if not o.ready]
        if todo:
            assert self.sink is not None, "an outcome has an item but the checkpoint has no sink"
            try:
                for outcome, result in zip(todo, self.sink.write([o.item for o in todo]), strict=False):
                    outcome.stored, outcome.result = True, result
            except Exception as exc:  # Redis (or another sink) refusing: keep the items, retry after a back-off
                why = f"{type(self.sink).__name__}: {type(exc).__name__}: {exc}"
        why = self._send([o for o in self.outcomes if o.ready and o.produce]) or why
        remaining = []
        for outcome in self.outcomes:
            if outcome.ready and not outcome.produce:
                self._settled(outcome)
            else:
                remaining.append(outcome)
        self.outcomes = remaining
        if remaining and why:
            self._refused(why)
        elif self._backoff > self.retry_s:
            logger.info("writes accepted again; resuming")
            self._backoff = self.retry_s

    def _given_up(self, outcome: Outcome) -> Outcome:
        if outcome.give_up is None or self.give_up_after is None or outcome.attempts < self.give_up_after:
            return outcome
        detail = f"could not be written in {outcome.attempts} attempts: {outcome.why}"
        logger.error("giving up on a record after %d attempts: %s", outcome.attempts, outcome.why)
        return outcome.give_up(detail)

    def _send(self, outcomes: list[Outcome]) -> str:
        """Produce every outcome's records and wait for the acknowledgements; keep the unsent; why one failed."""
        futures: list[tuple[Outcome, Outgoing, Any]] = []
        unsent: dict[int, list[Outgoing]] = {}
        why = ""
        for outcome in outcomes:
            for out in outcome.produce:
                try:
                    futures.append((outcome, out, self.producer.send(out.topic, out.value, out.key, out.headers)))
                except Exception as exc:  # kafka-python raises on send for a topic it cannot get metadata for
                    unsent.setdefault(id(outcome), []).append(out)
                    why = f"{out.topic}: {type(exc).__name__}: {exc}"
        if futures:
            try:
                self.producer.flush(timeout=10)
            except Exception as exc:  # a timeout: the futures not done fail below
                why = f"flush: {type(exc).__name__}: {exc}"
        for outcome, out, future in futures:
            try:
                future.get(timeout=10)
            except Exception as exc:  # the broker refused (a forbidden topic) or timed out
                unsent.setdefault(id(outcome), []).append(out)
                why = f"{out.topic}: {type(exc).__name__}: {exc}"
        for outcome in outcomes:
            outcome.produce = unsent.get(id(outcome), [])
        return why

    def _settled(self, outcome: Outcome) -> None:
        for topic, partition, offset in outcome.positions:
            self.offsets.settled((topic, partition), offset)
        if outcome.reason is not None:
            self.dead_letters[outcome.reason] += 1
            if self.metrics is not None:
                self.metrics.dlq.labels(outcome.reason).inc()
        if outcome.written is not None:
            outcome.written(outcome.result)

    def _refused(self, why: str) -> None:
        for outcome in self.outcomes:
            outcome.attempts += 1
            outcome.why = why
        self.store_errors += 1
        if self.metrics is not None:
            self.metrics.store_errors.inc()
        logger.warning("could not write %d outcomes (%s); retrying in %.1f s", len(self.outcomes), why, self._backoff)
        self.retry_at = self.clock() + self._backoff
        self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)

    def commit(self) -> None:
        """Commit, per partition this member holds, up to the first record not yet settled."""
        held = self.consumer.assignment()
        moves = {p: o for p, o in self.offsets.committable().items() if p in held}
        if moves and self.consumer.commit(moves):
            self.offsets.mark_committed(moves)

    def drain(self, timeout_s: float = 30.0, every_s: float = 0.5) -> None:
        """At a stop: try the pending writes until they are written or ``timeout_s`` passed; then commit."""
        deadline = time.monotonic() + timeout_s
        while self.outcomes and time.monotonic() < deadline:
            self.flush(force=True)
            if self.outcomes:
                time.sleep(every_s)
        self.commit()
        if self.outcomes:
            logger.warning("stopping with %d outcomes unwritten: uncommitted, read again later", len(self.outcomes))

    # -- rebalances ----------------------------------------------------------------------------------

    def forget(self, partitions: set[Partition]) -> None:
        """Partitions went to another member: drop their outcomes, uncommitted (the new owner reads them)."""
        self.outcomes = [o for o in self.outcomes if not any((t, p) in partitions for t, p, _ in o.positions)]
        self.offsets.forget(partitions)

    def reset(self) -> None:
        """The member was replaced: drop everything, uncommitted."""
        self.outcomes = []
        self.offsets = OffsetTracker()
