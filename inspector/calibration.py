"""Camera calibration: visible mm/px and the IR -> visible homography, from a heated checkerboard.

A checkerboard is laid on the conveyor and warmed (a heat lamp, or the board left in the sun): its
black squares absorb more and become warmer, so in the IR image they are *bright* where the visible
image is *dark*. Both cameras see the board; :func:`calibrate_from_checkerboard` finds the inner
corners in both images, pairs them up and fits

* ``ir_to_visible``: the 3x3 homography mapping IR pixel coordinates to visible pixel coordinates
  (pixel centres at integer coordinates, as in :mod:`inspector.dataset`), exact for a flat conveyor;
* ``mm_per_px``: the visible scale, from the median spacing of neighbouring corners;
* ``reprojection_rms_px``: how well the homography maps the IR corners onto the visible ones.

The result is a frozen :class:`Calibration`, stored as ``calibration.yaml`` with
:func:`save_calibration` / :func:`load_calibration`::

    schema: inspector.calibration/1
    mm_per_px: 0.05
    ir_to_visible: [[4.0, 0.0, 1.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]]
    visible_shape: [1024, 1024]      # (height, width)
    ir_shape: [256, 256]
    date: '2025-01-31'
    board: {cols: 9, rows: 6, square_mm: 5.0}
    reprojection_rms_px: 0.21

Corner correspondence: a checkerboard's corner grid is symmetric, so a detector may number the
corners from a different end of the board in each image (it happens with the IR polarity flip).
The IR corner order is chosen among the grid's symmetries so that the IR grid's row and column
directions point the same way as the visible ones. This assumes that the IR image is not mirrored
relative to the visible one and is rotated by less than 45 degrees from it (90 for a non-square
corner grid), which holds for two cameras mounted side by side over a conveyor; flip a mirrored
camera's image before calibrating.

:func:`render_checkerboard_pair` draws a synthetic heated board as both cameras would see it, for
tests and for trying ``inspector calibrate --synthetic`` without a camera.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inspector.errors import InspectorError
from inspector.registration import project_points

__all__ = [
    "SCHEMA",
    "BoardGeometry",
    "Calibration",
    "CalibrationError",
    "calibrate_from_checkerboard",
    "find_corners",
    "load_calibration",
    "match_corner_order",
    "render_checkerboard_pair",
    "save_calibration",
]

SCHEMA = "inspector.calibration/1"


class CalibrationError(InspectorError):
    """A calibration file is unusable, or a calibration could not be computed from the images."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BoardGeometry(_Model):
    """The calibration checkerboard: inner corners per row and per column, square side."""

    cols: int = Field(ge=2, description="inner corners per row")
    rows: int = Field(ge=2, description="inner corners per column")
    square_mm: float = Field(gt=0, description="side of one square in mm")


class Calibration(_Model):
    """The geometric calibration of a visible + IR camera pair over a flat conveyor."""

    schema_: Literal["inspector.calibration/1"] = Field("inspector.calibration/1", alias="schema")
    mm_per_px: float = Field(gt=0, description="visible-image scale on the conveyor plane")
    ir_to_visible: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]] = Field(
        description="3x3 homography: IR pixel -> visible pixel"
    )
    visible_shape: tuple[int, int] = Field(description="(height, width) of the visible image in pixels")
    ir_shape: tuple[int, int] = Field(description="(height, width) of the IR image in pixels")
    date: str | None = Field(None, description="when the calibration was made, as given by the caller")
    board: BoardGeometry | None = None
    reprojection_rms_px: float | None = Field(None, ge=0, description="RMS corner error in visible pixels")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("ir_to_visible")
    @classmethod
    def _invertible(cls, value: tuple[tuple[float, ...], ...]) -> Any:
        h = np.asarray(value, dtype=np.float64)
        if not np.isfinite(h).all():
            raise ValueError("homography has non-finite entries")
        if abs(np.linalg.det(h)) < 1e-12:
            raise ValueError("homography is not invertible (determinant ~0)")
        return value

    @field_validator("visible_shape", "ir_shape")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) <= 0:
            raise ValueError("image sizes must be positive (height, width)")
        return value

    @model_validator(mode="after")
    def _field_overlaps(self) -> Calibration:
        h, w = self.ir_shape
        centre = project_points(self.homography, np.array([[(w - 1) / 2, (h - 1) / 2]]))[0]
        vh, vw = self.visible_shape
        if not (np.isfinite(centre).all() and -vw <= centre[0] <= 2 * vw and -vh <= centre[1] <= 2 * vh):
            msg = f"the IR image centre maps to visible ({centre[0]:.0f}, {centre[1]:.0f}), far outside the image"
            raise ValueError(msg)
        return self

    @property
    def homography(self) -> np.ndarray:
        """``ir_to_visible`` as a float64 (3, 3) array."""
        return np.asarray(self.ir_to_visible, dtype=np.float64)


