"""IR -> visible registration: warp the infrared image onto the visible pixel grid.

The calibration (``calibration.yaml``, see :mod:`inspector.calibration`) gives ``ir_to_visible``, a
3x3 homography that maps IR pixel coordinates to visible pixel coordinates (pixel centres at
integer coordinates in both images, as everywhere in ``inspector``). Registration is then a single
perspective warp::

    pair = register(visible, infrared, calibration.homography)         # calibration only
    pair = register(visible, infrared, calibration.homography, refine=True)  # + ECC refinement
    pair.infrared   # float32 (H, W), IR counts on the visible grid, NaN outside the IR field
    pair.valid      # bool (H, W), True where the IR camera saw the visible pixel

The optional refinement corrects small drifts of the calibration (a camera knocked by a few pixels)
by maximising the enhanced correlation coefficient (ECC, :func:`cv2.findTransformECC`) between the
two images. Visible and infrared images look different: a crack is dark in visible light but warm
in IR, a printed mark is visible but thermally invisible. ECC is invariant to gain and offset but
not to a sign flip, so both images are first reduced to what they share, the position of edges:
Gaussian blur, Sobel gradient magnitude, then normalisation to zero mean and unit variance. A band
along the image borders is left out of the correlation: there the blur sees a reflected image, and
the IR field usually reaches beyond the visible one. The refinement is only trusted when it
converges, correlates at least ``min_correlation`` and moves the IR field's corners by at most
``max_corner_shift_px`` visible pixels; otherwise the calibration homography is returned unchanged
(:attr:`RefinementResult.refined` is ``False`` and :attr:`RefinementResult.reason` says why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from inspector.errors import InspectorError

__all__ = [
    "RefinementResult",
    "RegisteredPair",
    "RegistrationError",
    "corner_displacement",
    "edge_image",
    "project_points",
    "refine_homography",
    "register",
    "valid_mask",
    "warp_to_visible",
]


class RegistrationError(InspectorError):
    """Images or a homography given to registration are unusable (wrong shape, not invertible)."""


@dataclass(frozen=True)
class RefinementResult:
    """The outcome of :func:`refine_homography`.

    Attributes:
        homography: IR -> visible (3, 3) float64 to use: the refined one when ``refined``, else the initial one.
        refined: True when the ECC result was accepted, False when it fell back to the initial homography.
        converged: True when ECC reached ``epsilon`` within ``max_iterations``.
        correlation: ECC correlation coefficient (-1..1) of the preprocessed images at the last ECC
            iteration (NaN if ECC raised at once).
        initial_correlation: the same at the initial homography (NaN if ECC raised before measuring it).
        iterations: ECC iterations run.
        corner_shift_px: largest displacement, in visible pixels, of the IR field's four corners between the
            ECC result and the initial homography (NaN when ECC raised).
        reason: why the refinement was rejected; ``None`` when ``refined``.

    """

    homography: np.ndarray
    refined: bool
    converged: bool
    correlation: float
    initial_correlation: float
    iterations: int
    corner_shift_px: float
    reason: str | None = None


@dataclass(frozen=True)
class RegisteredPair:
    """A visible image and the infrared image warped onto its pixel grid.

    Attributes:
        visible: the visible image as given, (H, W) or (H, W, 3).
        infrared: (H, W) float32 IR counts on the visible grid; NaN outside the IR field of view.
        valid: (H, W) bool, True where ``infrared`` holds a measurement.
        homography: the IR -> visible (3, 3) float64 homography used for the warp.
        refinement: the ECC outcome when refinement was asked for, else ``None``.

    """

    visible: np.ndarray
    infrared: np.ndarray
    valid: np.ndarray
    homography: np.ndarray
    refinement: RefinementResult | None = None


def _as_homography(matrix: np.ndarray | list[list[float]], what: str = "homography") -> np.ndarray:
    """Check and normalise a 3x3 homography (float64, ``h[2, 2] == 1`` when possible)."""
    h = np.asarray(matrix, dtype=np.float64)
    if h.shape != (3, 3):
        raise RegistrationError(f"{what} must be a 3x3 matrix, got shape {h.shape}")
    if not np.isfinite(h).all():
        raise RegistrationError(f"{what} has non-finite entries (NaN or inf): recalibrate with `inspector calibrate`")
    if abs(np.linalg.det(h)) < 1e-12:
        raise RegistrationError(f"{what} is not invertible (determinant ~0): recalibrate with `inspector calibrate`")
    return h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h


def _check_shape(shape: tuple[int, ...], what: str) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) <= 0:
        raise RegistrationError(f"{what} must be (height, width) with positive sizes, got {shape}")
    return int(shape[0]), int(shape[1])


def project_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 3x3 homography.

    Args:
        homography: (3, 3) matrix.
        points: (N, 2) x, y coordinates.

    Returns:
        (N, 2) float64 mapped coordinates.

    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mapped = np.column_stack([pts, np.ones(len(pts))]) @ np.asarray(homography, dtype=np.float64).T
    return mapped[:, :2] / mapped[:, 2:3]


def corner_displacement(a: np.ndarray, b: np.ndarray, ir_shape: tuple[int, int]) -> float:
    """Largest distance, in visible pixels, between where two IR -> visible homographies put the IR corners.

    Args:
        a: first (3, 3) homography.
        b: second (3, 3) homography.
        ir_shape: (height, width) of the IR image.

    Returns:
        The maximum displacement over the four corner pixels of the IR image.

    """
    h, w = ir_shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    return float(np.linalg.norm(project_points(a, corners) - project_points(b, corners), axis=1).max())


def valid_mask(ir_shape: tuple[int, int], ir_to_visible: np.ndarray, visible_shape: tuple[int, int]) -> np.ndarray:
    """Visible pixels that the IR camera sees.

    A visible pixel is valid when its centre maps inside the IR sensor, i.e. into
    ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` in IR pixel coordinates (the footprint of the IR pixels).

    Args:
        ir_shape: (height, width) of the IR image.
        ir_to_visible: (3, 3) homography IR pixel -> visible pixel.
        visible_shape: (height, width) of the visible grid.

    Returns:
        (height, width) bool mask on the visible grid.

    """
    h_ir, w_ir = _check_shape(tuple(ir_shape), "ir_shape")
    height, width = _check_shape(tuple(visible_shape), "visible_shape")
    homography = _as_homography(ir_to_visible, "ir_to_visible")
    inverse = np.linalg.inv(homography)
    # Scale the inverse so that its homogeneous coordinate is positive on the IR camera's side (negative
    # is the mirror image "behind the horizon", reachable only with extreme perspective).
    centre = homography @ np.array([(w_ir - 1) / 2, (h_ir - 1) / 2, 1.0])
    inverse *= np.sign(inverse[2] @ (centre / centre[2]))
    # With u = p0 / p2 and v = p1 / p2 (p = inverse @ (x, y, 1), p2 > 0), each of u >= -0.5, u <= w - 0.5,
    # v >= -0.5 and v <= h - 0.5 is a half-plane a x + b y + c >= 0 (the first two also imply p2 > 0):
    # intersect them row by row.
    planes = (
        inverse[0] + 0.5 * inverse[2],
        (w_ir - 0.5) * inverse[2] - inverse[0],
        inverse[1] + 0.5 * inverse[2],
        (h_ir - 0.5) * inverse[2] - inverse[1],
    )
    ys = np.arange(height, dtype=np.float64)
    lo, hi = np.zeros(height), np.full(height, width - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, b, c in planes:
            rest = b * ys + c
            if a > 0:
                lo = np.maximum(lo, -rest / a)
            elif a < 0:
                hi = np.minimum(hi, -rest / a)
            else:
                hi = np.where(rest >= 0, hi, -1.0)
    tolerance = 1e-9 * max(height, width)  # pixel centres exactly on the footprint edge count as inside
    lo, hi = np.ceil(lo - tolerance), np.floor(hi + tolerance)
    xs = np.arange(width)
    return np.asarray((xs >= lo[:, None]) & (xs <= hi[:, None]), dtype=bool)


def warp_to_visible(
    infrared: np.ndarray,
    ir_to_visible: np.ndarray,
    visible_shape: tuple[int, int],
    *,
    fill_value: float = np.nan,
) -> np.ndarray:
    """Warp an IR image onto the visible pixel grid (bilinear, float32).

    Visible pixels outside the IR field of view (see :func:`valid_mask`) are set to ``fill_value``:
    NaN by default, so that nothing downstream mistakes "not seen" for "cold". Use ``np.isfinite`` on
    the result (or :func:`valid_mask`) for the mask, or ``fill_value=0.0`` for a model input. Inside
    the field, pixels within half an IR pixel of the sensor edge take the edge value (replicated
    border) rather than blending with the fill value.

    Args:
        infrared: (h, w) IR image, any numeric dtype (radiometric counts are kept as they are).
        ir_to_visible: (3, 3) homography IR pixel -> visible pixel.
        visible_shape: (height, width) of the visible image.
        fill_value: value for visible pixels the IR camera does not see.

    Returns:
        (height, width) float32 IR values on the visible grid.

    Raises:
        RegistrationError: the IR image is not 2-D, or the homography is not an invertible 3x3 matrix.

    """
    if infrared.ndim != 2 or infrared.size == 0:
        raise RegistrationError(f"infrared image must be a non-empty 2-D array, got shape {infrared.shape}")
    homography = _as_homography(ir_to_visible, "ir_to_visible")
    height, width = _check_shape(tuple(visible_shape), "visible_shape")
    warped = cv2.warpPerspective(
        infrared.astype(np.float32),
        homography,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    warped[~valid_mask(infrared.shape, homography, (height, width))] = fill_value
    return np.asarray(warped, dtype=np.float32)


def _grey(image: np.ndarray, what: str) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise RegistrationError(f"{what} image must be (H, W) or (H, W, 3), got shape {image.shape}")
    return np.asarray(image, dtype=np.float32)


def edge_image(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """What a visible and an IR image share: blurred gradient magnitude, zero mean, unit variance.

    Args:
        image: (H, W) image, any numeric dtype.
        sigma: Gaussian blur before differentiation, in pixels of ``image``.

    Returns:
        (H, W) float32 normalised gradient magnitude (all zeros for a flat image).

    """
    grey = np.asarray(image, dtype=np.float32)
    if sigma > 0:
        grey = np.asarray(cv2.GaussianBlur(grey, (0, 0), sigma), dtype=np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    std = float(magnitude.std())
    return np.asarray((magnitude - magnitude.mean()) / std if std > 0 else np.zeros_like(magnitude), np.float32)


def refine_homography(
    visible: np.ndarray,
    infrared: np.ndarray,
    initial: np.ndarray,
    *,
    max_iterations: int = 50,
    epsilon: float = 1e-5,
    max_corner_shift_px: float = 20.0,
    min_correlation: float = 0.3,
    sigma: float = 1.5,
) -> RefinementResult:
    """Refine an IR -> visible homography with ECC, falling back to ``initial`` when unsure.

    ECC runs at IR resolution: the visible image is area-downscaled to about the IR pixel size (the
    homography's local scale), both images become :func:`edge_image` (gradient magnitude, which is the
    same whether an edge is dark-to-bright or bright-to-dark in either modality), and
    :func:`cv2.findTransformECC` estimates the 8 homography parameters starting from ``initial``.
    It runs one iteration per call so that the iteration count and convergence are known.

    The result falls back to ``initial`` (``refined=False``) when ECC raises (uncorrelated or
    non-overlapping images), does not reach ``epsilon`` within ``max_iterations``, ends below
    ``min_correlation`` or below the initial correlation, or moves any IR corner more than
    ``max_corner_shift_px`` visible pixels away from where ``initial`` puts it.

    Args:
        visible: (H, W) or (H, W, 3) visible image.
        infrared: (h, w) IR image, any numeric dtype.
        initial: (3, 3) IR -> visible homography from the calibration.
        max_iterations: upper bound on ECC iterations (bounds the time: ~2 ms each at 256x256); at least 2
            are needed to observe convergence.
        epsilon: stop when the correlation changes less than this between iterations.
        max_corner_shift_px: largest plausible correction, in visible pixels at the IR field corners.
        min_correlation: smallest ECC correlation at which the refinement is trusted.
        sigma: blur before the gradient, in IR pixels.

    Returns:
        The refinement outcome; ``result.homography`` is always safe to use.

    Raises:
        RegistrationError: the images or ``initial`` are malformed (not a fallback case: a caller bug).

    """
    if max_iterations < 1 or epsilon <= 0:
        raise RegistrationError("max_iterations must be >= 1 and epsilon > 0")
    visible_grey = _grey(visible, "visible")
    if infrared.ndim != 2 or infrared.size == 0:
        raise RegistrationError(f"infrared image must be a non-empty 2-D array, got shape {infrared.shape}")
    h0 = _as_homography(initial, "initial homography")

    h_ir, w_ir = infrared.shape
    template, moving, moving_mask, to_small = _ecc_images(visible_grey, infrared, h0, sigma)
    warp = (to_small @ h0).astype(np.float32)
    warp /= warp[2, 2]

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1, epsilon)
    rho0 = rho = float("nan")
    converged = False
    iterations = 0
    try:
        for iterations in range(1, max_iterations + 1):
            # One ECC step: returns the correlation *at* the warp it was given, then updates the warp.
            previous = rho
            rho, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_HOMOGRAPHY, criteria, moving_mask)
            rho = float(rho)
            if iterations == 1:
                rho0 = rho
            elif abs(rho - previous) < epsilon:
                converged = True
                break
    except cv2.error as exc:
        return RefinementResult(
            h0, False, False, rho, rho0, iterations, float("nan"), f"ECC failed: {_cv_message(exc)}"
        )

    refined = np.linalg.inv(to_small) @ np.asarray(warp, dtype=np.float64)
    refined /= refined[2, 2]
    shift = corner_displacement(refined, h0, (h_ir, w_ir)) if np.isfinite(refined).all() else float("nan")
    reason = None
    if not np.isfinite(shift):
        reason = "ECC produced a non-finite homography"
    elif not converged:
        reason = f"ECC did not converge in {max_iterations} iterations (epsilon {epsilon:g})"
    elif shift > max_corner_shift_px:
        reason = f"ECC moved the IR corners by {shift:.1f} px (> {max_corner_shift_px:g} px): implausible drift"
    elif not rho >= min_correlation:
        reason = f"ECC correlation {rho:.3f} < {min_correlation:g}: the images share too little structure"
    elif rho < rho0:
        reason = f"ECC correlation fell from {rho0:.3f} to {rho:.3f}"
    homography = h0 if reason else refined
    return RefinementResult(homography, reason is None, converged, rho, rho0, iterations, shift, reason)


def _ecc_images(
    visible: np.ndarray, infrared: np.ndarray, h0: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ECC inputs: IR edges (template), downscaled visible edges and their mask, visible -> downscaled map."""
    # Downscale the visible image to about the IR pixel size. The local scale (visible px per IR px) is
    # sqrt|det J|, with det J = det(H) / w^3 at the IR centre.
    h_ir, w_ir = infrared.shape
    jac = np.linalg.det(h0) / (h0[2] @ np.array([(w_ir - 1) / 2, (h_ir - 1) / 2, 1.0])) ** 3
    factor = max(1.0, float(np.sqrt(abs(jac))))
    height, width = visible.shape
    small_size = (max(8, round(width / factor)), max(8, round(height / factor)))
    sx, sy = width / small_size[0], height / small_size[1]
    to_small = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
    small = cv2.resize(visible, small_size, interpolation=cv2.INTER_AREA)

    # Near an image border the blur and the gradient see a reflected image, and the IR camera sees beyond
    # the visible one: keep a band along the borders out of the correlation (a neutral zero in the
    # template, masked out in the moving image).
    template = edge_image(infrared, sigma)
    moving = edge_image(small, sigma)
    band = min(int(np.ceil(3 * sigma)) + 3, min(template.shape) // 4, min(moving.shape) // 4)
    if band > 0:
        template[:band], template[-band:], template[:, :band], template[:, -band:] = 0, 0, 0, 0
    moving_mask = np.zeros(moving.shape, np.uint8)
    moving_mask[band : moving.shape[0] - band, band : moving.shape[1] - band] = 1
    return template, moving, moving_mask, to_small


def _cv_message(exc: cv2.error) -> str:
    """The human part of an OpenCV error: ``(-7:Iterations do not converge) NaN encountered.``."""
    text = " ".join(str(exc).split()).split(" error: ", 1)[-1]
    return re.sub(r"\s*in function '[^']*'\s*$", "", text) or "cv2.error"


def register(
    visible: np.ndarray,
    infrared: np.ndarray,
    ir_to_visible: np.ndarray,
    refine: bool = False,
    **refine_options: Any,
) -> RegisteredPair:
    """Warp ``infrared`` onto ``visible``'s grid with the calibration homography, optionally ECC-refined.

    Args:
        visible: (H, W) or (H, W, 3) visible image.
        infrared: (h, w) IR image.
        ir_to_visible: (3, 3) IR -> visible homography from the calibration.
        refine: run :func:`refine_homography` first (falls back to the calibration when unsure).
        **refine_options: keyword arguments for :func:`refine_homography`.

    Returns:
        The registered pair; ``pair.infrared`` is NaN where ``pair.valid`` is False.

    """
    if visible.ndim not in (2, 3):
        raise RegistrationError(f"visible image must be (H, W) or (H, W, 3), got shape {visible.shape}")
    homography = _as_homography(ir_to_visible, "ir_to_visible")
    refinement = None
    if refine:
        refinement = refine_homography(visible, infrared, homography, **refine_options)
        homography = refinement.homography
    shape = (int(visible.shape[0]), int(visible.shape[1]))
    warped = warp_to_visible(infrared, homography, shape)
    return RegisteredPair(visible, warped, np.isfinite(warped), homography, refinement)
