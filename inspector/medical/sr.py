"""A drafted report as DICOM Structured Reports: a TID 1500 Measurement Report and the narrative as text.

    uids = report_uids(study_uid, model_sha)
    measurements = measurement_report(report, evidence, uids)   # Comprehensive 3D SR, TID 1500
    narrative = narrative_report(report, evidence, uids)        # Enhanced SR: indication, findings, impression
    findings_of(measurements)                                   # the findings back, from the SR's content

**Measurement Report** (highdicom): one TID 1501 measurement group per finding, with its finding type
(SNOMED CT: nodule, mass, cyst, calcification), its finding site (lung, liver, spleen, kidney, with
laterality), its diameter in mm and, on CT, its mean attenuation in HU, each group referencing the
source series' images (a study without findings has one group whose finding is "No abnormality
detected"); the observer is the report model (a device, named with its SHA-256).

**Narrative**: an Enhanced SR whose container holds the indication, the procedure description (with
the out-of-domain statement when the input gate flagged the study), the findings section and the
impression as text, exactly as in the JSON report.

Both SRs share one series and take their UIDs from the study and the model (:func:`report_uids`):
the same study reported by the same model gives the same SOP Instance UIDs, so a PACS that is sent
the report again stores nothing new. The evidence datasets (the source images' headers) give the
patient, study and series the SRs belong to; this module writes nothing and logs nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from inspector.medical.dicom import header_of
from inspector.medical.vocab import LOCATIONS, TYPES, Finding

__all__ = ["ReportUids", "derived_uid", "findings_of", "measurement_report", "narrative_report", "report_uids"]

SERIES_NUMBER = 9901
_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-5b7a-9c41-2e6d0f8a7b35")  # inspector's namespace of derived UIDs
MANUFACTURER = "inspector (draft report, not a diagnosis)"
_TYPE_CODES = {  # SNOMED CT
    "nodule": ("27925004", "Nodule"),
    "mass": ("4147007", "Mass"),
    "cyst": ("367643001", "Cyst"),
    "calcification": ("18115005", "Calcification"),
}
_SITE_CODES = {"lung": ("39607008", "Lung"), "liver": ("10200004", "Liver"), "spleen": ("78961009", "Spleen"),
               "kidney": ("64033007", "Kidney")}  # fmt: skip
_LATERALITY = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}


@dataclass(frozen=True)
class ReportUids:
    """The UIDs of a study's report series, derived from the study and the model (stable across resends)."""

    series: str
    measurements: str
    narrative: str
    device: str


def derived_uid(*parts: str) -> str:
    """A UID fixed by ``parts``: ``2.25.`` and the integer of a name-based UUID (RFC 4122 version 5)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(0).join(parts)).int}"


def report_uids(study_uid: str, model_sha256: str) -> ReportUids:
    """Deterministic UIDs of the report series and its two SRs (the same study and model give the same UIDs)."""

    def uid(kind: str) -> str:
        return derived_uid("inspector-report", study_uid, model_sha256, kind)

    return ReportUids(uid("series"), uid("measurements"), uid("narrative"), uid("device"))


_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
           "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


def _evidence(evidence: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the source headers with the patient and study attributes an SR must carry (empty if absent)."""
    out = []
    for ds in evidence:
        copy = header_of(ds)  # never the pixels
        for keyword in _TYPE_2:
            if keyword not in copy:
                setattr(copy, keyword, "")
        out.append(copy)
    return out


def _code(value: str, scheme: str, meaning: str) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _site(location: str) -> Any:
    import highdicom as hd

    side, _, organ = location.rpartition(" ")
    site = _code(*_SITE_CODES[organ][:1], "SCT", _SITE_CODES[organ][1])
    laterality = _code(_LATERALITY[side][0], "SCT", _LATERALITY[side][1]) if side in _LATERALITY else None
    return hd.sr.FindingSite(anatomic_location=site, laterality=laterality)


