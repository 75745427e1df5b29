"""The review station without HTTP: look a part up, save a decision with its audit line and training sample.

:class:`ReviewStation` wires the pieces together and is what the web app calls::

    station = ReviewStation(settings, client, EvidenceStore.from_settings(settings.evidence), metrics, time.time)
    part = station.part("rig-1", 42)                    # result, evidence.json, latest decision
    saved = station.decide(user, "rig-1", 42, Decision(kind="false_call"))

Saving, in this order: the audit line and the Redis decision (:class:`DecisionStore`), the metrics,
then the label sample into ``review.labels`` (:mod:`inspector.labels`; a later decision on the same
part overwrites it). A part without usable evidence is decided all the same, without a sample:
``Saved.label_error`` says why.

Evidence is read only through the evidence store's resolver (:meth:`workers.evidence.EvidenceStore.resolve`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from inspector.config import Settings
from inspector.errors import InspectorError
from inspector.evidence import evidence_files
from inspector.labels import (
    Decision,
    LabelError,
    decode_infrared,
    decode_visible,
    label_sample,
    review_record,
    write_label,
)
from inspector.results import RedisLayout
from workers.errors import WorkerError
from workers.review.decisions import DecisionRecord, DecisionStore, iso_utc, model_call
from workers.review.metrics import ReviewMetrics
from workers.review.queue import QueueEntry, ReviewQueue, valid_camera_id
from workers.review.users import User

logger = logging.getLogger(__name__)

IMAGE_FILES: Final = ("visible.png", "visible.jpg", "registered.jpg", "probability.png", "infrared.png")
"""Evidence files the station serves to browsers (``evidence.json`` is read server-side only)."""
MAX_EVIDENCE_JSON: Final = 4 * 2**20


class EvidenceFiles(Protocol):
    """The evidence folder's safe resolver (:class:`workers.evidence.EvidenceStore`)."""

    def resolve(self, relative: str, name: str | None = None) -> Path:
        """A path inside the evidence root, or an error for one that would leave it."""
        ...


class PartNotFoundError(WorkerError):
    """No result is stored for that capture (never inspected, or expired)."""


@dataclass(frozen=True)
class Part:
    """What the part view shows."""

    result: dict[str, Any]
    evidence_path: str | None
    evidence: dict[str, Any] | None
    evidence_problem: str | None
    decision: dict[str, Any] | None

    @property
    def cracks(self) -> list[dict[str, Any]]:
        """The measured cracks with their outlines (from the evidence; none without it)."""
        return list((self.evidence or {}).get("cracks") or [])

    @property
    def model(self) -> dict[str, Any]:
        """The model that called the part (the result's, which names its SHA-256)."""
        return dict(self.result.get("model") or (self.evidence or {}).get("model") or {})

    @property
    def crack_count(self) -> int:
        """Cracks the decision's per-crack marks refer to."""
        if self.evidence is not None:
            return len(self.cracks)
        cracks = self.result.get("cracks")
        return len(cracks) if isinstance(cracks, list) else int(cracks or 0)


@dataclass(frozen=True)
class Saved:
    """The outcome of :meth:`ReviewStation.decide`."""

    record: DecisionRecord
    label_id: str | None
    label_error: str | None


