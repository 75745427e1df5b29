"""The on-disk data format: one visible + infrared capture of a part, with its ground truth.

A data folder holds, for every sample id:

    {id}.visible.png    8-bit grey (or 8-bit RGB) at visible resolution
    {id}.infrared.png   16-bit radiometric counts at the IR camera's native resolution
    {id}.mask.png       8-bit, 0 or 255, crack pixels at visible resolution (absent = unknown)
    {id}.json           :class:`SampleMeta`: calibration, timestamps, ground-truth cracks, distractors

This is a fixed contract (``inspector.sample/1``): other tools produce it too. All coordinates are
visible-image pixels (x to the right, y down, pixel centres at integer coordinates).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspector.errors import InspectorError
from inspector.frame import DEFAULT_MAX_PIXELS, FrameDecodeError, check_image_header

SCHEMA: Final = "inspector.sample/1"
DistractorKind = Literal[
    "scratch",
    "machining_mark",
    "stain",
    "oil",
    "dust",
    "printed_mark",
    "ir_emissivity",
    "ir_reflection",
    "false_call",  # a region a model called a crack and a reviewer rejected (review labels: inspector.labels)
]


class DataError(InspectorError):
    """A sample in a data folder is missing, unreadable or inconsistent."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CrackTruth(_Model):
    """One crack: a trunk and its branches, each a polyline with a width at every vertex.

    ``length_mm`` is the summed length of all polylines; ``mean_width_mm`` is the length-weighted mean
    of the width profile; ``max_width_mm`` its maximum.
    """

    polylines: list[list[tuple[float, float]]] = Field(min_length=1)
    widths_mm: list[list[float]] = Field(min_length=1)
    max_width_mm: float = Field(ge=0)
    mean_width_mm: float = Field(ge=0)
    length_mm: float = Field(ge=0)
    contrast: float = Field(1.0, description="visible darkening relative to the surface, 0 (invisible) to 1")
    ir_delta: float = Field(0.0, description="IR warming at the crack in counts before blur")

    @field_validator("widths_mm")
    @classmethod
    def _widths_nonnegative(cls, value: list[list[float]]) -> list[list[float]]:
        if any(w < 0 for profile in value for w in profile):
            raise ValueError("widths must be >= 0")
        return value

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of all vertices, in visible pixels."""
        pts = np.array([p for line in self.polylines for p in line], dtype=np.float64)
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


class Distractor(_Model):
    """Something that looks like a defect but is not one."""

    kind: DistractorKind
    bbox: tuple[float, float, float, float] = Field(description="(x0, y0, x1, y1) in visible pixels")
    modality: Literal["visible", "infrared", "both"] = "visible"


class SampleMeta(_Model):
    """The ``{id}.json`` side file."""

    schema_: Literal["inspector.sample/1"] = Field(SCHEMA, alias="schema")
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    part_id: str = Field(min_length=1)
    camera_id: str = "cam-0"
    seq: int = Field(0, ge=0, description="trigger sequence number shared by both frames of the capture")
    mm_per_px: float = Field(gt=0, description="visible-image calibration")
    ir_to_visible: list[list[float]] = Field(description="3x3 homography: IR pixel -> visible pixel")
    visible_ts_ns: int = Field(ge=0)
    infrared_ts_ns: int = Field(ge=0)
    cracks: list[CrackTruth] = []
    distractors: list[Distractor] = []
    preset: str | None = None
    seed: int | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("ir_to_visible")
    @classmethod
    def _homography(cls, value: list[list[float]]) -> list[list[float]]:
        h = np.asarray(value, dtype=np.float64)
        if h.shape != (3, 3) or not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
            raise ValueError("ir_to_visible must be an invertible 3x3 matrix")
        return value

    @property
    def homography(self) -> np.ndarray:
        """``ir_to_visible`` as a float64 (3, 3) array."""
        return np.asarray(self.ir_to_visible, dtype=np.float64)

    @property
    def is_clean(self) -> bool:
        """True for a part with no crack."""
        return not self.cracks


@dataclass(frozen=True)
class Sample:
    """A sample loaded from disk: images as arrays plus its metadata."""

    meta: SampleMeta
    visible: np.ndarray  # (H, W) uint8, or (H, W, 3) uint8 RGB
    infrared: np.ndarray  # (h, w) uint16
    mask: np.ndarray | None  # (H, W) bool, or None when the folder has no mask


def paths(folder: Path, sample_id: str) -> dict[str, Path]:
    """The four file paths of one sample."""
    return {
        "visible": folder / f"{sample_id}.visible.png",
        "infrared": folder / f"{sample_id}.infrared.png",
        "mask": folder / f"{sample_id}.mask.png",
        "meta": folder / f"{sample_id}.json",
    }


def list_ids(folder: Path) -> list[str]:
    """Sample ids in a folder (every ``{id}.json``), sorted."""
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist: generate one with `inspector synth --out {folder}`")
    return sorted(p.name.removesuffix(".json") for p in folder.glob("*.json") if p.name.count(".") == 1)


def read_meta(path: Path) -> SampleMeta:
    """Read and validate a ``{id}.json`` file."""
    try:
        return SampleMeta.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: missing metadata file") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DataError(f"{path}: {where}: {first['msg']} ({len(exc.errors())} problem(s))") from None


def read_image(path: Path, dtype: type[np.generic], what: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG with its stored bit depth, checking the dtype.

    The PNG header's size is checked against ``max_pixels`` before anything is decompressed
    (:func:`inspector.frame.check_image_header`).
    """
    if not path.is_file():
        raise DataError(f"{path}: missing {what} image")
    data = path.read_bytes()
    try:
        check_image_header(data, max_pixels=max_pixels, where=f"{path}: {what} image")
    except FrameDecodeError as exc:
        raise DataError(str(exc)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: unreadable or truncated {what} image")
    if image.dtype != dtype:
        raise DataError(f"{path}: {what} image must be {np.dtype(dtype).name}, found {image.dtype.name}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def read_sample(folder: Path, sample_id: str, *, with_mask: bool = True) -> Sample:
    """Load one sample, checking that its parts agree with each other."""
    p = paths(folder, sample_id)
    meta = read_meta(p["meta"])
    visible = read_image(p["visible"], np.uint8, "visible")
    infrared = read_image(p["infrared"], np.uint16, "infrared")
    if infrared.ndim != 2:
        raise DataError(f"{p['infrared']}: infrared image must be single-channel")
    mask = None
    if with_mask and p["mask"].exists():
        raw = read_image(p["mask"], np.uint8, "mask")
        if raw.shape != visible.shape[:2]:
            raise DataError(f"{p['mask']}: mask is {raw.shape}, visible is {visible.shape[:2]}: they must match")
        mask = raw > 127
    return Sample(meta=meta, visible=visible, infrared=infrared, mask=mask)


def iter_samples(folder: Path, *, with_mask: bool = True) -> Iterator[Sample | DataError]:
    """Yield every sample of a folder; a broken one is yielded as its DataError so a batch can go on."""
    for sample_id in list_ids(folder):
        try:
            yield read_sample(folder, sample_id, with_mask=with_mask)
        except DataError as exc:
            yield exc


def write_sample(folder: Path, sample: Sample) -> None:
    """Write one sample in the on-disk format (PNG, lossless)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = paths(folder, sample.meta.id)
    visible = sample.visible if sample.visible.ndim == 2 else cv2.cvtColor(sample.visible, cv2.COLOR_RGB2BGR)
    if sample.visible.dtype != np.uint8 or sample.infrared.dtype != np.uint16:
        raise DataError(f"sample {sample.meta.id}: visible must be uint8 and infrared uint16")
    _write_png(p["visible"], visible)
    _write_png(p["infrared"], sample.infrared)
    if sample.mask is not None:
        _write_png(p["mask"], np.where(sample.mask, 255, 0).astype(np.uint8))
    p["meta"].write_text(json.dumps(sample.meta.model_dump(mode="json", by_alias=True), indent=1) + "\n")


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DataError(f"{path}: could not encode PNG")
    path.write_bytes(data.tobytes())
