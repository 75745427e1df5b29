"""The stored result of one capture, and where it lives: Redis keys (workers) or a JSONL file (embedded).

A result is keyed by ``(camera_id, seq)``, the capture's identity: storing it twice — a frame
re-delivered after a worker crash, a rebalance, a producer retry — must leave exactly one result and
one stream entry. Both stores are idempotent on that key::

    document = result_document(result, camera_id="rig-1", seq=42, capture_ts_ns=..., stored_ns=...)
    store.put(document, overlay_jpeg=None)   # True when stored now, False when it was already there

Redis layout (prefix ``inspector`` by default):

    inspector:result:{camera_id}:{seq}    JSON document, with a TTL
    inspector:results                     stream: one entry per stored result (XADD, approximate MAXLEN)
    inspector:part:{part_id}              the latest verdict of a part (JSON: verdict, camera_id, seq)
    inspector:overlay:{camera_id}:{seq}   JPEG overlay of an NG part, with a TTL

The four writes happen in one Lua script that first claims the result key with ``SET NX``: a second
write of the same capture changes nothing. The script is given only the keys it writes (no empty
placeholders), so a Redis ACL user limited to ``~{prefix}:*`` may run it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from inspector.errors import InspectorError
from inspector.pipeline import InspectionResult

logger = logging.getLogger(__name__)

RESULT_DOCUMENT_SCHEMA = "inspector.stored-result/1"


class StoreError(InspectorError):
    """A result store cannot be reached or refused a write (the caller retries; offsets stay uncommitted)."""


def result_document(
    result: InspectionResult,
    *,
    camera_id: str,
    seq: int,
    capture_ts_ns: int,
    stored_ns: int,
    model_width: float = 1.0,
) -> dict[str, Any]:
    """The JSON document stored for one capture (pure: the caller passes the clock readings)."""
    body = result.to_dict()
    timings = {k: round(float(v), 3) for k, v in result.timings_ms.items()}
    timings["end_to_end"] = round((stored_ns - capture_ts_ns) / 1e6, 3)
    return {
        "schema": RESULT_DOCUMENT_SCHEMA,
        "camera_id": camera_id,
        "seq": seq,
        "part_id": result.part_id,
        "capture_ts_ns": capture_ts_ns,
        "verdict": result.verdict,
        "defects": body["defects"],
        "cracks": len(result.cracks),
        "mm_per_px": result.mm_per_px,
        "modal_weights": result.modal_weights,
        "model": {**result.model, "width": model_width},
        "timings_ms": timings,
    }


class ResultStore(Protocol):
    """Where results go; ``put`` is idempotent per ``(camera_id, seq)``."""

    def put(self, document: Mapping[str, Any], overlay_jpeg: bytes | None = None) -> bool:
        """Store one result; False when that capture was stored before (nothing changed)."""
        ...


@dataclass(frozen=True)
class RedisLayout:
    """Key names and lifetimes of the Redis store."""

    prefix: str = "inspector"
    ttl_s: int = 7 * 24 * 3600
    overlay_ttl_s: int = 24 * 3600
    stream_maxlen: int = 100_000

    def result_key(self, camera_id: str, seq: int) -> str:
        """``{prefix}:result:{camera_id}:{seq}``."""
        return f"{self.prefix}:result:{camera_id}:{seq}"

    def overlay_key(self, camera_id: str, seq: int) -> str:
        """``{prefix}:overlay:{camera_id}:{seq}``."""
        return f"{self.prefix}:overlay:{camera_id}:{seq}"

    def part_key(self, part_id: str) -> str:
        """``{prefix}:part:{part_id}``."""
        return f"{self.prefix}:part:{part_id}"

    @property
    def stream(self) -> str:
        """``{prefix}:results``."""
        return f"{self.prefix}:results"


# KEYS: result, stream, then the part key if ARGV[8] == '1', then the overlay key if ARGV[9] == '1'
# ARGV: document, ttl, maxlen, part value, overlay bytes, overlay ttl, verdict, has part, has overlay
_PUT_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'key', KEYS[1], 'verdict', ARGV[7])
local next_key = 3
if ARGV[8] == '1' then
  redis.call('SET', KEYS[next_key], ARGV[4], 'EX', ARGV[2])
  next_key = next_key + 1
end
if ARGV[9] == '1' then
  redis.call('SET', KEYS[next_key], ARGV[5], 'EX', ARGV[6])
end
return 1
"""


class RedisResultStore:
    """Results in Redis, one Lua script per result (idempotent on the result key)."""

    def __init__(self, client: Any, layout: RedisLayout | None = None) -> None:
        self.client = client
        self.layout = layout or RedisLayout()
        self._put = client.register_script(_PUT_SCRIPT)

    def put(self, document: Mapping[str, Any], overlay_jpeg: bytes | None = None) -> bool:
        """Store one result; False when this ``(camera_id, seq)`` was stored before."""
        import redis

        layout = self.layout
        camera_id, seq, part_id = document["camera_id"], int(document["seq"]), document.get("part_id")
        keys = [layout.result_key(camera_id, seq), layout.stream]
        if part_id:
            keys.append(layout.part_key(part_id))
        if overlay_jpeg is not None:
            keys.append(layout.overlay_key(camera_id, seq))
        part = json.dumps({"verdict": document["verdict"], "camera_id": camera_id, "seq": seq})
        has = (int(bool(part_id)), int(overlay_jpeg is not None))
        args = [json.dumps(document), layout.ttl_s, layout.stream_maxlen, part, overlay_jpeg or b"",
                layout.overlay_ttl_s, document["verdict"], *has]  # fmt: skip
        try:
            return bool(self._put(keys=keys, args=args))
        except redis.RedisError as exc:
            raise StoreError(f"redis refused the result {keys[0]}: {exc}") from exc


class JsonlResultStore:
    """Results appended to a JSON-lines file (the embedded default, no services); idempotent per capture."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: set[tuple[str, int]] = set()
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    stored = json.loads(line)
                    self.seen.add((stored["camera_id"], int(stored["seq"])))

    def put(self, document: Mapping[str, Any], overlay_jpeg: bytes | None = None) -> bool:
        """Append one result unless that capture is already in the file; overlays go beside it."""
        key = (str(document["camera_id"]), int(document["seq"]))
        if key in self.seen:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(document) + "\n")
        if overlay_jpeg is not None:
            (self.path.parent / f"overlay-{key[0]}-{key[1]}.jpg").write_bytes(overlay_jpeg)
        self.seen.add(key)
        return True
