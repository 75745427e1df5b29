"""What `inspector worker` builds from settings: model info and the per-camera calibrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.calibration import Calibration, save_calibration
from inspector.config import Settings
from inspector.model import create_model
from workers.commands.worker import model_info, read_calibrations
from workers.errors import WorkerError


def test_calibrations_are_read_per_camera(tmp_path: Path) -> None:
    calibration = Calibration(
        mm_per_px=0.05, ir_to_visible=((4.0, 0.0, 1.5), (0.0, 4.0, 1.5), (0.0, 0.0, 1.0)),
        visible_shape=(1024, 1024), ir_shape=(256, 256),
    )  # fmt: skip
    save_calibration(tmp_path / "rig-7.yaml", calibration)
    read = read_calibrations(tmp_path)
    assert list(read) == ["rig-7"] and read["rig-7"].mm_per_px == 0.05
    with pytest.raises(WorkerError, match="calibration_dir"):
        read_calibrations(tmp_path / "missing")


def test_model_info_names_the_model_file() -> None:
    info = model_info(create_model("crack-concat"), Settings())
    assert info["name"] == "crack-concat" and len(info["sha256"]) == 64 and info["width"] == 1.0
