"""The medical report worker on the real broker and Redis: reports stored with a TTL, bad input dead-lettered."""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

import mla
from inspector.config import KafkaSettings, RedisSettings, Settings
from inspector.medical.phantom import make_study, write_dicom
from inspector.medical.report import load_report_model, model_config, save_report_model
from inspector.medical.training import build_tokenizer, report_corpus
from mla.seed import seed_everything
from tests.conftest import Stack
from tests.inspector.medical.conftest import TEST_FILES
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker, study_headers
from workers.stores import ClaimedStore

pytestmark = pytest.mark.integration


def tiny_model(folder: Path) -> Path:
    seed_everything(0)
    tokenizer = build_tokenizer(report_corpus(200))
    model = mla.MLAModel(model_config(tokenizer.vocab_size, width=16, image_width=8, decoder_depth=1))
    path = folder / "tiny-report.pt"
    save_report_model(model.eval(), tokenizer, path, {"synthetic_data": True})
    return path


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.glob("*.dcm")):
            archive.write(path, path.name)
    return buffer.getvalue()


def test_reports_are_stored_and_bad_records_dead_lettered(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(kafka=KafkaSettings(bootstrap=stack.kafka_bootstrap), redis=RedisSettings(url=stack.redis_url))
    claims = tmp_path / "claims"
    config = MedicalConfig(
        topic=f"medical-{tag}", dlq=f"medical-dlq-{tag}", group_id=f"medical-{tag}", key_prefix=f"test-{tag}",
        ttl_s=600, max_inline_bytes=600_000, claim_roots=(claims,),  # under the broker's 1 MB default
    )  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
    try:
        admin.create_topics([NewTopic(config.topic, 2, 1), NewTopic(config.dlq, 1, 1)])
    finally:
        admin.close()

    inline_study, claimed_study = make_study(3), make_study(4)
    write_dicom(inline_study, tmp_path / "inline")
    write_dicom(claimed_study, claims / "study-4")
    ct_small = (TEST_FILES / "CT_small.dcm").read_bytes()
    ct_uid = str(pydicom.dcmread(TEST_FILES / "CT_small.dcm").StudyInstanceUID)
    other = "1.2.826.0.1.3680043.8.498.99"
    good = {
        inline_study.study_uid: (study_headers(inline_study.study_uid, "zip", age=70), zipped(tmp_path / "inline")),
        claimed_study.study_uid: (study_headers(claimed_study.study_uid, "claim"), str(claims / "study-4").encode()),
        ct_uid: (study_headers(ct_uid, "dicom", indication="staging"), ct_small),
    }
    bad = [
        (study_headers(other), np.random.default_rng(0).bytes(5000), "not_dicom"),
        (study_headers(other), (TEST_FILES / "rtplan.dcm").read_bytes(), "no_pixel_data"),
        (
            study_headers(other),
            (TEST_FILES / "SC_rgb_jpeg_gdcm.dcm").read_bytes(),  # JPEG lossless: no decoder installed
            "unsupported_transfer_syntax",
        ),
        (study_headers(other), b"\0" * 700_000, "too_large"),
        (study_headers(other, "claim"), b"/etc/passwd", "bad_reference"),
        ([("schema", b"medical.study/1")], ct_small, "bad_headers"),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all", max_request_size=2**20)
    for uid, (headers, value) in good.items():
        producer.send(config.topic, value=value, key=uid.encode(), headers=headers)
    for headers, value, _ in bad:
        producer.send(config.topic, value=value, key=b"bad", headers=headers)
    producer.flush()
    producer.close()

    registry = CollectorRegistry()
    model, tokenizer, info = load_report_model(tiny_model(tmp_path))
    client = redis.Redis.from_url(stack.redis_url)
    store = ClaimedStore(client, config.key_prefix, config.ttl_s)
    worker = MedicalWorker(settings, config, model, tokenizer, store, metrics=MedicalMetrics(registry), info=info)
    with caplog.at_level(logging.DEBUG):
        report = worker.run(timeout=180, count=len(good) + len(bad))

    assert report.stored == len(good) and report.dlq == {reason: 1 for *_, reason in bad}
    for uid in good:
        key = config.report_key(uid)
        document = json.loads(client.get(key))
        assert document["study_uid"] == uid and "narrative" in document and 0 < client.ttl(key) <= 600
    assert json.loads(client.get(config.report_key(ct_uid)))["modality"] == "CT"
    assert sorted(e[b"id"].decode() for _, e in client.xrange(store.stream)) == sorted(good)  # one entry per study

    consumer = KafkaConsumer(
        config.dlq, bootstrap_servers=settings.kafka.servers, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    dead = list(consumer)
    consumer.close()
    assert sorted(dict(m.headers)["dlq_reason"].decode() for m in dead) == sorted(r for *_, r in bad)
    assert all("dlq_detail" in dict(m.headers) for m in dead)

    assert registry.get_sample_value("inspector_medical_studies_total") == len(good)
    assert registry.get_sample_value("inspector_medical_latency_seconds_count") == len(good)
    assert registry.get_sample_value("inspector_medical_dlq_total", {"reason": "not_dicom"}) == 1
    labels = {v for metric in registry.collect() for s in metric.samples for v in s.labels.values()}
    # our own logs (kafka-python's DEBUG protocol dumps print raw records: never run it at DEBUG in production)
    ours = [r for r in caplog.records if r.name.startswith(("workers", "inspector", "mla"))]
    assert any("findings" in r.getMessage() for r in ours)
    logs = "\n".join(r.getMessage() for r in ours)
    for secret in [*good, "PHANTOM^", "PH00003", "PH00004", "CompressedSamples", other]:  # UIDs, names, IDs
        assert secret not in logs and all(secret not in value for value in labels)

    # Offsets were committed: the same group reads nothing new.
    again = MedicalWorker(settings, config, model, tokenizer, store, info=info)
    assert again.run(timeout=8).records == 0


def test_bench_medical_worker_drafts_every_study(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from workers.cli import app

    monkeypatch.setenv("INSPECTOR__KAFKA__BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("INSPECTOR__REDIS__URL", stack.redis_url)
    bench = CliRunner().invoke(app, ["bench", "medical-worker", "--studies", "3", "--threads", "1", "--json"])
    assert bench.exit_code == 0, bench.output
    found = json.loads(bench.output[bench.output.index("{") :])
    assert found["stored"] == 3 and found["dlq"] == {} and found["studies_per_s"] > 0
