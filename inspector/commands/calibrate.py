"""``inspector calibrate``: visible mm/px and the IR -> visible homography from a heated checkerboard."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from inspector.calibration import (
    Calibration,
    CalibrationError,
    calibrate_from_checkerboard,
    render_checkerboard_pair,
    save_calibration,
)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

# The synthetic pair: a 1024 x 1024 visible frame at 0.05 mm/px and a 256 x 256 IR frame, the IR camera
# rotated by 1 degree, slightly shifted and tilted relative to the visible one.
SYNTHETIC_MM_PER_PX = 0.05
SYNTHETIC_VISIBLE_SHAPE = (1024, 1024)
SYNTHETIC_IR_SHAPE = (256, 256)
SYNTHETIC_SQUARE_MM = 4.0


def synthetic_homography() -> np.ndarray:
    """The IR -> visible homography of the ``--synthetic`` pair (scale 4, 1 degree, small shift and tilt)."""
    theta = np.deg2rad(1.0)
    scale = 4.0
    rotate = np.array(
        [
            [scale * np.cos(theta), -scale * np.sin(theta), 0.0],
            [scale * np.sin(theta), scale * np.cos(theta), 0.0],
            [2e-6, -1e-6, 1.0],
        ]
    )
    centre = rotate @ np.array([127.5, 127.5, 1.0])
    shift = np.array(
        [[1.0, 0.0, 511.5 - centre[0] / centre[2] + 7], [0.0, 1.0, 511.5 - centre[1] / centre[2] - 5], [0, 0, 1]]
    )
    homography = shift @ rotate
    return np.asarray(homography / homography[2, 2], dtype=np.float64)


def parse_pattern(text: str) -> tuple[int, int]:
    """Parse ``COLSxROWS`` (inner corners), e.g. ``9x6``.

    Raises:
        typer.BadParameter: not of that form, or fewer than 2 corners either way.

    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 2:
        msg = f"{text!r}: expected COLSxROWS inner corners, e.g. 9x6 for a board of 10x7 squares"
        raise typer.BadParameter(msg, param_hint="--pattern")
    return int(match[1]), int(match[2])


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _read(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise _fail(f"{what} image {path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise _fail(f"{what} image {path} is not a readable image (PNG, TIFF, ...)")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return np.asarray(image)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise _fail(f"could not encode {path} as PNG")
    path.write_bytes(data.tobytes())


def _write_synthetic(out_dir: Path, pattern: tuple[int, int], square_mm: float) -> tuple[Path, Path]:
    visible, infrared = render_checkerboard_pair(
        pattern,
        square_mm,
        SYNTHETIC_MM_PER_PX,
        synthetic_homography(),
        SYNTHETIC_VISIBLE_SHAPE,
        SYNTHETIC_IR_SHAPE,
        seed=0,
        angle_deg=3.0,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "checkerboard.visible.png", out_dir / "checkerboard.infrared.png"
    _write_png(paths[0], visible)
    _write_png(paths[1], infrared)
    return paths


def _show(calibration: Calibration, out: Path) -> None:
    table = Table("quantity", "value", title=f"calibration written to {out}")
    table.add_row("visible mm/px", f"{calibration.mm_per_px:.6f}")
    table.add_row("reprojection RMS", f"{calibration.reprojection_rms_px:.3f} visible px")
    table.add_row("visible (h x w)", "{} x {}".format(*calibration.visible_shape))
    table.add_row("infrared (h x w)", "{} x {}".format(*calibration.ir_shape))
    for i, row in enumerate(calibration.ir_to_visible):
        table.add_row("IR -> visible" if i == 0 else "", " ".join(f"{v:>12.6g}" for v in row))
    console.print(table)


def calibrate(
    visible: Annotated[Path | None, typer.Option("--visible", help="Visible image of the heated checkerboard.")] = None,
    infrared: Annotated[Path | None, typer.Option("--infrared", help="Infrared image of the same board.")] = None,
    pattern: Annotated[
        str, typer.Option("--pattern", help="Inner corners COLSxROWS, e.g. 9x6 for a board of 10x7 squares.")
    ] = "9x6",
    square_mm: Annotated[
        float | None, typer.Option("--square-mm", help="Side of one square in mm, measured on the board.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Calibration file to write.")] = Path("calibration.yaml"),
    date: Annotated[str | None, typer.Option("--date", help="Calibration date to record; default today (UTC).")] = None,
    synthetic: Annotated[
        Path | None,
        typer.Option(
            "--synthetic",
            help=(
                "Write a rendered heated-checkerboard pair (checkerboard.visible.png, checkerboard.infrared.png; "
                "1024x1024 visible at 0.05 mm/px, 256x256 IR; --pattern, --square-mm default 4) into this folder "
                "and print the command that calibrates from it, to try without a camera."
            ),
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Calibrate the camera pair from one capture of a heated checkerboard.

    Finds the board's inner corners in both images (black squares are dark in visible light, warm in IR).
    Fits the IR -> visible homography and the visible mm/px, and writes them to --out.
    Exit code 2 when an image cannot be read or the board is not found.
    """
    try:
        cols_rows = parse_pattern(pattern)
    except typer.BadParameter as exc:
        raise _fail(f"--pattern {exc}") from None
    if synthetic is not None:
        square = SYNTHETIC_SQUARE_MM if square_mm is None else square_mm
        try:
            vis_path, ir_path = _write_synthetic(synthetic, cols_rows, square)
        except CalibrationError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"cannot write the synthetic pair into {synthetic}: {exc}") from None
        command = (
            f"inspector calibrate --visible {vis_path} --infrared {ir_path} "
            f"--pattern {cols_rows[0]}x{cols_rows[1]} --square-mm {square:g} --out {out}"
        )
        if as_json:
            console.print_json(data={"visible": str(vis_path), "infrared": str(ir_path), "command": command})
        else:
            console.print(
                f"wrote {vis_path} and {ir_path}; calibrate with:\n  {command}", highlight=False, soft_wrap=True
            )
        return
    if visible is None or infrared is None:
        missing = [flag for flag, value in (("--visible", visible), ("--infrared", infrared)) if value is None]
        raise _fail(f"give {' and '.join(missing)} (or --synthetic DIR to render a test pair first)")
    if square_mm is None or not square_mm > 0:
        raise _fail("give --square-mm, the side of one board square in mm (> 0), measured on the board")
    visible_image = _read(visible, "visible")
    infrared_image = _read(infrared, "infrared")
    when = date if date is not None else datetime.now(UTC).date().isoformat()
    try:
        calibration = calibrate_from_checkerboard(visible_image, infrared_image, cols_rows, square_mm, date=when)
    except CalibrationError as exc:
        raise _fail(f"{exc} ({visible}, {infrared})") from None
    try:
        save_calibration(out, calibration)
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc}") from None
    if as_json:
        data = calibration.model_dump(mode="json", by_alias=True)
        console.print_json(data={"out": str(out), **data})
    else:
        _show(calibration, out)


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command to the ``inspector`` app."""
    app.command("calibrate")(calibrate)
