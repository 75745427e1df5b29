from __future__ import annotations

import pytest

from inspector.vqa.errors import VQAInputError
from inspector.vqa.requests import answer_document, error_document, parse_request, request_id_of


def test_parse_reads_id_question_and_reply_topic() -> None:
    r = parse_request(b"k", b"img", [("request_id", b"r-1"), ("question", b" what? "), ("reply_to", b"out")])
    assert (r.request_id, r.question, r.image, r.reply_to) == ("r-1", "what?", b"img", "out")
    assert parse_request(b"from-key", b"img", [("question", b"q")]).request_id == "from-key"


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [
        (None, b"img", [("question", b"q")], "bad_headers"),
        (b"bad id!", b"img", [("question", b"q")], "bad_headers"),
        (b"r", b"img", [("question", b"\xff\xfe")], "bad_headers"),
        (b"r", b"img", [("question", b"  ")], "empty_question"),
        (b"r", b"img", [], "empty_question"),
        (b"r", b"img", [("question", b"x" * 2000)], "question_too_long"),
        (b"r", b"", [("question", b"q")], "bad_image"),
    ],
)
def test_bad_records_have_a_reason(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(VQAInputError) as err:
        parse_request(key, value, headers)
    assert err.value.reason == reason and str(err.value)


def test_request_id_of_is_none_for_unusable_ids() -> None:
    assert request_id_of(b"\xff", []) is None and request_id_of(None, [("request_id", b"ok.1")]) == "ok.1"


def test_documents() -> None:
    request = parse_request(b"r", b"i", [("question", b"q?")])
    doc = answer_document(request, {"answer": "red", "confidence": 0.9}, {"fusion": "dma"}, 12.345, 100.0)
    assert doc["request_id"] == "r" and doc["answer"] == "red" and doc["latency_ms"] == 12.35
    assert error_document("r", "bad_image", "x" * 2000, 1.0)["detail"] == "x" * 1000
