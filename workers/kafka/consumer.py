"""The consumer every worker reads through, and every kafka-python workaround, each documented once.

    consumer = GroupConsumer(make, ["vqa.requests"], on_moved=checkpoint.forget)
    polled = consumer.poll(200, max_records=16)        # {("vqa.requests", 0): [ConsumerRecord, ...]}
    consumer.read_again(("vqa.requests", 0), 41)       # this record and the ones after it come again
    consumer.commit({("vqa.requests", 0): 42})
    consumer.watch()                                   # once a turn: the stuck-member watchdog

Workers see partitions as ``(topic, partition)`` tuples; kafka-python's types stay in here. The
workarounds, for kafka-python 3.0.12 (the newest release the registry serves; docs/RELIABILITY.md,
"kafka-python version", says how each was verified and which test fails without it):

1. **Reconnect back-off capped at 1 s** (:data:`RECONNECT_BACKOFF_MAX_MS`, applied by
   :mod:`workers.clients` to every client). kafka-python backs off up to 30 s (Java: 1 s), so a
   broker back after ten seconds was tried again only up to 13 s later.
2. **Seeking back instead of ``pause()``** (:meth:`GroupConsumer.read_again`,
   :meth:`GroupConsumer.hold`). A partition that was paused and resumed can stay parked and is never
   fetched again. Records a worker does not want now are sought back to and read again later.
3. **Restarting an orphaned group join** (:func:`finish_orphaned_join`). A leader that rejoins
   because its metadata snapshot moved can stop driving the join half-way when ``poll`` returns
   before the SyncGroup answer: it stays ``REBALANCING`` for good, fetching nothing, its commits
   refused. Asking for a rejoin lets the next ``poll`` join again.
4. **Replacing a member that never settles** (:meth:`GroupConsumer.watch`). A member outside a
   stable group for ``rejoin_after_s`` is closed uncommitted and replaced by a fresh consumer;
   ``on_lost`` drops everything in hand (the group reads it again from the committed offsets).
5. **The rebalance listener commits nothing**: kafka-python runs it inside its own network loop,
   where a synchronous commit can stall the rejoin. Every turn of a worker commits what is settled,
   so a partition's next owner re-reads at most what was in hand.
6. **Commits and the close are bounded** by :data:`COMMIT_TIMEOUT_MS`. kafka-python retries a
   synchronous commit (and the close's LeaveGroup) for ``request_timeout_ms``, 30 s, while its
   coordinator is rejoining; a commit, a drain's commit and the close in a row could outlast an
   orchestrator's grace period. A commit that times out is retried next turn, like a refused one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener

__all__ = ["RECONNECT_BACKOFF_MAX_MS", "GroupConsumer", "Partition", "finish_orphaned_join", "group_stable"]

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
RECONNECT_BACKOFF_MAX_MS = 1_000  # workaround 1: kafka-python's default is 30 s
HOLD_POLL_MS = 250  # how often a holding worker polls (to stay in its group) without taking records
COMMIT_TIMEOUT_MS = 5_000  # workaround 6: one commit or close waits at most this long (kafka-python: 30 s)


def group_stable(consumer: Any) -> bool | None:
    """Whether a ``KafkaConsumer``'s group membership has settled (joined, synced, heartbeating).

    From ``consumer.group_metadata().state`` (kafka-python 3's ``MemberState``); ``None`` when the
    consumer has no group (manual assignment) or cannot say (a test's fake).
    """
    snapshot = getattr(consumer, "group_metadata", None)
    if snapshot is None:
        return None
    try:
        metadata = snapshot()
    except Exception:  # a closed or half-built client: no opinion
        return None
    state = getattr(metadata, "state", None)
    if getattr(metadata, "group_id", None) is None or not isinstance(state, str):
        return None
    return state == "<stable>"


def finish_orphaned_join(consumer: Any) -> bool:
    """Restart a group join kafka-python started and stopped driving (workaround 3); whether it did.

    A consumer that is stable, not auto-assigned, still driving its join, or not a kafka-python
    ``KafkaConsumer`` is left alone.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    subscription = getattr(coordinator, "_subscription", None)
    try:
        from kafka.structs import MemberState

        if coordinator is None or subscription is None or not subscription.partitions_auto_assigned():
            return False
        if coordinator.state == MemberState.STABLE or coordinator.need_rejoin():
            return False
        coordinator.request_rejoin()
    except Exception as exc:  # another client version's internals: keep the slower rebuild as the remedy
        logger.debug("cannot inspect the consumer's group join: %s", exc)
        return False
    return True


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python's rebalance callbacks, forwarded as ``(topic, partition)`` tuples (commits nothing)."""

    def __init__(self, owner: GroupConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Sequence[Any]) -> None:
        self.owner._revoked |= {(tp.topic, tp.partition) for tp in revoked}

    def on_partitions_assigned(self, assigned: Sequence[Any]) -> None:
        self.owner._assigned()


class GroupConsumer:
    """A subscribed group member that owns the kafka-python workarounds (see the module docs).

    Args:
        make: Builds a fresh, unsubscribed ``KafkaConsumer`` (group id, offsets by hand); called now
            (unless ``first`` is given) and whenever the watchdog replaces a stuck member. ``None``:
            the member is never replaced.
        topics: The topics to subscribe to.
        first: The unsubscribed consumer to start with (a test's fake).
        on_moved: Called with the partitions that went to another member at a rebalance; the worker
            drops what it holds of them (uncommitted: their new owner reads them again).
        on_lost: Called when the member is replaced; the worker drops everything it holds.
        rejoin_after_s: Replace the member after it stayed outside a stable group this long.

    Attributes:
        rebuilds: Members replaced so far (workaround 4).
        orphaned_joins: Joins restarted (workaround 3).
        last_poll: ``time.monotonic()`` of the last poll.

    """

    def __init__(
        self,
        make: Callable[[], Any] | None,
        topics: Sequence[str],
        *,
        first: Any = None,
        on_moved: Callable[[set[Partition]], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        rejoin_after_s: float = 60.0,
    ) -> None:
        if make is None and first is None:
            raise ValueError("GroupConsumer needs a consumer or a factory that makes one")
        self.make, self.topics = make, list(topics)
        self.on_moved, self.on_lost = on_moved, on_lost
        self.rejoin_after_s = rejoin_after_s
        self.rebuilds = self.orphaned_joins = 0
        self.last_poll = 0.0
        self.unsettled_since: float | None = None
        self._revoked: set[Partition] = set()
        self._tps: dict[Partition, Any] = {}
        self.raw = self._subscribed(first)

    def _subscribed(self, consumer: Any = None) -> Any:
        if consumer is None:
            assert self.make is not None
            consumer = self.make()
        consumer.subscribe(self.topics, listener=_Listener(self))
        return consumer

    def _tp(self, partition: Partition) -> Any:
        tp = self._tps.get(partition)
        if tp is None:
            from kafka.structs import TopicPartition

            tp = self._tps[partition] = TopicPartition(*partition)
        return tp

    # -- reading -----------------------------------------------------------------------------------

    def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[Partition, list[Any]]:
        """Records per partition, in offset order (kafka-python ``ConsumerRecord`` objects)."""
        polled = self.raw.poll(timeout_ms=timeout_ms, max_records=max_records)
        self.last_poll = time.monotonic()
        return {(tp.topic, tp.partition): list(records) for tp, records in polled.items() if records}

    def read_again(self, partition: Partition, offset: int) -> None:
        """Read ``partition`` again from ``offset`` (workaround 2: never ``pause()``)."""
        self.raw.seek(self._tp(partition), offset)

    def hold(self, until: float) -> None:
        """Stay in the group and take nothing, until ``until`` (``time.monotonic()``) or one hold poll.

        Polls at most one record, a few times a second, and seeks back to it (workaround 2): the
        member keeps heartbeating and keeps its partitions, and reads that record again later.
        """
        polled = self.poll(HOLD_POLL_MS, max_records=1)
        for partition, records in polled.items():
            self.read_again(partition, records[0].offset)
        time.sleep(max(0.0, min(HOLD_POLL_MS / 1000, until - time.monotonic())))

    def assignment(self) -> set[Partition]:
        """The partitions this member holds now."""
        return {(tp.topic, tp.partition) for tp in self.raw.assignment()}

    def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` (empty when it does not exist)."""
        return set(self.raw.partitions_for_topic(topic) or ())

    def lags(self, ends: Mapping[Partition, int] | None = None) -> dict[Partition, int]:
        """Records left to read per assigned partition (1 when unknown).

        ``ends``: end offsets asked of the broker (:meth:`end_offsets`); without them, the client's
        cached high-water marks, which move only when a fetch response is accepted.
        """
        from kafka.errors import KafkaError

        lags: dict[Partition, int] = {}
        for partition in self.assignment() if ends is None else ends:
            tp = self._tp(partition)
            high = self.raw.highwater(tp) if ends is None else int(ends[partition])
            try:
                position = self.raw.position(tp, timeout_ms=100)
            except KafkaError:
                position = None
            lags[partition] = 1 if high is None or position is None else max(0, high - position)
        return lags

    def end_offsets(self, timeout_ms: int = 1000) -> dict[Partition, int] | None:
        """End offsets of the assigned partitions asked of the broker now; ``None`` when it does not answer."""
        from kafka.errors import KafkaError

        partitions = [self._tp(p) for p in self.assignment()]
        if not partitions:
            return {}
        try:
            ends = self.raw.end_offsets(partitions, timeout_ms=timeout_ms)
        except KafkaError as exc:
            logger.debug("end offsets unavailable (%s)", exc)
            return None
        return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    # -- committing --------------------------------------------------------------------------------

    def commit(self, positions: Mapping[Partition, int]) -> bool:
        """Commit these positions ("the next offset to read"); False when the broker refused (retry later)."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if not positions:
            return True
        offsets = {self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()}
        try:
            self.raw.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:  # a rebalance in progress, or the broker away: commit again next turn
            logger.warning("offset commit failed (%s); will retry", exc)
            return False
        return True

    # -- group membership --------------------------------------------------------------------------

    def _assigned(self) -> None:
        mine = self.assignment()
        gone, self._revoked = self._revoked - mine, set()
        logger.info("partitions assigned: %s (gone: %s)", sorted(mine), sorted(gone))
        if gone and self.on_moved is not None:
            self.on_moved(gone)

    def stable(self) -> bool | None:
        """Whether the membership has settled (``None``: cannot say)."""
        return group_stable(self.raw)

    def watch(self, now: float | None = None) -> bool:
        """The stuck-member watchdog, once a turn (workarounds 3 and 4); whether the member was replaced."""
        now = time.monotonic() if now is None else now
        if self.stable() is not False:
            self.unsettled_since = None
            return False
        if self.unsettled_since is None:
            self.unsettled_since = now
        if finish_orphaned_join(self.raw):
            self.orphaned_joins += 1
            logger.warning("the Kafka consumer's group join had stopped half-way (kafka-python 3.0.12); joining again")
        stuck_s = now - self.unsettled_since
        if stuck_s < self.rejoin_after_s or self.make is None:
            return False
        logger.error(
            "the Kafka consumer has not settled in its group for %.0f s (a join that never completes); "
            "dropping the records in hand and joining with a new consumer",
            stuck_s,
        )
        if self.on_lost is not None:
            self.on_lost()
        self.close()
        self.raw = self._subscribed()
        self.rebuilds += 1
        self.unsettled_since = None
        self._revoked = set()
        return True

    def rejoining_s(self, now: float | None = None) -> float:
        """Seconds the member has been outside a stable group (0 when settled)."""
        if self.unsettled_since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.unsettled_since

    def close(self) -> None:
        """Close without committing: everything settled was committed as it settled."""
        try:
            self.raw.close(autocommit=False, timeout_ms=COMMIT_TIMEOUT_MS)
        except Exception as exc:  # closing is the last thing done with this client: a failure changes nothing
            logger.warning("closing the Kafka consumer failed: %s", exc)
