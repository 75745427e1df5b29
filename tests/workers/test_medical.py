"""The medical worker's loop with in-memory Kafka and Redis stand-ins: retries, dead letters, commits."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

import mla
from inspector.config import Settings
from inspector.medical.report import load_report_model, model_config, save_report_model
from inspector.medical.training import build_tokenizer, report_corpus
from tests.inspector.medical.conftest import TEST_FILES
from tests.workers.fakes import FakeRedis
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker, study_headers
from workers.stores import ClaimedStore

Message = namedtuple("Message", "offset key value headers")
TP = TopicPartition("medical.studies", 0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = build_tokenizer(report_corpus(100))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    model = mla.MLAModel(model_config(tok.vocab_size, width=16, image_width=8, decoder_depth=1))
    save_report_model(model.eval(), tok, path)
    return path


class FakeConsumer:
    def __init__(self, messages: list[Message]) -> None:
        self.messages, self.position, self.commits = messages, 0, []

    def subscribe(self, topics: list[str]) -> None: ...

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Message]]:
        batch = self.messages[self.position :]
        self.position = len(self.messages)
        return {TP: batch} if batch else {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets[TP].offset)

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def close(self, autocommit: bool = False) -> None: ...


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append({"topic": topic, "headers": dict(headers)})

        class Done:
            def get(self, timeout: float) -> None: ...

        return Done()

    def close(self, timeout: float = 0) -> None: ...


def test_store_outage_retries_without_committing_and_bad_input_is_dead_lettered(tiny_model: Path) -> None:
    import pydicom

    uid = str(pydicom.dcmread(TEST_FILES / "CT_small.dcm").StudyInstanceUID)
    messages = [
        Message(0, b"k", (TEST_FILES / "CT_small.dcm").read_bytes(), study_headers(uid)),
        Message(1, b"k", b"garbage", study_headers(uid)),
    ]
    consumer, producer, redis = FakeConsumer(messages), FakeProducer(), FakeRedis(failures=2)
    registry = CollectorRegistry()
    model, tok, _ = load_report_model(tiny_model)
    config = MedicalConfig(store_retry_s=0.01, ttl_s=60)
    store = ClaimedStore(redis, config.key_prefix, config.ttl_s)
    worker = MedicalWorker(
        Settings(), config, model, tok, store, metrics=MedicalMetrics(registry), consumer=consumer, producer=producer
    )
    report = worker.run(timeout=60, count=2)
    assert report.stored == 1 and report.store_errors == 2 and report.dlq == {"not_dicom": 1}
    assert consumer.commits == [1, 2]  # nothing committed while the store refused
    assert redis.data[config.report_key(uid)][1] == 60 and redis.streams[store.stream] == [
        {"id": uid, "key": config.report_key(uid)}
    ]
    assert producer.sent[0]["headers"]["dlq_reason"] == b"not_dicom"
    assert registry.get_sample_value("inspector_medical_errors_total", {"reason": "store"}) == 2
    assert registry.get_sample_value("inspector_medical_studies_total") == 1


def test_metrics_start_at_zero_for_every_reason() -> None:
    registry = CollectorRegistry()
    MedicalMetrics(registry)
    for reason in ("not_dicom", "too_large", "unsupported_transfer_syntax", "bad_geometry", "store"):
        assert registry.get_sample_value("inspector_medical_errors_total", {"reason": reason}) == 0
    assert registry.get_sample_value("inspector_medical_studies_total") == 0


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.113619.2.55.3"])
def test_report_keys_follow_the_contract(uid: str) -> None:
    assert MedicalConfig().report_key(uid) == f"medical:report:{uid}"
