"""Read the two frame topics in step, and only give up on a partner once it cannot be waiting in Kafka.

A worker with a backlog (after a restart, a rebalance, a burst) must not read all of
``frames.visible`` before ``frames.infrared``: every visible frame would wait for a partner still
unread in Kafka, memory would fill with decoded images, and the pairing timeout would report partners
"missing" that were only behind. Two rules fix that, as Kafka Streams does for joins:

* **Aligned reading** (:class:`StreamAlignment`): for each partition number, records of one topic
  that run more than ``max_skew_ms`` (record timestamps) ahead of what was read of the other topic,
  while the other still has records to read, are not taken now: the worker seeks back to the first
  of them and reads them again once the other topic has caught up. (Seeking back rather than
  ``pause()``/``resume()``: kafka-python 3.0 can leave a resumed partition parked and never fetch it
  again.)
* **A byte budget per poll** (:func:`within_budget`): the records taken from one poll hold at most
  ``worker.max_poll_bytes``, oldest first across partitions, so the frames decoded at once (and held
  while they wait for a partner) stay bounded; the rest are read again, by the same seek-back.
* **A pairing clock that stops while behind** (:class:`PairingClock`): the pairing timeout counts
  only time during which the worker has read everything there is (no lag), so a partner that is
  merely unread is never declared missing. Past ``max_waiting`` waiting frames the clock runs anyway,
  so a camera that is really gone cannot make a permanently overloaded worker hoard frames.

Both are pure bookkeeping; the worker does the pausing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Partition = tuple[str, int]


class StreamAlignment:
    """Which frame-topic partitions to pause so that the visible and infrared streams stay in step.

    Args:
        visible: The visible frame topic.
        infrared: The infrared frame topic.
        max_skew_ms: How far (record timestamps) one topic's partition may run ahead of its partner.

    """

    def __init__(self, visible: str, infrared: str, max_skew_ms: float) -> None:
        self.partner = {visible: infrared, infrared: visible}
        self.max_skew_ms = max_skew_ms
        self.latest: dict[Partition, int] = {}  # newest record timestamp seen per partition

    def forget(self, partitions: list[Partition]) -> None:
        """Partitions that left this worker."""
        for partition in partitions:
            self.latest.pop(partition, None)

    def admit(self, polled: Mapping[Partition, Sequence[int]], lags: Mapping[Partition, int]) -> dict[Partition, int]:
        """How many of each partition's polled records (timestamps in offset order) to take now.

        A record is taken when it is at most ``max_skew_ms`` newer than the newest record seen so far
        on the partner partition (taken or not), or when the partner has nothing left to read. The
        side that is behind is therefore always taken, so the two sides cannot wait for each other.

        Args:
            polled: Record timestamps (ms) per partition, as one poll returned them.
            lags: Records left to read per assigned partition after that poll.

        Returns:
            Per polled partition, the number of its first records to take; the rest are read again later.

        """
        for partition, stamps in polled.items():
            if stamps:
                self.latest[partition] = max(self.latest.get(partition, stamps[-1]), *stamps)
        take: dict[Partition, int] = {}
        for (topic, number), stamps in polled.items():
            other = (self.partner[topic], number)
            count = len(stamps)
            if lags.get(other, 1) > 0:  # the partner still has records to read (or was never fetched)
                partner = self.latest.get(other)
                limit = -1 if partner is None else partner + self.max_skew_ms
                count = next((i for i, stamp in enumerate(stamps) if stamp > limit), len(stamps))
            take[(topic, number)] = count
        return take


def within_budget(
    polled: Mapping[Partition, Sequence[tuple[int, int]]], take: Mapping[Partition, int], budget: int
) -> dict[Partition, int]:
    """Cut ``take`` so that the records taken hold at most ``budget`` bytes; at least one is taken.

    Records are taken oldest first across partitions (by timestamp; each partition in offset order),
    so both frame topics advance together, and taking stops at the first record that does not fit.

    Args:
        polled: Per partition, ``(timestamp ms, size in bytes)`` of each polled record in offset order.
        take: Per partition, how many of its first records :meth:`StreamAlignment.admit` takes.
        budget: Most bytes taken in all.

    Returns:
        Per partition of ``take``, the number of its first records to take; the rest are read again later.

    """
    cut = dict.fromkeys(take, 0)
    used = 0
    while heads := [(polled[p][cut[p]][0], p) for p in take if cut[p] < take[p]]:
        _, partition = min(heads)
        size = polled[partition][cut[partition]][1]
        if used and used + size > budget:
            break
        used += size
        cut[partition] += 1
    return cut


class PairingClock:
    """Nanoseconds for the pairing timeout that advance only while the worker is caught up.

    Args:
        max_waiting: Frames waiting for a partner beyond which the clock runs even while behind.

    """

    def __init__(self, max_waiting: int = 512) -> None:
        self.max_waiting = max_waiting
        self.now_ns = 0
        self._last: int | None = None

    def tick(self, monotonic_ns: int, *, behind: bool, waiting: int) -> int:
        """Advance by the time since the last tick unless behind (and not hoarding); return the clock."""
        if self._last is not None and (not behind or waiting > self.max_waiting):
            self.now_ns += monotonic_ns - self._last
        self._last = monotonic_ns
        return self.now_ns
