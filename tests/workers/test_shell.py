"""The shell every worker kind shares: run loop, readiness, watchdog metrics, drain and close."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka.structs import ConsumerGroupMetadata, MemberState
from prometheus_client import CollectorRegistry

from tests.workers.fakes import FakeKafkaConsumer, FakeProducer, FakeRedis
from workers.kafka.checkpoint import Checkpoint, Outcome
from workers.kafka.metrics import DeliveryMetrics
from workers.shell import WorkerShell
from workers.stores import Claim, ClaimedStore


@dataclass
class Report:
    seconds: float = 0.0
    handled: int = 0


class Counting(WorkerShell[Report]):
    def __init__(self, raw: FakeKafkaConsumer | None = None, redis: FakeRedis | None = None, **kw: object) -> None:
        self.delivery = DeliveryMetrics(CollectorRegistry(), "test")
        self.raw = raw or FakeKafkaConsumer({"t": 2})
        self.consumer = self.group_consumer(kw.get("make"), ["t"], given=self.raw)  # type: ignore[arg-type]
        self.producer, self.report = FakeProducer(), Report()
        self.checkpoint = Checkpoint(
            self.consumer, self.producer, ClaimedStore(redis or FakeRedis(), "p", 60), dlq="dlq", retry_s=0.01,
            metrics=self.delivery,
        )  # fmt: skip
        self.stop_after = kw.get("stop_after")
        self.drain_s = 0.1

    def step(self) -> None:
        self.consumer.poll(0)
        self.polled()
        self.report.handled += 1
        if self.report.handled == self.stop_after:
            self.stop()  # as a SIGTERM handler would

    def settled(self) -> int:
        return self.report.handled


def test_run_stops_at_count_drains_and_closes() -> None:
    worker = Counting()
    report = worker.run(count=7)
    assert report.handled == 7 and worker.raw.closed and worker.producer.closed and report.seconds >= 0


def test_run_stops_on_stop_and_on_timeout() -> None:
    assert Counting(stop_after=3).run().handled == 3
    worker = Counting()
    assert worker.run(timeout=0.05).handled > 0 and worker.raw.closed


def test_ready_says_why_not_and_publishes_it() -> None:
    worker = Counting(redis=FakeRedis(failures=10**9))
    assert worker.ready() == (False, "not polling")
    worker.consumer.last_poll = time.monotonic()
    assert worker.ready() == (False, "no partitions assigned")  # the first poll has not joined yet
    worker.step()
    assert worker.ready() == (True, "2 partitions assigned")
    assert worker.delivery is not None and worker.delivery.ready._value.get() == 1
    worker.checkpoint.consumed(("t", 0, 0))
    worker.checkpoint.add(Outcome((("t", 0, 0),), item=Claim("t/0/0", "p:k", "k", "{}")))
    assert not worker.checkpoint.flush()  # Redis refuses: the worker holds
    ready, why = worker.ready()
    assert not ready and why.startswith("writes refused")


class Member(FakeKafkaConsumer):
    def __init__(self, state: str) -> None:
        super().__init__({"t": 1})
        self.state = state

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", 3, "member-1", None, self.state)


def test_ready_is_false_while_the_group_has_not_settled_for_long_and_a_replacement_is_counted() -> None:
    stuck, fresh = Member(MemberState.REBALANCING), Member(MemberState.STABLE)
    worker = Counting(raw=stuck, make=lambda: fresh)
    worker.step()
    worker.consumer.unsettled_since = time.monotonic() - 3 * worker.stale_after_s
    ready, why = worker.ready()
    assert not ready and why.startswith("rejoining the consumer group for")
    worker.consumer.rejoin_after_s = 0.0
    assert worker.watch() and worker.consumer.raw is fresh
    assert worker.delivery is not None and worker.delivery.rebuilds._value.get() == 1
