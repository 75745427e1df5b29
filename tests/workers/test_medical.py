"""The medical worker's loop with in-memory Kafka and Redis stand-ins: retries, dead letters, commits."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import mla
from inspector.config import Settings
from inspector.medical.report import load_report_model, model_config, save_report_model
from inspector.medical.training import build_tokenizer, report_corpus
from tests.inspector.medical.conftest import TEST_FILES
from tests.workers.fakes import FakeKafkaConsumer, FakeProducer, FakeRedis, Record
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker, study_headers
from workers.stores import ClaimedStore

TOPIC = "medical.studies"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = build_tokenizer(report_corpus(100))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    model = mla.MLAModel(model_config(tok.vocab_size, width=16, image_width=8, decoder_depth=1))
    save_report_model(model.eval(), tok, path)
    return path


def test_store_outage_retries_without_committing_and_bad_input_is_dead_lettered(tiny_model: Path) -> None:
    import pydicom

    uid = str(pydicom.dcmread(TEST_FILES / "CT_small.dcm").StudyInstanceUID)
    messages = [
        Record(TOPIC, (TEST_FILES / "CT_small.dcm").read_bytes(), b"k", study_headers(uid)),
        Record(TOPIC, b"garbage", b"k", study_headers(uid)),
    ]
    consumer, producer, redis = FakeKafkaConsumer({TOPIC: 1}, messages), FakeProducer(), FakeRedis(failures=2)
    registry = CollectorRegistry()
    model, tok, _ = load_report_model(tiny_model)
    config = MedicalConfig(store_retry_s=0.01, ttl_s=60)
    store = ClaimedStore(redis, config.key_prefix, config.ttl_s)
    worker = MedicalWorker(
        Settings(), config, model, tok, store, metrics=MedicalMetrics(registry), consumer=consumer, producer=producer
    )
    report = worker.run(timeout=60, count=2)
    assert report.stored == 1 and report.store_errors == 2 and report.dlq == {"not_dicom": 1}
    assert consumer.commits == [{(TOPIC, 0): 2}]  # nothing committed while the store refused
    assert consumer.polls.count(1) >= 2  # held: one record at a time, read again
    assert redis.data[config.report_key(uid)][1] == 60 and redis.streams[store.stream] == [
        {"id": uid, "key": config.report_key(uid)}
    ]
    assert dict(producer.to("medical.dlq")[0][3])["dlq_reason"] == b"not_dicom"
    assert registry.get_sample_value("inspector_medical_store_errors_total") == 2
    assert registry.get_sample_value("inspector_medical_studies_total") == 1


def test_metrics_start_at_zero_for_every_reason() -> None:
    registry = CollectorRegistry()
    MedicalMetrics(registry)
    for reason in ("not_dicom", "too_large", "unsupported_transfer_syntax", "bad_geometry", "write_failed"):
        assert registry.get_sample_value("inspector_medical_dlq_total", {"reason": reason}) == 0
    assert registry.get_sample_value("inspector_medical_store_errors_total") == 0
    assert registry.get_sample_value("inspector_medical_studies_total") == 0


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.113619.2.55.3"])
def test_report_keys_follow_the_contract(uid: str) -> None:
    assert MedicalConfig().report_key(uid) == f"medical:report:{uid}"
