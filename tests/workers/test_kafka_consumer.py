"""The group consumer's kafka-python workarounds on in-memory stand-ins: watchdog, orphaned joins, rebalances, holds.

Each workaround also has a real-broker test (docs/RELIABILITY.md, "kafka-python version", lists them).
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka.structs import ConsumerGroupMetadata, MemberState, TopicPartition

from tests.workers.fakes import FakeKafkaConsumer, Record
from workers.kafka.consumer import GroupConsumer, finish_orphaned_join

TOPIC = "t"


class Member(FakeKafkaConsumer):
    """A fake member that reports a group membership state, as kafka-python's ``group_metadata()`` does."""

    def __init__(self, state: str, partitions: int = 2) -> None:
        super().__init__({TOPIC: partitions})
        self.state = state

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", 3, "member-1", None, self.state)


def watched(first: Any, make: Any = None, rejoin_after_s: float = 60.0) -> tuple[GroupConsumer, list[str]]:
    events: list[str] = []
    consumer = GroupConsumer(
        make, [TOPIC], first=first, on_lost=lambda: events.append("lost"),
        on_moved=lambda gone: events.append(f"moved {sorted(gone)}"), rejoin_after_s=rejoin_after_s,
    )  # fmt: skip
    return consumer, events


def test_a_member_stuck_outside_its_group_is_replaced_after_rejoin_after_s() -> None:
    stuck, fresh = Member(MemberState.REBALANCING), Member(MemberState.STABLE)
    consumer, events = watched(stuck, make=lambda: fresh)
    assert not consumer.watch(now=1000.0)  # unsettled from here on
    assert not consumer.watch(now=1059.0)  # a rebalance may take this long
    assert events == [] and not stuck.closed
    assert consumer.watch(now=1060.5)
    assert consumer.raw is fresh and stuck.closed and events == ["lost"] and consumer.rebuilds == 1
    assert fresh.subscribed == [TOPIC] and fresh.listener is not None  # subscribed like the first
    assert not consumer.watch(now=2000.0)  # the fresh one is stable


def test_a_rebalance_that_settles_in_time_resets_the_clock_and_nothing_is_replaced() -> None:
    member = Member(MemberState.REBALANCING)
    consumer, events = watched(member, make=lambda: pytest.fail("must not be replaced"))
    consumer.watch(now=0.0)
    member.state = MemberState.STABLE
    consumer.watch(now=50.0)
    member.state = MemberState.REBALANCING
    assert not consumer.watch(now=70.0) and not consumer.watch(now=129.0)
    assert events == [] and consumer.rejoining_s(now=129.0) == 59.0


def test_without_a_factory_or_a_group_state_nothing_is_replaced() -> None:
    consumer, events = watched(Member(MemberState.UNJOINED))
    assert not consumer.watch(now=0.0) and not consumer.watch(now=1e6)  # no factory: keep it
    plain, _ = watched(FakeKafkaConsumer({TOPIC: 1}), make=lambda: pytest.fail("no group state: never replaced"))
    assert not plain.watch(now=0.0) and not plain.watch(now=1e6) and events == []


class _Sub:
    def partitions_auto_assigned(self) -> bool:
        return True


class _OrphanCoordinator:
    """kafka-python's coordinator left ``REBALANCING`` by a join nothing drives any more."""

    def __init__(self) -> None:
        self.state, self._subscription, self.rejoin_needed = MemberState.REBALANCING, _Sub(), False

    def need_rejoin(self) -> bool:
        return self.rejoin_needed

    def request_rejoin(self) -> None:
        self.rejoin_needed = True


def test_an_orphaned_join_is_restarted_at_once_not_replaced() -> None:
    member = Member(MemberState.REBALANCING)
    member._coordinator = _OrphanCoordinator()  # type: ignore[attr-defined]
    consumer, events = watched(member, make=lambda: pytest.fail("a restarted join needs no new consumer"))
    assert not consumer.watch(now=0.0)
    assert consumer.orphaned_joins == 1 and member._coordinator.rejoin_needed  # type: ignore[attr-defined]
    assert not consumer.watch(now=1.0) and consumer.orphaned_joins == 1  # driven again: asked once
    assert events == [] and not member.closed


