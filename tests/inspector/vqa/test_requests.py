from __future__ import annotations

import re

import pytest

from inspector.vqa.errors import VQAInputError
from inspector.vqa.requests import answer_document, error_document, is_topic_name, parse_request, request_id_of


def test_parse_reads_id_question_and_reply_topic() -> None:
    headers = [("request_id", b"r-1"), ("question", b" what? "), ("reply_to", b"out")]
    r = parse_request(b"k", b"img", headers, reply_topics={"out", "other"})
    assert (r.request_id, r.question, r.image, r.reply_to) == ("r-1", "what?", b"img", "out")
    assert parse_request(b"from-key", b"img", [("question", b"q")]).request_id == "from-key"


@pytest.mark.parametrize(
    ("reply_to", "allowed", "said"),
    [
        (b"elsewhere", {"out"}, "'elsewhere' is not one of the topics this worker answers to (out)"),
        (b"out", set(), "this worker answers to no reply_to topic"),
        (b"__consumer_offsets/../x", {"out"}, "is not a Kafka topic name"),
        (b"a" * 250, {"out"}, "is not a Kafka topic name"),
        (b"..", {"out"}, "is not a Kafka topic name"),
        ("\u00fcber".encode(), {"out"}, "is not a Kafka topic name"),
    ],
)
def test_a_reply_to_off_the_allow_list_is_refused(reply_to: bytes, allowed: set[str], said: str) -> None:
    headers = [("request_id", b"r-1"), ("question", b"what?"), ("reply_to", reply_to)]
    with pytest.raises(VQAInputError, match=re.escape(said)) as err:
        parse_request(None, b"img", headers, reply_topics=allowed)
    assert err.value.reason == "reply_to_not_allowed"


def test_topic_names_follow_kafka() -> None:
    assert all(is_topic_name(n) for n in ("vqa.answers", "a", "A-b_c.9", "x" * 249))
    assert not any(is_topic_name(n) for n in ("", ".", "..", "x" * 250, "a b", "a/b", "ü", "a,b"))


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
