"""A study request as it arrives on the ``medical.studies`` topic: headers + value → :class:`StudyRequest`.

Headers (UTF-8 strings):

==============  =========================================================================
``schema``      ``medical.study/1`` (required)
``study_uid``   StudyInstanceUID (required; the report's Redis key)
``content``     ``dicom`` (value = one DICOM file), ``zip`` (value = a zip of a series'
                files) or ``claim`` (value = a claim-check reference, below)
``age``         optional, years; overrides the files' ``PatientAge``
``sex``         optional, ``M``/``F``/``O``
``indication``  optional, free text (one of the trained indications is used as such)
==============  =========================================================================

A claim-check value is a ``file://`` URI or an absolute path to a DICOM file, a folder of files or a
zip, which must lie under one of the configured roots. Every problem raises :class:`RequestError`
with a short ``reason`` (a metric label and the dead-letter header) and a detail for people; neither
ever contains patient identifiers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from inspector.medical.dicom import DEFAULT_LIMITS, DicomLimits, PatientInfo, Volume, read_study
from inspector.medical.errors import (
    DicomError,
    DicomLimitError,
    MedicalError,
    NoPixelDataError,
    SeriesGeometryError,
    UnsupportedTransferSyntaxError,
)

SCHEMA = "medical.study/1"
CONTENTS = ("dicom", "zip", "claim")
REASONS = (
    "bad_headers",
    "too_large",
    "bad_reference",
    "not_dicom",
    "no_pixel_data",
    "unsupported_transfer_syntax",
    "bad_geometry",
    "model_error",
    "sr_error",
)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class RequestError(MedicalError):
    """A request the worker cannot use; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class StudyRequest:
    """A parsed request: the study, the patient overrides and where the pixels are."""

    study_uid: str
    content: str
    payload: bytes | Path
    patient: PatientInfo

    @property
    def tag(self) -> str:
        """A short non-reversible tag of the study for logs (the UID itself is not logged)."""
        return study_tag(self.study_uid)


def study_tag(study_uid: str) -> str:
    """First 12 hex digits of the SHA-256 of a StudyInstanceUID."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:12]


def _text(headers: Mapping[str, bytes | None], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return value.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        raise RequestError("bad_headers", f"header {name} is not UTF-8") from None


def _age(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        age = float(text)
    except ValueError:
        raise RequestError("bad_headers", f"header age must be a number of years, got {len(text)} characters") from None
    if not 0 <= age <= 130:
        raise RequestError("bad_headers", "header age must lie in [0, 130] years")
    return age


def _claim(value: bytes, roots: Sequence[Path]) -> Path:
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RequestError("bad_reference", "a claim-check value must be a UTF-8 path or file:// URI") from None
    parsed = urlparse(text)
    if parsed.scheme not in ("", "file"):
        raise RequestError("bad_reference", f"claim-check scheme {parsed.scheme!r} is not supported: use file://")
    path = Path(unquote(parsed.path if parsed.scheme else text))
    if not path.is_absolute():
        raise RequestError("bad_reference", "a claim-check path must be absolute")
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        raise RequestError("bad_reference", "the claim-check path lies outside the configured claim roots")
    if not resolved.exists():
        raise RequestError("bad_reference", "the claim-check path does not exist (expired or not yet written?)")
    return resolved


def parse_request(
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None],
    value: bytes,
    *,
    max_inline_bytes: int,
    claim_roots: Sequence[Path] = (),
) -> StudyRequest:
    """Check a record's headers and value.

    Args:
        headers: The Kafka headers.
        value: The record value.
        max_inline_bytes: Largest inline payload; larger series must come by claim check.
        claim_roots: Folders a claim-check path may point into.

    Raises:
        RequestError: ``bad_headers``, ``too_large`` or ``bad_reference``.

    """
    named = dict(headers)
    if _text(named, "schema") != SCHEMA:
        raise RequestError("bad_headers", f"header schema must be {SCHEMA}")
    study_uid = _text(named, "study_uid")
    if study_uid is None or len(study_uid) > 64 or not _UID.match(study_uid):
        raise RequestError("bad_headers", "header study_uid must be a DICOM UID (digits and dots, at most 64)")
    content = _text(named, "content") or "dicom"
    if content not in CONTENTS:
        raise RequestError("bad_headers", f"header content must be one of {', '.join(CONTENTS)}")
    sex = _text(named, "sex")
    if sex is not None and sex.upper() not in ("M", "F", "O"):
        raise RequestError("bad_headers", "header sex must be M, F or O")
    patient = PatientInfo(_age(_text(named, "age")), sex.upper() if sex else None, _text(named, "indication"))
    if not value:
        raise RequestError("not_dicom", "the record value is empty")
    if content == "claim":
        return StudyRequest(study_uid, content, _claim(value, claim_roots), patient)
    if len(value) > max_inline_bytes:
        msg = f"inline payload of {len(value)} bytes exceeds {max_inline_bytes}: send a claim-check reference instead"
        raise RequestError("too_large", msg)
    return StudyRequest(study_uid, content, value, patient)


def load_volume(request: StudyRequest, limits: DicomLimits = DEFAULT_LIMITS) -> Volume:
    """The request's largest series, with its patient information overridden by the request's headers.

    Raises:
        RequestError: ``not_dicom``, ``no_pixel_data``, ``unsupported_transfer_syntax``, ``bad_geometry``,
            or ``too_large`` (a zip, deflated dataset or image over ``limits``: a bomb or an oversized study).

    """
    try:
        volume = read_study(request.payload, limits=limits)[0]
    except DicomLimitError as exc:
        raise RequestError("too_large", str(exc)) from None
    except NoPixelDataError as exc:
        raise RequestError("no_pixel_data", str(exc)) from None
    except UnsupportedTransferSyntaxError as exc:
        raise RequestError("unsupported_transfer_syntax", str(exc)) from None
    except SeriesGeometryError as exc:
        raise RequestError("bad_geometry", str(exc)) from None
    except DicomError as exc:
        raise RequestError("not_dicom", str(exc)) from None
    given = request.patient
    patient = PatientInfo(
        given.age_years if given.age_years is not None else volume.patient.age_years,
        given.sex or volume.patient.sex,
        given.indication or volume.patient.indication,
    )
    if volume.study_uid and volume.study_uid != request.study_uid:
        raise RequestError("bad_headers", "header study_uid differs from the files' StudyInstanceUID")
    from dataclasses import replace

    return replace(volume, patient=patient)
