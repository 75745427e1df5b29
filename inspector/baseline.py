"""Classical crack baselines: the floor every learned model is compared against in the same run.

``baseline`` (visible image only):

1. **Black-hat** (closing minus image) with a disk wider than the widest crack: the local darkening
   of thin dark structures, with uneven illumination and large stains removed.
2. **Multi-scale Hessian ridge filter** (Frangi's vesselness without its background term): at each
   scale σ the larger Hessian eigenvalue λ₂ > 0 marks a dark valley, weighted by
   ``exp(-(λ₁/λ₂)² / 2β²)`` so that lines, not blobs, respond; σ² normalises scales; the maximum over
   σ matching crack widths of 0.1–0.6 mm.
3. Both responses are divided by their robust noise level (median + MAD over the image), multiplied
   (a pixel must be both dark and line-shaped), and **hysteresis-thresholded**: pixels above ``high``
   seed cracks which grow through pixels above ``low``.
4. The crack's extent is the half-maximum of the black-hat around each detection (full width at half
   depth), so widths can be measured from the map.

``baseline-ir`` (infrared only): the registered IR image minus its smooth heating background
(a white top-hat wider than a crack's heat trace), divided by its noise level; warm pixels are
hysteresis-thresholded. IR is 4x coarser and blurred by heat diffusion, so it finds cracks but cannot
measure their width.

The probability map encodes the decision at 0.5 (crack pixels ≥ 0.5, others below) and keeps the
ranking of responses for the PR curve.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import apply_hysteresis_threshold

from inspector.model import ModelError, ModelInput, ModelOutput, register_model


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def robust_scale(response: np.ndarray) -> float:
    """Noise level of a response map: median + 1.4826·MAD, from the (mostly background) pixels."""
    sample = response[::4, ::4].ravel()
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median)))
    return max(median + 1.4826 * mad, 1e-6)


def ridge_response(image: np.ndarray, sigmas: list[float], beta: float = 0.5) -> np.ndarray:
    """Dark-ridge strength of a float image, maximum over scales (σ in pixels)."""
    best = np.zeros(image.shape, dtype=np.float32)
    for sigma in sigmas:
        smooth = cv2.GaussianBlur(image, (0, 0), sigma)
        dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
        dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
        dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
        half_trace = (dxx + dyy) / 2
        root = np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
        lam2, lam1 = half_trace + root, half_trace - root  # lam2 >= lam1
        line = np.exp(-((lam1 / np.maximum(lam2, 1e-9)) ** 2) / (2 * beta**2))
        response = np.where(lam2 > 0, sigma**2 * lam2 * line, 0.0).astype(np.float32)
        np.maximum(best, response, out=best)
    return best


def _check_thresholds(name: str, low: float, high: float) -> None:
    if not 0 < low <= high:
        raise ModelError(f"{name} thresholds need 0 < low <= high, got low={low}, high={high}")


def _probability(strength: np.ndarray, accepted: np.ndarray, high: float) -> np.ndarray:
    """Map a noise-normalised strength to [0, 1] with the decision at exactly 0.5."""
    ranked = np.clip(strength / (2 * high), 0.0, 1.0)
    inside = 0.5 + 0.5 * ranked
    outside = np.minimum(0.49 * strength / high, 0.49)
    return np.where(accepted, inside, outside).astype(np.float32)


@register_model("baseline")
class RidgeBaseline:
    """Black-hat x Hessian ridge, hysteresis threshold, half-depth extent (visible image only)."""

    name = "baseline"
    version = "1"

    def __init__(self, low: float = 6.0, high: float = 14.0, max_width_mm: float = 0.8, min_area_mm2: float = 0.02):
        _check_thresholds(self.name, low, high)
        self.low, self.high, self.max_width_mm, self.min_area_mm2 = low, high, max_width_mm, min_area_mm2

    def predict(self, inputs: ModelInput) -> ModelOutput:
        """Crack probability from the visible image."""
        image = inputs.visible.astype(np.float32) / 255.0
        px = 1.0 / inputs.mm_per_px  # pixels per mm
        radius = max(int(np.ceil(self.max_width_mm * px)), 2)
        blackhat = cv2.morphologyEx(image, cv2.MORPH_BLACKHAT, _disk(radius))
        sigmas = sorted({max(0.7, s * px) for s in (0.04, 0.07, 0.11, 0.17)})
        ridge = ridge_response(image, sigmas)
        strength = (blackhat / robust_scale(blackhat)) * (ridge / robust_scale(ridge))
        detected = apply_hysteresis_threshold(strength, self.low, self.high)  # type: ignore[no-untyped-call]
        # extent: full width at half depth of the local darkening, near a detection
        peak = cv2.dilate(np.where(detected, blackhat, 0).astype(np.float32), _disk(max(radius // 2, 2)))
        near = cv2.dilate(detected.astype(np.uint8), _disk(max(radius // 2, 2))) > 0
        extent = near & (blackhat >= 0.5 * peak) & (peak > 0)
        extent = _drop_small(extent | detected, int(self.min_area_mm2 * px * px))
        return ModelOutput(probability=_probability(strength, extent, self.high))


@register_model("baseline-ir")
class ThermalBaseline:
    """Warm anomalies in the registered IR image over a smooth background (infrared only)."""

    name = "baseline-ir"
    version = "1"

    def __init__(self, low: float = 4.0, high: float = 8.0, background_mm: float = 2.5, min_area_mm2: float = 0.1):
        _check_thresholds(self.name, low, high)
        self.low, self.high, self.background_mm, self.min_area_mm2 = low, high, background_mm, min_area_mm2

    def predict(self, inputs: ModelInput) -> ModelOutput:
        """Crack probability from the infrared image (already warped onto the visible grid)."""
        if inputs.infrared is None:
            raise ModelError("baseline-ir needs an infrared image; this capture has none")
        ir = inputs.infrared.astype(np.float32)
        valid = np.isfinite(ir)
        fill = float(np.median(ir[valid])) if valid.any() else 0.0
        ir = np.where(valid, ir, fill)
        # white top-hat (image minus opening) with a disk wider than a crack's heat trace removes the
        # smooth heating background; done at quarter resolution, IR is 4x coarser than visible anyway
        small = cv2.resize(ir, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
        radius = max(round(self.background_mm / inputs.mm_per_px / 4), 2)
        tophat = cv2.morphologyEx(small, cv2.MORPH_TOPHAT, _disk(radius))
        warm = cv2.resize(tophat, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_LINEAR)
        warm = np.where(valid, warm, 0.0).astype(np.float32)
        noise = robust_scale(np.abs(warm))
        strength = np.maximum(warm, 0) / noise
        detected = apply_hysteresis_threshold(strength, self.low, self.high)  # type: ignore[no-untyped-call]
        px = 1.0 / inputs.mm_per_px
        detected = _drop_small(detected, int(self.min_area_mm2 * px * px))
        return ModelOutput(probability=_probability(strength, detected, self.high))


def _drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(min_area, 1)
    return np.asarray(keep[labels])
