"""The in-process inspection of one capture: register → model → measure → verdict.

    result, probability = inspect_pair(visible, infrared, ir_to_visible, mm_per_px, model)
    result.verdict           # "OK" | "NG"
    result.to_dict()         # the ``{stem}.result.json`` contract

No I/O: the caller reads images, passes a clock for timings, and writes the outputs
(:func:`write_prediction` is the one place that writes the prediction files).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.measure import CrackMeasurement, measure_cracks
from inspector.model import CrackModel, ModelInput
from inspector.registration import warp_to_visible
from inspector.verdict import Verdict, VerdictRules, judge

RESULT_SCHEMA = "inspector.result/1"


class InputError(InspectorError):
    """A capture cannot be inspected as given (sizes, dtypes, calibration)."""


@dataclass(frozen=True)
class InspectionResult:
    """What the pipeline says about one part."""

    sample_id: str
    verdict: Verdict
    defects: tuple[CrackMeasurement, ...]
    cracks: tuple[CrackMeasurement, ...]
    mm_per_px: float
    model: dict[str, str]
    modal_weights: dict[str, float] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    part_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The ``{stem}.result.json`` document."""
        return {
            "schema": RESULT_SCHEMA,
            "id": self.sample_id,
            "part_id": self.part_id,
            "verdict": self.verdict,
            "defects": [d.to_dict() for d in self.defects],
            "cracks": [c.to_dict() for c in self.cracks],
            "mm_per_px": self.mm_per_px,
            "model": self.model,
            "modal_weights": self.modal_weights,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


def model_identity(model: CrackModel) -> dict[str, str]:
    """Name and version of the model behind a result; for learned models also its file's SHA-256 and backend."""
    identity = {"name": model.name, "version": model.version}
    metadata = getattr(model, "metadata", None) or {}
    identity.update({k: str(metadata[k]) for k in ("sha256", "backend") if k in metadata})
    return identity


def to_grey(visible: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey from a grey or RGB uint8 visible image."""
    if visible.dtype != np.uint8:
        raise InputError(f"visible image must be 8-bit, got {visible.dtype}")
    if visible.ndim == 3 and visible.shape[2] == 3:
        return np.asarray(cv2.cvtColor(visible, cv2.COLOR_RGB2GRAY))
    if visible.ndim == 2:
        return visible
    raise InputError(f"visible image must be (H, W) or (H, W, 3), got shape {visible.shape}")


def nominal_homography(ir_shape: tuple[int, int], visible_shape: tuple[int, int]) -> np.ndarray:
    """IR → visible homography for coaxial cameras with the same field of view (scale only).

    Pixel centres sit at integer coordinates, so IR pixel ``u`` covers visible ``s·u + (s-1)/2``.
    """
    sy, sx = visible_shape[0] / ir_shape[0], visible_shape[1] / ir_shape[1]
    return np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]], dtype=np.float64)


def inspect_pair(
    visible: np.ndarray,
    infrared: np.ndarray | None,
    ir_to_visible: np.ndarray | None,
    mm_per_px: float,
    model: CrackModel,
    *,
    rules: VerdictRules | None = None,
    sample_id: str = "",
    part_id: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[InspectionResult, np.ndarray]:
    """Inspect one capture.

    Args:
        visible: (H, W) or (H, W, 3) uint8 visible image.
        infrared: (h, w) IR image in radiometric counts at its native resolution, or None if absent.
        ir_to_visible: (3, 3) homography IR pixel → visible pixel; None means coaxial cameras.
        mm_per_px: visible-image calibration.
        model: any registered crack model.
        rules: verdict rules (default: the model's own operating point, chosen on validation data, where it
            has one, else max width ≥ 0.2 mm and length ≥ 1 mm is NG).
        sample_id: carried into the result.
        part_id: carried into the result.
        clock: seconds as a float, for the timings (injected so tests can fix it).

    Returns:
        ``(result, probability)`` with probability the (H, W) float32 crack map.

    """
    if mm_per_px <= 0:
        raise InputError(f"mm_per_px must be > 0, got {mm_per_px}")
    t0 = clock()
    grey = to_grey(visible)
    registered, homography = None, None
    if infrared is not None:
        if infrared.ndim != 2:
            raise InputError(f"infrared image must be single-channel (h, w), got shape {infrared.shape}")
        if infrared.shape[0] > grey.shape[0] or infrared.shape[1] > grey.shape[1]:
            raise InputError(
                f"infrared image {infrared.shape} is larger than the visible image {grey.shape}: "
                "are the two files swapped?"
            )
        homography = ir_to_visible if ir_to_visible is not None else nominal_homography(infrared.shape, grey.shape)
        if getattr(model, "needs_registered_ir", True):  # learned models warp the native IR themselves
            registered = warp_to_visible(infrared, homography, grey.shape)
    t1 = clock()
    inputs = ModelInput(
        visible=grey,
        infrared=registered,
        mm_per_px=mm_per_px,
        infrared_raw=infrared,
        ir_to_visible=homography if infrared is not None else None,
    )
    output = model.predict(inputs)
    probability = np.asarray(output.probability, dtype=np.float32)
    if probability.shape != grey.shape:
        raise InputError(f"model {model.name} returned a {probability.shape} map for a {grey.shape} image")
    t2 = clock()
    cracks = measure_cracks(probability, mm_per_px)
    decision = judge(cracks, rules if rules is not None else getattr(model, "verdict_rules", None))
    t3 = clock()
    result = InspectionResult(
        sample_id=sample_id,
        part_id=part_id,
        verdict=decision.verdict,
        defects=decision.defects,
        cracks=decision.cracks,
        mm_per_px=mm_per_px,
        model=model_identity(model),
        modal_weights=output.modal_weights,
        timings_ms={
            "register": (t1 - t0) * 1e3,
            "model": (t2 - t1) * 1e3,
            "measure": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        },
    )
    return result, probability


def probability_to_png(probability: np.ndarray) -> np.ndarray:
    """8-bit crack probability (0-255); any p < 0.5 stays below 128, so the 0.5 decision survives."""
    return np.asarray(np.clip(np.rint(probability * 255.0), 0, 255).astype(np.uint8))


def write_prediction(out: Path, stem: str, probability: np.ndarray, result: InspectionResult) -> None:
    """Write ``{stem}.pred.png`` and ``{stem}.result.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", probability_to_png(probability))
    if not ok:
        raise InspectorError(f"could not encode the prediction for {stem}")
    (out / f"{stem}.pred.png").write_bytes(data.tobytes())
    (out / f"{stem}.result.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
