"""DICOM input with pydicom: single files, multi-file series, HU rescale, windows, MR normalisation.

::

    volumes = read_study("study/")                  # a folder, a file, a list of files, or bytes (a file or a zip)
    ct = volumes[0]                                  # one Volume per series, slices sorted along the normal
    ct.pixels                                        # (Z, H, W) float32 Hounsfield units (CT) or stored values (MR)
    ct.spacing_mm, ct.slice_thickness_mm             # (row, column) mm, mm: kept for millimetre measurements
    window(ct.pixels, "lung")                        # (Z, H, W) in [0, 1]; presets lung, soft_tissue, bone
    normalise_mr(mr.pixels)                          # 1st-99th percentile → [0, 1]

Slices are sorted by their position along the slice normal (``ImagePositionPatient`` ·
``ImageOrientationPatient`` normal), else by ``InstanceNumber``. A series whose slices differ in size,
pixel spacing or orientation raises :class:`SeriesGeometryError`; a file without an image raises
:class:`NoPixelDataError`; compressed pixels no installed decoder reads raise
:class:`UnsupportedTransferSyntaxError` naming the package to install. Patient names and IDs are never
copied out of the datasets: a :class:`Volume` carries only age, sex and the reason for the study.

A request cannot make the reader allocate without bound (:class:`DicomLimits`): a zip's member count,
the bytes its members and any deflated datasets unpack to (counted while inflating, not only as the
archive declares them) and each member's compression ratio are limited, and the pixels every image
declares (Rows × Columns × NumberOfFrames × SamplesPerPixel) are summed and checked before any pixel
data is decoded. Going over a limit raises :class:`DicomLimitError`.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from inspector.medical.errors import (
    DicomError,
    DicomLimitError,
    NoPixelDataError,
    SeriesGeometryError,
    UnsupportedTransferSyntaxError,
)

logger = logging.getLogger(__name__)

WINDOWS: dict[str, tuple[float, float]] = {  # name: (centre, width) in HU
    "lung": (-600.0, 1500.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "calcium": (600.0, 800.0),  # 200-1000 HU: only calcium density (and bone) is above zero
}

# Transfer syntax UID prefix → the pip packages that decode it (pydicom's pixel plugins).
DECODERS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE lossless (numpy decodes it too)
}

_ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 20  # bytes inflated at a time while counting
_BITS_ALLOCATED = (1, 8, 16, 32, 64)
_SIZE_TAGS = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")
# What pydicom raises for a damaged element, when the file is read or when a value is first used
_UNREADABLE = (BytesLengthException, NotImplementedError, struct.error, ValueError, TypeError, OverflowError)


@dataclass(frozen=True)
class DicomLimits:
    """What one study may make the reader allocate; over a limit, :class:`DicomLimitError`.

    Attributes:
        max_members: Files in a zip archive (or a folder).
        max_unpacked_bytes: Bytes a study's zip members and deflated datasets unpack to, together;
            counted while inflating, whatever sizes the archive declares.
        max_ratio: Uncompressed / compressed size of one zip member (ordinary series zip 2-10 times).
        max_pixels: Samples the study's images declare together (Rows × Columns × NumberOfFrames ×
            SamplesPerPixel), checked before any pixel data is decoded; 2**28 is a 1024-slice 512² CT,
            about 1 GiB once rescaled to float32.

    """

    max_members: int = 2_000
    max_unpacked_bytes: int = 512 * 2**20
    max_ratio: float = 200.0
    max_pixels: int = 2**28


DEFAULT_LIMITS = DicomLimits()


class UnpackBudget:
    """The bytes unpacked so far for one study, against ``DicomLimits.max_unpacked_bytes``."""

    def __init__(self, most: int) -> None:
        self.most, self.used = most, 0

    def take(self, size: int, what: str) -> None:
        """Count ``size`` more bytes unpacked by ``what``; raise :class:`DicomLimitError` over the limit."""
        self.used += size
        if self.used > self.most:
            msg = (
                f"{what}: the study unpacks to more than {self.most} bytes (a zip or deflate bomb?): "
                "send fewer or smaller files, or the series by claim check"
            )
            raise DicomLimitError(msg)


@dataclass(frozen=True)
class PatientInfo:
    """What the model may know about the patient: no name, no ID, no dates of birth.

    Attributes:
        age_years: Age at the study, from ``PatientAge`` (``064Y``, ``006M``…), or None.
        sex: ``M``, ``F``, ``O`` or None.
        indication: Why the study was done (``ReasonForTheRequestedProcedure``), or None.

    """

    age_years: float | None = None
    sex: str | None = None
    indication: str | None = None


@dataclass(frozen=True)
class Volume:
    """One series as a volume.

    Attributes:
        pixels: (Z, H, W) float32: Hounsfield units for CT (``RescaleSlope``/``Intercept`` applied),
            rescaled stored values for other modalities.
        modality: ``CT``, ``MR``, … (``Modality``).
        spacing_mm: (row, column) pixel spacing in mm (1.0 each when the file has none).
        slice_thickness_mm: ``SliceThickness`` or None.
        slice_spacing_mm: Median distance between slice centres along the normal, or None for one slice.
        positions_mm: Each slice's position along the normal (or its instance number when positions are
            missing).
        study_uid: ``StudyInstanceUID``.
        series_uid: ``SeriesInstanceUID``.
        patient: Age, sex and indication (never identifiers).
        description: ``SeriesDescription`` or ``StudyDescription``.
        file_window: The first slice's ``WindowCenter``/``WindowWidth`` if present.
        body_part: ``BodyPartExamined`` (upper case, "" when absent).
        contrast: ``ContrastBolusAgent`` ("" when absent: no contrast stated).
        headers: Each slice's dataset without its pixel data, in slice order: the evidence a DICOM
            Structured Report of the series references (patient, study and series modules).

    """

    pixels: np.ndarray
    modality: str
    spacing_mm: tuple[float, float]
    slice_thickness_mm: float | None
    slice_spacing_mm: float | None
    positions_mm: tuple[float, ...]
    study_uid: str
    series_uid: str
    patient: PatientInfo = field(default_factory=PatientInfo)
    description: str = ""
    file_window: tuple[float, float] | None = None
    body_part: str = ""
    contrast: str = ""
    headers: tuple[Dataset, ...] = field(default=(), repr=False, compare=False)

    @property
    def instances(self) -> tuple[tuple[str, str], ...]:
        """``(SOPClassUID, SOPInstanceUID)`` of each slice, in slice order, from :attr:`headers`."""
        return tuple((str(h.get("SOPClassUID") or ""), str(h.get("SOPInstanceUID") or "")) for h in self.headers)

    @property
    def is_ct(self) -> bool:
        """Pixels are Hounsfield units."""
        return self.modality == "CT"

    def summary(self) -> dict[str, Any]:
        """Geometry and modality as plain values (no patient data)."""
        return {
            "modality": self.modality,
            "slices": int(self.pixels.shape[0]),
            "rows": int(self.pixels.shape[1]),
            "columns": int(self.pixels.shape[2]),
            "spacing_mm": list(self.spacing_mm),
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "body_part": self.body_part,
            "contrast": bool(self.contrast),
        }


# -- reading ------------------------------------------------------------------------------------------


def read_dataset(
    source: str | Path | bytes, name: str = "payload", *, limits: DicomLimits = DEFAULT_LIMITS,
    unpacked: UnpackBudget | None = None,
) -> Dataset:  # fmt: skip
    """Parse one DICOM file (a path or its bytes).

    A deflated dataset (transfer syntax 1.2.840.10008.1.2.1.99), which pydicom inflates in one piece,
    is inflated once in chunks first to check its size against ``limits.max_unpacked_bytes``.

    Raises:
        DicomError: Not DICOM, truncated or unreadable; :class:`DicomLimitError` for a deflated
            dataset over the limit.

    """
    what = str(source) if isinstance(source, str | Path) else f"{name} ({len(source)} bytes)"
    unpacked = unpacked or UnpackBudget(limits.max_unpacked_bytes)
    try:
        if isinstance(source, bytes):
            _check_inflated(io.BytesIO(source), what, unpacked)
            return pydicom.dcmread(io.BytesIO(source))
        with Path(source).open("rb") as file:
            _check_inflated(file, what, unpacked)
        return pydicom.dcmread(Path(source))
    except InvalidDicomError as exc:
        msg = f"{what} is not a DICOM file ({exc}): give a DICOM Part 10 file, a folder of them or a zip of them"
        raise DicomError(msg) from None
    except (*_UNREADABLE, OSError, EOFError, KeyError, AttributeError, zlib.error) as exc:
        msg = f"{what} cannot be read as DICOM ({type(exc).__name__}: {exc})"
        raise DicomError(msg) from None


def _check_inflated(file: BinaryIO, what: str, unpacked: UnpackBudget) -> None:
    """Count what a deflated dataset inflates to, a chunk at a time, against the study's budget.

    Anything but a readable Part 10 header of a deflated dataset returns at once: pydicom then reads
    (or refuses) the file as it always does.
    """
    try:
        read_preamble(file, False)
        syntax = _read_file_meta_info(file).get("TransferSyntaxUID")
    except Exception:  # not a Part 10 header (pydicom raises several kinds): dcmread says why
        return
    if syntax != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    while (data := file.read(_CHUNK)) and not inflater.eof:
        while data:
            unpacked.take(len(inflater.decompress(data, _CHUNK)), f"{what} (a deflated dataset)")
            data = inflater.unconsumed_tail


def has_pixels(ds: Dataset) -> bool:
    """The dataset carries an image."""
    return any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def declared_pixels(ds: Dataset, name: str = "file") -> int:
    """Rows × Columns × NumberOfFrames × SamplesPerPixel: the samples decoding the dataset's image allocates.

    Raises:
        DicomError: One of those, or ``BitsAllocated``, is not a plausible number (bits must be 1,
            8, 16, 32 or 64, so that a sample takes at most 8 bytes).

    """
    try:
        sizes = [int(ds.get(tag, 1 if tag in ("NumberOfFrames", "SamplesPerPixel") else 0) or 0) for tag in _SIZE_TAGS]
        bits = int(ds.get("BitsAllocated", 16) or 0)
    except _UNREADABLE as exc:
        raise DicomError(f"{name}: its image size cannot be read ({type(exc).__name__}: {exc})") from None
    if min(sizes) < 0 or bits not in _BITS_ALLOCATED:
        listed = ", ".join(f"{tag} {size}" for tag, size in zip(_SIZE_TAGS, sizes, strict=True))
        msg = f"{name}: implausible image size ({listed}, BitsAllocated {bits}): is the file damaged?"
        raise DicomError(msg)
    rows, columns, frames, samples = sizes
    return rows * columns * max(frames, 1) * max(samples, 1)


def check_pixels(items: Sequence[tuple[str, Dataset]], limits: DicomLimits = DEFAULT_LIMITS) -> int:
    """The samples the images of ``items`` declare together, refused over ``limits.max_pixels`` before decoding.

    Raises:
        DicomLimitError: Over the limit.
        DicomError: An implausible size (:func:`declared_pixels`).

    """
    total = sum(declared_pixels(ds, Path(name).name) for name, ds in items if has_pixels(ds))
    if total > limits.max_pixels:
        msg = (
            f"the images declare {total} pixels (Rows x Columns x frames x samples) together, more than "
            f"{limits.max_pixels}: send one series at a time, or fewer slices"
        )
        raise DicomLimitError(msg)
    return total


def pixels_of(ds: Dataset, name: str = "file", *, limits: DicomLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The image of one dataset as float32 (frames, rows, columns), modality rescale applied.

    Its declared size is checked against ``limits.max_pixels`` (:func:`check_pixels`) before pydicom
    decodes anything.

    Raises:
        NoPixelDataError: No image in the dataset.
        UnsupportedTransferSyntaxError: Compressed pixels no installed decoder handles.
        DicomLimitError: The image declares more than ``limits.max_pixels`` samples.
        DicomError: The pixel data is damaged or not greyscale.

    """
    if not has_pixels(ds):
        kind = getattr(ds.get("SOPClassUID"), "name", None) or ds.get("Modality") or "object"
        msg = f"{name} has no pixel data (a {kind}): send the image series of the study, not this object"
        raise NoPixelDataError(msg)
    check_pixels([(name, ds)], limits)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        # pydicom would otherwise also decode frames beyond the declared NumberOfFrames (excess pixel
        # data or JPEG fragments): the size checked above would not bound what is decoded
        ds.pixel_array_options(allow_excess_frames=False)
        array = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises RuntimeError, NotImplementedError, ValueError… per plugin
        if syntax is not None and syntax.is_compressed:
            package = DECODERS.get(str(syntax), "python-gdcm")
            msg = (
                f"{name} is compressed as {syntax.name} ({syntax}) and no installed decoder reads it: "
                f"pip install {package}"
            )
            raise UnsupportedTransferSyntaxError(msg) from None
        msg = f"{name}: its pixel data cannot be decoded ({type(exc).__name__}: {exc})"
        raise DicomError(msg) from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        msg = f"{name} is a colour image ({samples} samples per pixel): only greyscale CT/MR series are read"
        raise DicomError(msg)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = array.reshape((frames, *array.shape[-2:])) if array.ndim == 2 or frames > 1 else array
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (array.astype(np.float32) * np.float32(slope) + np.float32(intercept)).reshape(-1, *array.shape[-2:])


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR" and p.suffix != ".json")