# --- files ----------------------------------------------------------------------------------------


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a ``calibration.yaml``.

    Args:
        path: the YAML file.

    Returns:
        The calibration.

    Raises:
        CalibrationError: the file is missing, not YAML, not a mapping, or has a missing, unknown or
            invalid field (e.g. a non-invertible homography); the message names the file and the field.

    """
    path = Path(path)
    hint = "recalibrate with `inspector calibrate`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} does not exist: {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"calibration file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise CalibrationError(f"calibration file {path} is not valid YAML{line}: {hint}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"calibration file {path} must be a YAML mapping, found {type(data).__name__}: {hint}")
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()]
        raise CalibrationError(f"calibration file {path} is invalid: " + "; ".join(problems)) from None


def save_calibration(path: str | Path, calibration: Calibration) -> None:
    """Write a calibration as YAML (``calibration.yaml``), creating the folder if needed.

    Args:
        path: the YAML file to write (replaced if it exists).
        calibration: what to write.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = calibration.model_dump(mode="json", by_alias=True)
    header = "# inspector camera calibration: visible mm/px and the IR pixel -> visible pixel homography\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")


# --- corners --------------------------------------------------------------------------------------


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Grey 8-bit version of any image, stretched between its 0.5 and 99.5 percentiles."""
    grey = image.astype(np.float32)
    if grey.ndim == 3:
        grey = grey[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(grey.shape, np.uint8)
    return np.asarray(np.clip((grey - lo) * (255.0 / (hi - lo)), 0, 255).round(), dtype=np.uint8)


def find_corners(image: np.ndarray, pattern: tuple[int, int], *, upscale: tuple[int, ...] = (1,)) -> np.ndarray | None:
    """Find a checkerboard's inner corners with sub-pixel accuracy.

    Detection tries :func:`cv2.findChessboardCornersSB`, then the classic
    :func:`cv2.findChessboardCorners`, each on the image as given and inverted, at each ``upscale``
    factor (``(1, 2)`` helps when the squares of a coarse IR image are only a few pixels); the first
    success wins. The corners are then refined with :func:`cv2.cornerSubPix` on the original image
    with a half-window of 0.6 corner spacings, which on blurred images is several times more accurate
    than either detector alone (on the synthetic board: 0.01 px instead of 0.3 px).

    Args:
        image: (H, W) or (H, W, 3) image, any numeric dtype (contrast is stretched).
        pattern: (cols, rows) inner corners per row and per column.
        upscale: integer factors to try, in order.

    Returns:
        (cols * rows, 2) float64 corners in ``image`` pixel coordinates, row by row, or ``None``.

    """
    grey = _to_uint8(image)
    for factor in upscale:
        big = grey if factor == 1 else cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        for detect, candidate in (
            (_sector_based, big),
            (_sector_based, 255 - big),
            (_classic, big),
            (_classic, 255 - big),
        ):
            found, corners = detect(candidate, pattern)
            if found:
                # resize maps pixel centres as x_big = (x + 0.5) * f - 0.5
                start = (np.asarray(corners, dtype=np.float64).reshape(-1, 2) + 0.5) / factor - 0.5
                return _refine(start, image, pattern)
    return None


def _sector_based(grey: np.ndarray, pattern: tuple[int, int]) -> tuple[bool, np.ndarray]:
    found, corners = cv2.findChessboardCornersSB(grey, pattern, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
    return bool(found), corners


def _classic(grey: np.ndarray, pattern: tuple[int, int]) -> tuple[bool, np.ndarray]:
    # No CALIB_CB_NORMALIZE_IMAGE here: the image is already stretched, and equalising its histogram
    # amplifies noise into thousands of candidate quads (seconds per failed search on 1024 x 1024).
    found, corners = cv2.findChessboardCorners(grey, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH)
    return bool(found), corners


def _refine(corners: np.ndarray, image: np.ndarray, pattern: tuple[int, int]) -> np.ndarray:
    """Sub-pixel corner refinement on the original image, window sized to the closest corner spacing."""
    cols, rows = pattern
    grid = corners.reshape(rows, cols, 2)
    spacing = min(
        float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min()),
        float(np.linalg.norm(np.diff(grid, axis=0), axis=2).min()),
    )
    half = int(np.clip(0.6 * spacing, 2, 30))
    grey = image.astype(np.float32)
    if grey.ndim == 3:
        grey = grey[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-4)
    start = corners.astype(np.float32).reshape(-1, 1, 2)
    refined = cv2.cornerSubPix(np.ascontiguousarray(grey), start, (half, half), (-1, -1), criteria)
    return np.asarray(refined, dtype=np.float64).reshape(-1, 2)


def _grid_axes(corners: np.ndarray, pattern: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along the rows (first -> last corner of a row) and the columns of a corner grid."""
    cols, rows = pattern
    grid = corners.reshape(rows, cols, 2)
    along_row = (grid[:, -1] - grid[:, 0]).mean(axis=0)
    along_col = (grid[-1, :] - grid[0, :]).mean(axis=0)
    return along_row / np.linalg.norm(along_row), along_col / np.linalg.norm(along_col)


