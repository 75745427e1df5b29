"""The VQA request and answer contract, as pure functions over bytes and dicts (no Kafka, no Redis).

A request is one Kafka record on ``vqa.requests``:

* value: the image file's bytes (PNG or JPEG, square, colour; resized to the model's side);
* header ``request_id`` (else the record key): 1-128 characters of ``A-Z a-z 0-9 _ . : -``;
* header ``question``: UTF-8 text, e.g. ``what shape is the red object?``;
* header ``reply_to`` (optional): a topic that also receives the answer. It must be one of the topics
  the worker is configured to answer to (``--allow-reply-to``, and its ``--reply-topic``); any other,
  or a name that is not a Kafka topic name, refuses the request (``reply_to_not_allowed``), so a
  request cannot make the worker write where it should not.

The answer document (JSON) goes to Redis ``{prefix}:{request_id}`` with a TTL::

    {"request_id": "r-1", "question": "...", "answer": "circle", "confidence": 0.97,
     "top": [{"answer": "circle", "p": 0.97}, ...], "model": {"fusion": "hffn", "sha256": "..."},
     "latency_ms": 12.3, "answered_at": 1764455000.1}

A refused request gets ``{"request_id", "error": reason, "detail"}`` there instead (when its id is
readable), and its record goes to the dead-letter topic with ``dlq_reason``/``dlq_detail`` headers.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inspector.vqa.errors import VQAInputError

REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
MAX_QUESTION_BYTES = 1_000


@dataclass(frozen=True)
class VQARequest:
    """A decoded request (the image still encoded)."""

    request_id: str
    question: str
    image: bytes
    reply_to: str | None = None


def is_topic_name(name: str) -> bool:
    """``name`` is a legal Kafka topic name: 1-249 characters of ``A-Z a-z 0-9 . _ -``, not ``.`` or ``..``."""
    return bool(TOPIC_NAME.fullmatch(name)) and name not in (".", "..")


def request_id_of(key: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The request id from the ``request_id`` header or the key, if it is a valid id; else None."""
    found = dict(headers).get("request_id") or key
    if not found:
        return None
    try:
        text = found.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if REQUEST_ID.match(text) else None


def parse_request(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]], *,
    reply_topics: Collection[str] = (),
) -> VQARequest:  # fmt: skip
    """Check a record's id, question and reply topic (the image is checked when decoded).

    Args:
        key: The record key.
        value: The record value (the image).
        headers: The record headers.
        reply_topics: The topics a ``reply_to`` header may name; empty: none.

    Raises:
        VQAInputError: ``bad_headers`` (no valid request id, or a question that is not UTF-8),
            ``empty_question``, ``question_too_long``, ``bad_image`` (no value), ``reply_to_not_allowed``
            (a ``reply_to`` not in ``reply_topics``).

    """
    fields = dict(headers)
    request_id = request_id_of(key, headers)
    if request_id is None:
        msg = "the record has no valid request_id header or key (1-128 characters of A-Z a-z 0-9 _ . : -)"
        raise VQAInputError("bad_headers", msg)
    raw = fields.get("question") or b""
    if len(raw) > MAX_QUESTION_BYTES:
        raise VQAInputError("question_too_long", f"the question is {len(raw)} bytes; at most {MAX_QUESTION_BYTES}")
    try:
        question = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise VQAInputError("bad_headers", "the question header is not UTF-8 text") from None
    if not question:
        raise VQAInputError(
            "empty_question", "the question header is missing or empty: ask e.g. 'what shape is the red object?'"
        )
    if not value:
        raise VQAInputError("bad_image", "the record has no image: send the PNG or JPEG bytes as the value")
    return VQARequest(request_id, question, value, _reply_to(fields.get("reply_to"), reply_topics))


def _reply_to(raw: bytes | None, allowed: Collection[str]) -> str | None:
    if not raw:
        return None
    name = raw.decode("ascii", "replace")
    if name in allowed:
        return name
    shown = name[:80] + ("…" if len(name) > 80 else "")
    if not is_topic_name(name):
        detail = f"reply_to {shown!r} is not a Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -)"
    elif allowed:
        detail = f"reply_to {shown!r} is not one of the topics this worker answers to ({', '.join(sorted(allowed))})"
    else:
        detail = "this worker answers to no reply_to topic: leave the header out and read the answer from Redis"
    raise VQAInputError("reply_to_not_allowed", detail)


def answer_document(
    request: VQARequest, answer: Mapping[str, Any], model: Mapping[str, Any], latency_ms: float, now_s: float
) -> dict[str, Any]:
    """The stored answer (see the module docs)."""
    return {
        "request_id": request.request_id, "question": request.question, **answer, "model": dict(model),
        "latency_ms": round(latency_ms, 2), "answered_at": round(now_s, 3),
    }  # fmt: skip


def error_document(request_id: str, reason: str, detail: str, now_s: float) -> dict[str, Any]:
    """The stored answer of a refused request."""
    return {"request_id": request_id, "error": reason, "detail": detail[:1000], "answered_at": round(now_s, 3)}
