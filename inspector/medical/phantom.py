"""Synthetic CT studies of the lower chest and upper abdomen, written as real DICOM files, with ground truth.

A study is a stack of axial slices (default 20 × 192 × 192, 1.8-2.0 mm pixels, 2.5 mm slices) of a
schematic phantom: body outline with a fat rim, two lungs, liver, spleen, two kidneys, aorta and a
vertebra, each with a realistic contrast-enhanced attenuation (HU) and Gaussian noise; organs are
elliptic cylinders (the same in every slice). Lesions are spheres centred on a slice:

=============  ======================================  ============  ==============
type           locations                               size (mm)     HU
=============  ======================================  ============  ==============
nodule         right/left lung                         5-25          20-60
mass           right/left lung, liver                  30-42         35-70
cyst           liver, spleen, right/left kidney        6-26          -5-15
calcification  any of the six                          4-8           300-900
=============  ======================================  ============  ==============

The ground truth (:class:`Study`) is the list of findings (type, location, diameter in mm, HU and
centre in mm), the patient (age, sex, indication) and one reference report per phrasing. Everything
here is synthetic: no real patient data.

    study = make_study(seed=7)
    write_dicom(study, Path("out/7"))          # CT Image Storage files, one per slice, + truth.json
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from inspector.medical.vocab import INDICATIONS, Finding, references

logger = logging.getLogger(__name__)

SIZE = 192
SLICES = 20
THICKNESS_MM = 2.5

# name: (centre x, centre y, semi-axis x, semi-axis y) as fractions of the image side; HU range
ORGANS: dict[str, tuple[tuple[float, float, float, float], tuple[float, float]]] = {
    "right lung": ((0.31, 0.34, 0.13, 0.13), (-870.0, -820.0)),  # patient right = image left
    "left lung": ((0.69, 0.34, 0.13, 0.13), (-870.0, -820.0)),
    "liver": ((0.30, 0.63, 0.14, 0.11), (95.0, 115.0)),
    "spleen": ((0.71, 0.62, 0.09, 0.08), (105.0, 125.0)),
    "right kidney": ((0.36, 0.79, 0.075, 0.065), (150.0, 190.0)),
    "left kidney": ((0.64, 0.79, 0.075, 0.065), (150.0, 190.0)),
}
LESIONS: dict[str, tuple[tuple[str, ...], tuple[int, int], tuple[int, int]]] = {
    "nodule": (("right lung", "left lung"), (5, 25), (20, 60)),
    "mass": (("right lung", "left lung", "liver"), (30, 42), (35, 70)),
    "cyst": (("liver", "spleen", "right kidney", "left kidney"), (6, 26), (-5, 15)),
    "calcification": (tuple(ORGANS), (4, 8), (300, 900)),
}
MARGIN_MM = 4.0


@dataclass(frozen=True)
class Lesion:
    """A ground-truth lesion: its finding and its centre (x, y in pixels; z as a slice index)."""

    finding: Finding
    centre_px: tuple[float, float]
    slice_index: int


@dataclass
class Study:
    """One synthetic study: the HU volume, its geometry, the lesions, the patient and the reference reports."""

    seed: int
    hu: np.ndarray  # (Z, H, W) int16 Hounsfield units
    spacing_mm: float
    thickness_mm: float
    lesions: list[Lesion]
    age: int
    sex: str
    indication: str
    organ_masks: dict[str, np.ndarray] = field(default_factory=dict)  # (H, W) bool each
    references: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        """The ground-truth findings."""
        return [lesion.finding for lesion in self.lesions]

    @property
    def study_uid(self) -> str:
        """A deterministic StudyInstanceUID."""
        return str(generate_uid(entropy_srcs=["inspector-phantom", str(self.seed), "study"]))

    def truth(self) -> dict[str, Any]:
        """Ground truth as JSON-able values (synthetic patient: no identifiers)."""
        return {
            "synthetic": True,
            "seed": self.seed,
            "study_uid": self.study_uid,
            "spacing_mm": self.spacing_mm,
            "slice_thickness_mm": self.thickness_mm,
            "patient": {"age": self.age, "sex": self.sex, "indication": self.indication},
            "findings": [
                {**lesion.finding.to_dict(), "centre_px": list(lesion.centre_px), "slice": lesion.slice_index}
                for lesion in self.lesions
            ],
            "references": self.references,
        }


def _ellipse(shape: tuple[int, int], box: tuple[float, float, float, float], shrink_px: float = 0.0) -> np.ndarray:
    h, w = shape
    cx, cy, ax, ay = box[0] * w, box[1] * h, box[2] * w - shrink_px, box[3] * h - shrink_px
    if ax <= 0 or ay <= 0:
        return np.zeros(shape, bool)
    yy, xx = np.mgrid[0:h, 0:w]
    return bool_(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0)


def bool_(array: np.ndarray) -> np.ndarray:
    """As a bool array."""
    return np.asarray(array, dtype=bool)


def _place(
    rng: np.random.Generator, allowed: np.ndarray, radius_px: float, taken: list[tuple[float, float, float]]
) -> tuple[float, float] | None:
    """A centre in ``allowed`` (the organ shrunk by radius and margin) away from the lesions already placed."""
    ys, xs = np.nonzero(allowed)
    if len(xs) == 0:
        return None
    for _ in range(60):
        i = int(rng.integers(len(xs)))
        cx, cy = float(xs[i]), float(ys[i])
        if all(np.hypot(cx - tx, cy - ty) > radius_px + tr for tx, ty, tr in taken):
            return cx, cy
    return None


def make_study(seed: int, size: int = SIZE, slices: int = SLICES, max_findings: int = 3) -> Study:
    """One synthetic study (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    spacing = float(rng.uniform(1.8, 2.0))
    shape = (size, size)
    body_box = (0.5, 0.52, 0.45, 0.40)
    body = _ellipse(shape, body_box)
    inner = _ellipse(shape, body_box, shrink_px=8.0 / spacing)
    image = np.full(shape, -1000.0, np.float32)
    image[body] = rng.uniform(-110, -90)  # subcutaneous fat
    image[inner] = rng.uniform(35, 50)  # muscle and soft tissue
    masks: dict[str, np.ndarray] = {}
    for name, (box, (low, high)) in ORGANS.items():
        masks[name] = _ellipse(shape, box)
        image[masks[name]] = rng.uniform(low, high)
    image[_ellipse(shape, (0.5, 0.64, 0.035, 0.035))] = rng.uniform(140, 180)  # aorta
    image[_ellipse(shape, (0.5, 0.80, 0.05, 0.045))] = rng.uniform(450, 650)  # vertebral body
    volume = np.repeat(image[None], slices, axis=0)

    lesions: list[Lesion] = []
    taken: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ORGANS}
    count = int(rng.integers(0, max_findings + 1))
    margin_px = MARGIN_MM / spacing
    for _ in range(count):
        kind = str(rng.choice(list(LESIONS)))
        locations, (smin, smax), (hmin, hmax) = LESIONS[kind]
        location = str(rng.choice(list(locations)))
        diameter = int(rng.integers(smin, smax + 1))
        radius_px = diameter / 2 / spacing
        allowed = _ellipse(shape, ORGANS[location][0], shrink_px=radius_px + margin_px)
        centre = _place(rng, allowed, radius_px, taken[location])
        if centre is None:
            continue
        reach = min(int(diameter / 2 / THICKNESS_MM), slices // 2 - 1)  # the whole sphere inside the slab if it fits
        z = int(rng.integers(reach, slices - reach))
        hu = int(rng.integers(hmin, hmax + 1))
        zz, yy, xx = np.mgrid[0:slices, 0:size, 0:size]
        sphere = ((xx - centre[0]) * spacing) ** 2 + ((yy - centre[1]) * spacing) ** 2 + (
            (zz - z) * THICKNESS_MM
        ) ** 2 <= (diameter / 2) ** 2
        volume[sphere] = hu
        taken[location].append((centre[0], centre[1], radius_px + margin_px))
        lesions.append(Lesion(Finding(kind, location, float(diameter), float(hu)), centre, z))
    noise = rng.normal(0.0, rng.uniform(6, 10), volume.shape).astype(np.float32)
    hu_volume = np.clip(np.rint(volume + noise * (volume > -1000)), -1024, 3071).astype(np.int16)
    age = int(rng.integers(25, 90))
    sex = str(rng.choice(["M", "F"]))
    indication = str(rng.choice(list(INDICATIONS)))
    study = Study(seed, hu_volume, spacing, THICKNESS_MM, lesions, age, sex, indication, masks)
    study.references = references(study.findings, indication, age)
    return study


def write_dicom(study: Study, folder: Path) -> list[Path]:
    """Write the study as CT Image Storage files (one per slice) and ``truth.json``; returns the DICOM paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study.study_uid
    series_uid = str(generate_uid(entropy_srcs=["inspector-phantom", str(study.seed), "series"]))
    frame_uid = str(generate_uid(entropy_srcs=["inspector-phantom", str(study.seed), "frame"]))
    slices, rows, cols = study.hu.shape
    paths = []
    for index in range(slices):
        sop_uid = generate_uid(entropy_srcs=["inspector-phantom", str(study.seed), str(index)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"slice-{index:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.Manufacturer = "CT", "inspector phantom (synthetic)"
        ds.BodyPartExamined, ds.ContrastBolusAgent, ds.ContrastBolusRoute = "CHESTABDOMEN", "IV contrast", "IV"
        ds.PatientName, ds.PatientID = f"PHANTOM^{study.seed:05d}", f"PH{study.seed:05d}"
        ds.PatientAge, ds.PatientSex = f"{study.age:03d}Y", study.sex
        ds.ReasonForTheRequestedProcedure = study.indication
        ds.StudyDescription = "CT lower chest and upper abdomen (synthetic phantom)"
        ds.SeriesDescription = "axial 2.5 mm soft tissue"
        ds.StudyDate = ds.SeriesDate = "20260101"
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        z = -index * study.thickness_mm  # feet-first order in the files: readers must sort by position
        ds.ImagePositionPatient = [-cols * study.spacing_mm / 2, -rows * study.spacing_mm / 2, z]
        ds.SliceLocation = z
        ds.PixelSpacing = [study.spacing_mm, study.spacing_mm]
        ds.SliceThickness = study.thickness_mm
        ds.SpacingBetweenSlices = study.thickness_mm
        ds.KVP = 120
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = (study.hu[index].astype(np.int32) + 1024).astype("<u2").tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    (folder / "truth.json").write_text(json.dumps(study.truth(), indent=1))
    return paths


def read_truth(folder: Path) -> dict[str, Any]:
    """The ``truth.json`` of a written study."""
    data: dict[str, Any] = json.loads((folder / "truth.json").read_text())
    return data
