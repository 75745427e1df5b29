"""The review queue: NG results (and shadow disagreements) read from Redis, newest first, undecided first.

Sources, both streams of entries whose ``key`` field names a result document
(``{prefix}:result:{camera_id}:{seq}``, :class:`inspector.results.RedisLayout`):

* ``{prefix}:results``: the newest ``review.queue_size`` entries, those with ``verdict`` NG;
* ``{prefix}:review:shadow``: the shadow model's disagreements (docs/REVIEW.md §4), newest
  ``queue_size`` too; a part in both is listed once.

Results whose document has expired are left out. Each entry carries its latest decision, if any.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from inspector.results import RedisLayout
from workers.review.decisions import DecisionStore

CAMERA_ID: Final = re.compile(r"^[A-Za-z0-9_.-]+$")


def valid_camera_id(camera_id: str) -> bool:
    """``[A-Za-z0-9_.-]+`` and not ``.`` or ``..`` (what may appear in a URL path and an evidence path)."""
    return bool(CAMERA_ID.match(camera_id)) and camera_id not in (".", "..")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class QueueEntry:
    """One part waiting for (or having had) a review."""

    camera_id: str
    seq: int
    part_id: str | None
    capture_ts_ns: int
    verdict: str
    cracks: int
    model_name: str
    model_sha256: str
    evidence: str | None
    source: str  # "ng" or "shadow"
    shadow_verdict: str | None  # what the shadow model said, for a "shadow" entry
    decision: str | None  # the latest decision's kind
    decided_verdict: str | None
    decided_by: str | None
    decided_at: str | None

    @property
    def decided(self) -> bool:
        """True once someone decided."""
        return self.decision is not None

    def to_json(self) -> dict[str, Any]:
        """The queue endpoint's entry."""
        return {**asdict(self), "url": f"/part/{self.camera_id}/{self.seq}"}


class ReviewQueue:
    """Reads the queue from Redis.

    Args:
        client: a ``redis.Redis``.
        layout: the results' key names (its ``prefix`` is ``redis.key_prefix``).
        decisions: where the latest decisions are.
        size: ``review.queue_size``, how many newest stream entries are scanned.

    """

    def __init__(self, client: Any, layout: RedisLayout, decisions: DecisionStore, size: int) -> None:
        self.client = client
        self.layout = layout
        self.decisions = decisions
        self.size = size

    @property
    def shadow_stream(self) -> str:
        """``{prefix}:review:shadow``."""
        return f"{self.layout.prefix}:review:shadow"

    def result(self, camera_id: str, seq: int) -> dict[str, Any] | None:
        """One result document, or None when absent or expired."""
        raw = self.client.get(self.layout.result_key(camera_id, seq))
        return json.loads(raw) if raw else None

    def _listed(self, stream: str, ng_only: bool) -> list[dict[str, str]]:
        """The fields of the newest ``size`` entries that name a result (only NG ones when ``ng_only``)."""
        if stream == self.shadow_stream and _text(self.client.type(stream)) != "stream":
            return []
        listed = []
        for _id, fields in self.client.xrevrange(stream, count=self.size):
            named = {_text(k): _text(v) for k, v in fields.items()}
            if "key" in named and (not ng_only or named.get("verdict") == "NG"):
                listed.append(named)
        return listed

    def entries(self) -> list[QueueEntry]:
        """The queue: undecided first, then newest capture first (stream order among equal times)."""
        first: dict[str, dict[str, str]] = {}
        for fields in self._listed(self.layout.stream, ng_only=True):
            first.setdefault(fields["key"], {"source": "ng"})
        for fields in self._listed(self.shadow_stream, ng_only=False):  # a part also NG is listed once, as NG
            first.setdefault(fields["key"], {"source": "shadow", "shadow_verdict": fields.get("shadow_verdict", "")})
        if not first:
            return []
        documents = self.client.mget(list(first))
        found = [(json.loads(d), info) for d, info in zip(documents, first.values(), strict=True) if d]
        found = [(d, i) for d, i in found if valid_camera_id(str(d.get("camera_id", "")))]
        decided = self.decisions.get_many([(str(d["camera_id"]), int(d["seq"])) for d, _ in found])
        entries = [_entry(d, i, dec) for (d, i), dec in zip(found, decided, strict=True)]
        order = {id(e): n for n, e in enumerate(entries)}
        return sorted(entries, key=lambda e: (e.decided, -e.capture_ts_ns, order[id(e)]))

    def backlog(self, entries: list[QueueEntry]) -> int:
        """Entries without a decision."""
        return sum(not e.decided for e in entries)


def _entry(document: Mapping[str, Any], listed: Mapping[str, str], decision: Mapping[str, Any] | None) -> QueueEntry:
    model = document.get("model") or {}
    cracks = document.get("cracks")
    return QueueEntry(
        camera_id=str(document["camera_id"]), seq=int(document["seq"]), part_id=document.get("part_id"),
        capture_ts_ns=int(document.get("capture_ts_ns", 0)), verdict=str(document.get("verdict", "")),
        cracks=len(cracks) if isinstance(cracks, list) else int(cracks or 0),
        model_name=str(model.get("name", "")), model_sha256=str(model.get("sha256", "")),
        evidence=document.get("evidence"), source=listed["source"], shadow_verdict=listed.get("shadow_verdict"),
        decision=decision.get("kind") if decision else None,
        decided_verdict=decision.get("verdict") if decision else None,
        decided_by=decision.get("who") if decision else None, decided_at=decision.get("when") if decision else None,
    )  # fmt: skip
