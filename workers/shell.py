"""The shell every worker kind shares: the run loop, stop, readiness, the watchdog, drain and close.

A worker (inspection, medical report, VQA) subclasses :class:`WorkerShell`, builds its
:class:`~workers.kafka.consumer.GroupConsumer` with :meth:`~WorkerShell.group_consumer` and its
:class:`~workers.kafka.checkpoint.Checkpoint`, and supplies one turn of its loop
(:meth:`~WorkerShell.step`: poll → decode → domain → model → outcomes → ``checkpoint.flush()``) and
how many records it has settled. The shell runs the turns until ``stop()`` (a signal), ``timeout``
seconds or ``count`` settled records, watches the group membership every turn, drains, records the
run time and closes the clients::

    worker = VQAWorker(model, store, consumer, producer)
    report = worker.run(timeout=30, count=100)     # tests and benches
    worker.run()                                   # a service: until SIGTERM calls worker.stop()

Every kind therefore gets the same watchdog, hold policy, dead-letter handling and delivery metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from workers.kafka.checkpoint import Checkpoint
from workers.kafka.consumer import GroupConsumer, Partition
from workers.kafka.metrics import DeliveryMetrics

logger = logging.getLogger(__name__)


class RunReport(Protocol):
    """What a worker's report must have: the seconds its run took."""

    seconds: float


R = TypeVar("R", bound=RunReport)


class WorkerShell(Generic[R]):
    """Run loop, stop flag, readiness, watchdog and close around a group consumer and a checkpoint.

    Subclasses set :attr:`consumer` (from :meth:`group_consumer`), :attr:`checkpoint`,
    :attr:`producer`, :attr:`report`, optionally :attr:`delivery`, and implement :meth:`step` and
    :meth:`settled`; :meth:`forget` and :meth:`forget_all` drop their own records in hand.

    Attributes:
        stale_after_s: Not ready when the last poll is older than this.
        drain_s: At a stop, how long the pending writes are tried before closing without them.

    """

    stale_after_s: float = 10.0
    drain_s: float = 30.0
    consumer: GroupConsumer
    checkpoint: Checkpoint
    producer: Any
    report: R
    delivery: DeliveryMetrics | None = None
    _stopping: bool = False

    def group_consumer(
        self, make: Callable[[], Any] | None, topics: Sequence[str], *, given: Any = None, rejoin_after_s: float = 60.0
    ) -> GroupConsumer:
        """The worker's group consumer on ``given`` (a test's fake) or one ``make`` builds.

        ``make`` also builds the replacement when the watchdog replaces a stuck member; without it
        the member is never replaced.
        """
        return GroupConsumer(
            make, topics, first=given, on_moved=self._moved, on_lost=self._lost, rejoin_after_s=rejoin_after_s
        )

    def step(self) -> Any:
        """One turn of the loop (poll, handle, write, commit)."""
        raise NotImplementedError

    def settled(self) -> int:
        """Records settled so far: stored or dead-lettered (what ``run(count=)`` counts)."""
        raise NotImplementedError

    def forget(self, partitions: set[Partition]) -> None:
        """Drop the worker's own records in hand of partitions that moved away; nothing by default."""

    def forget_all(self) -> None:
        """Drop every record in hand of the worker's own (the consumer is replaced); nothing by default."""

    def _moved(self, partitions: set[Partition]) -> None:
        self.checkpoint.forget(partitions)
        self.forget(partitions)

    def _lost(self) -> None:
        self.checkpoint.reset()
        self.forget_all()

    def drain(self) -> None:
        """Settle what is in hand before closing: by default, write the pending outcomes (``drain_s`` at most)."""
        self.checkpoint.drain(self.drain_s)

    def unhealthy(self) -> str | None:
        """Why the worker cannot take work now (a sink refusing writes), else None."""
        if self.checkpoint.holding:
            return "writes refused (result store or dead-letter topic); holding and retrying"
        return None

    def stop(self) -> None:
        """Ask the loop to finish the work in hand, commit and return (safe from a signal handler)."""
        self._stopping = True

    def ready(self) -> tuple[bool, str]:
        """Ready while writes are accepted, polling, settled in the group and holding partitions: (ready, why)."""
        problem = self.unhealthy()
        if problem is not None:
            return False, problem
        if time.monotonic() - self.consumer.last_poll > self.stale_after_s:
            return False, "not polling"
        rejoining = self.consumer.rejoining_s()
        if rejoining > self.stale_after_s:
            return False, f"rejoining the consumer group for {rejoining:.0f} s"
        held = self.consumer.assignment()
        return (True, f"{len(held)} partitions assigned") if held else (False, "no partitions assigned")

    def polled(self) -> None:
        """Publish the poll time and readiness (after a poll)."""
        if self.delivery is not None:
            self.delivery.last_poll.set(time.time())
            self.delivery.ready.set(1 if self.ready()[0] else 0)

    def watch(self) -> bool:
        """The stuck-member watchdog (:meth:`GroupConsumer.watch`) with its metrics; whether it replaced the member."""
        joins = self.consumer.orphaned_joins
        replaced = self.consumer.watch()
        if self.delivery is not None:
            self.delivery.orphaned_joins.inc(self.consumer.orphaned_joins - joins)
            if replaced:
                self.delivery.rebuilds.inc()
        return replaced

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
                self.watch()
            self.drain()
        finally:
            self.report.seconds = time.monotonic() - start
            self.close()
        return self.report

    def close(self) -> None:
        """Mark the worker not ready, close the consumer uncommitted, then the producer (5 s to flush)."""
        if self.delivery is not None:
            self.delivery.ready.set(0)
        try:
            self.consumer.close()
        finally:
            self.producer.close(timeout=5)
