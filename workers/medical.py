"""The medical report worker: Kafka ``medical.studies`` → DICOM → report model → Redis, offsets committed last.

    worker = MedicalWorker(config, model, tokenizer, redis_client, metrics=MedicalMetrics(registry))
    worker.run(timeout=60, count=10)        # or run() until stop() / SIGTERM

Per record: parse the request (:mod:`inspector.medical.request`) → read the series → draft the report
→ ``SET medical:report:{StudyInstanceUID}`` (JSON, TTL) → commit. A record the worker cannot use goes
to the dead-letter topic with ``dlq_reason`` / ``dlq_detail`` headers and is committed; the worker never
stops on bad input. When Redis refuses, the record is read again after a back-off (nothing is
committed before its report is stored). Logs name studies by a hash tag, never by UID or patient data;
metric labels are reasons and finding types only.

Metrics (``MedicalMetrics``, on the registry passed in):

* ``inspector_medical_studies_total``: reports stored.
* ``inspector_medical_latency_seconds``: record received → report stored.
* ``inspector_medical_errors_total{reason}``: records sent to the dead-letter topic, by reason
  (:data:`inspector.medical.request.REASONS`), plus ``store`` for refused Redis writes (retried).
* ``inspector_medical_findings_total{type}``: findings reported, by lesion type.
* ``inspector_medical_ready``: 1 while the worker polls with partitions assigned.
* ``inspector_medical_model_info{name,version,sha256}``: always 1; which report model serves (file digest).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from pydantic import BaseModel, ConfigDict, Field

import mla
from inspector.config import Settings
from inspector.medical.dicom import DEFAULT_LIMITS, DicomLimits
from inspector.medical.report import draft_report
from inspector.medical.request import REASONS, RequestError, load_volume, parse_request
from inspector.medical.vocab import TYPES, ReportTokenizer
from workers.clients import kafka_consumer, kafka_producer
from workers.shell import Backoff, WorkerShell, dead_letter_headers
from workers.stores import Claim, ClaimedStore

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


class MedicalConfig(BaseModel):
    """Settings of the medical worker (the Kafka, Redis and metrics addresses come from :class:`Settings`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field("medical.studies", min_length=1)
    dlq: str = Field("medical.dlq", min_length=1)
    group_id: str = Field("inspector-medical", min_length=1)
    key_prefix: str = Field("medical", pattern=r"^[A-Za-z0-9_.:-]+$")
    ttl_s: int = Field(30 * 24 * 3600, ge=1)
    max_inline_bytes: int = Field(16 * 2**20, ge=1024, description="larger series must come by claim check")
    claim_roots: tuple[Path, ...] = ()
    store_retry_s: float = Field(1.0, gt=0)
    dicom_limits: DicomLimits = Field(
        DEFAULT_LIMITS, description="zip members, unpacked bytes, compression ratio and pixels one study may hold"
    )

    def report_key(self, study_uid: str) -> str:
        """``{prefix}:report:{StudyInstanceUID}``."""
        return f"{self.key_prefix}:report:{study_uid}"


class MedicalMetrics:
    """Prometheus metrics of one medical worker (see the module docs)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.studies = Counter("inspector_medical_studies_total", "Reports stored.", registry=r)
        self.latency = Histogram(
            "inspector_medical_latency_seconds", "Record received to report stored.", buckets=LATENCY_BUCKETS_S,
            registry=r,
        )  # fmt: skip
        self.errors = Counter("inspector_medical_errors_total", "Records rejected, by reason.", ["reason"], registry=r)
        self.findings = Counter("inspector_medical_findings_total", "Findings reported, by type.", ["type"], registry=r)
        self.ready = Gauge("inspector_medical_ready", "1 while the worker polls with partitions.", registry=r)
        self.model = Info("inspector_medical_model", "The report model this worker serves.", registry=r)
        for reason in (*REASONS, "store"):
            self.errors.labels(reason)
        for kind in TYPES:
            self.findings.labels(kind)


@dataclass
class MedicalReport:
    """What a :meth:`MedicalWorker.run` call did."""

    records: int = 0
    stored: int = 0
    dlq: Tally[str] = field(default_factory=Tally)
    store_errors: int = 0
    seconds: float = 0.0


class MedicalWorker(WorkerShell[MedicalReport]):
    """Consume study requests, draft reports, store them, commit (see the module docs).

    Args:
        settings: Kafka / Redis addresses.
        config: Topic, keys, limits.
        model: The report model.
        tokenizer: Its tokenizer.
        store: Where reports go, written once per record (``ClaimedStore(client, config.key_prefix, config.ttl_s)``).
        metrics: Prometheus metrics; ``None`` records nothing.
        info: Model name, version, sha256 copied into each report.
        consumer: A ready consumer (tests); default: built from settings.
        producer: For dead letters; default: built from settings.

    """

    def __init__(
        self,
        settings: Settings,
        config: MedicalConfig,
        model: mla.MLAModel,
        tokenizer: ReportTokenizer,
        store: ClaimedStore,
        *,
        metrics: MedicalMetrics | None = None,
        info: dict[str, Any] | None = None,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.settings, self.config = settings, config
        self.model, self.tokenizer, self.store, self.metrics = model, tokenizer, store, metrics
        self.info = dict(info or {})
        served = {key: str(self.info.get(key, "")) for key in ("name", "version", "sha256")}
        logger.info("serving report model %s version %s (sha256 %s)", *served.values())
        if metrics is not None:
            metrics.model.info(served)
        self.consumer = consumer or self._new_consumer()
        self.producer = producer or kafka_producer(
            settings.kafka, acks="all", retries=5, max_request_size=max(1_048_576, 2 * config.max_inline_bytes)
        )
        self.report = MedicalReport()
        self.backoff = Backoff(config.store_retry_s)
        self.consumer.subscribe([config.topic])
        if consumer is None:
            self.consumer_factory = self._subscribed_consumer

    def _new_consumer(self) -> KafkaConsumer:
        config = self.config
        return kafka_consumer(
            self.settings.kafka, group_id=config.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=4, max_poll_interval_ms=600_000, session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
            fetch_max_bytes=max(52_428_800, 2 * config.max_inline_bytes),
            max_partition_fetch_bytes=max(1_048_576, 2 * config.max_inline_bytes),
        )  # fmt: skip

    def _subscribed_consumer(self) -> KafkaConsumer:
        consumer = self._new_consumer()
        consumer.subscribe([self.config.topic])
        return consumer

    stale_after_s = 30.0  # one study can take seconds

    def settled(self) -> int:
        """Studies stored or dead-lettered."""
        return self.report.stored + sum(self.report.dlq.values())

    def step(self) -> None:
        """Poll, then settle each record in order; a refused store re-reads that record after a back-off."""
        polled = self.consumer.poll(timeout_ms=200)
        self.polled()
        for tp, messages in polled.items():
            for message in messages:
                self.report.records += 1
                if not self._handle(tp, message):  # Redis refused: read this record again after a back-off
                    self.consumer.seek(tp, message.offset)
                    self.backoff.wait()
                    break
                self.backoff.reset()
                self._commit(tp, message.offset + 1)

    def _handle(self, tp: TopicPartition, message: Any) -> bool:
        """Settle one record: report stored or dead letter sent → True; store refused → False."""
        received = time.monotonic()
        headers = [(name, value) for name, value in (message.headers or [])]
        try:
            request = parse_request(
                headers, message.value or b"", max_inline_bytes=self.config.max_inline_bytes,
                claim_roots=self.config.claim_roots,
            )  # fmt: skip
            volume = load_volume(request, self.config.dicom_limits)
            try:
                report = draft_report(self.model, self.tokenizer, volume, volume.patient, info=self.info)
            except (mla.MLAError, RuntimeError, ValueError) as exc:
                raise RequestError("model_error", f"{type(exc).__name__}: {exc}") from None
        except RequestError as exc:
            return self._dead_letter(tp, message, exc)
        document = report.to_dict()
        record = f"{tp.topic}/{tp.partition}/{message.offset}"
        claim = Claim(record, self.config.report_key(request.study_uid), request.study_uid, json.dumps(document))
        try:
            self.store.put_many([claim])
        except Exception as exc:  # redis-py raises its own ConnectionError/TimeoutError family
            self.report.store_errors += 1
            if self.metrics is not None:
                self.metrics.errors.labels("store").inc()
            logger.warning("study %s: report store refused (%s); retrying", request.tag, type(exc).__name__)
            return False
        self.report.stored += 1
        logger.info(
            "study %s: %d findings, %.0f ms", request.tag, len(report.findings), 1e3 * (time.monotonic() - received)
        )
        if self.metrics is not None:
            self.metrics.studies.inc()
            self.metrics.latency.observe(time.monotonic() - received)
            for finding in report.findings:
                self.metrics.findings.labels(finding.type).inc()
        return True

    def _dead_letter(self, tp: TopicPartition, message: Any, error: RequestError) -> bool:
        headers = dead_letter_headers(
            message.headers, error.reason, error.detail, topic=tp.topic, partition=tp.partition, offset=message.offset
        )
        try:
            self.producer.send(self.config.dlq, value=message.value, key=message.key, headers=headers).get(timeout=10)
        except KafkaError as exc:
            logger.warning("dead-letter topic refused a record (%s); retrying", type(exc).__name__)
            return False
        self.report.dlq[error.reason] += 1
        if self.metrics is not None:
            self.metrics.errors.labels(error.reason).inc()
        logger.info("record %s/%d@%d to %s: %s", tp.topic, tp.partition, message.offset, self.config.dlq, error.reason)
        return True

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
        except KafkaError as exc:  # a rebalance: the record may be read again; its report is simply rewritten
            logger.warning("offset commit failed (%s)", exc)


def study_headers(study_uid: str, content: str = "dicom", **patient: str | float | None) -> list[tuple[str, bytes]]:
    """Headers of a study request (for producers and tests)."""
    headers = [("schema", b"medical.study/1"), ("study_uid", study_uid.encode()), ("content", content.encode())]
    return headers + [(k, str(v).encode()) for k, v in patient.items() if v is not None]