def _datasets(
    source: str | Path | bytes | Sequence[str | Path], limits: DicomLimits = DEFAULT_LIMITS
) -> list[tuple[str, Dataset]]:
    """(name, dataset) for every DICOM object in the source; folders are searched recursively."""
    unpacked = UnpackBudget(limits.max_unpacked_bytes)
    if isinstance(source, bytes):
        if source[:4] == _ZIP_MAGIC:
            return [(n, read_dataset(data, n, unpacked=unpacked)) for n, data in _unzip(source, limits, unpacked)]
        return [("payload", read_dataset(source, unpacked=unpacked))]
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = _files_in(path)
            if not files:
                raise DicomError(f"folder {path} holds no files: give a folder of DICOM files")
            _check_members(len(files), f"folder {path}", limits)
            found: list[tuple[str, Dataset]] = []
            for file in files:
                try:
                    found.append((str(file), read_dataset(file, unpacked=unpacked)))
                except DicomLimitError:
                    raise
                except DicomError as exc:
                    logger.info("skipping %s: %s", file.name, exc)
            if not found:
                raise DicomError(f"folder {path} holds no DICOM files ({len(files)} other files)")
            return found
        if not path.exists():
            raise DicomError(f"{path} does not exist: give a DICOM file or a folder of them")
        return [(str(path), read_dataset(path, unpacked=unpacked))]
    _check_members(len(source), "the list of files", limits)
    return [(str(p), read_dataset(p, unpacked=unpacked)) for p in source]


