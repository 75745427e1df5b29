"""Capture variation: what real optics and sensors do to an image, as seeded pure functions.

A model trained on one generator learns that generator's camera. Real lines differ in focus, lens
point-spread, gain, gamma (sensor response curve or a camera's LUT), noise and compression. These
functions apply such variations to an already-captured 8-bit image, so that training sees them on top
of whatever the generator drew, and so that a held-out set can be swept over them
(``inspector synth --blur-px ...``):

- **point-spread blur**: a Gaussian of ``sigma_px`` (the usual model of a lens PSF plus defocus at
  small radii); 0 = none;
- **gain**: a multiplicative change of exposure, clipped at full scale (saturation);
- **gamma**: ``255 * (x / 255) ** gamma``;
- **noise**: Poisson-like shot noise plus read noise, in digital numbers (DN);
- **JPEG**: re-encoding at a quality, as cameras with on-board compression and some gateways do.

The ground truth does not change: a crack is as wide as it is, however the camera renders it, so a
model trained on these learns to report the true width under blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CaptureVariation:
    """One capture's optics and sensor settings (identity by default)."""

    blur_sigma_px: float = 0.0
    gain: float = 1.0
    gamma: float = 1.0
    shot_noise: float = 0.0  # DN r.m.s. at full scale; scales with sqrt(signal)
    read_noise_dn: float = 0.0
    jpeg_quality: int | None = None  # None: no re-encoding

    def is_identity(self) -> bool:
        """True when applying it changes nothing."""
        return (
            self.blur_sigma_px <= 0
            and self.gain == 1.0
            and self.gamma == 1.0
            and self.shot_noise <= 0
            and self.read_noise_dn <= 0
            and self.jpeg_quality is None
        )


@dataclass(frozen=True)
class CaptureRanges:
    """Ranges to draw a :class:`CaptureVariation` from (training augmentation).

    Defaults cover the optics sweep of the benchmarks (blur 0 to 1.5 px) and a little beyond in gain
    and gamma, so that held-out sweeps stay inside what training saw.
    """

    probability: float = 0.8  # share of tiles that get a variation at all
    blur_sigma_px: tuple[float, float] = (0.0, 1.6)
    gain: tuple[float, float] = (0.6, 1.5)  # log-uniform
    gamma: tuple[float, float] = (0.7, 1.45)  # log-uniform
    shot_noise: tuple[float, float] = (0.0, 8.0)
    read_noise_dn: tuple[float, float] = (0.0, 5.0)
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def draw_variation(rng: np.random.Generator, ranges: CaptureRanges | None = None) -> CaptureVariation:
    """A random capture variation (the identity with probability ``1 - ranges.probability``)."""
    r = ranges or CaptureRanges()
    if rng.random() >= r.probability:
        return CaptureVariation()
    jpeg = int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)) if rng.random() < r.jpeg_probability else None
    return CaptureVariation(
        blur_sigma_px=float(rng.uniform(*r.blur_sigma_px)),
        gain=_log_uniform(rng, *r.gain),
        gamma=_log_uniform(rng, *r.gamma),
        shot_noise=float(rng.uniform(*r.shot_noise)),
        read_noise_dn=float(rng.uniform(*r.read_noise_dn)),
        jpeg_quality=jpeg,
    )


def psf_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian point-spread blur of ``sigma_px`` (reflected borders); float in, float out."""
    if sigma_px <= 0.05:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_REFLECT)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an 8-bit image as JPEG at ``quality`` (1-100)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if decoded is None:  # pragma: no cover - a buffer OpenCV just encoded decodes
        raise ValueError("JPEG decoding failed")
    return np.asarray(decoded, dtype=np.uint8)


def apply_variation(image: np.ndarray, variation: CaptureVariation, rng: np.random.Generator) -> np.ndarray:
    """The 8-bit image (grey or colour) as a camera with ``variation`` would have delivered it.

    Order as in a camera: optics (blur), exposure (gain, clipped), sensor noise, response curve
    (gamma), quantisation, compression.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"capture variation needs an 8-bit image, got {image.dtype}")
    if variation.is_identity():
        return image
    x = image.astype(np.float32)
    x = psf_blur(x, variation.blur_sigma_px)
    x = np.minimum(x * variation.gain, 255.0)
    if variation.shot_noise > 0 or variation.read_noise_dn > 0:
        sigma = np.sqrt((variation.shot_noise**2) * (x / 255.0) + variation.read_noise_dn**2)
        x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
    x = np.clip(x, 0.0, 255.0)
    if variation.gamma != 1.0:
        x = 255.0 * (x / 255.0) ** variation.gamma
    out = np.asarray(np.clip(x + 0.5, 0, 255), dtype=np.uint8)
    if variation.jpeg_quality is not None:
        out = jpeg_roundtrip(out, variation.jpeg_quality)
    return out


def vary_infrared(ir: np.ndarray, rng: np.random.Generator, probability: float = 0.5) -> np.ndarray:
    """Normalised IR (zero median, unit robust spread): extra blur, noise and a gain change, sometimes.

    IR cameras differ in NETD (noise), optics (blur) and calibration (gain); the normalisation removes
    offset and most of the gain, so what is left to vary is the relative size of the noise and blur.
    """
    if rng.random() >= probability:
        return ir
    x = psf_blur(ir.astype(np.float32), float(rng.uniform(0.0, 0.8)))
    x = x * float(rng.uniform(0.8, 1.25))
    x = x + float(rng.uniform(0.0, 0.08)) * rng.standard_normal(x.shape, dtype=np.float32)
    return np.asarray(x, dtype=np.float32)