def match_corner_order(reference: np.ndarray, corners: np.ndarray, pattern: tuple[int, int]) -> np.ndarray:
    """Renumber ``corners`` so that they correspond one to one with ``reference`` (same physical corner).

    Of the corner grid's symmetries (180 degree rotation and mirrors; also transposes when the grid is
    square) the one whose row and column directions best agree with ``reference``'s is chosen. Valid
    when the two images are not mirrored relative to each other and rotated by less than 45 degrees.

    Args:
        reference: (cols * rows, 2) corners of the reference image (visible), row by row.
        corners: (cols * rows, 2) corners of the other image (IR), row by row.
        pattern: (cols, rows).

    Returns:
        (cols * rows, 2) ``corners`` reordered.

    """
    cols, rows = pattern
    ref_row, ref_col = _grid_axes(reference, pattern)
    grid = corners.reshape(rows, cols, 2)
    candidates = [grid, grid[::-1, ::-1], grid[::-1, :], grid[:, ::-1]]
    if cols == rows:
        transposed = grid.transpose(1, 0, 2)
        candidates += [transposed, transposed[::-1, ::-1], transposed[::-1, :], transposed[:, ::-1]]

    def agreement(candidate: np.ndarray) -> float:
        along_row, along_col = _grid_axes(candidate.reshape(-1, 2), pattern)
        return float(along_row @ ref_row + along_col @ ref_col)

    best = max(candidates, key=agreement)
    return np.ascontiguousarray(best.reshape(-1, 2))