def _observation_context(report: Any, uids: ReportUids) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    model = report.model or {}
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uids.device,
        name=f"{model.get('name', 'report model')} {model.get('version', '')}".strip(),
        manufacturer_name="inspector",
        model_name=str(model.get("sha256", ""))[:64] or None,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def measurement_report(report: Any, evidence: Sequence[Dataset], uids: ReportUids) -> Dataset:
    """The TID 1500 Measurement Report of a drafted report (a Comprehensive 3D SR dataset).

    Args:
        report: A :class:`~inspector.medical.report.StructuredReport`.
        evidence: The source images' datasets (headers are enough), all of one study.
        uids: :func:`report_uids` of the study and the model.

    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [
        hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=ds.SOPClassUID, referenced_sop_instance_uid=ds.SOPInstanceUID
        )
        for ds in evidence
    ]
    groups = []
    for index, finding in enumerate(report.findings, start=1):
        size = round(float(finding.size_mm), 1)
        measurements = [hd.sr.Measurement(name=codes.SCT.Diameter, value=size, unit=codes.UCUM.Millimeter)]
        if finding.mean_hu is not None:
            hu = round(float(finding.mean_hu), 1)
            unit = codes.UCUM.HounsfieldUnit
            measurements.append(
                hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=hu, unit=unit, derivation=codes.SCT.Mean)
            )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=derived_uid(uids.measurements, str(index)),
                    identifier=f"finding {index}",
                ),
                finding_type=_code(*_TYPE_CODES[finding.type][:1], "SCT", _TYPE_CODES[finding.type][1]),
                finding_sites=[_site(finding.location)],
                measurements=measurements,
                source_images=sources or None,
            )
        )
    if not groups:  # TID 1500 needs one group: a study without findings says so as a qualitative evaluation
        nothing = hd.sr.QualitativeEvaluation(
            name=codes.DCM.Finding, value=_code("281900007", "SCT", "No abnormality detected")
        )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(uids.measurements, "none"),
                                                             identifier="no findings"),
                qualitative_evaluations=[nothing], source_images=sources or None,
            )
        )  # fmt: skip
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(report, uids),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=_evidence(evidence), content=content[0], series_instance_uid=uids.series, series_number=SERIES_NUMBER,
        sop_instance_uid=uids.measurements, instance_number=1, manufacturer=MANUFACTURER,
        series_description="inspector draft report (measurements)", is_complete=True,
    )  # fmt: skip


def narrative_report(report: Any, evidence: Sequence[Dataset], uids: ReportUids) -> Dataset:
    """The narrative as an Enhanced SR: indication, findings and impression as text items of one container."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    text = report.narrative
    indication = text.partition("Indication: ")[2].partition(". ")[0]
    findings = text.partition(" Findings: ")[2].partition(" Impression: ")[0]
    technique = text.partition(". ")[2].partition(" Findings: ")[0]
    items = [
        hd.sr.TextContentItem(name=codes.DCM.History, value=indication or "not given",
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
        hd.sr.TextContentItem(name=_code("121065", "DCM", "Procedure Description"), value=technique,
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
        hd.sr.TextContentItem(name=codes.DCM.Findings, value=findings,
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
        hd.sr.TextContentItem(name=codes.DCM.Impression, value=report.impression,
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
    ]  # fmt: skip
    container = hd.sr.ContainerContentItem(name=_code("18748-4", "LN", "Diagnostic imaging report"))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return hd.sr.EnhancedSR(
        evidence=_evidence(evidence), content=container, series_instance_uid=uids.series, series_number=SERIES_NUMBER,
        sop_instance_uid=uids.narrative, instance_number=2, manufacturer=MANUFACTURER,
        series_description="inspector draft report (narrative)", is_complete=True,
    )  # fmt: skip


def _walk(items: Sequence[Dataset]) -> list[Dataset]:
    out: list[Dataset] = []
    for item in items:
        out.append(item)
        out += _walk(item.get("ContentSequence", []))
    return out


def findings_of(sr: Dataset) -> list[Finding]:
    """The findings a Measurement Report holds, read from its content tree (finding type, site, diameter, HU)."""
    types = {code: kind for kind, (code, _) in _TYPE_CODES.items()}
    sites = {code: organ for organ, (code, _) in _SITE_CODES.items()}
    sides = {code: side for side, (code, _) in _LATERALITY.items()}
    found = []
    for group in _walk(sr.get("ContentSequence", [])):
        if group.ValueType != "CONTAINER" or group.ConceptNameCodeSequence[0].CodeValue != "125007":
            continue  # not a measurement group
        kind = organ = side = None
        size = hu = None
        for item in _walk(group.get("ContentSequence", [])):
            name = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "CODE" and name == "121071":  # finding
                kind = types.get(item.ConceptCodeSequence[0].CodeValue)
            elif item.ValueType == "CODE" and name == "363698007":  # finding site
                organ = sites.get(item.ConceptCodeSequence[0].CodeValue)
            elif item.ValueType == "CODE" and name == "272741003":  # laterality
                side = sides.get(item.ConceptCodeSequence[0].CodeValue)
            elif item.ValueType == "NUM" and name == "81827009":  # diameter
                size = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "NUM" and name == "112031":  # attenuation coefficient
                hu = float(item.MeasuredValueSequence[0].NumericValue)
        location = f"{side} {organ}" if side else organ
        if kind in TYPES and location in LOCATIONS and size is not None:
            found.append(Finding(kind, location, size, hu))
    return found
