from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from inspector.calibration import (
    BoardGeometry,
    Calibration,
    CalibrationError,
    calibrate_from_checkerboard,
    load_calibration,
    match_corner_order,
    render_checkerboard_pair,
    save_calibration,
)
from inspector.commands import calibrate as calibrate_command
from inspector.registration import project_points, warp_to_visible

MM_PER_PX = 0.05
VISIBLE_SHAPE = (1024, 1024)
IR_SHAPE = (256, 256)


def ir_to_visible(scale: float, degrees: float, shift: tuple[float, float], tilt: tuple[float, float]) -> np.ndarray:
    """An IR -> visible homography that puts the IR centre near the visible centre."""
    theta = np.deg2rad(degrees)
    h = np.array(
        [
            [scale * np.cos(theta), -scale * np.sin(theta), 0.0],
            [scale * np.sin(theta), scale * np.cos(theta), 0.0],
            [tilt[0], tilt[1], 1.0],
        ]
    )
    centre = project_points(h, np.array([[127.5, 127.5]]))[0]
    move = np.array([[1, 0, 511.5 - centre[0] + shift[0]], [0, 1, 511.5 - centre[1] + shift[1]], [0, 0, 1.0]])
    return move @ h


def field_error(estimated: np.ndarray, truth: np.ndarray) -> float:
    """Largest distance in visible px between the two mappings over a grid covering the whole IR field."""
    ys, xs = np.mgrid[0 : IR_SHAPE[0] : 17, 0 : IR_SHAPE[1] : 17]
    grid = np.vstack([np.column_stack([xs.ravel(), ys.ravel()]), [[255, 0], [0, 255], [255, 255]]]).astype(float)
    return float(np.linalg.norm(project_points(estimated, grid) - project_points(truth, grid), axis=1).max())


CASES = {
    "9x6-straight": ((9, 6), 4.0, 0.0, ir_to_visible(4.1, 1.5, (6, -4), (3e-6, -2e-6))),
    "8x5-rotated": ((8, 5), 4.5, 10.0, ir_to_visible(4.1, -2.0, (-5, 3), (-2e-6, 4e-6))),
    "7x7-square-grid": ((7, 7), 5.0, -3.0, ir_to_visible(4.0, 0.5, (2, 8), (0.0, 0.0))),
}


@pytest.mark.parametrize("case", CASES)
def test_calibration_recovers_the_homography_and_scale(case: str) -> None:
    pattern, square_mm, angle, truth = CASES[case]
    visible, infrared = render_checkerboard_pair(
        pattern, square_mm, MM_PER_PX, truth, VISIBLE_SHAPE, IR_SHAPE, seed=3, angle_deg=angle
    )

    calibration = calibrate_from_checkerboard(visible, infrared, pattern, square_mm, date="2025-01-31")

    assert field_error(calibration.homography, truth) < 1.0  # measured 0.07-0.19 px
    assert calibration.mm_per_px == pytest.approx(MM_PER_PX, rel=0.01)  # measured < 0.01 %
    assert calibration.reprojection_rms_px is not None and calibration.reprojection_rms_px < 0.5
    assert calibration.visible_shape == VISIBLE_SHAPE and calibration.ir_shape == IR_SHAPE
    assert calibration.board == BoardGeometry(cols=pattern[0], rows=pattern[1], square_mm=square_mm)
    assert calibration.date == "2025-01-31"


def test_rendered_pair_has_inverted_contrast() -> None:
    truth = CASES["9x6-straight"][3]
    visible, infrared = render_checkerboard_pair((9, 6), 4.0, MM_PER_PX, truth, VISIBLE_SHAPE, IR_SHAPE, seed=1)
    assert visible.dtype == np.uint8 and visible.shape == VISIBLE_SHAPE
    assert infrared.dtype == np.uint16 and infrared.shape == IR_SHAPE
    # Warped onto the visible grid with the true homography, warm IR sits exactly on the dark squares.
    warped = warp_to_visible(infrared, truth, VISIBLE_SHAPE)
    valid = np.isfinite(warped)
    assert np.corrcoef(visible[valid].astype(float), warped[valid])[0, 1] < -0.95


