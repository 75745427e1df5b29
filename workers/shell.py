"""The shell every worker kind shares: the run loop, stop, readiness, close, dead-letter headers, back-off.

A worker (inspection, medical report, VQA) subclasses :class:`WorkerShell` and supplies one turn of
its loop (:meth:`~WorkerShell.step`: poll → decode → domain → model → sinks → commit) and how many
records it has settled; the shell runs the turns until ``stop()`` (a signal), ``timeout`` seconds or
``count`` settled records, drains, records the run time and closes the clients::

    worker = VQAWorker(model, store, consumer, producer)
    report = worker.run(timeout=30, count=100)     # tests and benches
    worker.run()                                   # a service: until SIGTERM calls worker.stop()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from workers.clients import close_clients, finish_orphaned_join, group_stable

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
DETAIL_BYTES = 1_000


class RunReport(Protocol):
    """What a worker's report must have: the seconds its run took."""

    seconds: float


R = TypeVar("R", bound=RunReport)


class WorkerShell(Generic[R]):
    """Run loop, stop flag, readiness and close around a consumer and a producer.

    Subclasses set :attr:`consumer`, :attr:`producer`, :attr:`report`, optionally :attr:`metrics`
    (with a ``ready`` gauge), and implement :meth:`step` and :meth:`settled`.

    :meth:`watch_group` looks after the consumer's group membership every turn. kafka-python 3.0.12
    can stop driving a join half-way (:func:`workers.clients.finish_orphaned_join`: the member stays
    rebalancing, fetching nothing, every commit refused); such a join is restarted at once. A consumer
    whose membership still has not settled after ``rejoin_after_s`` is closed and replaced by
    ``consumer_factory()`` (a soak's maximum once ran on one of two workers for two minutes).
    Subclasses that hold records in hand drop them in :meth:`forget_all` first; their offsets were
    not committed, so the group reads them again.

    Attributes:
        stale_after_s: Not ready when the last poll is older than this.
        rejoin_after_s: Replace the consumer after its membership stayed unsettled this long.
        consumer_factory: Builds a fresh, subscribed consumer; ``None``: never replace it.
        consumer_rebuilds: Consumers replaced so far.
        orphaned_joins: Joins restarted because kafka-python stopped driving them
            (:func:`workers.clients.finish_orphaned_join`).

    """

    stale_after_s: float = 10.0
    rejoin_after_s: float = 60.0
    consumer_factory: Callable[[], Any] | None = None
    consumer_rebuilds: int = 0
    orphaned_joins: int = 0
    consumer: Any
    producer: Any
    report: R
    metrics: Any = None
    _stopping: bool = False
    _last_poll: float = 0.0
    _unsettled_since: float | None = None

    def step(self) -> Any:
        """One turn of the loop (poll, handle, store, commit)."""
        raise NotImplementedError

    def settled(self) -> int:
        """Records settled so far: stored or dead-lettered (what ``run(count=)`` counts)."""
        raise NotImplementedError

    def drain(self) -> None:
        """Settle what is in hand before closing; nothing by default."""

    def unhealthy(self) -> str | None:
        """Why the worker cannot take work now (a store refusing writes), else None."""
        return None

    def forget_all(self) -> None:
        """Drop every record in hand (the consumer is being replaced); nothing by default."""

    def watch_group(self, now: float | None = None) -> bool:
        """Replace a consumer stuck outside its group for ``rejoin_after_s``; whether it was replaced."""
        now = time.monotonic() if now is None else now
        if group_stable(self.consumer) is not False:
            self._unsettled_since = None
            return False
        if self._unsettled_since is None:
            self._unsettled_since = now
        if finish_orphaned_join(self.consumer):
            self.orphaned_joins += 1
            logger.warning("the Kafka consumer's group join had stopped half-way (kafka-python 3.0.12); joining again")
        stuck_s = now - self._unsettled_since
        if stuck_s < self.rejoin_after_s or self.consumer_factory is None:
            return False
        logger.error(
            "the Kafka consumer has not settled in its group for %.0f s (a join that never completes); "
            "dropping the records in hand and joining with a new consumer",
            stuck_s,
        )
        self.forget_all()
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:  # the old client is being thrown away: a failed close changes nothing
            logger.warning("closing the stuck consumer failed: %s", exc)
        self.consumer = self.consumer_factory()
        self.consumer_rebuilds += 1
        self._unsettled_since = None
        return True

    def stop(self) -> None:
        """Ask the loop to finish the work in hand, commit and return (safe from a signal handler)."""
        self._stopping = True

    def ready(self) -> tuple[bool, str]:
        """Ready while healthy, polling, and holding partitions: (ready, why)."""
        problem = self.unhealthy()
        if problem is not None:
            return False, problem
        if time.monotonic() - self._last_poll > self.stale_after_s:
            return False, "not polling"
        if self._unsettled_since is not None and time.monotonic() - self._unsettled_since > self.stale_after_s:
            return False, f"rejoining the consumer group for {time.monotonic() - self._unsettled_since:.0f} s"
        held = self.consumer.assignment()
        return (True, f"{len(held)} partitions assigned") if held else (False, "no partitions assigned")

    def polled(self) -> None:
        """Note a poll (for :meth:`ready`) and publish readiness."""
        self._last_poll = time.monotonic()
        if self.metrics is not None:
            self.metrics.ready.set(1 if self.ready()[0] else 0)

    def run(self, *, timeout: float | None = None, count: int | None = None) -> R:
        """Loop until ``stop()``, ``timeout`` seconds, or ``count`` settled records; then drain and close."""
        start = time.monotonic()
        try:
            while not self._stopping:
                if timeout is not None and time.monotonic() - start >= timeout:
                    break
                if count is not None and self.settled() >= count:
                    break
                self.step()
                self.watch_group()
            self.drain()
        finally:
            self.report.seconds = time.monotonic() - start
            self.close()
        return self.report

    def close(self) -> None:
        """Close the Kafka clients and mark the worker not ready."""
        close_clients(self.consumer, self.producer, self.metrics.ready if self.metrics is not None else None)


def dead_letter_headers(
    headers: Sequence[tuple[str, bytes | None]] | None,
    reason: str,
    detail: str,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> list[tuple[str, bytes]]:
    """The record's own headers (earlier ``dlq_*`` dropped) plus ``dlq_reason``, ``dlq_detail`` and its origin."""
    kept = [(n, v) for n, v in (headers or []) if v is not None and not n.startswith("dlq_")]  # (name, bytes)
    added: dict[str, object] = {"dlq_reason": reason, "dlq_detail": detail[:DETAIL_BYTES], "dlq_topic": topic}
    added |= {"dlq_partition": partition, "dlq_offset": offset}
    return kept + [(name, str(value).encode()) for name, value in added.items() if value is not None]


class Backoff:
    """Seconds to wait after a refused write: ``first`` doubling up to ``most``; :meth:`reset` after a success.

    Args:
        first: The first wait.
        most: The longest wait.

    """

    def __init__(self, first: float = 1.0, most: float = MAX_BACKOFF_S) -> None:
        self.first, self.most = first, most
        self.seconds = first

    def wait(self) -> float:
        """Sleep the current wait, double the next one; the seconds slept."""
        slept = self.seconds
        time.sleep(slept)
        self.seconds = min(self.most, self.seconds * 2)
        return slept

    def reset(self) -> None:
        """Back to the first wait."""
        self.seconds = self.first
