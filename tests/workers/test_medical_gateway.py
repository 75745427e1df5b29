"""medical-gateway as a C-STORE SCP (real pynetdicom on loopback, a fake producer): checks, grouping, publishing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts

from inspector.config import PacsSettings, Settings
from inspector.medical.dicom import DicomLimits
from inspector.medical.phantom import make_study, write_dicom
from tests.inspector.medical.conftest import TEST_FILES
from tests.workers.fakes import FakeProducer
from workers.medical_gateway import PUBLISHED, MedicalGateway, StudyAssembler


def test_a_study_is_complete_after_its_quiet_period() -> None:
    assembler = StudyAssembler(quiet_s=5.0)
    assembler.add("1.2", Path("a"), now=0.0)
    assembler.add("1.3", Path("b"), now=3.0)
    assembler.add("1.2", Path("a"), now=4.0)
    assert assembler.due(7.9) == []
    assert [s.uid for s in assembler.due(8.0)] == ["1.3"]  # 1.2 had an instance at 4.0: not quiet yet
    assert [s.uid for s in assembler.due(9.0)] == ["1.2", "1.3"] and assembler.studies["1.2"].instances == 2
    assembler.done("1.2")
    assert [s.uid for s in assembler.due(100.0)] == ["1.3"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[False], ids=["quiet-period"])
def gateway(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[MedicalGateway, FakeProducer, Clock]]:
    pacs = PacsSettings(port=0, allowed_calling_aets=("MODALITY",), quiet_s=5.0, incoming=tmp_path / "incoming",
                        complete_on_release=request.param)  # fmt: skip
    settings = Settings(pacs=pacs)
    producer, clock = FakeProducer(), Clock()
    gateway = MedicalGateway(settings, producer, topic="studies", dlq="dlq", clock=clock,
                             limits=DicomLimits(max_pixels=192 * 192 * 40))  # fmt: skip
    gateway.port = gateway.start()  # type: ignore[attr-defined]
    yield gateway, producer, clock
    gateway.close()


def send(port: int, datasets: list[Dataset], caller: str = "MODALITY") -> list[int] | None:
    ae = AE(ae_title=caller)
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", port, ae_title="INSPECTOR")
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_instances_are_kept_and_the_study_published_once_quiet(
    gateway: tuple[MedicalGateway, FakeProducer, Clock], tmp_path: Path
) -> None:
    scp, producer, clock = gateway
    study = make_study(5)
    write_dicom(study, tmp_path / "study")
    files = sorted((tmp_path / "study").glob("*.dcm"))
    assert send(scp.port, [pydicom.dcmread(f) for f in files]) == [0] * len(files)  # type: ignore[attr-defined]
    folders = list(scp.root.iterdir())
    assert len(folders) == 1 and len(list(folders[0].glob("*.dcm"))) == len(files)
    assert study.study_uid not in str(folders[0])  # paths hold hashes, not UIDs
    clock.now = 4.9
    assert scp.publish_due() == 0
    clock.now = 5.0
    assert scp.publish_due() == 1 and (folders[0] / PUBLISHED).exists()
    ((topic, value, key, headers),) = producer.sent
    assert (topic, value, key) == ("studies", str(folders[0]).encode(), study.study_uid.encode())
    assert dict(headers)["content"] == b"claim" and dict(headers)["study_uid"] == study.study_uid.encode()
    assert scp.publish_due() == 0  # published once


def test_bad_instances_are_refused_with_a_status_and_dead_lettered(
    gateway: tuple[MedicalGateway, FakeProducer, Clock], tmp_path: Path
) -> None:
    scp, producer, _ = gateway
    short = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    short.PixelData = short.PixelData[:100]
    huge = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    huge.Rows = huge.Columns = 8192  # declared far over the limit, nothing decoded
    no_study = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    del no_study.StudyInstanceUID
    assert send(scp.port, [short, huge, no_study]) == [0xA900, 0xA700, 0xC000]  # type: ignore[attr-defined]
    reasons = [dict(h)["dlq_reason"] for _, _, _, h in producer.to("dlq")]
    assert reasons == [b"bad_pixel_data", b"too_large", b"not_dicom"]
    assert all(dict(h)["calling_ae"] == b"MODALITY" for _, _, _, h in producer.to("dlq"))
    assert scp.refused == {"bad_pixel_data": 1, "too_large": 1, "not_dicom": 1}
    assert list(scp.root.iterdir()) == []


def test_a_calling_ae_not_allowed_is_refused_at_the_association(
    gateway: tuple[MedicalGateway, FakeProducer, Clock],
) -> None:
    scp, producer, _ = gateway
    assert send(scp.port, [pydicom.dcmread(TEST_FILES / "CT_small.dcm")], caller="STRANGER") is None  # type: ignore[attr-defined]
    assert producer.sent == [] and list(scp.root.iterdir()) == []


def test_a_study_not_published_before_a_restart_is_published_after_it(tmp_path: Path) -> None:
    settings = Settings(pacs=PacsSettings(port=0, quiet_s=1.0, incoming=tmp_path / "incoming"))
    folder = tmp_path / "incoming" / "abc"
    write_dicom(make_study(6), folder)
    producer, clock = FakeProducer(refuse={"studies": 1}), Clock()
    scp = MedicalGateway(settings, producer, topic="studies", clock=clock)
    clock.now = 1.0
    assert scp.publish_due() == 0  # Kafka refused: still pending
    assert scp.publish_due() == 1 and len(producer.to("studies")) == 1
    assert MedicalGateway(settings, FakeProducer(), topic="studies", clock=clock).assembler.studies == {}


@pytest.mark.parametrize("gateway", [True], ids=["on-release"], indirect=True)
def test_with_complete_on_release_a_study_is_published_when_its_association_ends(
    gateway: tuple[MedicalGateway, FakeProducer, Clock], tmp_path: Path
) -> None:
    scp, producer, clock = gateway
    write_dicom(make_study(7), tmp_path / "study")
    files = sorted((tmp_path / "study").glob("*.dcm"))
    assert send(scp.port, [pydicom.dcmread(f) for f in files]) == [0] * len(files)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while scp.publish_due() == 0 and time.monotonic() < deadline:  # the release event runs on the server's thread
        time.sleep(0.05)
    assert clock.now == 0.0 and len(producer.to("studies")) == 1