def _check_members(count: int, what: str, limits: DicomLimits) -> None:
    if count > limits.max_members:
        msg = f"{what} holds {count} files, more than {limits.max_members}: send one study of at most that many files"
        raise DicomLimitError(msg)


def _unzip(source: bytes, limits: DicomLimits, unpacked: UnpackBudget) -> list[tuple[str, bytes]]:
    """The files of a zip archive by name, within the limits.

    The member count and the sizes and ratios the archive declares are checked before anything is
    inflated; the bytes are then counted again while inflating, a chunk at a time, since a crafted
    archive can declare less than it holds.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(source))
        members = sorted((i for i in archive.infolist() if not i.is_dir()), key=lambda i: i.filename)
        _check_members(len(members), "the zip archive", limits)
        declared = sum(i.file_size for i in members)
        if declared > limits.max_unpacked_bytes:
            msg = (
                f"the zip archive declares {declared} bytes unpacked, more than {limits.max_unpacked_bytes}: "
                "send the series by claim check"
            )
            raise DicomLimitError(msg)
        files = []
        for number, info in enumerate(members, 1):
            label = f"zip member {number} of {len(members)}"  # by number: file names may name the patient
            most = limits.max_ratio * min(max(info.compress_size, 1), len(source))
            if info.file_size > most:
                raise DicomLimitError(_ratio_message(label, info, limits))
            files.append((info.filename, _inflate(archive, info, label, most, unpacked, limits)))
        return files
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise DicomError(f"payload looks like a zip archive but cannot be opened: {exc}") from None


def _inflate(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, most: float, unpacked: UnpackBudget,
    limits: DicomLimits,
) -> bytes:  # fmt: skip
    """One member's bytes, read a chunk at a time against its ratio limit and the study's budget."""
    parts: list[bytes] = []
    size = 0
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK):
            size += len(chunk)
            if size > most:
                raise DicomLimitError(_ratio_message(label, info, limits))
            unpacked.take(len(chunk), label)
            parts.append(chunk)
    return b"".join(parts)


def _ratio_message(label: str, info: zipfile.ZipInfo, limits: DicomLimits) -> str:
    return (
        f"{label} unpacks to more than {limits.max_ratio:g} times its compressed size "
        f"({info.compress_size} bytes; a zip bomb?): zip the series' files with ordinary compression"
    )


def _age(value: object) -> float | None:
    text = str(value or "").strip().upper()
    if len(text) < 2 or not text[:-1].isdigit():
        return None
    per_year = {"Y": 1.0, "M": 12.0, "W": 52.0, "D": 365.0}.get(text[-1])
    return round(int(text[:-1]) / per_year, 2) if per_year else None


def patient_of(ds: Dataset) -> PatientInfo:
    """Age, sex and indication of a dataset (identifiers are not read)."""
    sex = str(ds.get("PatientSex", "") or "").strip().upper() or None
    indication = str(ds.get("ReasonForTheRequestedProcedure", "") or ds.get("ReasonForStudy", "") or "").strip()
    return PatientInfo(_age(ds.get("PatientAge")), sex if sex in ("M", "F", "O") else None, indication or None)


def _normal(ds: Dataset) -> np.ndarray | None:
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return np.cross(row, col)


def _spacing(ds: Dataset) -> tuple[float, float]:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None or len(spacing) != 2:
        return (1.0, 1.0)
    return (float(spacing[0]), float(spacing[1]))


def _first_number(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None


def series_volume(items: Sequence[tuple[str, Dataset]], *, limits: DicomLimits = DEFAULT_LIMITS) -> Volume:
    """Stack the image datasets of one series into a :class:`Volume`, sorted along the slice normal.

    Raises:
        SeriesGeometryError: The slices differ in size, pixel spacing or orientation, or repeat a position.
        NoPixelDataError, UnsupportedTransferSyntaxError, DicomError: From :func:`pixels_of`.

    """
    if not items:
        raise DicomError("an empty series: give at least one image")
    first = items[0][1]
    series = str(first.get("SeriesInstanceUID", "?"))
    sizes = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for _, ds in items}
    if len(sizes) > 1:
        msg = f"series {series}: slices have different sizes {sorted(sizes)}; a series must be one volume"
        raise SeriesGeometryError(msg)
    spacings = {tuple(round(s, 4) for s in _spacing(ds)) for _, ds in items}
    if len(spacings) > 1:
        msg = f"series {series}: slices have different pixel spacings {sorted(spacings)} mm"
        raise SeriesGeometryError(msg)
    normals = [_normal(ds) for _, ds in items]
    keys: list[float]
    if all(n is not None for n in normals) and all("ImagePositionPatient" in ds for _, ds in items):
        reference = normals[0]
        assert reference is not None
        if any(abs(float(np.dot(n, reference))) < 0.999 for n in normals if n is not None):
            msg = (
                f"series {series}: slices have different orientations (ImageOrientationPatient), e.g. a localiser "
                "or radial series; send one parallel stack per series"
            )
            raise SeriesGeometryError(msg)
        keys = [float(np.dot(np.asarray(ds.ImagePositionPatient, float), reference)) for _, ds in items]
        if len(items) > 1 and len({round(k, 3) for k in keys}) < len(keys):
            msg = f"series {series}: two slices share a position along the normal; is an image duplicated?"
            raise SeriesGeometryError(msg)
    else:
        keys = [float(ds.get("InstanceNumber", index) or index) for index, (_, ds) in enumerate(items)]
    order = np.argsort(keys, kind="stable")
    check_pixels(items, limits)
    stacks = [pixels_of(items[i][1], Path(items[i][0]).name, limits=limits) for i in order]
    pixels = np.concatenate(stacks, axis=0).astype(np.float32)
    positions = tuple(float(keys[i]) for i in order)
    gaps = np.diff(positions) if len(positions) > 1 else np.array([])
    if gaps.size and gaps.max() > 1.5 * np.median(gaps):
        logger.warning("series %s: uneven slice gaps (%.2f to %.2f mm)", series, gaps.min(), gaps.max())
    centre, width = _first_number(first.get("WindowCenter")), _first_number(first.get("WindowWidth"))
    return Volume(
        pixels=pixels,
        modality=str(first.get("Modality", "OT") or "OT"),
        spacing_mm=_spacing(first),
        slice_thickness_mm=_first_number(first.get("SliceThickness")),
        slice_spacing_mm=float(np.median(gaps)) if gaps.size else None,
        positions_mm=positions,
        study_uid=str(first.get("StudyInstanceUID", "") or ""),
        series_uid=series,
        patient=patient_of(first),
        description=str(first.get("SeriesDescription", "") or first.get("StudyDescription", "") or ""),
        file_window=(centre, width) if centre is not None and width else None,
        body_part=str(first.get("BodyPartExamined", "") or "").strip().upper(),
        contrast=str(first.get("ContrastBolusAgent", "") or "").strip(),
        headers=tuple(header_of(items[i][1]) for i in order),
    )


def header_of(ds: Dataset) -> Dataset:
    """A dataset's elements without its pixel data (and file meta), sharing the element objects."""
    header = Dataset()
    header.update({tag: element for tag, element in ds.items() if tag.group != 0x7FE0})
    return header


