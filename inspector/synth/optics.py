"""Visible-camera physics: illumination, specular highlights, blur and sensor noise.

- **Illumination**: a line light is never uniform; a smooth linear + quadratic fall-off across the
  frame, times lens vignetting (``cos^4``-like, modelled as ``1 - v r^2``).
- **Specular highlights**: machined metal reflects the light source into the lens in broad glints.
  Grooves scatter light across themselves, so a highlight on a brushed or turned part is stretched
  perpendicular to the lay. Highlights may saturate the sensor.
- **Blur**: defocus (a pillbox of the circle-of-confusion radius) and motion along the conveyor
  during the exposure (a line kernel), combined into one kernel applied by one ``cv2.filter2D``.
- **Noise**: Poisson-Gaussian: shot noise whose variance grows with the signal in electrons (full
  well ``FW`` at full scale), plus Gaussian read noise, then 8-bit quantisation:
  ``DN = 255 * (s + sqrt(s / FW + (r / FW)^2) * N(0, 1))`` clipped to [0, 255].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.synth.config import SynthConfig

_LOW_RES = 32


@dataclass(frozen=True)
class CameraDraw:
    """The per-part camera settings drawn from a preset (recorded for debugging and docs)."""

    defocus_px: float
    motion_px: float
    motion_angle: float
    full_well_e: float
    read_noise_e: float


def _upsample(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(coarse.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def illumination(rng: np.random.Generator, shape: tuple[int, int], config: SynthConfig) -> np.ndarray:
    """Smooth multiplicative light field (mean about ``exposure``), vignetting included."""
    n = _LOW_RES
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1) * 2.0 - 1.0  # [-1, 1]
    angle = rng.uniform(0, 2 * np.pi)
    g = rng.uniform(*config.illumination_gradient)
    along = x * np.cos(angle) + y * np.sin(angle)
    light = 1.0 + g * (0.7 * along - 0.3 * along**2)
    cx, cy = rng.normal(0, 0.1, size=2)
    light *= 1.0 - rng.uniform(*config.vignetting) * ((x - cx) ** 2 + (y - cy) ** 2) / 2.0
    light *= rng.uniform(*config.exposure) / float(light.mean())
    return _upsample(light, shape)


def specular(rng: np.random.Generator, shape: tuple[int, int], config: SynthConfig, lay_angle: float) -> np.ndarray:
    """Additive specular glints (radiance, 1 = full scale), stretched across the lay."""
    h, w = shape
    n = _LOW_RES * 2
    out = np.zeros((n, n), dtype=np.float64)
    count = int(rng.integers(config.specular_count[0], config.specular_count[1] + 1))
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1)
    across = lay_angle + np.pi / 2 + rng.normal(0, 0.1)
    c, s = np.cos(across), np.sin(across)
    for _ in range(count):
        x0, y0 = rng.uniform(-0.1, 1.1, size=2)
        long_sigma, short_sigma = rng.uniform(0.25, 0.8), rng.uniform(0.04, 0.15)
        u = (x - x0) * c + (y - y0) * s
        v = -(x - x0) * s + (y - y0) * c
        out += rng.uniform(*config.specular_strength) * np.exp(-0.5 * ((u / long_sigma) ** 2 + (v / short_sigma) ** 2))
    return _upsample(out, (h, w))


def draw_camera(rng: np.random.Generator, config: SynthConfig) -> CameraDraw:
    """Blur and noise settings for one capture."""
    return CameraDraw(
        defocus_px=float(rng.uniform(*config.defocus_px)),
        motion_px=float(rng.uniform(*config.motion_blur_px)),
        motion_angle=float(rng.normal(0.0, 0.03)),  # conveyor along x, slightly skewed
        full_well_e=float(rng.uniform(*config.full_well_e)),
        read_noise_e=float(rng.uniform(*config.read_noise_e)),
    )


def blur_kernel(defocus_px: float, motion_px: float, motion_angle: float = 0.0) -> np.ndarray | None:
    """Normalised kernel: a pillbox of radius ``defocus_px`` convolved with a line of ``motion_px``.

    Both are rendered with sub-pixel accuracy (4x supersampled, then area-averaged), so a 0.3 px
    defocus is a slight softening and not a no-op. Returns None when the blur is negligible.
    """
    if defocus_px < 0.15 and motion_px < 0.25:
        return None
    ss = 4
    half = int(np.ceil(defocus_px + motion_px / 2 + 1))
    size = 2 * half + 1
    coords = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss - size / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    c, s = np.cos(motion_angle), np.sin(motion_angle)
    along = xx * c + yy * s
    across = -xx * s + yy * c
    # distance to the motion segment [-m/2, m/2] along the motion direction, then the pillbox
    excess = np.maximum(np.abs(along) - motion_px / 2.0, 0.0)
    dist = np.hypot(excess, across)
    fine = (dist <= max(defocus_px, 1.0 / ss)).astype(np.float64)  # never thinner than the supersampling
    kernel = fine.reshape(size, ss, size, ss).mean(axis=(1, 3))
    return np.asarray(kernel / kernel.sum(), dtype=np.float32)


def blur(image: np.ndarray, camera: CameraDraw) -> np.ndarray:
    """Apply the capture's defocus and motion blur (reflected borders)."""
    kernel = blur_kernel(camera.defocus_px, camera.motion_px, camera.motion_angle)
    if kernel is None:
        return image
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def sensor(rng: np.random.Generator, radiance: np.ndarray, camera: CameraDraw) -> np.ndarray:
    """Poisson-Gaussian noise and 8-bit quantisation of a radiance image (1 = full scale).

    Args:
        rng: the optics' random stream.
        radiance: (H, W) or (H, W, 3) float32, 1.0 = sensor full scale.
        camera: the capture's full well and read noise.

    Returns:
        uint8 image of the same shape.

    """
    fw = camera.full_well_e
    signal = np.maximum(radiance, 0.0)
    sigma = np.sqrt(signal * (1.0 / fw) + (camera.read_noise_e / fw) ** 2)
    noisy = signal + sigma * rng.standard_normal(radiance.shape, dtype=np.float32)
    noisy *= 255.0
    noisy += 0.5
    np.clip(noisy, 0.0, 255.0, out=noisy)
    return np.asarray(noisy, dtype=np.uint8)
