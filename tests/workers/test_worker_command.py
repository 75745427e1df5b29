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


def test_a_width_family_runs_only_when_the_model_is_its_widest(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from inspector.config import WorkerSettings
    from workers.commands.worker import width_family

    widths = ("missing-w100.pt", "missing-w50.pt")
    assert width_family(Settings()) is None  # no family configured
    with caplog.at_level(logging.WARNING, logger="workers.commands.worker"):
        assert width_family(Settings(worker=WorkerSettings(model="baseline", widths=widths))) is None
    assert "running it alone" in caplog.text  # the files are never opened: baseline runs
    with pytest.raises(Exception, match=r"missing-w100\.pt"):  # the family is loaded when the model leads it
        width_family(Settings(worker=WorkerSettings(model="missing-w100.pt", widths=widths)))
