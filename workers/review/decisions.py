"""Where decisions go: the latest per part in Redis, every one in an append-only audit log.

The decision itself (confirm / false call / relabel with per-crack marks and brush strokes) is the
domain value :class:`inspector.labels.Decision`. Saving one, in this order:

1. one JSON line appended to ``review.audit_log``: ``who``, ``when`` (ISO 8601 UTC), ``capture``
   (camera_id, seq, part_id), ``before`` (the previous decision, or the model's call) and ``after``;
2. ``{prefix}:decision:{camera_id}:{seq}`` in Redis: the latest decision (what the queue shows).

The audit line goes first: a decision that Redis then refuses is in the trail and is saved again on
retry (two lines), while one stored in Redis can never miss its line. The log is opened with
``O_APPEND`` and mode 0600; one process writes it, under a lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from inspector.labels import Decision
from workers.errors import WorkerError

logger = logging.getLogger(__name__)

DECISION_SCHEMA: Final = "inspector.review-decision/1"


class DecisionError(WorkerError):
    """A decision could not be recorded (audit log or Redis); nothing after the failing step was done."""


def iso_utc(seconds: float) -> str:
    """``2026-12-01T08:00:00.123Z`` for an epoch time."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_call(result: Mapping[str, Any]) -> dict[str, Any]:
    """The ``before`` of a part nobody decided yet: the model's verdict and its crack count."""
    model = result.get("model") or {}
    return {"source": "model", "verdict": result.get("verdict"), "cracks": result.get("cracks"),
            "model_sha256": model.get("sha256")}  # fmt: skip


@dataclass(frozen=True)
class DecisionRecord:
    """One saved decision: the decision, on which capture, by whom, when, and what it replaced."""

    camera_id: str
    seq: int
    part_id: str | None
    decision: Decision
    verdict: str
    who: str
    when: str
    model_sha256: str
    before: dict[str, Any]

    def after(self) -> dict[str, Any]:
        """The decision as the audit trail and Redis keep it."""
        return {
            "source": "review", "kind": self.decision.kind, "verdict": self.verdict,
            "cracks": {str(i): m for i, m in sorted(self.decision.cracks.items())},
            "strokes": [s.model_dump(mode="json") for s in self.decision.strokes], "note": self.decision.note,
            "who": self.who, "when": self.when,
        }  # fmt: skip

    def document(self) -> dict[str, Any]:
        """The Redis value: the ``after`` plus the capture and model."""
        return {"schema": DECISION_SCHEMA, "camera_id": self.camera_id, "seq": self.seq, "part_id": self.part_id,
                "model_sha256": self.model_sha256, **self.after()}  # fmt: skip

    def audit_line(self) -> dict[str, Any]:
        """The audit log entry: who, when, capture, before → after."""
        return {
            "who": self.who, "when": self.when,
            "capture": {"camera_id": self.camera_id, "seq": self.seq, "part_id": self.part_id},
            "model_sha256": self.model_sha256, "before": self.before, "after": self.after(),
        }  # fmt: skip


class DecisionStore:
    """The latest decisions in Redis and the audit log on disk.

    Args:
        client: a ``redis.Redis`` (bytes or decoded answers).
        prefix: ``redis.key_prefix``.
        audit_log: ``review.audit_log``.
        ttl_s: how long a decision key lives (the results' TTL: a decision outlives no result by much).

    """

    def __init__(self, client: Any, prefix: str, audit_log: Path, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.audit_log = audit_log
        self.ttl_s = ttl_s
        self._lock = threading.Lock()

    def key(self, camera_id: str, seq: int) -> str:
        """``{prefix}:decision:{camera_id}:{seq}``."""
        return f"{self.prefix}:decision:{camera_id}:{seq}"

    def get(self, camera_id: str, seq: int) -> dict[str, Any] | None:
        """The latest decision document of a capture, or None."""
        return self.get_many([(camera_id, seq)])[0]

    def get_many(self, captures: Sequence[tuple[str, int]]) -> list[dict[str, Any] | None]:
        """The latest decision of each capture (None where none), in one round trip."""
        if not captures:
            return []
        values = self.client.mget([self.key(c, s) for c, s in captures])
        return [json.loads(v) if v else None for v in values]

    def save(self, record: DecisionRecord) -> None:
        """Append the audit line, then store the decision in Redis.

        Raises:
            DecisionError: the audit log cannot be written (nothing stored), or Redis refused (the line is
                written; saving again adds a second one).

        """
        line = json.dumps(record.audit_line(), separators=(",", ":"), sort_keys=True) + "\n"
        try:
            self.audit_log.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                fd = os.open(self.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise DecisionError(
                f"cannot append to the audit log {self.audit_log} ({exc}): nothing was saved; check review.audit_log"
            ) from exc
        try:
            self.client.set(self.key(record.camera_id, record.seq), json.dumps(record.document()), ex=self.ttl_s)
        except Exception as exc:  # redis.RedisError and connection errors alike
            raise DecisionError(f"redis refused the decision ({type(exc).__name__}: {exc}): save it again") from exc
        logger.info("%s decided %s:%s: %s → %s (%s)", record.who, record.camera_id, record.seq,
                    record.before.get("verdict"), record.verdict, record.decision.kind)  # fmt: skip


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every line of an audit log (for tests and tools); an absent log has none."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
