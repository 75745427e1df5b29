"""What the line keeps of an inspected part for review: the evidence contract ``inspector.evidence/1``.

Every NG part, and a share of OK parts picked by the capture (not by chance), keeps one folder of
evidence (docs/REVIEW.md, section 1)::

    kept = kept_as(camera_id, seq, result.verdict, ok_fraction)        # "ng", "ok-sample" or None
    if kept is not None:
        bundle = build_evidence(result, probability, visible, infrared, ir_to_visible=h,
                                camera_id=camera_id, seq=seq, capture_ts_ns=ts, kept=kept)
        bundle.path          # "2025-12-06/rig-1/42", relative to evidence.root
        bundle.files         # {"visible.png": b"...", "infrared.png": ..., "evidence.json": ...}
        evidence_files(json.loads(bundle.files["evidence.json"]))   # {"visible": "visible.png", ...}

Pure: images in, encoded bytes out; no file, clock or randomness. Writing the folder (atomically,
inside its root, with retention) is the worker's job (``workers.evidence.EvidenceStore``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.measure import CrackMeasurement
from inspector.pipeline import InspectionResult, nominal_homography, probability_to_png, to_grey
from inspector.registration import warp_to_visible

__all__ = [
    "EVIDENCE_FILES",
    "EVIDENCE_SCHEMA",
    "EvidenceBuildError",
    "EvidenceBundle",
    "Kept",
    "build_evidence",
    "crack_outlines",
    "evidence_files",
    "evidence_path",
    "kept_as",
    "ok_sample_draw",
    "registered_8bit",
]

EVIDENCE_SCHEMA = "inspector.evidence/1"
EVIDENCE_FILES = (
    "visible.png", "visible.jpg", "infrared.png", "registered.jpg", "probability.png", "evidence.json"
)  # fmt: skip
"""Every file an evidence folder can hold: one of the two visible files (as the camera's frame came: PNG
or JPEG); a capture without IR has no ``infrared.png`` / ``registered.jpg``."""
LAYERS = {"visible": "visible.jpg", "infrared": "infrared.png", "registered": "registered.jpg",
          "probability": "probability.png"}  # fmt: skip
DISPLAY_SCALE = 0.5
"""The registered IR and the crack map are kept at half the visible resolution (the IR camera has a quarter
of it; the map is max-pooled, so a one-pixel crack stays visible): a quarter of the encoding time."""

Kept = Literal["ng", "ok-sample", "shadow"]

_CAMERA_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# the map is ~99.9% zeros: no PNG row filter and fast deflate take 3 ms for a 1024² map (~6 kB) where the
# default adaptive filters took 8 ms (issue 23 overhead measurement)
_MAP_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
_MAX_OUTLINE_POINTS = 200  # per crack: the polygon is simplified further until it has at most this many


class EvidenceBuildError(InspectorError):
    """The evidence of a capture cannot be made (a bad camera id, an image that cannot be encoded).

    The capture's result is stored without evidence.
    """


@dataclass(frozen=True)
class EvidenceBundle:
    """One capture's evidence folder, encoded and ready to write.

    Attributes:
        path: ``{UTC day}/{camera_id}/{seq}``, relative to ``evidence.root`` (checked by :func:`evidence_path`).
        files: File name → bytes; names are plain (no ``/``), a subset of :data:`EVIDENCE_FILES`.
        kept: Why it is kept: ``ng`` or ``ok-sample``.

    """

    path: str
    files: dict[str, bytes]
    kept: Kept = "ng"

    @property
    def nbytes(self) -> int:
        """Bytes of all its files together."""
        return sum(len(data) for data in self.files.values())


def ok_sample_draw(camera_id: str, seq: int) -> float:
    """A number in [0, 1) fixed by the capture: BLAKE2b of ``camera_id:seq``, so a re-delivery draws the same."""
    digest = hashlib.blake2b(f"{camera_id}:{seq}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def kept_as(camera_id: str, seq: int, verdict: str, ok_fraction: float, *, disputed: bool = False) -> Kept | None:
    """Whether a capture keeps evidence, and why: every NG part; some OK parts.

    An OK part is kept when its draw is below ``ok_fraction``, or when a shadow model disagreed with
    its verdict (``disputed``: the disagreement goes to review).

    Args:
        camera_id: The capture's camera.
        seq: The capture's sequence number (:func:`inspector.stream.capture_key`).
        verdict: ``OK`` or ``NG``.
        ok_fraction: Share of OK parts kept (0 keeps none, 1 keeps all).
        disputed: A shadow model called this capture otherwise.

    Returns:
        ``"ng"``, ``"ok-sample"``, ``"shadow"`` or ``None`` (no evidence). The same capture always gets the
        same answer.

    """
    if verdict == "NG":
        return "ng"
    if disputed:
        return "shadow"
    if ok_fraction > 0 and ok_sample_draw(camera_id, seq) < ok_fraction:
        return "ok-sample"
    return None


def evidence_path(camera_id: str, seq: int, capture_ts_ns: int) -> str | None:
    """``{UTC day}/{camera_id}/{seq}`` of a capture, or ``None`` when its identity cannot name a folder safely.

    ``camera_id`` must be ``[A-Za-z0-9_.-]+`` (at most 128 characters) and not ``.`` or ``..``; ``seq`` and
    ``capture_ts_ns`` must be non-negative. The day is the capture's UTC date, ``YYYY-MM-DD``.
    """
    if not _CAMERA_ID.fullmatch(camera_id) or camera_id in (".", "..") or seq < 0 or capture_ts_ns < 0:
        return None
    day = datetime.fromtimestamp(capture_ts_ns // 10**9, tz=UTC).strftime("%Y-%m-%d")
    return f"{day}/{camera_id}/{int(seq)}"


def crack_outlines(
    probability: np.ndarray,
    cracks: Sequence[CrackMeasurement],
    *,
    threshold: float = 0.5,
    epsilon_px: float = 1.0,
) -> list[list[list[int]]]:
    """The outer contour of each measured crack's ``p >= threshold`` region, as ``[[x, y], ...]`` visible pixels.

    Each crack is found again by its bounding box (:func:`inspector.measure.measure_cracks` measures
    8-connected regions, as ``cv2.findContours`` traces them): the contour whose bounding rectangle is
    the crack's ``bbox``. The polygon is simplified with ``cv2.approxPolyDP`` (``epsilon_px``, doubled
    until it has at most 200 points) so that the JSON stays small. Every point lies inside the image.

    Args:
        probability: (H, W) crack probability the cracks were measured on.
        cracks: The measured cracks, in the result's order.
        threshold: The level that made the regions.
        epsilon_px: Largest distance of the simplified polygon from the traced contour, in pixels.

    Returns:
        One outline per crack, in order (empty for a crack whose region is not found again).

    """
    height, width = probability.shape[:2]
    outlines: list[list[list[int]]] = []
    for crack in cracks:
        x0, y0, x1, y1 = crack.bbox
        cx0, cy0 = max(x0 - 1, 0), max(y0 - 1, 0)  # one pixel of background around the region
        cx1, cy1 = min(x1 + 2, width), min(y1 + 2, height)
        crop = np.ascontiguousarray(probability[cy0:cy1, cx0:cx1] >= threshold, dtype=np.uint8)
        if crop.size == 0:
            outlines.append([])
            continue
        contours, _ = cv2.findContours(crop, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        want = (x0 - cx0, y0 - cy0, x1 - x0 + 1, y1 - y0 + 1)
        candidates = [c for c in contours if tuple(cv2.boundingRect(c)) == want] or list(contours)
        if not candidates:
            outlines.append([])
            continue
        contour = max(candidates, key=len)
        epsilon = epsilon_px
        simple = cv2.approxPolyDP(contour, epsilon, True)
        while len(simple) > _MAX_OUTLINE_POINTS:
            epsilon *= 2
            simple = cv2.approxPolyDP(contour, epsilon, True)
        outlines.append([[int(x) + cx0, int(y) + cy0] for x, y in simple.reshape(-1, 2)])
    return outlines


def _sees_everything(ir_shape: tuple[int, int], ir_to_visible: np.ndarray, visible_shape: tuple[int, int]) -> bool:
    """The IR field covers every visible pixel centre (the coaxial rigs' case): no pixel needs masking.

    The visible frame maps into IR coordinates as a convex quadrilateral when all four corners lie
    in front of the camera (the projective denominator is affine, so positive at the corners means
    positive inside); it is inside the IR footprint ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` when its corners are.
    """
    height, width = visible_shape
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], np.float64)
    mapped = corners @ np.linalg.inv(np.asarray(ir_to_visible, np.float64)).T
    if not (mapped[:, 2] > 0).all():
        return False
    xy = mapped[:, :2] / mapped[:, 2:3]
    tolerance = 1e-9 * max(visible_shape)
    low, high = -0.5 - tolerance, np.array([ir_shape[1], ir_shape[0]]) - 0.5 + tolerance
    return bool((xy >= low).all() and (xy <= high).all())


def evidence_files(metadata: dict[str, Any]) -> dict[str, str]:
    """File name of each layer (``visible``, ``infrared``, ``registered``, ``probability``) of an ``evidence.json``."""
    named = metadata.get("files") or {}
    return {layer: str(named.get(layer, default)) for layer, default in LAYERS.items()}


def half_scale(ir_to_visible: np.ndarray) -> np.ndarray:
    """IR pixel → pixel of a grid with half the visible resolution (pixel centres at integers on both)."""
    to_half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]], np.float64)
    return to_half @ np.asarray(ir_to_visible, np.float64)


def max_pool_half(image: np.ndarray) -> np.ndarray:
    """(H, W) → (ceil(H/2), ceil(W/2)): the largest of each 2×2 block, so thin cracks survive.

    Four strided views and three ``np.maximum`` (about 1 ms for a 1024² map; a reshape-and-reduce
    takes 20).
    """
    height, width = image.shape
    if height % 2 or width % 2:
        padded = np.zeros((height + height % 2, width + width % 2), image.dtype)
        padded[:height, :width] = image
        image = padded
    top = np.maximum(image[0::2, 0::2], image[0::2, 1::2])
    return np.asarray(np.maximum(top, np.maximum(image[1::2, 0::2], image[1::2, 1::2])))


def registered_8bit(infrared: np.ndarray, ir_to_visible: np.ndarray, visible_shape: tuple[int, int]) -> np.ndarray:
    """The IR image min-max scaled to ``uint8`` and warped onto the visible grid; pixels it does not see are 0.

    The scaling is done on the native IR image (16x fewer pixels than the visible grid), then the
    8-bit image is warped as :func:`inspector.registration.warp_to_visible` warps (bilinear, the
    sensor edge replicated within half an IR pixel). When the IR field covers the whole visible frame
    (coaxial rigs) nothing needs masking and the ``uint8`` warp is done directly: 1 ms instead of 4
    for a 1024² frame.
    """
    lo, hi = float(infrared.min()), float(infrared.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    scaled = cv2.convertScaleAbs(infrared, alpha=scale, beta=-lo * scale)
    if _sees_everything(infrared.shape[:2], ir_to_visible, visible_shape):
        size = (visible_shape[1], visible_shape[0])
        flags, border = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
        return np.asarray(cv2.warpPerspective(scaled, np.asarray(ir_to_visible, np.float64), size, flags=flags,
                                              borderMode=border))  # fmt: skip
    warped = warp_to_visible(scaled, ir_to_visible, visible_shape, fill_value=0.0)
    return np.asarray(cv2.convertScaleAbs(warped))


def _encode(extension: str, image: np.ndarray, params: Sequence[int], what: str) -> bytes:
    ok, data = cv2.imencode(extension, image, list(params))
    if not ok:
        raise EvidenceBuildError(f"could not encode the {what} image ({image.dtype}, shape {image.shape})")
    return bytes(data.tobytes())


def _rounded(crack: CrackMeasurement) -> dict[str, Any]:
    return {
        "length_mm": round(crack.length_mm, 3),
        "max_width_mm": round(crack.max_width_mm, 3),
        "mean_width_mm": round(crack.mean_width_mm, 3),
        "bbox": list(crack.bbox),
        "score": round(crack.score, 4),
    }


def build_evidence(
    result: InspectionResult,
    probability: np.ndarray,
    visible: np.ndarray,
    infrared: np.ndarray | None,
    *,
    ir_to_visible: np.ndarray | None,
    camera_id: str,
    seq: int,
    capture_ts_ns: int,
    kept: Kept,
    jpeg_quality: int = 90,
    infrared_png: bytes | None = None,
    visible_encoded: tuple[str, bytes] | None = None,
) -> EvidenceBundle:
    """Encode one capture's evidence folder (docs/REVIEW.md, section 1).

    Files: ``visible.png`` or ``visible.jpg`` (the frame as the camera's gateway sent it, else 8-bit grey
    JPEG at ``jpeg_quality``), ``infrared.png`` (the IR image as received, 16-bit counts at its native
    resolution, lossless), ``registered.jpg`` (the IR warped onto the visible grid at half its resolution
    with ``ir_to_visible``, min-max to 8 bit), ``probability.png`` (``p × 255``, 8 bit, max-pooled to half
    the visible resolution) and ``evidence.json`` (``files`` names each layer's file). A capture without
    IR has neither IR file; its JSON says ``"infrared": "missing"``
    and has ``null`` for ``ir_to_visible`` and ``infrared_shape``.

    Args:
        result: The inspection of the capture (:func:`inspector.pipeline.inspect_pair`).
        probability: (H, W) float crack map the result was measured on.
        visible: (H, W) or (H, W, 3) uint8 visible image.
        infrared: (h, w) IR image as received, or ``None``.
        ir_to_visible: The IR → visible homography the capture was inspected with; ``None``: coaxial
            (:func:`inspector.pipeline.nominal_homography`), as :func:`~inspector.pipeline.inspect_pair` takes it.
        camera_id: The capture's camera.
        seq: The capture's sequence number.
        capture_ts_ns: Capture time of the visible frame (names the day folder).
        kept: Why it is kept (:func:`kept_as`).
        jpeg_quality: Quality of both JPEGs (``evidence.jpeg_quality``).
        infrared_png: The IR frame's PNG bytes as received (a gateway sending ``png``), stored as they are:
            the image as received at no encoding cost. ``None``: ``infrared`` is encoded.
        visible_encoded: ``(encoding, bytes)`` of the visible frame as received when it came as ``png`` or
            ``jpeg``: kept as it is (``visible.png`` / ``visible.jpg``) at no encoding cost. ``None``: the
            grey image is encoded as JPEG.

    Raises:
        EvidenceBuildError: ``camera_id`` cannot name a folder (:func:`evidence_path`), or an image cannot be encoded.

    """
    path = evidence_path(camera_id, seq, capture_ts_ns)
    if path is None:
        msg = f"camera_id {camera_id[:80]!r} (seq {seq}) cannot name an evidence folder: use [A-Za-z0-9_.-]+"
        raise EvidenceBuildError(msg)
    grey = to_grey(visible)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    half = ((grey.shape[0] + 1) // 2, (grey.shape[1] + 1) // 2)
    names = dict(LAYERS)
    if visible_encoded is not None:
        names["visible"] = f"visible.{'png' if visible_encoded[0] == 'png' else 'jpg'}"
        files = {names["visible"]: visible_encoded[1]}
    else:
        files = {names["visible"]: _encode(".jpg", grey, jpeg, "visible")}
    files["probability.png"] = _encode(".png", max_pool_half(probability_to_png(probability)), _MAP_PNG, "probability")
    homography = None
    if infrared is not None:
        homography = ir_to_visible if ir_to_visible is not None else nominal_homography(infrared.shape, grey.shape)
        files["infrared.png"] = infrared_png or _encode(".png", infrared, [cv2.IMWRITE_PNG_COMPRESSION, 1], "infrared")
        registered = registered_8bit(infrared, half_scale(homography), half)
        files["registered.jpg"] = _encode(".jpg", registered, jpeg, "registered infrared")
    defects = set(result.defects)
    outlines = crack_outlines(probability, result.cracks)
    metadata: dict[str, Any] = {
        "schema": EVIDENCE_SCHEMA,
        "camera_id": camera_id,
        "seq": seq,
        "part_id": result.part_id,
        "capture_ts_ns": capture_ts_ns,
        "verdict": result.verdict,
        "kept": kept,
        "mm_per_px": result.mm_per_px,
        "ir_to_visible": np.asarray(homography, dtype=float).tolist() if homography is not None else None,
        "visible_shape": list(grey.shape[:2]),
        "files": {layer: name for layer, name in names.items() if name in files},
        "display_shape": list(half),  # of registered.jpg and probability.png (DISPLAY_SCALE)
        "infrared_shape": list(infrared.shape[:2]) if infrared is not None else None,
        "cracks": [
            {"index": i, **_rounded(crack), "defect": crack in defects, "outline": outline}
            for i, (crack, outline) in enumerate(zip(result.cracks, outlines, strict=True))
        ],
        "model": dict(result.model),
        "modal_weights": result.modal_weights,
    }
    if infrared is None:
        metadata["infrared"] = "missing"
    files["evidence.json"] = json.dumps(metadata, separators=(",", ":")).encode()
    return EvidenceBundle(path, files, kept)
