"""The VQA worker with in-memory Kafka and Redis stand-ins: answers, dead letters, metrics, retries."""

from __future__ import annotations

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
from workers.vqa import AnswerStore, VQAMetrics, VQATopics, VQAWorker


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int = 0


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


class Future:
    def get(self, timeout: float = 0) -> None:
        return None


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list[Any] | None = None) -> Future:
        self.sent.append((topic, value, key, list(headers or [])))
        return Future()

    def flush(self, timeout: float = 0) -> None:
        return None

    def close(self, timeout: float = 0) -> None:
        return None


class FakeRedis:
    def __init__(self, failures: int = 0) -> None:
        self.data: dict[str, tuple[bytes, int | None]] = {}
        self.failures = failures
        self._pending: list[tuple[str, str, int | None]] = []

    def pipeline(self, transaction: bool = False) -> FakeRedis:
        self._pending = []
        return self

    def set(self, key: str, value: str, ex: int | None = None) -> None:
        self._pending.append((key, value, ex))

    def execute(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down (injected)")
        for key, value, ex in self._pending:
            self.data[key] = (value.encode(), ex)

    def get(self, key: str) -> bytes | None:
        return self.data[key][0] if key in self.data else None


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


def make(model: VQAModel, batches: list[list[Message]], redis: FakeRedis | None = None, replies: str | None = None):
    registry = CollectorRegistry()
    consumer, producer, redis = FakeConsumer(batches), FakeProducer(), redis or FakeRedis()
    worker = VQAWorker(
        model, AnswerStore(redis, ttl_s=60), consumer, producer, VQATopics(replies=replies),
        metrics=VQAMetrics(registry), clock=lambda: 2.5,
    )  # fmt: skip
    return worker, consumer, producer, redis, registry


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
    worker, consumer, producer, redis, registry = make(tiny_model, [records[:4], records[4:]], replies="all.answers")
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


def test_redis_outage_is_retried_before_committing(
    tiny_model: VQAModel, scene_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workers.vqa.time.sleep", lambda s: None)
    worker, consumer, _, redis, registry = make(
        tiny_model, [[request("r", "what shape is the red object?", scene_png)]], FakeRedis(failures=2)
    )
    report = worker.run(timeout=5, count=1)
    assert report.answered == 1 and report.store_errors == 2 and "vqa:answer:r" in redis.data
    assert registry.get_sample_value("inspector_vqa_store_errors_total") == 2 and consumer.commits == 1


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
