"""Review decisions as training samples: an operator's decision on a part → an ``inspector.sample/1`` sample.

The review station (``inspector review``, docs/REVIEW.md §2–3) records what an operator decided about
an NG part; this module turns that decision, the part's evidence metadata (``evidence.json``) and its
decoded evidence images into a :class:`inspector.dataset.Sample` that ``inspector train`` reads::

    decision = Decision(kind="relabel", cracks={0: "real", 1: "not_crack"}, strokes=[Stroke(points=..., width_px=6)])
    sample = label_sample(decision, evidence_meta, decode_visible(jpeg), decode_infrared(png))
    write_label(folder, sample, review_record(decision, evidence_meta, who="ana", when="2026-12-01T08:00:00Z"))

Contract of the mask (visible pixels, 0 or 255 on disk):

* ``confirm``: every measured crack's outline, filled, plus the brush strokes.
* ``false_call``: empty (the part is OK; a false call carries no strokes).
* ``relabel``: the outlines of the cracks marked ``real`` (filled) plus the brush strokes; cracks not
  mentioned count as ``real`` (the model found them and nobody objected).

Brush strokes are polylines in visible pixels drawn with their width (``cv2.polylines``; a one-point
stroke is a dot). Everything here is pure except :func:`write_label`, which writes one sample and its
review record (``{id}.review.json``, which :func:`inspector.dataset.list_ids` does not take for a sample).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inspector.dataset import CrackTruth, DataError, Distractor, Sample, SampleMeta, write_sample
from inspector.errors import InspectorError
from inspector.frame import DEFAULT_MAX_PIXELS, FrameDecodeError, check_image_header

REVIEW_SCHEMA: Final = "inspector.review/1"
PRESET: Final = "review"
MAX_STROKES: Final = 100
MAX_STROKE_POINTS: Final = 4096
MAX_STROKE_WIDTH_PX: Final = 200.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

DecisionKind = Literal["confirm", "false_call", "relabel"]
CrackMark = Literal["real", "not_crack"]


class LabelError(InspectorError):
    """A decision cannot become a sample: bad strokes, cracks the evidence does not have, unreadable images."""


class Stroke(BaseModel):
    """One brush stroke for a missed crack: a polyline in visible pixels and its width in pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    points: list[tuple[float, float]] = Field(min_length=1, max_length=MAX_STROKE_POINTS)
    width_px: float = Field(gt=0, le=MAX_STROKE_WIDTH_PX)

    @field_validator("points")
    @classmethod
    def _finite(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not all(math.isfinite(x) and math.isfinite(y) and -1e5 < x < 1e5 and -1e5 < y < 1e5 for x, y in value):
            raise ValueError("stroke points must be finite visible-pixel coordinates")
        return value

    @property
    def length_px(self) -> float:
        """Summed length of the polyline's segments."""
        return float(sum(math.dist(a, b) for a, b in zip(self.points, self.points[1:], strict=False)))


class Decision(BaseModel):
    """What an operator decided about one part (the ``after`` of the audit trail).

    Attributes:
        kind: ``confirm`` (NG as the model said), ``false_call`` (OK: nothing there) or ``relabel``
            (per-crack marks and/or brush strokes).
        cracks: crack index (as in ``evidence.json``) → ``real`` | ``not_crack``; indices left out are ``real``
            for ``confirm`` and ``relabel``.
        strokes: missed cracks, drawn with the brush.
        note: free text from the operator.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: DecisionKind
    cracks: dict[int, CrackMark] = {}
    strokes: list[Stroke] = Field(default_factory=list, max_length=MAX_STROKES)
    note: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        if self.kind == "false_call" and (self.strokes or any(m == "real" for m in self.cracks.values())):
            raise ValueError("a false call has no real cracks and no brush strokes: save them as a relabel instead")
        if self.kind == "confirm" and any(m == "not_crack" for m in self.cracks.values()):
            raise ValueError("confirm keeps every crack: mark cracks 'not a crack' with a relabel instead")
        return self

    def marks(self, crack_count: int) -> dict[int, CrackMark]:
        """Every crack's mark, ``0 .. crack_count - 1`` (what the mask is drawn from)."""
        unknown = sorted(i for i in self.cracks if not 0 <= i < crack_count)
        if unknown:
            raise LabelError(f"cracks {unknown} are not in the evidence (it has {crack_count}): reload the part")
        if self.kind == "false_call":
            return dict.fromkeys(range(crack_count), "not_crack")
        return {i: self.cracks.get(i, "real") for i in range(crack_count)}

    def verdict(self, crack_count: int) -> Literal["NG", "OK"]:
        """NG when a crack stays real or a stroke adds one; OK otherwise."""
        real = any(m == "real" for m in self.marks(crack_count).values())
        return "NG" if real or self.strokes else "OK"


def label_id(camera_id: str, seq: int) -> str:
    """The sample id ``{camera_id}-{seq}`` with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``.

    Dots are replaced too: :func:`inspector.dataset.list_ids` takes only ``{id}.json`` names with one dot.
    """
    return f"{_UNSAFE.sub('_', camera_id) or '_'}-{int(seq)}"


def decode_visible(data: bytes) -> np.ndarray:
    """The evidence's ``visible.jpg`` as (H, W) uint8 grey."""
    return _decode(data, cv2.IMREAD_GRAYSCALE, np.uint8, "visible.jpg")


def decode_infrared(data: bytes) -> np.ndarray:
    """The evidence's ``infrared.png`` as (h, w) uint16 counts (lossless)."""
    image = _decode(data, cv2.IMREAD_UNCHANGED, np.uint16, "infrared.png")
    if image.ndim != 2:
        raise LabelError("evidence infrared.png must be single-channel 16-bit counts")
    return image


def _decode(data: bytes, flags: int, dtype: type[np.generic], name: str) -> np.ndarray:
    try:
        check_image_header(data, max_pixels=DEFAULT_MAX_PIXELS, where=f"evidence {name}")
    except FrameDecodeError as exc:
        raise LabelError(str(exc)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise LabelError(f"evidence {name} is unreadable or truncated: the evidence folder is damaged")
    if image.dtype != dtype:
        raise LabelError(f"evidence {name} must be {np.dtype(dtype).name}, found {image.dtype.name}")
    return np.ascontiguousarray(image)


def label_mask(decision: Decision, outlines: list[list[tuple[float, float]]], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask: outlines of the cracks that stay real (filled) plus the brush strokes."""
    canvas = np.zeros(shape, dtype=np.uint8)
    for index, mark in decision.marks(len(outlines)).items():
        outline = outlines[index]
        if mark == "real" and outline:
            polygon = np.rint(np.asarray(outline, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(canvas, [polygon], 255)
            cv2.polylines(canvas, [polygon], isClosed=True, color=255, thickness=1)
    for stroke in decision.strokes:
        points = np.rint(np.asarray(stroke.points, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(round(stroke.width_px), 1)
        if len(stroke.points) == 1:
            cv2.circle(canvas, tuple(int(v) for v in points[0, 0]), max(thickness // 2, 1), 255, thickness=-1)
        else:
            cv2.polylines(canvas, [points], isClosed=False, color=255, thickness=thickness)
    return canvas > 0


def _truths(decision: Decision, cracks: list[Mapping[str, Any]], mm_per_px: float) -> list[CrackTruth]:
    """Ground-truth cracks: the confirmed ones (outline as polyline, the model's measurements) and the strokes."""
    truths = []
    for index, mark in decision.marks(len(cracks)).items():
        crack, outline = cracks[index], [tuple(p) for p in cracks[index].get("outline") or []]
        if mark != "real" or not outline:
            continue
        mean_width = float(crack.get("mean_width_mm", crack.get("max_width_mm", 0.0)))
        truths.append(
            CrackTruth(
                polylines=[[*outline, outline[0]]], widths_mm=[[mean_width] * (len(outline) + 1)],
                max_width_mm=float(crack.get("max_width_mm", mean_width)), mean_width_mm=mean_width,
                length_mm=float(crack.get("length_mm", 0.0)),
            )
        )  # fmt: skip
    for stroke in decision.strokes:
        width_mm = stroke.width_px * mm_per_px
        truths.append(
            CrackTruth(
                polylines=[list(stroke.points)], widths_mm=[[width_mm] * len(stroke.points)],
                max_width_mm=width_mm, mean_width_mm=width_mm, length_mm=stroke.length_px * mm_per_px,
            )
        )  # fmt: skip
    return truths


def _false_calls(decision: Decision, cracks: list[Mapping[str, Any]]) -> list[Distractor]:
    """Each crack marked "not a crack" as a ``false_call`` distractor (its box): the hard negatives to train on."""
    rejected = [i for i, mark in decision.marks(len(cracks)).items() if mark == "not_crack"]
    return [
        Distractor(kind="false_call", bbox=tuple(float(v) for v in cracks[i]["bbox"]))
        for i in rejected
        if len(cracks[i].get("bbox") or ()) == 4
    ]


def label_sample(decision: Decision, evidence: Mapping[str, Any], visible: np.ndarray, infrared: np.ndarray) -> Sample:
    """The training sample of one decided part.

    Args:
        decision: what the operator decided.
        evidence: the part's ``evidence.json`` (``inspector.evidence/1``): identity, calibration, cracks
            with their ``outline`` in visible pixels.
        visible: (H, W) uint8 grey, from the evidence's ``visible.jpg``.
        infrared: (h, w) uint16, from the evidence's ``infrared.png``.

    Returns:
        A sample with ``preset="review"``, ``seed=None``, the mask of the module docstring, and as
        ``cracks`` the confirmed cracks (their outline as the polyline, the model's measurements) plus
        one per brush stroke, and as ``distractors`` the cracks marked "not a crack" (kind
        ``false_call``, their box), so that training centres hard-negative tiles on what the model
        wrongly called. Both timestamps are the capture's.

    Raises:
        LabelError: the decision names cracks the evidence does not have, or the images do not fit.

    """
    if visible.dtype != np.uint8 or visible.ndim != 2 or infrared.dtype != np.uint16 or infrared.ndim != 2:
        raise LabelError("a review label needs a uint8 grey visible image and a uint16 infrared image")
    cracks = list(evidence.get("cracks") or [])
    outlines = [[(float(x), float(y)) for x, y in crack.get("outline") or []] for crack in cracks]
    mm_per_px = float(evidence["mm_per_px"])
    capture_ts_ns = int(evidence.get("capture_ts_ns", 0))
    camera_id, seq = str(evidence["camera_id"]), int(evidence["seq"])
    try:
        meta = SampleMeta(
            id=label_id(camera_id, seq), part_id=str(evidence.get("part_id") or f"{camera_id}-{seq}"),
            camera_id=camera_id, seq=seq, mm_per_px=mm_per_px, ir_to_visible=evidence["ir_to_visible"],
            visible_ts_ns=capture_ts_ns, infrared_ts_ns=capture_ts_ns,
            cracks=_truths(decision, cracks, mm_per_px), distractors=_false_calls(decision, cracks),
            preset=PRESET, seed=None,
        )  # fmt: skip
    except ValueError as exc:  # pydantic's ValidationError
        raise LabelError(f"evidence of {camera_id}:{seq} cannot become a sample: {exc}") from None
    return Sample(meta=meta, visible=visible, infrared=infrared, mask=label_mask(decision, outlines, visible.shape))


def review_record(
    decision: Decision, evidence: Mapping[str, Any], *, who: str, when: str, before: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``{id}.review.json`` written beside a label: who decided what, when, about which model's call."""
    cracks = len(evidence.get("cracks") or [])
    model = evidence.get("model") or {}
    return {
        "schema": REVIEW_SCHEMA,
        "id": label_id(str(evidence["camera_id"]), int(evidence["seq"])),
        "camera_id": evidence["camera_id"], "seq": int(evidence["seq"]), "part_id": evidence.get("part_id"),
        "who": who, "when": when,
        "decision": decision.kind, "verdict": decision.verdict(cracks),
        "cracks": {str(i): m for i, m in decision.marks(cracks).items()}, "strokes": len(decision.strokes),
        "note": decision.note,
        "model": {"name": model.get("name"), "version": model.get("version"), "sha256": model.get("sha256")},
        "model_verdict": evidence.get("verdict"),
        "before": dict(before) if before else None,
    }  # fmt: skip


def review_record_path(folder: Path, sample_id: str) -> Path:
    """``{folder}/{id}.review.json``."""
    return folder / f"{sample_id}.review.json"


def write_label(folder: Path, sample: Sample, record: Mapping[str, Any]) -> None:
    """Write a label sample (:func:`inspector.dataset.write_sample`) and its review record; overwrites both.

    Raises:
        LabelError: the folder cannot be written (the message names it).

    """
    try:
        write_sample(folder, sample)
        path = review_record_path(folder, sample.meta.id)
        path.write_text(json.dumps(dict(record), indent=1) + "\n")
    except (OSError, DataError) as exc:
        raise LabelError(f"cannot write the label {sample.meta.id} into {folder}: {exc}; check review.labels") from exc
