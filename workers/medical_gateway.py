"""``inspector medical-gateway``: a DICOM C-STORE SCP that turns studies sent by a PACS into study requests.

    gateway = MedicalGateway(settings, producer, metrics=GatewayMetrics(registry))
    gateway.start()                # pynetdicom server on pacs.bind_address:pacs.port
    gateway.run(timeout=60)        # publish each study once it is complete; until stop() / SIGTERM
    gateway.close()

Each instance a PACS or modality stores is checked before anything else is done with it:

- the calling AE title must be one of ``pacs.allowed_calling_aets`` (others are refused at the
  association, which pynetdicom answers with "calling AE title not recognised");
- the dataset must decode and carry a Study, Series and SOP Instance UID (status ``0xC000``, "cannot
  understand", and reason ``not_dicom`` otherwise);
- its declared image (Rows × Columns × frames × samples) must fit ``DicomLimits.max_pixels`` for the
  instance and, added up, for its study (status ``0xA700``, "out of resources", reason ``too_large``),
  and uncompressed pixel data must be as long as declared (status ``0xA900``, reason ``bad_pixel_data``).
  This is checked on the header: pixels are never decoded here.

A refused instance is answered with that status and a dead letter goes to the medical dead-letter
topic (``dlq_reason``, ``dlq_detail``, ``calling_ae``; the value is the instance as received,
up to 1 MiB). An accepted one is written to ``pacs.incoming/<study tag>/<instance tag>.dcm`` (tags
are hashes: no UID or patient data in paths or logs) and answered ``0x0000``.

A study is complete when no instance of it has come for ``pacs.quiet_s`` (:class:`StudyAssembler`),
or, with ``pacs.complete_on_release``, as soon as the association that sent it is released (the
study-level trigger for senders that send a whole study per association, as Orthanc's routing does;
an aborted association completes nothing). It is then published to the study topic as today's
claim-check request (``content: claim``, the folder as value), keyed by its Study Instance UID. A
study sent again is published again; the worker's reports of it carry the same SR UIDs, so the PACS
keeps one. A publish that fails (Kafka away) leaves the study pending and is tried again; a study
received before a restart (a folder without ``published``) is published after the quiet period once
the gateway is back.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from inspector.config import PacsSettings, Settings
from inspector.medical.dicom import DEFAULT_LIMITS, DicomLimits, declared_pixels
from inspector.medical.errors import DicomError
from inspector.medical.request import study_tag
from workers.kafka.checkpoint import dead_letter_headers

__all__ = ["GatewayMetrics", "MedicalGateway", "StudyAssembler"]

logger = logging.getLogger(__name__)

OUTCOMES = ("stored", "not_dicom", "too_large", "bad_pixel_data", "not_stored")
PUBLISHED = "published"  # marker file in a study folder once its request is on the topic
MAX_LETTER_BYTES = 2**20
_NOT_UNDERSTOOD, _OUT_OF_RESOURCES, _DOES_NOT_MATCH, _FAILED = 0xC000, 0xA700, 0xA900, 0xC001


def _tag(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:20]


@dataclass
class _Study:
    uid: str
    folder: Path
    last_s: float
    instances: int = 0
    pixels: int = 0


@dataclass
class StudyAssembler:
    """Instances grouped by study; a study is due once ``quiet_s`` passed without one of its instances.

    Times are given by the caller (``time.monotonic()`` in the gateway), so grouping is testable without sleeping.
    """

    quiet_s: float
    studies: dict[str, _Study] = field(default_factory=dict)

    def add(self, study_uid: str, folder: Path, now: float, pixels: int = 0) -> _Study:
        """Count an instance of ``study_uid`` (stored under ``folder``) received at ``now``."""
        study = self.studies.setdefault(study_uid, _Study(study_uid, folder, now))
        study.last_s, study.instances, study.pixels = now, study.instances + 1, study.pixels + pixels
        return study

    def due(self, now: float) -> list[_Study]:
        """The studies complete at ``now`` (still held until :meth:`done`)."""
        return [s for s in self.studies.values() if now - s.last_s >= self.quiet_s]

    def complete(self, study_uid: str) -> None:
        """A study-level trigger: the study is due now, whatever its quiet period."""
        study = self.studies.get(study_uid)
        if study is not None:
            study.last_s = float("-inf")

    def done(self, study_uid: str) -> None:
        """A study was published: forget it (an instance that comes later starts it again)."""
        self.studies.pop(study_uid, None)


class GatewayMetrics:
    """``inspector_medical_gateway_instances_total{outcome}``, ``…_studies_total``, ``…_pending_studies``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.instances = Counter(
            "inspector_medical_gateway_instances_total", "DICOM instances received, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        for outcome in OUTCOMES:
            self.instances.labels(outcome)
        self.studies = Counter("inspector_medical_gateway_studies_total", "Studies published.", registry=registry)
        self.pending = Gauge(
            "inspector_medical_gateway_pending_studies", "Studies received, not yet complete.", registry=registry
        )
        self.associations = Counter(
            "inspector_medical_gateway_associations_rejected_total",
            "Associations refused (calling AE title not allowed).", registry=registry,
        )  # fmt: skip


class MedicalGateway:
    """The C-STORE SCP and the study publisher (see the module docs).

    Args:
        settings: All settings (``pacs`` for the SCP, ``kafka`` through ``producer``).
        producer: A ``KafkaProducer`` for study requests and dead letters.
        topic: The study topic.
        dlq: The dead-letter topic.
        limits: Image size limits (pixels are checked before anything is decoded).
        metrics: Its Prometheus metrics, or None.
        clock: ``time.monotonic`` (a test's clock).

    """

    def __init__(
        self,
        settings: Settings,
        producer: Any,
        *,
        topic: str = "medical.studies",
        dlq: str = "medical.dlq",
        limits: DicomLimits = DEFAULT_LIMITS,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pacs: PacsSettings = settings.pacs
        self.producer, self.topic, self.dlq, self.limits = producer, topic, dlq, limits
        self.metrics, self.clock = metrics, clock
        self.root = self.pacs.incoming.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.assembler = StudyAssembler(self.pacs.quiet_s)
        self.lock = threading.Lock()
        self.server: Any = None
        self.published = self.received = 0
        self.refused: dict[str, int] = {}
        self._stopping = threading.Event()
        self._by_association: dict[int, set[str]] = {}
        self._recover()

    # -- the SCP -----------------------------------------------------------------------------------

    def start(self) -> int:
        """Listen for associations; the port it listens on (``pacs.port`` 0 picks one)."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.pacs.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO)
        ae.require_calling_aet = list(self.pacs.allowed_calling_aets)  # settings: at least one
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, self._on_rejected)]
        if self.pacs.complete_on_release:
            handlers.append((evt.EVT_RELEASED, self._on_released))
        self.server = ae.start_server((self.pacs.bind_address, self.pacs.port), block=False, evt_handlers=handlers)
        port = int(self.server.server_address[1])
        logger.info("DICOM C-STORE SCP %s listening on %s:%d", self.pacs.ae_title, self.pacs.bind_address, port)
        return port

    def _on_released(self, event: Any) -> None:
        """The study-level trigger (``pacs.complete_on_release``): the association's studies are complete."""
        with self.lock:
            for study_uid in self._by_association.pop(id(event.assoc), set()):
                self.assembler.complete(study_uid)

    def _on_rejected(self, event: Any) -> None:
        logger.warning("association from calling AE %r refused: not in pacs.allowed_calling_aets",
                       event.assoc.requestor.ae_title)  # fmt: skip
        if self.metrics is not None:
            self.metrics.associations.inc()

    def _on_store(self, event: Any) -> int:
        """One C-STORE request: check, write, count; the DICOM status to answer."""
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            encoded = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # pynetdicom could not even frame it
            return self._refuse(b"", calling, "not_dicom", _NOT_UNDERSTOOD, f"{type(exc).__name__}: {exc}")
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            study, series, sop = (str(ds.get(k, "") or "").strip() for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                                            "SOPInstanceUID"))  # fmt: skip
        except Exception as exc:  # a dataset pydicom cannot parse
            return self._refuse(encoded, calling, "not_dicom", _NOT_UNDERSTOOD, f"{type(exc).__name__}: {exc}")
        if not (study and series and sop):
            return self._refuse(encoded, calling, "not_dicom", _NOT_UNDERSTOOD,
                                "an instance needs StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID")  # fmt: skip
        problem = self._pixel_problem(ds, study)
        if problem is not None:
            reason, status, detail = problem
            return self._refuse(encoded, calling, reason, status, detail)
        folder = self.root / _tag(study)
        try:
            folder.mkdir(exist_ok=True)
            (folder / PUBLISHED).unlink(missing_ok=True)
            (folder / f"{_tag(sop)}.dcm").write_bytes(encoded)
        except OSError as exc:  # a full disk: the sender keeps the instance and may retry
            logger.error("cannot write an instance of study %s: %s", study_tag(study), exc)
            self._count("not_stored")
            return _FAILED
        with self.lock:
            self.assembler.add(study, folder, self.clock(), self._pixels(ds))
            self.received += 1
            if self.pacs.complete_on_release:
                self._by_association.setdefault(id(event.assoc), set()).add(study)
        self._count("stored")
        return 0x0000

    def _pixels(self, ds: Any) -> int:
        try:
            return declared_pixels(ds) if "PixelData" in ds else 0
        except DicomError:
            return 0

    def _pixel_problem(self, ds: Any, study: str) -> tuple[str, int, str] | None:
        """Why an instance's image is refused, from its header alone (None: it is acceptable)."""
        if "PixelData" not in ds:
            return None
        try:
            pixels = declared_pixels(ds)
        except DicomError as exc:
            return "bad_pixel_data", _DOES_NOT_MATCH, str(exc)
        with self.lock:
            held = self.assembler.studies.get(study)
            total = pixels + (held.pixels if held is not None else 0)
            instances = 1 + (held.instances if held is not None else 0)
        if pixels > self.limits.max_pixels or total > self.limits.max_pixels:
            return "too_large", _OUT_OF_RESOURCES, f"{total} pixels in the study, limit {self.limits.max_pixels}"
        if instances > self.pacs.max_study_instances:
            return "too_large", _OUT_OF_RESOURCES, f"more than {self.pacs.max_study_instances} instances in a study"
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            expected = pixels * int(ds.get("BitsAllocated", 16) or 16) // 8
            got = len(ds.PixelData)
            if got < expected:
                return (
                    "bad_pixel_data",
                    _DOES_NOT_MATCH,
                    f"pixel data holds {got} bytes, the header declares {expected}",
                )
        return None

    def _refuse(self, encoded: bytes, calling: str, reason: str, status: int, detail: str) -> int:
        logger.warning("instance from %s refused (0x%04X, %s): %s", calling, status, reason, detail[:200])
        headers = dead_letter_headers([("calling_ae", calling.encode())], reason, detail)
        value = encoded if len(encoded) <= MAX_LETTER_BYTES else b""
        try:
            self.producer.send(self.dlq, value=value, headers=headers).get(timeout=10)
        except Exception as exc:  # the refusal stands (the sender was told); the letter is what is lost
            logger.error("dead letter for a refused instance not written (%s: %s)", type(exc).__name__, exc)
        with self.lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        self._count(reason)
        return status

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.instances.labels(outcome).inc()

    # -- publishing ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Studies written before a restart and never published are pending again (their quiet period restarts)."""
        import pydicom

        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not (p / PUBLISHED).exists()):
            files = sorted(folder.glob("*.dcm"))
            if not files:
                continue
            try:
                study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            except Exception as exc:  # a damaged file from before: leave the folder for a person to look at
                logger.error("cannot read %s: %s; its study is not published", files[0], exc)
                continue
            for _ in files:
                self.assembler.add(study, folder, self.clock())
            logger.info("study %s: %d instances from before the restart, pending", study_tag(study), len(files))

    def publish_due(self) -> int:
        """Publish every complete study as a claim-check request; how many were published."""
        from workers.medical import study_headers

        with self.lock:
            due = self.assembler.due(self.clock())
        done = 0
        for study in due:
            try:
                future = self.producer.send(
                    self.topic, value=str(study.folder).encode(), key=study.uid.encode(),
                    headers=study_headers(study.uid, "claim"),
                )  # fmt: skip
                future.get(timeout=10)
            except Exception as exc:  # Kafka away: the study stays pending and is tried again
                logger.warning("study %s not published yet (%s: %s)", study_tag(study.uid), type(exc).__name__, exc)
                continue
            (study.folder / PUBLISHED).touch()
            with self.lock:
                if self.assembler.studies.get(study.uid) is study and study.last_s <= self.clock() - self.pacs.quiet_s:
                    self.assembler.done(study.uid)
            logger.info("study %s published: %d instances", study_tag(study.uid), study.instances)
            done += 1
            if self.metrics is not None:
                self.metrics.studies.inc()
        self.published += done
        if self.metrics is not None:
            with self.lock:
                self.metrics.pending.set(len(self.assembler.studies))
        return done

    def run(self, *, timeout: float | None = None, every_s: float = 0.25) -> dict[str, Any]:
        """Publish complete studies until :meth:`stop` or ``timeout`` seconds; a summary."""
        start = time.monotonic()
        while not self._stopping.is_set():
            if timeout is not None and time.monotonic() - start >= timeout:
                break
            self.publish_due()
            self._stopping.wait(every_s)
        self.publish_due()
        with self.lock:
            pending = len(self.assembler.studies)
        return {"received": self.received, "refused": dict(self.refused), "published": self.published,
                "pending": pending, "seconds": round(time.monotonic() - start, 3)}  # fmt: skip

    def stop(self) -> None:
        """Finish the loop (safe from a signal handler)."""
        self._stopping.set()

    def ready(self) -> tuple[bool, str]:
        """Ready while the SCP listens."""
        return (True, "listening") if self.server is not None else (False, "not listening")

    def close(self) -> None:
        """Stop listening (associations in progress are ended) and flush the producer."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        try:
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=5)
