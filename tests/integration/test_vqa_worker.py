"""The VQA worker on the real broker and Redis: answers with TTL, dead letters with reasons, offsets committed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from inspector.vqa.data import build_set, encode_png
from tests.conftest import Stack
from tests.inspector.vqa.tiny import train_tiny
from tests.integration.frames import fresh_settings
from workers.commands.vqa_worker import build_worker, ensure_topics
from workers.vqa import VQATopics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("vqa-int"))


def test_requests_are_answered_and_bad_ones_dead_lettered(stack: Stack, model_path: Path) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url)
    tag = uuid.uuid4().hex[:8]
    topics = VQATopics(requests=f"vqa-req-{tag}", dlq=f"vqa-dlq-{tag}", replies=f"vqa-rep-{tag}")
    prefix = f"test-{tag}:vqa:answer"
    ensure_topics(settings, topics, partitions=2)
    data = build_set(6, seed=77)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all")
    good = []
    for row in range(6):
        rid = f"req-{row}"
        headers = [("request_id", rid.encode()), ("question", data.questions[row * 5].encode())]
        producer.send(
            topics.requests, value=encode_png(data.images[data.scene_index[row * 5]]), key=rid.encode(), headers=headers
        )
        good.append(rid)
    bad = {
        "bad-empty": (b"img", [("question", b"")]),
        "bad-words": (encode_png(data.images[0]), [("question", b"what is the capital of france?")]),
        "bad-bytes": (
            bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)),
            [("question", b"what shape is the red object?")],
        ),
        "bad-grey": (
            cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes(),
            [("question", b"how many objects are there?")],
        ),
        "bad-shape": (encode_png(np.zeros((30, 64, 3), np.uint8)), [("question", b"how many objects are there?")]),
    }
    for rid, (value, headers) in bad.items():
        producer.send(topics.requests, value=value, key=rid.encode(), headers=[("request_id", rid.encode()), *headers])
    producer.flush()
    producer.close()

    registry = CollectorRegistry()
    worker = build_worker(settings, registry, model_path, topics, group=f"vqa-{tag}", prefix=prefix, ttl_s=120, batch=4)
    report = worker.run(timeout=60, count=len(good) + len(bad))
    assert report.answered == len(good)
    assert report.errors == {"empty_question": 1, "unknown_words": 1, "bad_image": 1, "wrong_image": 2}

    client = redis.Redis.from_url(stack.redis_url)
    for rid in good:
        document = json.loads(client.get(f"{prefix}:{rid}"))
        assert document["request_id"] == rid and 0 < document["confidence"] <= 1
        assert 0 < client.ttl(f"{prefix}:{rid}") <= 120
    assert json.loads(client.get(f"{prefix}:bad-words"))["error"] == "unknown_words"
    assert registry.get_sample_value("inspector_vqa_answers_total") == len(good)
    assert registry.get_sample_value("inspector_vqa_dlq_total", {"reason": "wrong_image"}) == 2

    consumer = KafkaConsumer(
        topics.dlq, topics.replies, bootstrap_servers=settings.kafka.servers, auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )  # fmt: skip
    seen = list(consumer)
    consumer.close()
    dead = [m for m in seen if m.topic == topics.dlq]
    assert sorted(m.key.decode() for m in dead) == sorted(bad)
    assert {dict(m.headers)["dlq_reason"] for m in dead} == {
        b"empty_question",
        b"unknown_words",
        b"bad_image",
        b"wrong_image",
    }
    assert sorted(json.loads(m.value)["request_id"] for m in seen if m.topic == topics.replies) == good

    # Offsets were committed: the same group finds nothing new.
    again = build_worker(
        settings, CollectorRegistry(), model_path, topics, group=f"vqa-{tag}", prefix=prefix, ttl_s=120, batch=4
    )
    assert again.run(timeout=6).requests == 0


def test_vqa_worker_and_bench_commands(stack: Stack, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from workers.cli import app

    monkeypatch.setenv("INSPECTOR__KAFKA__BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("INSPECTOR__REDIS__URL", stack.redis_url)
    monkeypatch.setenv("INSPECTOR__METRICS__PORT", "0")
    tag = uuid.uuid4().hex[:8]
    topic, prefix = f"vqa-cli-{tag}", f"test-{tag}:answer"
    ensure_topics(fresh_settings(stack.kafka_bootstrap, stack.redis_url), VQATopics(topic, f"{topic}-dlq"), 1)
    data = build_set(1, seed=5)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    for rid in ("c1", "c2"):
        headers = [("request_id", rid.encode()), ("question", b"how many objects are there?")]
        producer.send(topic, value=encode_png(data.images[0]), key=rid.encode(), headers=headers)
    producer.flush()
    producer.close()
    runner = CliRunner()
    args = ["vqa-worker", "--model", str(model_path), "--topic", topic, "--dlq", f"{topic}-dlq", "--group", f"g-{tag}"]
    result = runner.invoke(app, [*args, "--prefix", prefix, "--count", "2", "--duration", "60", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{") :])["answered"] == 2
    assert redis.Redis.from_url(stack.redis_url).exists(f"{prefix}:c1", f"{prefix}:c2") == 2

    bench = runner.invoke(app, ["bench", "vqa-worker", "--model", str(model_path), "--requests", "8", "--json"])
    assert bench.exit_code == 0, bench.output
    assert json.loads(bench.output[bench.output.index("{") :])["answered"] == 8

    missing = runner.invoke(app, ["vqa-worker", "--model", "/nonexistent.pt", "--topic", topic])
    assert missing.exit_code == 2 and "vqa train" in missing.output
