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
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from inspector.medical.errors import DicomError, NoPixelDataError, SeriesGeometryError, UnsupportedTransferSyntaxError

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
        }


# -- reading ------------------------------------------------------------------------------------------


def read_dataset(source: str | Path | bytes, name: str = "payload") -> Dataset:
    """Parse one DICOM file (a path or its bytes).

    Raises:
        DicomError: Not DICOM, truncated or unreadable.

    """
    what = str(source) if isinstance(source, str | Path) else f"{name} ({len(source)} bytes)"
    try:
        if isinstance(source, bytes):
            return pydicom.dcmread(io.BytesIO(source))
        return pydicom.dcmread(Path(source))
    except InvalidDicomError as exc:
        msg = f"{what} is not a DICOM file ({exc}): give a DICOM Part 10 file, a folder of them or a zip of them"
        raise DicomError(msg) from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"{what} cannot be read as DICOM ({type(exc).__name__}: {exc})"
        raise DicomError(msg) from None


def has_pixels(ds: Dataset) -> bool:
    """The dataset carries an image."""
    return any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def pixels_of(ds: Dataset, name: str = "file") -> np.ndarray:
    """The image of one dataset as float32 (frames, rows, columns), modality rescale applied.

    Raises:
        NoPixelDataError: No image in the dataset.
        UnsupportedTransferSyntaxError: Compressed pixels no installed decoder handles.
        DicomError: The pixel data is damaged or not greyscale.

    """
    if not has_pixels(ds):
        kind = getattr(ds.get("SOPClassUID"), "name", None) or ds.get("Modality") or "object"
        msg = f"{name} has no pixel data (a {kind}): send the image series of the study, not this object"
        raise NoPixelDataError(msg)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
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


def _datasets(source: str | Path | bytes | Sequence[str | Path]) -> list[tuple[str, Dataset]]:
    """(name, dataset) for every DICOM object in the source; folders are searched recursively."""
    if isinstance(source, bytes):
        if source[:4] == _ZIP_MAGIC:
            try:
                archive = zipfile.ZipFile(io.BytesIO(source))
                names = [n for n in archive.namelist() if not n.endswith("/")]
                return [(n, read_dataset(archive.read(n), n)) for n in sorted(names)]
            except zipfile.BadZipFile as exc:
                raise DicomError(f"payload looks like a zip archive but cannot be opened: {exc}") from None
        return [("payload", read_dataset(source))]
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = _files_in(path)
            if not files:
                raise DicomError(f"folder {path} holds no files: give a folder of DICOM files")
            found: list[tuple[str, Dataset]] = []
            for file in files:
                try:
                    found.append((str(file), read_dataset(file)))
                except DicomError as exc:
                    logger.info("skipping %s: %s", file.name, exc)
            if not found:
                raise DicomError(f"folder {path} holds no DICOM files ({len(files)} other files)")
            return found
        if not path.exists():
            raise DicomError(f"{path} does not exist: give a DICOM file or a folder of them")
        return [(str(path), read_dataset(path))]
    return [(str(p), read_dataset(p)) for p in source]


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


def series_volume(items: Sequence[tuple[str, Dataset]]) -> Volume:
    """Stack the image datasets of one series into a :class:`Volume`, sorted along the slice normal.

    Raises:
        SeriesGeometryError: The slices differ in size, pixel spacing or orientation, or repeat a position.
        NoPixelDataError, UnsupportedTransferSyntaxError, DicomError: From :func:`pixels_of`.

    """
    if not items:
        raise DicomError("an empty series: give at least one image")
    first = items[0][1]
    series = str(first.get("SeriesInstanceUID", "?"))
    sizes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in items}
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
    stacks = [pixels_of(items[i][1], Path(items[i][0]).name) for i in order]
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
    )


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


def read_study(source: str | Path | bytes | Sequence[str | Path]) -> list[Volume]:
    """Every image series of a study: a file, a folder (recursive), a list of files, or bytes (a file or a zip).

    Objects without pixel data (DICOMDIR, structured reports) are skipped when others have images. A
    series whose slices lie in several planes (a localiser) gives one volume per plane. Volumes come
    largest first (most slices).

    Raises:
        DicomError: Nothing readable; a series with bad geometry raises :class:`SeriesGeometryError`.

    """
    items = _datasets(source)
    images = [(name, ds) for name, ds in items if has_pixels(ds)]
    if not images:
        name, ds = items[0]
        pixels_of(ds, Path(name).name)  # raises NoPixelDataError with the object's kind
    by_series: dict[str, list[tuple[str, Dataset]]] = {}
    for name, ds in images:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "unknown")), []).append((name, ds))
    volumes = [series_volume(stack) for group in by_series.values() for stack in _planes(group)]
    return sorted(volumes, key=lambda v: -v.pixels.shape[0])


def read_series(source: str | Path | bytes | Sequence[str | Path]) -> Volume:
    """The largest series of :func:`read_study`."""
    return read_study(source)[0]


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