def test_partitions_that_move_away_are_reported_and_those_kept_are_not() -> None:
    raw = FakeKafkaConsumer({TOPIC: 3})
    consumer, events = watched(raw)
    consumer.poll(0)  # the first poll joins: all three partitions
    assert consumer.assignment() == {(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)} and events == []
    raw.rebalance({TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)})  # partition 1 went to another member
    assert events == ["moved [('t', 1)]"]


def test_hold_stays_in_the_group_and_takes_nothing() -> None:
    raw = FakeKafkaConsumer({TOPIC: 1}, [Record(TOPIC, b"a"), Record(TOPIC, b"b")])
    consumer, _ = watched(raw)
    consumer.hold(until=0.0)
    consumer.hold(until=0.0)
    assert raw.polls == [1, 1] and raw.positions[TopicPartition(TOPIC, 0)] == 0  # read one, sought back to it
    assert [r.value for r in consumer.poll(0)[(TOPIC, 0)]] == [b"a", b"b"]  # nothing was skipped


def test_a_refused_commit_is_reported_not_raised() -> None:
    raw = FakeKafkaConsumer({TOPIC: 1}, refuse_commits=1)
    consumer, _ = watched(raw)
    assert not consumer.commit({(TOPIC, 0): 3})
    assert consumer.commit({(TOPIC, 0): 3}) and raw.committed == {(TOPIC, 0): 3}


def test_lags_from_the_cached_marks_or_from_end_offsets() -> None:
    raw = FakeKafkaConsumer({TOPIC: 2}, [Record(TOPIC, b"x", partition=1) for _ in range(5)])
    consumer, _ = watched(raw)
    consumer.poll(0, max_records=2)
    assert consumer.lags() == {(TOPIC, 0): 0, (TOPIC, 1): 3}
    assert consumer.end_offsets() == {(TOPIC, 0): 0, (TOPIC, 1): 5}
    assert consumer.lags({(TOPIC, 1): 9}) == {(TOPIC, 1): 7}


class _Subscription:
    def __init__(self, auto: bool) -> None:
        self.auto = auto

    def partitions_auto_assigned(self) -> bool:
        return self.auto


class _Coordinator:
    """kafka-python 3.0.12's ``ConsumerCoordinator`` as far as the orphaned-join check reads it."""

    def __init__(self, state: str, need_rejoin: bool, auto: bool = True) -> None:
        self.state, self._need, self._subscription = state, need_rejoin, _Subscription(auto)
        self.rejoin_requests = 0

    def need_rejoin(self) -> bool:
        return self._need

    def request_rejoin(self) -> None:
        self.rejoin_requests += 1
        self._need = True


class _Consumer:
    def __init__(self, coordinator: object) -> None:
        self._coordinator = coordinator


def test_a_join_left_rebalancing_with_nothing_driving_it_is_restarted() -> None:
    orphan = _Coordinator(MemberState.REBALANCING, need_rejoin=False)
    assert finish_orphaned_join(_Consumer(orphan))
    assert orphan.rejoin_requests == 1 and orphan.need_rejoin()  # the next poll joins again
    assert not finish_orphaned_join(_Consumer(orphan))  # now driven: asked once only


@pytest.mark.parametrize(
    ("state", "need_rejoin", "auto"),
    [
        (MemberState.STABLE, False, True),  # settled
        (MemberState.REBALANCING, True, True),  # a join poll() is still driving
        (MemberState.UNJOINED, False, False),  # manual assignment: no group join at all
    ],
)
def test_a_settled_or_driven_consumer_is_left_alone(state: str, need_rejoin: bool, auto: bool) -> None:
    coordinator = _Coordinator(state, need_rejoin, auto)
    assert not finish_orphaned_join(_Consumer(coordinator)) and coordinator.rejoin_requests == 0


def test_a_consumer_without_kafka_python_internals_is_left_alone() -> None:
    assert not finish_orphaned_join(object())
    assert not finish_orphaned_join(_Consumer(object()))  # another client version: no need_rejoin()
