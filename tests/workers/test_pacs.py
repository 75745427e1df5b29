"""The medical worker's report sink: SRs to the PACS first, the JSON to Redis after, both retried together."""

from __future__ import annotations

import re

import pytest
from pydicom.dataset import Dataset

from inspector.config import PacsSettings
from tests.workers.fakes import FakeRedis
from workers.pacs import PacsError, PacsSender, ReportSink
from workers.stores import Claim, ClaimedStore


class FakeSender:
    """Records what it sends; refuses the first ``failures`` sends like a PACS that is down."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[str] = []

    def send(self, datasets: list[Dataset]) -> None:
        if self.failures:
            self.failures -= 1
            raise PacsError("no DICOM association with ORTHANC@127.0.0.1:4242 (injected)")
        self.sent += [str(ds.SOPInstanceUID) for ds in datasets]


def sr(uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = uid
    return ds


def claim(record: str) -> Claim:
    return Claim(record, f"medical:report:{record}", "1.2.3", "{}")


def test_reports_go_to_the_pacs_before_redis_and_a_refusal_writes_neither() -> None:
    redis = FakeRedis()
    sender = FakeSender(failures=1)
    sink = ReportSink(ClaimedStore(redis, "medical", 60), sender)  # type: ignore[arg-type]
    sink.hold("t/0/1", [sr("2.25.1"), sr("2.25.2")])
    with pytest.raises(PacsError):
        sink.write([claim("t/0/1")])
    assert sender.sent == [] and "medical:report:t/0/1" not in redis.data and "t/0/1" in sink.outbox
    assert sink.write([claim("t/0/1")]) == [True]  # the checkpoint's retry
    assert sender.sent == ["2.25.1", "2.25.2"] and "medical:report:t/0/1" in redis.data
    assert sink.outbox == {}


def test_without_a_sender_nothing_is_held_and_redis_alone_is_written() -> None:
    sink = ReportSink(ClaimedStore(FakeRedis(), "medical", 60), None)
    sink.hold("t/0/1", [sr("2.25.1")])
    assert sink.outbox == {} and sink.write([claim("t/0/1")]) == [True]


def test_reports_of_partitions_that_moved_away_are_dropped() -> None:
    sink = ReportSink(ClaimedStore(FakeRedis(), "medical", 60), FakeSender())  # type: ignore[arg-type]
    for record in ("t/0/1", "t/1/1", "t/10/1"):
        sink.hold(record, [sr("2.25.1")])
    sink.forget({("t", 1)})
    assert set(sink.outbox) == {"t/0/1", "t/10/1"}
    sink.forget()
    assert sink.outbox == {}


def test_a_sender_exists_only_when_reports_are_sent() -> None:
    assert PacsSender.from_settings(PacsSettings()) is None
    cstore = PacsSender.from_settings(PacsSettings(send="cstore", pacs_port=4343))
    stow = PacsSender.from_settings(PacsSettings(send="stow"))
    assert cstore is not None and cstore.target == "ORTHANC@127.0.0.1:4343"
    assert stow is not None and stow.target == "http://127.0.0.1:8042/dicom-web"


def test_a_pacs_that_does_not_answer_is_a_pacs_error_that_says_where() -> None:
    sender = PacsSender(PacsSettings(send="cstore", pacs_port=9, timeout_s=2))  # discard port: nobody listens
    dataset = sr("2.25.9")
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    with pytest.raises(PacsError, match=re.escape("no DICOM association with ORTHANC@127.0.0.1:9")):
        sender.send([dataset])