def calibrate_from_checkerboard(
    visible: np.ndarray,
    infrared: np.ndarray,
    pattern: tuple[int, int],
    square_mm: float,
    *,
    date: str | None = None,
    ransac_threshold_px: float | None = None,
    max_rms_px: float = 2.0,
) -> Calibration:
    """Calibrate the camera pair from one capture of a heated checkerboard.

    Args:
        visible: (H, W) or (H, W, 3) visible image of the board (8 or 16 bit).
        infrared: (h, w) IR image of the same board (any numeric dtype; black squares warm).
        pattern: (cols, rows) inner corners per row and per column, e.g. (9, 6) for 10 x 7 squares.
        square_mm: side of one square in mm.
        date: stored as given (e.g. an ISO date); the library reads no clock.
        ransac_threshold_px: fit the homography with RANSAC at this threshold (visible pixels) instead of
            least squares over all corners; useful only if some corners are badly localised.
        max_rms_px: refuse a fit whose corner RMS exceeds this, in visible pixels (a bent board, a wrong
            detection).

    Returns:
        The calibration with mm/px, the homography, both image shapes, the board and the RMS.

    Raises:
        CalibrationError: bad arguments, no board found in one of the images (the message says which and
            what to check), or corners that do not fit a homography within ``max_rms_px``.

    """
    cols, rows = pattern
    if cols < 2 or rows < 2:
        raise CalibrationError(f"pattern must count at least 2x2 inner corners, got {cols}x{rows}")
    if not square_mm > 0:
        raise CalibrationError(f"square size must be > 0 mm, got {square_mm}")
    if visible.ndim not in (2, 3) or infrared.ndim != 2:
        raise CalibrationError(
            f"visible must be (H, W) or (H, W, 3) and infrared (h, w); got {visible.shape} and {infrared.shape}"
        )
    what = f"{cols}x{rows} inner corners ({cols + 1}x{rows + 1} squares)"
    visible_corners = find_corners(visible, pattern)
    if visible_corners is None:
        msg = (
            f"no checkerboard with {what} found in the visible image: check --pattern counts inner corners, "
            "that the whole board with a white margin is in view, in focus and evenly lit"
        )
        raise CalibrationError(msg)
    ir_corners = find_corners(infrared, pattern, upscale=(1, 2))
    if ir_corners is None:
        msg = (
            f"no checkerboard with {what} found in the infrared image: check --pattern, that the whole board is "
            "in the IR field of view and that it is heated enough to show contrast between the squares"
        )
        raise CalibrationError(msg)
    ir_corners = match_corner_order(visible_corners, ir_corners, pattern)

    method = cv2.RANSAC if ransac_threshold_px is not None else 0
    homography, _ = cv2.findHomography(
        ir_corners.astype(np.float32),
        visible_corners.astype(np.float32),
        method,
        ransac_threshold_px if ransac_threshold_px is not None else 3.0,
    )
    if homography is None or not np.isfinite(homography).all():
        raise CalibrationError("the IR and visible corners do not fit a homography: is the board flat?")
    homography = homography / homography[2, 2]
    residuals = np.linalg.norm(project_points(homography, ir_corners) - visible_corners, axis=1)
    rms = float(np.sqrt(np.mean(residuals**2)))
    if not rms <= max_rms_px:
        msg = (
            f"the IR corners fit the visible ones with an RMS of {rms:.2f} px (> {max_rms_px:g} px): check that the "
            "board is flat and fully visible in both images, and that neither image is mirrored"
        )
        raise CalibrationError(msg)

    grid = visible_corners.reshape(rows, cols, 2)
    spacings = np.concatenate(
        [
            np.linalg.norm(np.diff(grid, axis=1), axis=2).ravel(),
            np.linalg.norm(np.diff(grid, axis=0), axis=2).ravel(),
        ]
    )
    try:
        return Calibration(
            mm_per_px=float(square_mm / np.median(spacings)),
            ir_to_visible=tuple(tuple(float(v) for v in row) for row in homography),
            visible_shape=(int(visible.shape[0]), int(visible.shape[1])),
            ir_shape=(int(infrared.shape[0]), int(infrared.shape[1])),
            date=date,
            board=BoardGeometry(cols=cols, rows=rows, square_mm=square_mm),
            reprojection_rms_px=rms,
        )
    except ValidationError as exc:
        raise CalibrationError(f"the fitted calibration is invalid: {exc.errors()[0]['msg']}") from None


# --- synthetic board ------------------------------------------------------------------------------


def _square_wave_integral(x: np.ndarray, square: float) -> np.ndarray:
    """Integral from 0 to x of the square wave that is +1 on [0, s), -1 on [s, 2s), ... (a triangle wave)."""
    m = np.mod(x, 2 * square)
    return np.asarray(np.where(m < square, m, 2 * square - m), dtype=np.float64)