def test_rendered_pair_is_reproducible() -> None:
    h = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]])
    small = ((5, 4), 4.0, 0.1, h, (512, 512), (128, 128))
    first, again, other = (render_checkerboard_pair(*small, seed=seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_render_refuses_a_board_that_does_not_fit() -> None:
    with pytest.raises(CalibrationError, match="does not fit"):
        render_checkerboard_pair((9, 6), 6.0, MM_PER_PX, np.diag([4.0, 4.0, 1.0]), VISIBLE_SHAPE, IR_SHAPE, seed=0)


def test_match_corner_order_undoes_reversed_mirrored_and_transposed_detections() -> None:
    cols, rows = 5, 3
    ys, xs = np.mgrid[0:rows, 0:cols]
    visible = np.column_stack([xs.ravel() * 40 + 100, ys.ravel() * 40 + 50]).astype(float)
    theta = np.deg2rad(10)  # the IR camera is rotated 10 degrees and 4x coarser
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    ir = visible @ rotation.T / 4 + 7
    grid = ir.reshape(rows, cols, 2)
    for detected in (grid, grid[::-1, ::-1], grid[::-1], grid[:, ::-1]):
        np.testing.assert_array_equal(match_corner_order(visible, detected.reshape(-1, 2), (cols, rows)), ir)

    square = np.column_stack([np.mgrid[0:4, 0:4][1].ravel(), np.mgrid[0:4, 0:4][0].ravel()]).astype(float) * 30
    turned = square.reshape(4, 4, 2).transpose(1, 0, 2)[::-1]  # the grid read column by column from the end
    np.testing.assert_array_equal(match_corner_order(square, turned.reshape(-1, 2), (4, 4)), square)


def test_board_not_found_names_the_image() -> None:
    truth = CASES["9x6-straight"][3]
    visible, infrared = render_checkerboard_pair((9, 6), 4.0, MM_PER_PX, truth, VISIBLE_SHAPE, IR_SHAPE, seed=0)
    cold = np.full(IR_SHAPE, 21000, np.uint16) + np.random.default_rng(0).integers(0, 30, IR_SHAPE).astype(np.uint16)
    with pytest.raises(CalibrationError, match=r"infrared image.*heated"):
        calibrate_from_checkerboard(visible, cold, (9, 6), 4.0)
    with pytest.raises(CalibrationError, match=r"visible image.*--pattern"):
        calibrate_from_checkerboard(np.full(VISIBLE_SHAPE, 200, np.uint8), infrared, (9, 6), 4.0)


def test_corners_that_do_not_fit_a_homography_are_refused() -> None:
    truth = CASES["9x6-straight"][3]
    visible, infrared = render_checkerboard_pair((9, 6), 4.0, MM_PER_PX, truth, VISIBLE_SHAPE, IR_SHAPE, seed=0)
    # Ripple the board in the IR image: a smooth, non-projective distortion of up to 2 IR px (8 visible px).
    ys, xs = np.mgrid[0 : IR_SHAPE[0], 0 : IR_SHAPE[1]].astype(np.float32)
    bent = cv2.remap(infrared, xs + 2 * np.sin(ys / 8), ys, cv2.INTER_LINEAR)
    with pytest.raises(CalibrationError, match=r"RMS of .* px \(> 2 px\)"):
        calibrate_from_checkerboard(visible, bent, (9, 6), 4.0)
    assert calibrate_from_checkerboard(visible, bent, (9, 6), 4.0, max_rms_px=20).reprojection_rms_px > 2


def make_calibration() -> Calibration:
    return Calibration(
        mm_per_px=0.0501,
        ir_to_visible=((4.01, -0.07, 12.5), (0.07, 4.01, -3.25), (1e-6, -2e-6, 1.0)),
        visible_shape=(1024, 1024),
        ir_shape=(256, 256),
        date="2025-01-31",
        board=BoardGeometry(cols=9, rows=6, square_mm=4.0),
        reprojection_rms_px=0.123456789,
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    calibration = make_calibration()
    path = tmp_path / "cell-3" / "calibration.yaml"
    save_calibration(path, calibration)
    assert load_calibration(path) == calibration
    data = yaml.safe_load(path.read_text())
    assert data["schema"] == "inspector.calibration/1" and data["visible_shape"] == [1024, 1024]


VALID = make_calibration().model_dump(mode="json", by_alias=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("mm_per_px: [0.05\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a YAML mapping"),
        (yaml.safe_dump({**VALID, "mm_per_pixel": 0.05}), "mm_per_pixel: Extra inputs are not permitted"),
        (yaml.safe_dump({k: v for k, v in VALID.items() if k != "ir_shape"}), "ir_shape: Field required"),
        (yaml.safe_dump({**VALID, "mm_per_px": -1}), "mm_per_px: Input should be greater than 0"),
        (yaml.safe_dump({**VALID, "ir_to_visible": [[1, 2, 3], [2, 4, 6], [0, 0, 1]]}), "not invertible"),
        (yaml.safe_dump({**VALID, "ir_to_visible": [[1, 0, 0], [0, 1, 0]]}), "ir_to_visible"),
        (yaml.safe_dump({**VALID, "ir_to_visible": [[4, 0, 9e6], [0, 4, 0], [0, 0, 1]]}), "far outside"),
    ],
    ids=["missing", "not-yaml", "list", "unknown", "absent", "negative", "singular", "2x3", "off-image"],
)
def test_bad_calibration_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "calibration.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibrationError, match=message) as info:
        load_calibration(path)
    assert str(path) in str(info.value)


# --- CLI ------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    calibrate_command.register(app)

    @app.command()
    def other() -> None:  # a second command, so that `calibrate` is a sub-command as in `inspector`
        """Nothing."""

    return app


@pytest.fixture(scope="module")
def pair(cli: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    result = runner.invoke(cli, ["calibrate", "--synthetic", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)
    assert "--square-mm 4" in written["command"]
    return Path(written["visible"]), Path(written["infrared"])


def test_cli_calibrates_the_synthetic_pair(cli: typer.Typer, pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "calibration.yaml"
    args = ["calibrate", "--visible", str(pair[0]), "--infrared", str(pair[1]), "--pattern", "9x6"]
    result = runner.invoke(cli, [*args, "--square-mm", "4", "--out", str(out), "--date", "2025-02-01", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["out"] == str(out) and data["mm_per_px"] == pytest.approx(0.05, rel=0.01)
    calibration = load_calibration(out)
    assert calibration.date == "2025-02-01"
    assert field_error(calibration.homography, calibrate_command.synthetic_homography()) < 1.0

    table = runner.invoke(cli, [*args, "--square-mm", "4", "--out", str(out)])
    assert table.exit_code == 0, table.output
    assert "mm/px" in table.output and "RMS" in table.output and "IR -> visible" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "9by6"], "COLSxROWS"),
        (["--synthetic", "{tmp}", "--square-mm", "-1"], "positive sizes"),
        (["--pattern", "9x6"], "--square-mm"),
        (["--pattern", "9x6", "--square-mm", "4", "--infrared", "missing.png"], "does not exist"),
        (["--pattern", "10x6", "--square-mm", "4"], "no checkerboard with 10x6 inner corners"),
    ],
)
def test_cli_bad_input_exits_2(
    cli: typer.Typer, pair: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    inputs = ["--visible", str(pair[0]), "--infrared", str(pair[1])]
    result = runner.invoke(cli, ["calibrate", *inputs, *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_needs_both_images_and_documents_synthetic(cli: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["calibrate", "--square-mm", "4"])
    assert result.exit_code == 2 and "--visible and --infrared" in result.output
    not_png = tmp_path / "v.png"
    not_png.write_text("not an image")
    result = runner.invoke(
        cli, ["calibrate", "--visible", str(not_png), "--infrared", str(not_png), "--square-mm", "4"]
    )
    assert result.exit_code == 2 and "not a readable image" in result.output
    help_text = runner.invoke(cli, ["calibrate", "--help"], env={"COLUMNS": "200"}).output
    assert "--synthetic" in help_text and "without a camera" in help_text


def test_cli_reads_colour_and_8_bit_images(cli: typer.Typer, pair: tuple[Path, Path], tmp_path: Path) -> None:
    visible = cv2.cvtColor(cv2.imread(str(pair[0]), cv2.IMREAD_UNCHANGED), cv2.COLOR_GRAY2BGR)
    infrared = (cv2.imread(str(pair[1]), cv2.IMREAD_UNCHANGED) // 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "v.png"), visible)
    cv2.imwrite(str(tmp_path / "ir.png"), infrared)
    args = ["--visible", str(tmp_path / "v.png"), "--infrared", str(tmp_path / "ir.png"), "--square-mm", "4"]
    result = runner.invoke(cli, ["calibrate", *args, "--out", str(tmp_path / "c.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mm_per_px"] == pytest.approx(0.05, rel=0.01)
