"""Studies in from a PACS, reports back to it: dcmtk's storescu → medical-gateway → Kafka → medical-worker → Orthanc.

Everything is real and runs as users run it: a private Orthanc (deploy/local/stack's optional service,
free loopback ports, its own storage), ``inspector medical-gateway`` and ``inspector medical-worker``
as subprocesses on the local Kafka and Redis, dcmtk's ``storescu`` (a client nobody here wrote)
sending a synthetic phantom study and pydicom's real ``CT_small.dcm``. Checked: one measurement SR
and one narrative SR per study reach Orthanc and parse back (highdicom) to the findings stored in
Redis; a study sent again adds no SR; Orthanc stopped for 20 s loses nothing; a malformed instance is
refused with a DICOM status and dead-lettered with its reason; a calling AE not on the allow-list is
refused; no patient identifier appears in the services' logs.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
import redis
from kafka import KafkaConsumer
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from inspector.medical.phantom import make_study, write_dicom
from inspector.medical.sr import findings_of
from inspector.medical.vocab import Finding
from tests.conftest import REPO, Stack
from tests.inspector.medical.conftest import TEST_FILES
from tests.orthanc import INSTALL, orthanc_env, rest, rest_bytes, rest_post
from tests.orthanc import stack as stack_script

pytestmark = pytest.mark.integration

GATEWAY_AET, CALLER_AET = "TESTGATEWAY", "STORESCU"
COMPREHENSIVE_3D_SR, ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22"


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 90.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Pipeline:
    """The private Orthanc, the gateway and the worker of one test, with their logs."""

    def __init__(self, stack_: Stack, tmp: Path) -> None:
        self.tmp, self.tag = tmp, uuid.uuid4().hex[:8]
        self.env = orthanc_env(tmp)
        self.env["INSPECTOR_MEDICAL_GATEWAY_AET"] = GATEWAY_AET
        self.gateway_port = 0
        self.topic, self.dlq, self.prefix = f"med-{self.tag}", f"med-dlq-{self.tag}", f"pacs-{self.tag}"
        self.incoming = tmp / "incoming"
        base = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR")}
        self.service_env = base | {
            "INSPECTOR__KAFKA__BOOTSTRAP": stack_.kafka_bootstrap,
            "INSPECTOR__REDIS__URL": stack_.redis_url,
            "INSPECTOR__METRICS__PORT": "0",
            "INSPECTOR__PACS__AE_TITLE": GATEWAY_AET,
            "INSPECTOR__PACS__PORT": "0",  # a free one, read from its start line (a port picked here could be taken)
            "INSPECTOR__PACS__ALLOWED_CALLING_AETS": json.dumps([CALLER_AET, "TESTPACS"]),
            "INSPECTOR__PACS__QUIET_S": "2",
            "INSPECTOR__PACS__INCOMING": str(self.incoming),
            "INSPECTOR__PACS__SEND": "cstore",
            "INSPECTOR__PACS__PACS_AE_TITLE": "TESTPACS",
            "INSPECTOR__PACS__PACS_PORT": self.env["INSPECTOR_ORTHANC_DICOM_PORT"],
            "INSPECTOR__PACS__TIMEOUT_S": "5",
        }
        self.redis = redis.Redis.from_url(stack_.redis_url, decode_responses=True)
        self.kafka = stack_.kafka_bootstrap
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def orthanc(self, command: str) -> None:
        done = stack_script(self.env, command, "orthanc")
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self, name: str, args: list[str]) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args], env=self.service_env, stdout=log, stderr=subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def storescu(self, *files: Path, caller: str = CALLER_AET) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["storescu", "-v", "-aet", caller, "-aec", GATEWAY_AET, "127.0.0.1", str(self.gateway_port),
             *map(str, files)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def srs(self) -> dict[str, list[dict[str, Any]]]:
        """Orthanc's SR instances per Study Instance UID, each with its SOP class and instance UIDs."""
        found: dict[str, list[dict[str, Any]]] = {}
        for instance in rest_post(self.env, "/tools/find", {"Level": "Instance", "Query": {"Modality": "SR"},
                                                             "Expand": True}):  # fmt: skip
            tags = rest(self.env, f"/instances/{instance['ID']}/simplified-tags")
            found.setdefault(tags["StudyInstanceUID"], []).append(
                {"id": instance["ID"], "class": tags["SOPClassUID"], "uid": tags["SOPInstanceUID"]}
            )
        return found

    def stored(self, study_uid: str) -> dict[str, Any] | None:
        text = self.redis.get(f"{self.prefix}:report:{study_uid}")
        return None if text is None else dict(json.loads(text))

    def stop(self) -> dict[str, str]:
        logs = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            logs[name] = self.log(name)
        stack_script(self.env, "stop", "orthanc")
        return logs


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    for tool in ("Orthanc", "storescu"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run {INSTALL}", pytrace=False)
    line = Pipeline(stack, tmp_path)
    line.orthanc("start")
    line.start("gateway", ["medical-gateway", "--topic", line.topic, "--dlq", line.dlq, "--partitions", "2"])
    line.start("worker", ["medical-worker", "--topic", line.topic, "--dlq", line.dlq, "--group-id", line.topic,
                          "--prefix", line.prefix, "--claim-root", str(line.incoming), "--threads", "1"])  # fmt: skip
    listening = wait_for(
        "the gateway to listen", lambda: re.search(r"on 127\.0\.0\.1:(\d+) for", line.log("gateway")), 60
    )
    line.gateway_port = int(listening[1])
    modality = {"AET": GATEWAY_AET, "Host": "127.0.0.1", "Port": line.gateway_port}
    rest_post(line.env, "/modalities/inspector", modality, method="PUT")  # Orthanc routes to where it listens
    wait_for("the worker to start", lambda: "medical worker on" in line.log("worker"), 90)
    try:
        yield line
    finally:
        line.stop()


def same(parsed: list[Finding], stored: list[dict[str, Any]]) -> bool:
    def key(f: Finding) -> tuple[str, str, float, float | None]:
        return f.type, f.location, round(f.size_mm, 1), None if f.mean_hu is None else round(f.mean_hu, 1)

    return sorted(map(key, parsed), key=str) == sorted(map(key, map(Finding.from_dict, stored)), key=str)


def malformed(folder: Path) -> Path:
    """A CT instance whose header declares a 512² image but whose pixel data holds 100 bytes."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID, ds.file_meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, CTImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(100)
    path = folder / "malformed.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_studies_from_storescu_come_back_to_orthanc_as_one_structured_report_each(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    line = pipeline
    phantom = make_study(710001)
    write_dicom(phantom, tmp_path / "phantom")
    ct_small = TEST_FILES / "CT_small.dcm"
    ct_uid = str(pydicom.dcmread(ct_small, stop_before_pixels=True).StudyInstanceUID)
    sent = line.storescu(*sorted((tmp_path / "phantom").glob("*.dcm")), ct_small)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    studies = {phantom.study_uid, ct_uid}

    def both_reported() -> dict[str, list[dict[str, Any]]] | None:
        found = line.srs()
        return found if all(len(found.get(uid, [])) == 2 for uid in studies) else None

    srs = wait_for("both studies' SRs in Orthanc", both_reported, 120)
    for uid in studies:
        classes = sorted(sr["class"] for sr in srs[uid])
        assert classes == [ENHANCED_SR, COMPREHENSIVE_3D_SR], classes
        report = wait_for("the Redis copy", partial(line.stored, uid), 30)
        measurements = next(sr for sr in srs[uid] if sr["class"] == COMPREHENSIVE_3D_SR)
        dataset = pydicom.dcmread(io.BytesIO(rest_bytes(line.env, f"/instances/{measurements['id']}/file")))
        parsed = hd.sr.Comprehensive3DSR.from_dataset(dataset)
        assert parsed.StudyInstanceUID == uid
        assert same(findings_of(parsed), report["findings"]), (findings_of(parsed), report["findings"])
    assert len(rest(line.env, "/studies")) == 2  # the SRs joined the studies they report on

    # the same study again: a second report is drafted and sent, Orthanc still holds one of each SR
    first = {sr["uid"] for sr in srs[phantom.study_uid]}
    entries = line.redis.xlen(f"{line.prefix}:stream")
    again = line.storescu(*sorted((tmp_path / "phantom").glob("*.dcm")))
    assert again.returncode == 0, again.stdout + again.stderr
    wait_for("the resent study's report", lambda: line.redis.xlen(f"{line.prefix}:stream") > entries, 90)
    time.sleep(2)
    assert {sr["uid"] for sr in line.srs()[phantom.study_uid]} == first

    # Orthanc away for 20 s while a study comes in: its report waits, and arrives
    line.orthanc("stop")
    later = make_study(710002)
    write_dicom(later, tmp_path / "later")
    during = line.storescu(*sorted((tmp_path / "later").glob("*.dcm")))
    assert during.returncode == 0, during.stdout + during.stderr
    time.sleep(20)
    assert line.stored(later.study_uid) is None  # not written to Redis either before its SR is sent
    line.orthanc("start")
    wait_for("the report sent while Orthanc was away", lambda: len(line.srs().get(later.study_uid, [])) == 2, 120)
    assert wait_for("its Redis copy", lambda: line.stored(later.study_uid), 30)

    # a malformed instance: refused with a DICOM status, dead-lettered with its reason
    refused = line.storescu(malformed(tmp_path))
    answer = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Error: DataSetDoesNotMatchSOPClass" in answer, answer  # status 0xA900
    consumer = KafkaConsumer(line.dlq, bootstrap_servers=line.kafka, auto_offset_reset="earliest",
                             consumer_timeout_ms=15_000)  # fmt: skip
    letters = [dict(m.headers) for m in consumer]
    consumer.close()
    assert [h.get("dlq_reason") for h in letters] == [b"bad_pixel_data"], letters
    assert letters[0]["calling_ae"] == CALLER_AET.encode()

    # a caller not on the allow-list is refused at the association
    stranger = line.storescu(ct_small, caller="STRANGER")
    assert stranger.returncode != 0, stranger.stdout + stranger.stderr

    ct_header = pydicom.dcmread(ct_small, stop_before_pixels=True)
    ct_patient = (str(ct_header.get("PatientID", "")), str(ct_header.get("PatientName", "")))
    logs = line.stop()
    for name, text in logs.items():
        for identifier in ("PHANTOM^", "PH710001", "PH710002", *[i for i in ct_patient if len(i) >= 4]):
            assert identifier not in text, f"{identifier!r} in the {name} log"
        assert phantom.study_uid not in text and ct_uid not in text, f"a Study Instance UID in the {name} log"


def test_orthanc_routes_a_ct_study_to_the_gateway_and_receives_its_report(pipeline: Pipeline, tmp_path: Path) -> None:
    """The PACS path as a site runs it: a study stored in Orthanc, routed by its Lua script (route-ct.lua)."""
    line = pipeline
    study = make_study(710003)
    write_dicom(study, tmp_path / "study")
    stored = subprocess.run(
        ["storescu", "-aec", "TESTPACS", "127.0.0.1", line.env["INSPECTOR_ORTHANC_DICOM_PORT"],
         *map(str, sorted((tmp_path / "study").glob("*.dcm")))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stdout + stored.stderr
    # Orthanc's StableAge (5 s) → route to the gateway (calling AE TESTPACS) → quiet 2 s → worker → SR back
    reported = wait_for("the routed study's SRs", lambda: len(line.srs().get(study.study_uid, [])) == 2, 120)
    assert reported
    assert wait_for("its Redis copy (written after the SRs)", partial(line.stored, study.study_uid), 30)
    assert len(rest(line.env, "/studies")) == 1  # the SRs joined the study in Orthanc


def test_stow_rs_stores_a_report_in_orthancs_dicomweb(stack: Stack, tmp_path: Path) -> None:
    from inspector.config import PacsSettings
    from inspector.medical.dicom import read_series
    from inspector.medical.report import StructuredReport
    from inspector.medical.sr import measurement_report, report_uids
    from workers.pacs import PacsSender

    env = orthanc_env(tmp_path)
    done = stack_script(env, "start", "orthanc")
    try:
        study = make_study(710004)
        write_dicom(study, tmp_path / "study")
        volume = read_series(tmp_path / "study")
        report = StructuredReport(volume.study_uid, "CT", [Finding("cyst", "liver", 10.0, 5.0)], "Hepatic cyst.",
                                  "Indication: not given. CT. Findings: … Impression: Hepatic cyst.")  # fmt: skip
        sr = measurement_report(report, volume.headers, report_uids(volume.study_uid, "ab" * 32))
        url = f"http://127.0.0.1:{env['INSPECTOR_ORTHANC_HTTP_PORT']}/dicom-web"
        PacsSender(PacsSettings(send="stow", stow_url=url)).send([sr])
        instances = rest(env, "/instances")
        assert len(instances) == 1
        tags = rest(env, f"/instances/{instances[0]}/simplified-tags")
        assert tags["SOPInstanceUID"] == sr.SOPInstanceUID and tags["Modality"] == "SR"
    finally:
        stack_script(env, "stop", "orthanc")
    assert done.returncode == 0, done.stdout + done.stderr
