from __future__ import annotations

from dataclasses import dataclass

import pytest

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
