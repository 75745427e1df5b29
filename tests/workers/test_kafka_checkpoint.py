"""The at-least-once contract on in-memory stand-ins: write before commit, hold and back off, give up, forget."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry

from tests.workers.fakes import FakeKafkaConsumer, FakeProducer, Record
from workers.kafka.checkpoint import MAX_BACKOFF_S, Checkpoint, Outcome, Outgoing, dead_letter_headers
from workers.kafka.consumer import GroupConsumer
from workers.kafka.metrics import DeliveryMetrics

T = "t"


class Sink:
    """Stores items in ``stored``; refuses ``failures`` writes first (the first after ``partial`` items)."""

    def __init__(self, failures: int = 0, partial: int = 0) -> None:
        self.stored: list[str] = []
        self.failures, self.partial, self.calls = failures, partial, 0

    def write(self, items: Sequence[str]) -> Iterator[bool]:
        self.calls += 1
        for index, item in enumerate(items):
            if self.failures and index == (self.partial if self.calls == 1 else 0):
                self.failures -= 1
                raise ConnectionError("down (injected)")
            fresh = item not in self.stored
            self.stored.append(item)
            yield fresh


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def setup(
    sink: Sink | None = None, producer: FakeProducer | None = None, give_up_after: int | None = None, records: int = 6
) -> tuple[Checkpoint, FakeKafkaConsumer, Clock, CollectorRegistry]:
    raw = FakeKafkaConsumer({T: 2}, [Record(T, b"v", partition=i % 2) for i in range(records)])
    consumer = GroupConsumer(None, [T], first=raw)
    consumer.poll(0, max_records=0)  # join: both partitions assigned
    clock, registry = Clock(), CollectorRegistry()
    checkpoint = Checkpoint(
        consumer, producer or FakeProducer(), sink or Sink(), dlq="dlq", retry_s=1.0, give_up_after=give_up_after,
        metrics=DeliveryMetrics(registry, "test"), clock=clock,
    )  # fmt: skip
    return checkpoint, raw, clock, registry


def outcome(offset: int, partition: int = 0, **kw: object) -> Outcome:
    return Outcome(((T, partition, offset),), item=kw.pop("item", f"{partition}/{offset}"), **kw)  # type: ignore[arg-type]


def test_offsets_are_committed_only_up_to_the_first_record_not_written() -> None:
    checkpoint, raw, _, _ = setup()
    for offset in range(3):
        checkpoint.consumed((T, 0, offset))
    checkpoint.add(outcome(1))  # offset 0 is still in hand (a frame waiting for its partner)
    assert checkpoint.flush()
    assert raw.commits == []
    checkpoint.add(outcome(0))
    checkpoint.skip((T, 0, 2))  # done with, nothing to write
    assert checkpoint.flush() and raw.committed == {(T, 0): 3}


def test_a_refused_write_holds_backs_off_doubling_and_retries_only_what_failed() -> None:
    sink = Sink(failures=3, partial=1)
    checkpoint, raw, clock, registry = setup(sink)
    for offset in range(2):
        checkpoint.consumed((T, 0, offset))
        checkpoint.add(outcome(offset))
    assert not checkpoint.flush() and checkpoint.holding and raw.commits == [{(T, 0): 1}]  # offset 0 is written
    assert sink.stored == ["0/0"] and checkpoint.retry_at == 1.0  # and is not written again
    assert not checkpoint.flush() and sink.calls == 1  # the back-off has not run out: nothing tried
    waits = []
    for _ in range(2):
        clock.now = checkpoint.retry_at
        waits.append(checkpoint.retry_at)
        assert not checkpoint.flush()
    assert [b - a for a, b in zip([0.0, *waits], [*waits, checkpoint.retry_at], strict=True)] == [1.0, 2.0, 4.0]
    clock.now = checkpoint.retry_at
    assert checkpoint.flush() and not checkpoint.holding
    assert sink.stored == ["0/0", "0/1"] and raw.committed == {(T, 0): 2}
    assert checkpoint.store_errors == 3 and registry.get_sample_value("test_store_errors_total") == 3
    assert registry.get_sample_value("test_holding") == 0


def test_the_back_off_is_capped() -> None:
    checkpoint, _, clock, _ = setup(Sink(failures=10**9))
    checkpoint.consumed((T, 0, 0))
    checkpoint.add(outcome(0))
    gaps = []
    for _ in range(9):
        before = clock.now = checkpoint.retry_at
        checkpoint.flush()
        gaps.append(checkpoint.retry_at - before)
    assert gaps[-1] == MAX_BACKOFF_S and max(gaps) == MAX_BACKOFF_S


def test_records_are_produced_after_the_item_is_stored_and_a_refused_topic_is_retried_alone() -> None:
    producer = FakeProducer(refuse={"replies": 1})
    checkpoint, raw, clock, _ = setup(producer=producer)
    for offset in range(2):
        checkpoint.consumed((T, 0, offset))
    checkpoint.add(outcome(0, produce=[Outgoing("replies", b"a"), Outgoing("mirror", b"a")]))
    checkpoint.add(outcome(1, produce=[Outgoing("mirror", b"b")]))
    assert not checkpoint.flush() and raw.committed == {}  # offset 0 waits for its reply; 1 is done
    clock.now = checkpoint.retry_at
    assert checkpoint.flush() and raw.committed == {(T, 0): 2}
    assert [s[:2] for s in producer.sent] == [("mirror", b"a"), ("mirror", b"b"), ("replies", b"a")]


def test_after_give_up_after_refusals_an_outcome_becomes_its_dead_letter() -> None:
    checkpoint, raw, clock, registry = setup(Sink(failures=10**9), give_up_after=2)
    checkpoint.consumed((T, 0, 0))
    record = raw.logs[next(iter(raw.logs))][0]
    letter = checkpoint.letter((T, 0, 0), record.value, b"k", [("schema", b"x")], "write_failed", "")
    given: list[str] = []

    def give_up(detail: str) -> Outcome:
        given.append(detail)
        return letter

    checkpoint.add(outcome(0, give_up=give_up))
    for _ in range(3):
        checkpoint.flush()
        clock.now = checkpoint.retry_at
    assert given == ["could not be written in 2 attempts: Sink: ConnectionError: down (injected)"]
    assert raw.committed == {(T, 0): 1} and checkpoint.dead_letters == {"write_failed": 1}
    headers = dict(checkpoint.producer.sent[0][3])
    assert headers["dlq_reason"] == b"write_failed" and headers["dlq_offset"] == b"0"
    assert registry.get_sample_value("test_dlq_total", {"reason": "write_failed"}) == 1


def test_a_dead_letter_topic_that_refuses_is_never_given_up_on() -> None:
    checkpoint, raw, clock, _ = setup(producer=FakeProducer(refuse={"dlq": -1}), give_up_after=1)
    checkpoint.consumed((T, 0, 0))
    checkpoint.add(checkpoint.letter((T, 0, 0), b"v", None, None, "bad_image", "noise"))
    for _ in range(5):
        assert not checkpoint.flush()
        clock.now = checkpoint.retry_at
    assert checkpoint.pending == 1 and raw.commits == [] and not checkpoint.dead_letters


def test_outcomes_of_partitions_that_moved_are_dropped_uncommitted() -> None:
    checkpoint, raw, _, _ = setup(Sink(failures=1))
    for partition in (0, 1):
        checkpoint.consumed((T, partition, 0))
        checkpoint.add(outcome(0, partition))
    checkpoint.flush()
    checkpoint.forget({(T, 1)})
    assert checkpoint.pending == 1
    checkpoint.drain(timeout_s=5, every_s=0.0)
    assert raw.committed == {(T, 0): 1}


def test_drain_gives_up_at_its_timeout_and_commits_nothing_unwritten() -> None:
    checkpoint, raw, _, _ = setup(Sink(failures=10**9))
    checkpoint.consumed((T, 0, 0))
    checkpoint.add(outcome(0))
    checkpoint.drain(timeout_s=0.05, every_s=0.01)
    assert checkpoint.pending == 1 and raw.commits == []


def test_give_up_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        setup(give_up_after=0)


def test_dead_letter_headers_keep_the_record_s_own_and_replace_earlier_verdicts() -> None:
    old = [("schema", b"frame/1"), ("dlq_reason", b"bad_image"), ("empty", None)]
    found = dict(dead_letter_headers(old, "too_large", "x" * 5000, ("t", 3, 17)))
    assert found == {
        "schema": b"frame/1", "dlq_reason": b"too_large", "dlq_detail": b"x" * 1000,
        "dlq_topic": b"t", "dlq_partition": b"3", "dlq_offset": b"17",
    }  # fmt: skip
    assert dict(dead_letter_headers(None, "empty_question", "no words")) == {
        "dlq_reason": b"empty_question", "dlq_detail": b"no words",
    }  # fmt: skip