def _planes(items: list[tuple[str, Dataset]]) -> list[list[tuple[str, Dataset]]]:
    """Split a series into stacks of parallel slices (a localiser or radial series has several planes)."""
    stacks: list[tuple[np.ndarray | None, list[tuple[str, Dataset]]]] = []
    for name, ds in items:
        normal = _normal(ds)
        for reference, stack in stacks:
            same = normal is None or reference is None or abs(float(np.dot(normal, reference))) >= 0.999
            if same:
                stack.append((name, ds))
                break
        else:
            stacks.append((normal, [(name, ds)]))
    return [stack for _, stack in stacks]


def read_study(
    source: str | Path | bytes | Sequence[str | Path], *, limits: DicomLimits = DEFAULT_LIMITS
) -> list[Volume]:
    """Every image series of a study: a file, a folder (recursive), a list of files, or bytes (a file or a zip).

    Objects without pixel data (DICOMDIR, structured reports) are skipped when others have images. A
    series whose slices lie in several planes (a localiser) gives one volume per plane. Volumes come
    largest first (most slices).

    Raises:
        DicomError: Nothing readable; a series with bad geometry raises :class:`SeriesGeometryError`,
            a study over ``limits`` :class:`DicomLimitError` (checked before any pixels are decoded).

    """
    items = _datasets(source, limits)
    if not items:
        raise DicomError("the payload holds no files (an empty zip archive or list): send the series' DICOM files")
    try:
        return _volumes(items, limits)
    except _UNREADABLE as exc:  # pydicom converts an element when it is first used: a damaged one fails here
        msg = f"an element of the study cannot be read ({type(exc).__name__}: {exc}): is a file damaged?"
        raise DicomError(msg) from None


