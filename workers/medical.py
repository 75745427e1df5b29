"""The medical report worker: Kafka ``medical.studies`` → DICOM → report model → Redis, offsets committed last.

    worker = MedicalWorker(config, model, tokenizer, redis_client, metrics=MedicalMetrics(registry))
    worker.run(timeout=60, count=10)        # or run() until stop() / SIGTERM

Per record: parse the request (:mod:`inspector.medical.request`) → read the series → draft the report
→ ``{prefix}:report:{StudyInstanceUID}`` (JSON, TTL, written once per record with an entry in
``{prefix}:stream``: :class:`~workers.stores.ClaimedStore`) → commit, through :mod:`workers.kafka`.
A record the worker cannot use goes to the dead-letter topic with ``dlq_reason`` / ``dlq_detail``
headers and is committed; the worker never stops on bad input. When Redis refuses, the worker holds
(polls nothing new, keeps its partitions) and retries with back-off from ``store_retry_s``; nothing
is committed before its report is stored. Logs name studies by a hash tag, never by UID or patient
data; metric labels are reasons and finding types only.

Metrics (``MedicalMetrics``, on the registry passed in):

* ``inspector_medical_studies_total``: reports stored.
* ``inspector_medical_latency_seconds``: record received → report stored.
* ``inspector_medical_findings_total{type}``: findings reported, by lesion type.
* ``inspector_medical_out_of_domain_total``: reports of studies the input gate put outside the validated
  domain (:mod:`inspector.medical.domain`); they are stored like any other, flagged in the report.
* ``inspector_medical_model_info{name,version,sha256}``: always 1; which report model serves (file digest).
* the delivery metrics (:mod:`workers.kafka.metrics`) under ``inspector_medical``: ``dlq_total{reason}``
  (:data:`inspector.medical.request.REASONS`), ``store_errors_total``, ``holding``, ``ready``,
  ``last_poll_timestamp_seconds``, ``consumer_rebuilds_total``, ``orphaned_joins_total``.
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
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from pydantic import BaseModel, ConfigDict, Field

import mla
from inspector.config import Settings
from inspector.medical.dicom import DEFAULT_LIMITS, DicomLimits
from inspector.medical.domain import DomainProfile
from inspector.medical.report import StructuredReport, draft_report
from inspector.medical.request import REASONS, RequestError, load_volume, parse_request
from inspector.medical.sr import measurement_report, narrative_report, report_uids
from inspector.medical.vocab import TYPES, ReportTokenizer
from workers.clients import kafka_consumer, kafka_producer
from workers.kafka.checkpoint import Checkpoint, Outcome
from workers.kafka.consumer import Partition
from workers.kafka.metrics import DeliveryMetrics
from workers.pacs import PacsSender, ReportSink
from workers.shell import WorkerShell
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
        self.findings = Counter("inspector_medical_findings_total", "Findings reported, by type.", ["type"], registry=r)
        self.model = Info("inspector_medical_model", "The report model this worker serves.", registry=r)
        self.out_of_domain = Counter(
            "inspector_medical_out_of_domain_total",
            "Reports stored for studies outside the model's validated domain (measured, flagged in the report).",
            registry=r,
        )
        self.delivery = DeliveryMetrics(r, "inspector_medical", REASONS)
        for kind in TYPES:
            self.findings.labels(kind)


@dataclass
class MedicalReport:
    """What a :meth:`MedicalWorker.run` call did."""

    records: int = 0
    stored: int = 0
    already_stored: int = 0
    dlq: Tally[str] = field(default_factory=Tally)
    store_errors: int = 0
    out_of_domain: int = 0
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
        consumer: An unsubscribed consumer (tests); default: built from settings (and rebuilt by the watchdog).
        producer: For dead letters; default: built from settings.

    """

    stale_after_s = 30.0  # one study can take seconds

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
        profile: DomainProfile | None = None,
        sender: PacsSender | None = None,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.settings, self.config, self.profile = settings, config, profile
        self.model, self.tokenizer, self.store, self.metrics = model, tokenizer, store, metrics
        self.delivery = metrics.delivery if metrics is not None else None
        self.info = dict(info or {})
        served = {key: str(self.info.get(key, "")) for key in ("name", "version", "sha256")}
        logger.info("serving report model %s version %s (sha256 %s)", *served.values())
        if metrics is not None:
            metrics.model.info(served)
        make = self._new_consumer if consumer is None else None
        self.consumer = self.group_consumer(make, [config.topic], given=consumer)
        self.producer = producer or kafka_producer(
            settings.kafka, acks="all", retries=5, max_request_size=max(1_048_576, 2 * config.max_inline_bytes)
        )
        self.sink = ReportSink(store, sender)
        self.checkpoint = Checkpoint(
            self.consumer, self.producer, self.sink, dlq=config.dlq, retry_s=config.store_retry_s,
            metrics=self.delivery,
        )  # fmt: skip
        self.report = MedicalReport(dlq=self.checkpoint.dead_letters)

    def _new_consumer(self) -> KafkaConsumer:
        config = self.config
        return kafka_consumer(
            self.settings.kafka, group_id=config.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=4, max_poll_interval_ms=600_000, session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
            fetch_max_bytes=max(52_428_800, 2 * config.max_inline_bytes),
            max_partition_fetch_bytes=max(1_048_576, 2 * config.max_inline_bytes),
        )  # fmt: skip

    def forget(self, partitions: set[Partition]) -> None:
        """Drop the reports held for records of partitions that moved away."""
        self.sink.forget(partitions)

    def forget_all(self) -> None:
        """Drop every report held (the consumer was replaced)."""
        self.sink.forget()

    def settled(self) -> int:
        """Studies stored (now or before) or dead-lettered."""
        return self.report.stored + self.report.already_stored + sum(self.report.dlq.values())

    def step(self) -> None:
        """Poll (or hold while Redis refuses), draft a report per record, write each as it is drafted, commit."""
        if not self.checkpoint.flush():
            self.consumer.hold(self.checkpoint.retry_at)
            self.polled()
        else:
            polled = self.consumer.poll(200)
            self.polled()
            for messages in polled.values():
                for message in messages:
                    self.report.records += 1
                    self.checkpoint.consumed((message.topic, message.partition, message.offset))
                    self.checkpoint.add(self._handle(message))
                    self.checkpoint.flush()
        self.report.store_errors = self.checkpoint.store_errors

    def _handle(self, message: Any) -> Outcome:
        """What one record became: its report to store, or its dead letter."""
        received = time.monotonic()
        position = (message.topic, message.partition, message.offset)
        headers = [(name, value) for name, value in (message.headers or [])]
        try:
            request = parse_request(
                headers, message.value or b"", max_inline_bytes=self.config.max_inline_bytes,
                claim_roots=self.config.claim_roots,
            )  # fmt: skip
            volume = load_volume(request, self.config.dicom_limits)
            try:
                report = draft_report(
                    self.model, self.tokenizer, volume, volume.patient, info=self.info, profile=self.profile
                )
            except (mla.MLAError, RuntimeError, ValueError) as exc:
                raise RequestError("model_error", f"{type(exc).__name__}: {exc}") from None
            reports = self._structured_reports(report, volume) if self.sink.sender is not None else []
        except RequestError as exc:
            where = "/".join(map(str, position))
            logger.info("record %s to %s: %s", where, self.config.dlq, exc.reason)
            return self.checkpoint.letter(position, message.value, message.key, headers, exc.reason, exc.detail)
        record = "/".join(map(str, position))
        self.sink.hold(record, reports)
        claim = Claim(
            record, self.config.report_key(request.study_uid), request.study_uid, json.dumps(report.to_dict())
        )

        def written(fresh: Any) -> None:
            if not fresh:  # this record was stored before a crash or a rebalance: read again, written once
                self.report.already_stored += 1
                return
            self.report.stored += 1
            outside = bool(report.domain.get("out_of_domain"))
            self.report.out_of_domain += outside
            took = time.monotonic() - received
            logger.info("study %s: %d findings, %.0f ms", request.tag, len(report.findings), 1e3 * took)
            if self.metrics is not None:
                self.metrics.studies.inc()
                self.metrics.latency.observe(took)
                if outside:
                    self.metrics.out_of_domain.inc()
                for finding in report.findings:
                    self.metrics.findings.labels(finding.type).inc()

        return Outcome((position,), item=claim, written=written)

    def _structured_reports(self, report: StructuredReport, volume: Any) -> list[Any]:
        """The report as DICOM SRs (TID 1500 measurements + narrative), UIDs fixed by the study and the model.

        Raises:
            RequestError: ``sr_error``: the source headers do not make a valid SR (highdicom refused them).

        """
        uids = report_uids(volume.study_uid, str(self.info.get("sha256", "")))
        evidence = list(volume.headers)
        try:
            return [measurement_report(report, evidence, uids), narrative_report(report, evidence, uids)]
        except (ValueError, TypeError, AttributeError) as exc:
            raise RequestError("sr_error", f"no Structured Report: {type(exc).__name__}: {exc}") from None


def study_headers(study_uid: str, content: str = "dicom", **patient: str | float | None) -> list[tuple[str, bytes]]:
    """Headers of a study request (for producers and tests)."""
    headers = [("schema", b"medical.study/1"), ("study_uid", study_uid.encode()), ("content", content.encode())]
    return headers + [(k, str(v).encode()) for k, v in patient.items() if v is not None]
