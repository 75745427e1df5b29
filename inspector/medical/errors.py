"""Errors of the medical package: one base, one-line subclasses, messages that say what to do."""

from __future__ import annotations

from inspector.errors import InspectorError


class MedicalError(InspectorError):
    """Base of every error :mod:`inspector.medical` raises on purpose."""


class DicomError(MedicalError):
    """A file or payload is not usable DICOM (not DICOM at all, unreadable, empty)."""


class DicomLimitError(DicomError):
    """A payload is over a safety limit (zip members, unpacked bytes, ratio, pixels); the message names it."""


class NoPixelDataError(DicomError):
    """The DICOM object holds no image (a report, a DICOMDIR, a presentation state)."""


class UnsupportedTransferSyntaxError(DicomError):
    """The pixel data is compressed in a syntax no installed decoder handles; the message names the package."""


class SeriesGeometryError(DicomError):
    """The slices of one series do not form one volume (sizes, spacing or orientation differ)."""


class ReportModelError(MedicalError):
    """A report model file is missing, unreadable or not a report model."""