def _volumes(items: list[tuple[str, Dataset]], limits: DicomLimits) -> list[Volume]:
    images = [(name, ds) for name, ds in items if has_pixels(ds)]
    if not images:
        name, ds = items[0]
        pixels_of(ds, Path(name).name)  # raises NoPixelDataError with the object's kind
    check_pixels(images, limits)
    by_series: dict[str, list[tuple[str, Dataset]]] = {}
    for name, ds in images:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "unknown")), []).append((name, ds))
    volumes = [series_volume(stack, limits=limits) for group in by_series.values() for stack in _planes(group)]
    return sorted(volumes, key=lambda v: -v.pixels.shape[0])


def read_series(source: str | Path | bytes | Sequence[str | Path], *, limits: DicomLimits = DEFAULT_LIMITS) -> Volume:
    """The largest series of :func:`read_study`."""
    return read_study(source, limits=limits)[0]


def files_of(source: Iterable[Path]) -> list[Path]:
    """The files of a list of files and folders (folders recursively)."""
    out: list[Path] = []
    for path in source:
        out += _files_in(path) if path.is_dir() else [path]
    return out


# -- intensities --------------------------------------------------------------------------------------


def window(hu: np.ndarray, preset: str | tuple[float, float]) -> np.ndarray:
    """Hounsfield units → [0, 1] through a window (a :data:`WINDOWS` name or (centre, width))."""
    if isinstance(preset, str):
        if preset not in WINDOWS:
            raise ValueError(f"unknown window {preset!r}: choose one of {', '.join(WINDOWS)} or give (centre, width)")
        centre, width = WINDOWS[preset]
    else:
        centre, width = preset
    low = centre - width / 2
    out: np.ndarray = np.clip((hu.astype(np.float32) - np.float32(low)) / np.float32(width), 0.0, 1.0)
    return out


def normalise_mr(pixels: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """MR (or any non-calibrated) intensities → [0, 1] by the ``low``-``high`` percentiles of the volume."""
    values = pixels.astype(np.float32)
    lo, hi = np.percentile(values, [low, high])
    if hi - lo < 1e-6:
        return np.zeros_like(values)
    out: np.ndarray = np.clip((values - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    return out
