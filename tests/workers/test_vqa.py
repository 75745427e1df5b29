"""The VQA worker with in-memory Kafka and Redis stand-ins: answers, dead letters, metrics, retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.vqa.data import build_set, encode_png
from inspector.vqa.model import VQAModel
from tests.inspector.vqa.tiny import train_tiny
from tests.workers.fakes import FakeKafkaConsumer, FakeProducer, FakeRedis, Record
from workers.errors import WorkerError
from workers.vqa import AnswerStore, VQAMetrics, VQATopics, VQAWorker

TOPIC = "vqa.requests"


def request(rid: str, question: str, image: bytes, **extra: bytes) -> Record:
    headers = [("request_id", rid.encode()), ("question", question.encode()), *extra.items()]
    return Record(TOPIC, image, rid.encode(), headers, timestamp=1_000)


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
    model: VQAModel, records: list[Record], redis: FakeRedis | None = None, replies: str | None = None,
    allowed: tuple[str, ...] = (), producer: FakeProducer | None = None, write_attempts: int = 7,
) -> tuple[VQAWorker, FakeKafkaConsumer, FakeProducer, FakeRedis, CollectorRegistry]:  # fmt: skip
    registry = CollectorRegistry()
    consumer = FakeKafkaConsumer({TOPIC: 1}, records)
    producer, redis = producer or FakeProducer(), redis or FakeRedis()
    worker = VQAWorker(
        model, AnswerStore(redis, ttl_s=60), consumer, producer, VQATopics(replies=replies, allowed_replies=allowed),
        metrics=VQAMetrics(registry), clock=lambda: 2.5, write_attempts=write_attempts, retry_s=0.01, batch=4,
    )  # fmt: skip
    worker.drain_s = 0.2
    return worker, consumer, producer, redis, registry


def test_answers_are_stored_with_ttl_and_bad_requests_dead_lettered(tiny_model: VQAModel, scene_png: bytes) -> None:
    records = [
        request("ok-1", "what shape is the red object?", scene_png, reply_to=b"my.replies"),
        request("ok-2", "how many objects are there?", scene_png),
        request("empty", "", scene_png),
        request("unknown", "what is the airspeed of a swallow?", scene_png),
        request("noise", "what shape is the red object?", bytes(range(256))),
        request("wide", "what shape is the red object?", encode_png(np.zeros((20, 40, 3), np.uint8))),
        Record(TOPIC, scene_png, None, [("question", b"what shape is the red object?")]),
        request("no-image", "what shape is the red object?", b""),
    ]
    allowed = ("my.replies",)
    worker, consumer, producer, redis, registry = make(tiny_model, records, replies="all.answers", allowed=allowed)
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
    assert consumer.commits == [{(TOPIC, 0): 4}, {(TOPIC, 0): 8}] and consumer.closed  # a batch of 4 per poll
    stream = sorted(e["id"] for e in redis.streams["vqa:answer:stream"])  # one entry per document written
    assert stream == sorted(["ok-1", "ok-2", "empty", "unknown", "noise", "wide", "no-image"])
    assert registry.get_sample_value("inspector_vqa_requests_total") == len(records)
    assert registry.get_sample_value("inspector_vqa_answers_total") == 2
    assert registry.get_sample_value("inspector_vqa_dlq_total", {"reason": "bad_image"}) == 2
    assert registry.get_sample_value("inspector_vqa_dlq_total", {"reason": "model_error"}) == 0
    assert registry.get_sample_value("inspector_vqa_latency_seconds_count") == 2


def test_redis_outage_holds_takes_nothing_new_and_commits_only_after_the_store(
    tiny_model: VQAModel, scene_png: bytes
) -> None:
    records = [request(f"r{i}", "what shape is the red object?", scene_png) for i in range(6)]
    worker, consumer, _, redis, registry = make(tiny_model, records, FakeRedis(failures=2))
    report = worker.run(timeout=5, count=6)
    assert report.answered == 6 and report.store_errors == 2 and "vqa:answer:r0" in redis.data
    assert registry.get_sample_value("inspector_vqa_store_errors_total") == 2
    assert consumer.commits[0] == {(TOPIC, 0): 4}  # nothing committed while Redis refused the first batch
    assert consumer.polls.count(1) >= 2  # held: polled one record at a time (and read it again), twice
    assert consumer.committed == {(TOPIC, 0): 6} and len(redis.streams["vqa:answer:stream"]) == 6


def test_a_reply_to_off_the_allow_list_is_dead_lettered_and_not_answered_there(
    tiny_model: VQAModel, scene_png: bytes
) -> None:
    records = [
        request("in", "what shape is the red object?", scene_png, reply_to=b"client.answers"),
        request("out", "what shape is the red object?", scene_png, reply_to=b"__consumer_offsets"),
        request("bad", "what shape is the red object?", scene_png, reply_to=b"no/such topic"),
    ]
    worker, consumer, producer, redis, registry = make(tiny_model, records, allowed=("client.answers",))
    report = worker.run(timeout=5, count=3)
    assert report.answered == 1 and report.errors == {"reply_to_not_allowed": 2}
    assert [s[0] for s in producer.sent].count("client.answers") == 1
    assert not {"__consumer_offsets", "no/such topic"} & {s[0] for s in producer.sent}
    dead = {s[2]: dict(s[3]) for s in producer.sent if s[0] == "vqa.dlq"}
    assert dead.keys() == {b"out", b"bad"} and {d["dlq_reason"] for d in dead.values()} == {b"reply_to_not_allowed"}
    assert b"not one of the topics this worker answers to" in dead[b"out"]["dlq_detail"]
    assert b"not a Kafka topic name" in dead[b"bad"]["dlq_detail"]
    assert json.loads(redis.data["vqa:answer:out"][0])["error"] == "reply_to_not_allowed"
    assert registry.get_sample_value("inspector_vqa_dlq_total", {"reason": "reply_to_not_allowed"}) == 2
    assert consumer.committed == {(TOPIC, 0): 3}


def test_a_store_that_always_fails_is_given_up_on_after_the_attempts_then_dead_lettered(
    tiny_model: VQAModel, scene_png: bytes
) -> None:
    records = [request(f"r{i}", "what shape is the red object?", scene_png) for i in range(2)]
    records.append(request("empty", "", scene_png))
    worker, consumer, producer, redis, registry = make(tiny_model, records, FakeRedis(failures=10**9), write_attempts=3)
    report = worker.run(timeout=5, count=3)
    assert report.answered == 0 and report.errors == {"write_failed": 2, "empty_question": 1}
    assert report.store_errors == 3 and redis.round_trips == 3  # three attempts, then the dead letters alone
    reasons = sorted(dict(s[3])["dlq_reason"] for s in producer.to("vqa.dlq"))
    assert reasons == [b"empty_question", b"write_failed", b"write_failed"] and not redis.data
    detail = next(dict(s[3])["dlq_detail"] for s in producer.sent if s[2] == b"r0")
    assert b"could not be written in 3 attempts: AnswerStore: ConnectionError: redis down" in detail
    assert consumer.committed == {(TOPIC, 0): 3}  # every record is dead-lettered: the offsets move on
    assert registry.get_sample_value("inspector_vqa_dlq_total", {"reason": "write_failed"}) == 2


def test_a_reply_topic_the_broker_refuses_costs_only_its_own_request(tiny_model: VQAModel, scene_png: bytes) -> None:
    records = [
        request("fine", "what shape is the red object?", scene_png),
        request("doomed", "what shape is the red object?", scene_png, reply_to=b"forbidden"),
    ]
    producer = FakeProducer(refuse={"forbidden": -1})
    worker, consumer, producer, redis, _ = make(
        tiny_model, records, replies="all.answers", allowed=("forbidden",), producer=producer, write_attempts=4
    )
    report = worker.run(timeout=5, count=2)
    assert report.answered == 1 and report.errors == {"write_failed": 1} and report.store_errors == 4
    assert producer.refused == ["forbidden"] * 4  # retried alone: the other replies were sent once
    assert sorted(s[2] for s in producer.to("all.answers")) == [b"doomed", b"fine"]
    dead = producer.to("vqa.dlq")
    assert [s[2] for s in dead] == [b"doomed"] and b"forbidden: RuntimeError" in dict(dead[0][3])["dlq_detail"]
    assert {"vqa:answer:fine", "vqa:answer:doomed"} <= redis.data.keys() and consumer.committed == {(TOPIC, 0): 2}


def test_when_the_dead_letter_topic_refuses_too_the_worker_holds_then_commits(
    tiny_model: VQAModel, scene_png: bytes
) -> None:
    producer = FakeProducer(refuse={"vqa.dlq": 5})
    worker, consumer, producer, _, _ = make(
        tiny_model, [request("r", "", scene_png)], FakeRedis(failures=10**9), producer=producer, write_attempts=2
    )
    report = worker.run(timeout=10, count=1)
    assert report.errors == {"empty_question": 1} and consumer.committed == {(TOPIC, 0): 1}
    assert producer.refused == ["vqa.dlq"] * 5 and report.store_errors == 2 + 5  # every refusal backs off


def test_a_stop_while_writes_are_refused_commits_nothing(tiny_model: VQAModel, scene_png: bytes) -> None:
    producer = FakeProducer(refuse={"vqa.dlq": -1})
    worker, consumer, *_ = make(
        tiny_model, [request("r", "what shape is the red object?", scene_png)], FakeRedis(failures=10**9),
        producer=producer, write_attempts=2,
    )  # fmt: skip
    for _ in range(3):
        worker.step()
    assert worker.checkpoint.holding and worker.ready() == (False, worker.unhealthy())
    worker.stop()
    report = worker.run(timeout=5)
    assert report.answered == 0 and not report.errors and consumer.commits == [] and consumer.closed


def test_topic_names_are_checked_at_start() -> None:
    with pytest.raises(WorkerError, match="'bad topic': not a Kafka topic name"):
        VQATopics(allowed_replies=("ok.answers", "bad topic"))
    assert VQATopics(replies="all", allowed_replies=("mine",)).reply_topics == {"all", "mine"}


def test_a_failing_model_dead_letters_the_batch_and_carries_on(tiny_model: VQAModel, scene_png: bytes) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    tiny_model.answer = broken  # type: ignore[method-assign]
    worker, _, producer, _, _ = make(tiny_model, [request("r", "what shape is the red object?", scene_png)])
    assert worker.run(timeout=5, count=1).errors == {"model_error": 1}
    assert dict(producer.sent[0][3])["dlq_reason"] == b"model_error"


def test_ready_needs_a_recent_poll(tiny_model: VQAModel) -> None:
    worker, *_ = make(tiny_model, [])
    assert worker.ready() == (False, "not polling")
    worker.step()
    assert worker.ready()[0]