def _black_fraction(
    u: np.ndarray, v: np.ndarray, half: np.ndarray | float, size: tuple[float, float], square: float
) -> np.ndarray:
    """Fraction of a (2 half)^2 box centred on board point (u, v) mm that is covered by black squares.

    The board occupies [0, size[0]] x [0, size[1]] mm, squares alternate starting with a black one
    at the origin and everything outside the board is white. The checker is the product of two
    square waves, so the box average separates into 1-D integrals that have closed forms.
    """

    def integrals(t: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.clip(t - half, 0, length), np.clip(t + half, 0, length)
        return hi - lo, _square_wave_integral(hi, square) - _square_wave_integral(lo, square)

    inside_u, wave_u = integrals(u, size[0])
    inside_v, wave_v = integrals(v, size[1])
    area = (2 * np.asarray(half)) ** 2
    return np.asarray(0.5 * (inside_u * inside_v + wave_u * wave_v) / area)


def render_checkerboard_pair(
    pattern: tuple[int, int],
    square_mm: float,
    mm_per_px: float,
    ir_to_visible: np.ndarray,
    visible_shape: tuple[int, int],
    ir_shape: tuple[int, int],
    seed: int,
    *,
    angle_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a heated checkerboard as the visible and the IR camera see it.

    The board (``pattern`` inner corners, so one more square each way) lies centred in the visible
    image, rotated by ``angle_deg``, at ``mm_per_px``. Each camera pixel is the area average of the
    board model over the pixel's footprint (closed form, so edges are anti-aliased); the IR image is
    rendered at its native resolution by mapping every IR pixel through ``ir_to_visible`` onto the
    board, not by downsampling a warped visible image. Black squares are dark in visible light and
    warm (high counts) in IR. Then a little blur (optics; heat spreading in IR) and Gaussian noise.

    Args:
        pattern: (cols, rows) inner corners.
        square_mm: side of one square in mm.
        mm_per_px: visible scale.
        ir_to_visible: (3, 3) homography IR pixel -> visible pixel.
        visible_shape: (height, width) of the visible image.
        ir_shape: (height, width) of the IR image.
        seed: noise seed (the same seed gives the same images).
        angle_deg: rotation of the board in the visible image, counter-clockwise on screen.

    Returns:
        ``(visible, infrared)``: (H, W) uint8 and (h, w) uint16.

    Raises:
        CalibrationError: bad sizes, or the board does not fit inside the visible or the IR image.

    """
    cols, rows = pattern
    if min(cols, rows) < 2 or not square_mm > 0 or not mm_per_px > 0:
        msg = (
            f"need at least 2x2 inner corners and positive sizes, got {cols}x{rows}, {square_mm} mm, {mm_per_px} mm/px"
        )
        raise CalibrationError(msg)
    size = ((cols + 1) * square_mm, (rows + 1) * square_mm)
    rng = np.random.default_rng(seed)
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    height, width = visible_shape
    centre = np.array([(width - 1) / 2, (height - 1) / 2])

    def board_coords(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Visible pixel -> board mm (inverse of: rotate the centred board, scale by 1/mm_per_px, centre)."""
        dx, dy = (x - centre[0]) * mm_per_px, (y - centre[1]) * mm_per_px
        return cos * dx - sin * dy + size[0] / 2, sin * dx + cos * dy + size[1] / 2

    # The board outline (mm) -> visible pixels -> IR pixels: it must lie inside both images.
    outline_mm = np.array([[0, 0], [size[0], 0], [size[0], size[1]], [0, size[1]]]) - np.array(size) / 2
    rotate = np.array([[cos, sin], [-sin, cos]])
    outline = outline_mm @ rotate.T / mm_per_px + centre
    if outline.min() < 0 or (outline[:, 0] > width - 1).any() or (outline[:, 1] > height - 1).any():
        msg = (
            f"a {cols + 1}x{rows + 1} board of {square_mm:g} mm squares ({size[0]:g} x {size[1]:g} mm) does not fit "
            f"in the {width}x{height} px visible image at {mm_per_px:g} mm/px: use smaller squares or fewer corners"
        )
        raise CalibrationError(msg)
    h = np.asarray(ir_to_visible, dtype=np.float64)
    ih, iw = ir_shape
    in_ir = project_points(np.linalg.inv(h), outline)
    if in_ir.min() < 0 or (in_ir[:, 0] > iw - 1).any() or (in_ir[:, 1] > ih - 1).any():
        raise CalibrationError(f"the board does not fit in the {iw}x{ih} px IR image with this ir_to_visible")

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = board_coords(xs, ys)
    black = _black_fraction(u, v, 0.5 * mm_per_px, size, square_mm)
    visible = 215.0 - 170.0 * black
    visible = cv2.GaussianBlur(visible.astype(np.float32), (0, 0), 0.8) + rng.normal(0, 2.0, visible.shape)
    visible_u8 = np.clip(visible, 0, 255).round().astype(np.uint8)

    ys, xs = np.mgrid[0:ih, 0:iw].astype(np.float64)
    mapped = project_points(h, np.column_stack([xs.ravel(), ys.ravel()]))
    u, v = board_coords(mapped[:, 0].reshape(ih, iw), mapped[:, 1].reshape(ih, iw))
    w = h[2, 0] * xs + h[2, 1] * ys + h[2, 2]
    ir_px_mm = np.sqrt(np.abs(np.linalg.det(h) / w**3)) * mm_per_px  # local IR pixel size on the board
    black = _black_fraction(u, v, 0.5 * ir_px_mm, size, square_mm)
    infrared = 21000.0 + 2500.0 * black
    infrared = cv2.GaussianBlur(infrared.astype(np.float32), (0, 0), 0.7) + rng.normal(0, 25.0, infrared.shape)
    return visible_u8, np.clip(infrared, 0, 65535).round().astype(np.uint16)
