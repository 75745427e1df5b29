"""A drafted report as DICOM Structured Reports: TID 1500 measurements, the narrative, stable UIDs (issue 22)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from inspector.medical.dicom import read_series
from inspector.medical.phantom import Study
from inspector.medical.report import StructuredReport
from inspector.medical.sr import derived_uid, findings_of, measurement_report, narrative_report, report_uids
from inspector.medical.vocab import Finding

FINDINGS = [Finding("nodule", "right lung", 12.34, 35.06), Finding("cyst", "left kidney", 8.0, 4.0),
            Finding("calcification", "liver", 3.6, None)]  # fmt: skip


def report_of(volume: object, findings: list[Finding] = FINDINGS) -> StructuredReport:
    narrative = ("Indication: cough. Contrast-enhanced CT of the lower chest and upper abdomen. Findings: "
                 "A 12 mm solid nodule in the right lung, mean attenuation 35 HU. Impression: 12 mm right lung "
                 "nodule. Consider CT at 3 months, PET/CT or tissue sampling.")  # fmt: skip
    return StructuredReport(
        study_uid=volume.study_uid, modality="CT", findings=findings,  # type: ignore[attr-defined]
        impression=narrative.partition("Impression: ")[2], narrative=narrative,
        model={"name": "medical-report", "version": "2", "sha256": "ab" * 32},
    )  # fmt: skip


def test_report_uids_are_fixed_by_the_study_and_the_model() -> None:
    a = report_uids("1.2.3.4", "ab" * 32)
    assert a == report_uids("1.2.3.4", "ab" * 32)
    assert a != report_uids("1.2.3.5", "ab" * 32) and a != report_uids("1.2.3.4", "cd" * 32)
    assert len({a.series, a.measurements, a.narrative, a.device}) == 4
    for uid in (a.series, a.measurements, derived_uid("x")):
        assert uid.startswith("2.25.") and len(uid) <= 64 and pydicom.uid.UID(uid).is_valid


def test_the_measurement_report_holds_each_finding_and_parses_back(phantom: tuple[Study, Path]) -> None:
    study, folder = phantom
    volume = read_series(folder)
    uids = report_uids(volume.study_uid, "ab" * 32)
    sr = measurement_report(report_of(volume), volume.headers, uids)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and sr.SOPInstanceUID == uids.measurements
    assert (sr.StudyInstanceUID, sr.SeriesInstanceUID) == (volume.study_uid, uids.series)
    assert sr.PatientID == f"PH{study.seed:05d}"  # the patient module comes from the source images
    assert "PixelData" not in sr
    back = findings_of(hd.sr.Comprehensive3DSR.from_dataset(sr))
    assert back == [Finding("nodule", "right lung", 12.3, 35.1), Finding("cyst", "left kidney", 8.0, 4.0),
                    Finding("calcification", "liver", 3.6, None)]  # fmt: skip
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == volume.series_uid
    assert len(evidence.ReferencedSOPSequence) == len(volume.instances)


def test_the_narrative_report_holds_the_indication_findings_and_impression(phantom: tuple[Study, Path]) -> None:
    _, folder = phantom
    volume = read_series(folder)
    report = report_of(volume)
    sr = narrative_report(report, volume.headers, report_uids(volume.study_uid, "ab" * 32))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in sr.ContentSequence}
    assert texts["History"] == "cough"
    assert texts["Findings"] == "A 12 mm solid nodule in the right lung, mean attenuation 35 HU."
    assert texts["Impression"] == report.impression
    assert texts["Procedure Description"].startswith("Contrast-enhanced CT")


def test_a_report_of_a_real_file_missing_patient_attributes_still_makes_valid_srs(testdata: Path) -> None:
    volume = read_series(testdata / "MR_small.dcm")
    header = volume.headers[0]
    del header.PatientBirthDate  # highdicom wants it: the SR gets it empty, the source stays as it was
    report = report_of(volume, [Finding("cyst", "liver", 5.0, None)])
    sr = measurement_report(report, volume.headers, report_uids(volume.study_uid, "ef" * 32))
    assert sr.PatientBirthDate == "" and "PatientBirthDate" not in volume.headers[0]
    assert findings_of(sr) == [Finding("cyst", "liver", 5.0, None)]


@pytest.mark.parametrize("findings", [[], FINDINGS[:1]])
def test_no_findings_and_one_finding_both_make_a_report(phantom: tuple[Study, Path], findings: list[Finding]) -> None:
    volume = read_series(phantom[1])
    sr = measurement_report(report_of(volume, findings), volume.headers, report_uids(volume.study_uid, "0" * 64))
    assert len(findings_of(sr)) == len(findings)
