"""Which offsets a worker may commit: the lowest offset per partition that is not yet settled.

Frames of one partition settle out of order: a visible frame waits for its infrared partner while
later frames pair at once. Committing the highest settled offset would skip the waiting frame after a
crash, so the committable position of a partition is its first unsettled offset (Kafka's commit
convention: "the next offset to read")::

    tracker = OffsetTracker()
    tracker.consumed(("frames.visible", 0), 10)
    tracker.consumed(("frames.visible", 0), 11)
    tracker.settled(("frames.visible", 0), 11)
    tracker.committable()            # {} : offset 10 still waits
    tracker.settled(("frames.visible", 0), 10)
    tracker.committable()            # {("frames.visible", 0): 12}

Pure bookkeeping; the worker does the committing.
"""

from __future__ import annotations

from collections.abc import Iterable

Partition = tuple[str, int]


class OffsetTracker:
    """Consumed and settled offsets per partition; what may be committed, and what was."""

    def __init__(self) -> None:
        self._open: dict[Partition, set[int]] = {}
        self._next: dict[Partition, int] = {}  # one past the highest offset consumed
        self._committed: dict[Partition, int] = {}

    def consumed(self, partition: Partition, offset: int) -> None:
        """A record was received and is not settled yet."""
        self._open.setdefault(partition, set()).add(offset)
        self._committed.setdefault(partition, offset)  # where the group stood when this member started reading
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def settled(self, partition: Partition, offset: int) -> None:
        """A record is done with: stored, sent to the dead-letter topic, or deliberately skipped."""
        self._open.get(partition, set()).discard(offset)

    def pending(self) -> int:
        """Records consumed and not settled."""
        return sum(len(offsets) for offsets in self._open.values())

    def committable(self) -> dict[Partition, int]:
        """Partitions whose commit position moved since :meth:`mark_committed`, with that position."""
        moves: dict[Partition, int] = {}
        for partition, after in self._next.items():
            waiting = self._open.get(partition)
            position = min(waiting) if waiting else after
            if position > self._committed.get(partition, -1):
                moves[partition] = position
        return moves

    def mark_committed(self, positions: dict[Partition, int]) -> None:
        """The broker accepted these commit positions."""
        for partition, position in positions.items():
            self._committed[partition] = max(self._committed.get(partition, -1), position)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop everything known about partitions this worker no longer owns (after a rebalance)."""
        for partition in partitions:
            self._open.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
