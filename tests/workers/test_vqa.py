"""The VQA worker with in-memory Kafka and Redis stand-ins: answers, dead letters, metrics, retries."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.vqa.data import build_set, encode_png
from inspector.vqa.model import VQAModel
from tests.inspector.vqa.tiny import train_tiny
from tests.workers.fakes import FakeRedis
from workers.errors import WorkerError
from workers.vqa import AnswerStore, VQAMetrics, VQATopics, VQAWorker


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int = 0
    topic: str = "vqa.requests"
    partition: int = 0
    offset: int = field(default_factory=itertools.count().__next__)


@dataclass
class FakeConsumer:
    batches: list[list[Message]]
    commits: int = 0
    closed: bool = False

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict[str, list[Message]]:
        return {"tp": self.batches.pop(0)} if self.batches else {}

    def assignment(self) -> set[str]:
        return {"tp"}

    def commit(self) -> None:
        self.commits += 1

    def close(self, autocommit: bool = False) -> None:
        self.closed = True


@dataclass
class Future:
    error: Exception | None = None

    def get(self, timeout: float = 0) -> None:
        if self.error is not None:
            raise self.error


@dataclass
class FakeProducer:
    """Records what it takes; ``refuse`` maps a topic to how many sends it refuses (-1: all of them)."""

    sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list[Any] | None = None) -> Future:
        if self.refuse.get(topic, 0):
            self.refuse[topic] -= 1
            self.refused.append(topic)
            return Future(RuntimeError(f"TopicAuthorizationFailedError: {topic} (injected)"))
        self.sent.append((topic, value, key, list(headers or [])))
        return Future()

    def flush(self, timeout: float = 0) -> None:
        return None

    def close(self, timeout: float = 0) -> None:
        return None


def request(rid: str, question: str, image: bytes, **extra: bytes) -> Message:
    headers = [("request_id", rid.encode()), ("question", question.encode()), *extra.items()]
    return Message(rid.encode(), image, headers, timestamp=1_000)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("vqa-worker"))


@pytest.fixture
def tiny_model(tiny_model_path: Path) -> VQAModel:
    return VQAModel.load(tiny_model_path)


@pytest.fixture
def scene_png() -> bytes:
    return encode_png(build_set(1, seed=3).images[0])


def make(
    model: VQAModel, batches: list[list[Message]], redis: FakeRedis | None = None, replies: str | None = None,
    allowed: tuple[str, ...] = (), producer: FakeProducer | None = None, write_attempts: int = 7,
):  # fmt: skip
    registry = CollectorRegistry()
    consumer, producer, redis = FakeConsumer(batches), producer or FakeProducer(), redis or FakeRedis()
    worker = VQAWorker(
        model, AnswerStore(redis, ttl_s=60), consumer, producer, VQATopics(replies=replies, allowed_replies=allowed),
        metrics=VQAMetrics(registry), clock=lambda: 2.5, write_attempts=write_attempts, retry_s=0.5,
    )  # fmt: skip
    return worker, consumer, producer, redis, registry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr("workers.shell.time.sleep", waits.append)
    return waits


def test_answers_are_stored_with_ttl_and_bad_requests_dead_lettered(tiny_model: VQAModel, scene_png: bytes) -> None:
    records = [
        request("ok-1", "what shape is the red object?", scene_png, reply_to=b"my.replies"),
        request("ok-2", "how many objects are there?", scene_png),
        request("empty", "", scene_png),
        request("unknown", "what is the airspeed of a swallow?", scene_png),
        request("noise", "what shape is the red object?", bytes(range(256))),
        request("wide", "what shape is the red object?", encode_png(np.zeros((20, 40, 3), np.uint8))),
        Message(None, scene_png, [("question", b"what shape is the red object?")]),
        request("no-image", "what shape is the red object?", b""),
    ]
    batches, allowed = [records[:4], records[4:]], ("my.replies",)
    worker, consumer, producer, redis, registry = make(tiny_model, batches, replies="all.answers", allowed=allowed)
    report = worker.run(timeout=5, count=len(records))
    assert report.answered == 2 and report.requests == len(records)
    assert report.errors == {
        "empty_question": 1,
        "unknown_words": 1,
        "bad_image": 2,
        "wrong_image": 1,
        "bad_headers": 1,
    }
    value, ttl = redis.data["vqa:answer:ok-1"]
    document = json.loads(value)
    assert ttl == 60 and document["answer"] and 0 < document["confidence"] <= 1 and document["latency_ms"] == 1500.0
    assert json.loads(redis.data["vqa:answer:unknown"][0])["error"] == "unknown_words"
    dead = [s for s in producer.sent if s[0] == "vqa.dlq"]
    assert len(dead) == 6 and all(dict(h)["dlq_reason"] for *_, h in dead)
    assert {s[0] for s in producer.sent} == {"vqa.dlq", "all.answers", "my.replies"}
    assert consumer.commits == 2 and consumer.closed
    assert registry.get_sample_value("inspector_vqa_requests_total") == len(records)
    assert registry.get_sample_value("inspector_vqa_answers_total") == 2
    assert registry.get_sample_value("inspector_vqa_errors_total", {"reason": "bad_image"}) == 2
    assert registry.get_sample_value("inspector_vqa_errors_total", {"reason": "model_error"}) == 0
    assert registry.get_sample_value("inspector_vqa_latency_seconds_count") == 2


def test_redis_outage_is_retried_before_committing(tiny_model: VQAModel, scene_png: bytes, slept: list[float]) -> None:
    worker, consumer, _, redis, registry = make(
        tiny_model, [[request("r", "what shape is the red object?", scene_png)]], FakeRedis(failures=2)
    )
    report = worker.run(timeout=5, count=1)
    assert report.answered == 1 and report.store_errors == 2 and "vqa:answer:r" in redis.data
    assert registry.get_sample_value("inspector_vqa_store_errors_total") == 2 and consumer.commits == 1
    assert slept == [0.5, 1.0]


def test_a_reply_to_off_the_allow_list_is_dead_lettered_and_not_answered_there(
    tiny_model: VQAModel, scene_png: bytes
) -> None:
    records = [
        request("in", "what shape is the red object?", scene_png, reply_to=b"client.answers"),
        request("out", "what shape is the red object?", scene_png, reply_to=b"__consumer_offsets"),
        request("bad", "what shape is the red object?", scene_png, reply_to=b"no/such topic"),
    ]
    worker, consumer, producer, redis, registry = make(tiny_model, [records], allowed=("client.answers",))
    report = worker.run(timeout=5, count=3)
    assert report.answered == 1 and report.errors == {"reply_to_not_allowed": 2}
    assert [s[0] for s in producer.sent].count("client.answers") == 1
    assert not {"__consumer_offsets", "no/such topic"} & {s[0] for s in producer.sent}
    dead = {s[2]: dict(s[3]) for s in producer.sent if s[0] == "vqa.dlq"}
    assert dead.keys() == {b"out", b"bad"} and {d["dlq_reason"] for d in dead.values()} == {b"reply_to_not_allowed"}
    assert b"not one of the topics this worker answers to" in dead[b"out"]["dlq_detail"]
    assert b"not a Kafka topic name" in dead[b"bad"]["dlq_detail"]
    assert json.loads(redis.data["vqa:answer:out"][0])["error"] == "reply_to_not_allowed"
    assert registry.get_sample_value("inspector_vqa_errors_total", {"reason": "reply_to_not_allowed"}) == 2
    assert consumer.commits == 1


def test_a_store_that_always_fails_is_given_up_on_after_the_attempts_then_dead_lettered(
    tiny_model: VQAModel, scene_png: bytes, slept: list[float]
) -> None:
    records = [request(f"r{i}", "what shape is the red object?", scene_png) for i in range(2)]
    records.append(request("empty", "", scene_png))
    worker, consumer, producer, redis, registry = make(
        tiny_model, [records], FakeRedis(failures=10**9), write_attempts=3
    )
    report = worker.run(timeout=5, count=3)
    assert report.answered == 0 and report.errors == {"write_failed": 2, "empty_question": 1}
    assert report.store_errors == 3 and slept == [0.5, 1.0]  # three attempts, two back-offs, then the DLQ
    reasons = sorted(dict(s[3])["dlq_reason"] for s in producer.sent if s[0] == "vqa.dlq")
    assert reasons == [b"empty_question", b"write_failed", b"write_failed"] and not redis.data
    detail = next(dict(s[3])["dlq_detail"] for s in producer.sent if s[2] == b"r0")
    assert b"could not be written in 3 attempts: Redis: ConnectionError: redis down" in detail
    assert consumer.commits == 1  # every record is dead-lettered: the offsets move on
    assert registry.get_sample_value("inspector_vqa_errors_total", {"reason": "write_failed"}) == 2


def test_a_reply_topic_the_broker_refuses_costs_only_its_own_request(
    tiny_model: VQAModel, scene_png: bytes, slept: list[float]
) -> None:
    records = [
        request("fine", "what shape is the red object?", scene_png),
        request("doomed", "what shape is the red object?", scene_png, reply_to=b"forbidden"),
    ]
    producer = FakeProducer(refuse={"forbidden": -1})
    worker, consumer, producer, redis, _ = make(
        tiny_model, [records], replies="all.answers", allowed=("forbidden",), producer=producer, write_attempts=4
    )
    report = worker.run(timeout=5, count=2)
    assert report.answered == 1 and report.errors == {"write_failed": 1} and len(slept) == 3
    assert producer.refused == ["forbidden"] * 4  # retried alone: the other replies were sent once
    assert sorted(s[2] for s in producer.sent if s[0] == "all.answers") == [b"doomed", b"fine"]
    dead = [s for s in producer.sent if s[0] == "vqa.dlq"]
    assert [s[2] for s in dead] == [b"doomed"] and b"forbidden: RuntimeError" in dict(dead[0][3])["dlq_detail"]
    assert {"vqa:answer:fine", "vqa:answer:doomed"} <= redis.data.keys() and consumer.commits == 1


def test_when_the_dead_letter_topic_refuses_too_the_worker_holds_then_commits(
    tiny_model: VQAModel, scene_png: bytes, slept: list[float]
) -> None:
    producer = FakeProducer(refuse={"vqa.dlq": 5})
    worker, consumer, producer, _, _ = make(
        tiny_model, [[request("r", "", scene_png)]], FakeRedis(failures=10**9), producer=producer, write_attempts=2
    )
    report = worker.run(timeout=5, count=1)
    assert report.errors == {"empty_question": 1} and consumer.commits == 1
    assert producer.refused == ["vqa.dlq"] * 5 and len(slept) == 1 + 5  # never a retry without a back-off
    assert slept == sorted(slept) and min(slept) >= 0.5


def test_a_stop_while_writes_are_refused_commits_nothing(
    tiny_model: VQAModel, scene_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = FakeProducer(refuse={"vqa.dlq": -1})
    worker, consumer, *_ = make(
        tiny_model, [[request("r", "what shape is the red object?", scene_png)]], FakeRedis(failures=10**9),
        producer=producer, write_attempts=2,
    )  # fmt: skip
    monkeypatch.setattr("workers.shell.time.sleep", lambda s: worker.stop())
    with pytest.raises(WorkerError, match=r"stopping: the dead-letter topic vqa\.dlq refuses 1 records"):
        worker.run(timeout=5, count=1)
    assert consumer.commits == 0


def test_topic_names_are_checked_at_start() -> None:
    with pytest.raises(WorkerError, match="'bad topic': not a Kafka topic name"):
        VQATopics(allowed_replies=("ok.answers", "bad topic"))
    assert VQATopics(replies="all", allowed_replies=("mine",)).reply_topics == {"all", "mine"}


def test_a_failing_model_dead_letters_the_batch_and_carries_on(tiny_model: VQAModel, scene_png: bytes) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    tiny_model.answer = broken  # type: ignore[method-assign]
    worker, _, producer, _, _ = make(tiny_model, [[request("r", "what shape is the red object?", scene_png)]])
    assert worker.run(timeout=5, count=1).errors == {"model_error": 1}
    assert dict(producer.sent[0][3])["dlq_reason"] == b"model_error"


def test_ready_needs_a_recent_poll(tiny_model: VQAModel) -> None:
    worker, *_ = make(tiny_model, [])
    assert worker.ready() == (False, "not polling")
    worker.step()
    assert worker.ready()[0]