class ReviewStation:
    """Queue, part view and decisions over Redis, the evidence folder and the labels folder.

    Args:
        settings: all settings (``review``, ``redis.key_prefix``, ``redis.result_ttl_s``).
        client: a ``redis.Redis``.
        evidence: the evidence store (its ``resolve`` is the only way into the folder).
        metrics: where decisions and the backlog are counted.
        clock: epoch seconds (``time.time``); the audit trail's ``when``.

    """

    def __init__(
        self,
        settings: Settings,
        client: Any,
        evidence: EvidenceFiles,
        metrics: ReviewMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.evidence = evidence
        self.metrics = metrics
        self.clock = clock
        self.labels = settings.review.labels
        layout = RedisLayout(prefix=settings.redis.key_prefix, ttl_s=settings.redis.result_ttl_s)
        self.decisions = DecisionStore(client, layout.prefix, settings.review.audit_log, layout.ttl_s)
        self.queue = ReviewQueue(client, layout, self.decisions, settings.review.queue_size)

    def entries(self) -> list[QueueEntry]:
        """The queue now; sets the backlog gauge."""
        entries = self.queue.entries()
        self.metrics.backlog.set(self.queue.backlog(entries))
        return entries

    def evidence_file(self, relative: str, name: str) -> Path | None:
        """An evidence image to serve, or None: unknown name, refused path (traversal, symlink out), no such file."""
        if name not in IMAGE_FILES:
            return None
        try:
            path = self.evidence.resolve(relative, name)
        except (WorkerError, InspectorError, ValueError, OSError) as exc:
            logger.warning("evidence request refused: %s", exc)
            return None
        return path if path.is_file() else None

    def _evidence_json(self, relative: str) -> dict[str, Any]:
        path = self.evidence.resolve(relative, "evidence.json")
        if path.stat().st_size > MAX_EVIDENCE_JSON:
            raise LabelError(f"{relative}/evidence.json is over {MAX_EVIDENCE_JSON} bytes: not read")
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise LabelError(f"{relative}/evidence.json is not a JSON object")
        return data

    def part(self, camera_id: str, seq: int) -> Part:
        """The part view's data.

        Raises:
            PartNotFoundError: an invalid camera id, or no result stored for the capture.

        """
        result = self.queue.result(camera_id, seq) if valid_camera_id(camera_id) and seq >= 0 else None
        if result is None:
            raise PartNotFoundError(f"no result for {camera_id}:{seq}: it was never inspected or has expired")
        relative = result.get("evidence")
        evidence, problem = None, None
        if not isinstance(relative, str) or not relative:
            problem, relative = "no evidence was kept for this part", None
        else:
            try:
                evidence = self._evidence_json(relative)
            except FileNotFoundError:
                problem = "the evidence folder is gone (retention)"
            except (WorkerError, InspectorError, ValueError, OSError) as exc:
                problem = f"the evidence cannot be read: {exc}"
                logger.warning("evidence of %s:%s: %s", camera_id, seq, exc)
        decision = self.decisions.get(camera_id, seq)
        return Part(result, relative, evidence, problem, decision)

    def decide(self, user: User, camera_id: str, seq: int, decision: Decision) -> Saved:
        """Save a reviewer's decision: audit line, Redis, metrics, then the label sample.

        Raises:
            PartNotFoundError: no such result.
            LabelError: the decision marks cracks the part does not have (nothing saved).
            DecisionError: the audit log or Redis refused (see :meth:`DecisionStore.save`).

        """
        part = self.part(camera_id, seq)
        verdict = decision.verdict(part.crack_count)
        previous = part.decision
        before = {k: v for k, v in previous.items() if k != "schema"} if previous else model_call(part.result)
        sha = str(part.model.get("sha256") or "")
        record = DecisionRecord(
            camera_id=camera_id, seq=seq, part_id=part.result.get("part_id"), decision=decision, verdict=verdict,
            who=user.name, when=iso_utc(self.clock()), model_sha256=sha, before=before,
        )  # fmt: skip
        self.decisions.save(record)
        self.metrics.decided_one(decision.kind, sha)
        try:
            label_id = self._write_label(part, record)
        except (LabelError, WorkerError, InspectorError, ValueError, KeyError, OSError) as exc:
            self.metrics.label_failures.inc()
            logger.warning("decision on %s:%s saved without a training sample: %s", camera_id, seq, exc)
            return Saved(record, None, str(exc))
        return Saved(record, label_id, None)

    def _write_label(self, part: Part, record: DecisionRecord) -> str:
        if part.evidence is None or part.evidence_path is None:
            raise LabelError(part.evidence_problem or "no evidence")
        if part.evidence.get("infrared") == "missing":
            raise LabelError("the capture had no infrared image: a training sample needs both")
        names = evidence_files(part.evidence)
        visible = decode_visible(self.evidence.resolve(part.evidence_path, names["visible"]).read_bytes())
        infrared = decode_infrared(self.evidence.resolve(part.evidence_path, names["infrared"]).read_bytes())
        sample = label_sample(record.decision, part.evidence, visible, infrared)
        review = review_record(record.decision, part.evidence, who=record.who, when=record.when, before=record.before)
        write_label(self.labels, sample, review)
        return sample.meta.id
