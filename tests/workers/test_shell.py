from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from kafka.structs import ConsumerGroupMetadata, MemberState

from workers import shell
from workers.shell import Backoff, WorkerShell, dead_letter_headers


def test_dead_letter_headers_keep_the_record_s_own_and_replace_earlier_verdicts() -> None:
    old = [("schema", b"frame/1"), ("dlq_reason", b"bad_image"), ("empty", None)]
    found = dict(dead_letter_headers(old, "too_large", "x" * 5000, topic="t", partition=3, offset=17))
    assert found == {
        "schema": b"frame/1", "dlq_reason": b"too_large", "dlq_detail": b"x" * 1000,
        "dlq_topic": b"t", "dlq_partition": b"3", "dlq_offset": b"17",
    }  # fmt: skip
    assert dict(dead_letter_headers(None, "empty_question", "no words")) == {
        "dlq_reason": b"empty_question", "dlq_detail": b"no words",
    }  # fmt: skip


def test_backoff_doubles_to_its_ceiling_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(shell.time, "sleep", slept.append)
    backoff = Backoff(first=1.0, most=5.0)
    assert [backoff.wait() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0] == slept
    backoff.reset()
    assert backoff.wait() == 1.0


@dataclass
class Report:
    seconds: float = 0.0
    handled: int = 0


class Consumer:
    def __init__(self) -> None:
        self.held: set[int] = set()
        self.closed = False

    def assignment(self) -> set[int]:
        return self.held

    def close(self, autocommit: bool = False) -> None:
        self.closed = True


class Producer:
    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class Counting(WorkerShell[Report]):
    def __init__(self, stop_after: int | None = None) -> None:
        self.consumer, self.producer, self.report = Consumer(), Producer(), Report()
        self.stop_after, self.drained, self.broken = stop_after, False, False

    def step(self) -> None:
        self.polled()
        self.report.handled += 1
        if self.report.handled == self.stop_after:
            self.stop()  # as a SIGTERM handler would

    def settled(self) -> int:
        return self.report.handled

    def drain(self) -> None:
        self.drained = True

    def unhealthy(self) -> str | None:
        return "store refuses writes" if self.broken else None


def test_run_stops_at_count_drains_and_closes() -> None:
    worker = Counting()
    report = worker.run(count=7)
    assert report.handled == 7 and worker.drained and worker.consumer.closed and report.seconds >= 0


def test_run_stops_on_stop_and_on_timeout() -> None:
    assert Counting(stop_after=3).run().handled == 3
    worker = Counting()
    assert worker.run(timeout=0.05).handled > 0 and worker.consumer.closed


def test_ready_says_why_not() -> None:
    worker = Counting()
    assert worker.ready() == (False, "not polling")
    worker.polled()
    assert worker.ready() == (False, "no partitions assigned")
    worker.consumer.held = {0, 1}
    assert worker.ready() == (True, "2 partitions assigned")
    worker.broken = True
    assert worker.ready() == (False, "store refuses writes")


class GroupConsumer(Consumer):
    """A consumer that reports a group membership state, as kafka-python's ``group_metadata()`` does."""

    def __init__(self, state: str) -> None:
        super().__init__()
        self.state = state

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", 3, "member-1", None, self.state)


class Forgetting(Counting):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten = 0

    def forget_all(self) -> None:
        self.forgotten += 1


def test_a_consumer_stuck_outside_its_group_is_replaced_after_rejoin_after_s() -> None:
    worker = Forgetting()
    stuck = GroupConsumer(MemberState.REBALANCING)
    fresh = GroupConsumer(MemberState.STABLE)
    worker.consumer, worker.consumer_factory, worker.rejoin_after_s = stuck, lambda: fresh, 60.0
    assert not worker.watch_group(now=1000.0)  # unsettled from here on
    assert not worker.watch_group(now=1059.0)  # a rebalance may take this long
    assert worker.forgotten == 0 and not stuck.closed
    assert worker.watch_group(now=1060.5)
    assert worker.consumer is fresh and stuck.closed and worker.forgotten == 1 and worker.consumer_rebuilds == 1
    assert not worker.watch_group(now=2000.0)  # the fresh one is stable


def test_a_rebalance_that_settles_in_time_resets_the_clock_and_nothing_is_replaced() -> None:
    worker = Forgetting()
    consumer = GroupConsumer(MemberState.REBALANCING)
    worker.consumer, worker.consumer_factory = consumer, lambda: pytest.fail("must not be replaced")
    worker.watch_group(now=0.0)
    consumer.state = MemberState.STABLE
    worker.watch_group(now=50.0)
    consumer.state = MemberState.REBALANCING
    assert not worker.watch_group(now=70.0) and not worker.watch_group(now=129.0)
    assert worker.forgotten == 0


def test_ready_is_false_while_the_group_has_not_settled_for_long() -> None:
    worker = Counting()
    worker.consumer = GroupConsumer(MemberState.REBALANCING)
    worker.consumer.held = {0}
    worker.polled()
    worker.watch_group(now=time.monotonic() - 3 * worker.stale_after_s)
    ready, why = worker.ready()
    assert not ready and why.startswith("rejoining the consumer group for")


def test_without_a_factory_or_a_group_state_nothing_is_replaced() -> None:
    worker = Forgetting()
    worker.consumer = GroupConsumer(MemberState.UNJOINED)
    assert not worker.watch_group(now=0.0) and not worker.watch_group(now=1e6)  # no factory: keep it
    plain = Forgetting()
    plain.consumer_factory = lambda: pytest.fail("a consumer without a group state is never replaced")
    assert not plain.watch_group(now=0.0) and not plain.watch_group(now=1e6)


class _OrphanCoordinator:
    """kafka-python's coordinator left ``REBALANCING`` by a join nothing drives any more."""

    class _Subscription:
        def partitions_auto_assigned(self) -> bool:
            return True

    def __init__(self) -> None:
        self.state, self._subscription, self.rejoin_needed = MemberState.REBALANCING, self._Subscription(), False

    def need_rejoin(self) -> bool:
        return self.rejoin_needed

    def request_rejoin(self) -> None:
        self.rejoin_needed = True


def test_an_orphaned_join_is_restarted_at_once_not_replaced() -> None:
    worker = Forgetting()
    consumer = GroupConsumer(MemberState.REBALANCING)
    consumer._coordinator = _OrphanCoordinator()  # type: ignore[attr-defined]
    worker.consumer, worker.consumer_factory = consumer, lambda: pytest.fail("a restarted join needs no new consumer")
    assert not worker.watch_group(now=0.0)
    assert worker.orphaned_joins == 1 and consumer._coordinator.rejoin_needed  # type: ignore[attr-defined]
    assert not worker.watch_group(now=1.0) and worker.orphaned_joins == 1  # driven again: asked once
    assert worker.forgotten == 0 and not consumer.closed
