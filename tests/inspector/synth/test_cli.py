from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from inspector.commands.synth import register
from inspector.dataset import list_ids, read_sample

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test entry point (keeps synth a sub-command)."""

    register(app)
    return app


def test_synth_writes_a_set_and_summarises_it(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "set"
    args = ["synth", "--out", str(out), "--count", "4", "--size", "128", "--seed", "3", "--preset", "hard"]
    result = runner.invoke(app, [*args, "--clean-fraction", "0.5", "--mm-per-px", "0.1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    ids = list_ids(out)
    assert ids == [f"hard-3-{i:06d}" for i in range(4)]
    metas = [read_sample(out, i).meta for i in ids]
    assert summary["count"] == 4 and summary["clean_parts"] == sum(m.is_clean for m in metas)
    assert summary["cracks"] == sum(len(m.cracks) for m in metas) == sum(summary["width_bins_mm"].values())
    sample = read_sample(out, ids[0])
    assert sample.meta.mm_per_px == 0.1 and sample.visible.shape == (128, 128) and sample.infrared.shape == (32, 32)


def test_synth_table_output_and_overrides(app: typer.Typer, tmp_path: Path) -> None:
    args = ["synth", "-o", str(tmp_path), "-n", "2", "--size", "128", "--rgb", "--set", "max_branches=0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pairs/s" in result.output and "clean parts" in result.output
    assert read_sample(tmp_path, "default-0-000000").visible.shape == (128, 128, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "medium"], "choose one of clean, default, hard"),
        (["--size", "130"], "multiple of the IR downscale"),
        (["--set", "crack_contrast=[0.9,0.1]"], "crack_contrast"),
        (["--set", "nonsense"], "KEY=VALUE"),
        (["--count", "0"], "count"),
    ],
)
def test_synth_rejects_bad_input_with_exit_2(app: typer.Typer, tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--size", "128", *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x").exists()


def test_synth_help_explains(app: typer.Typer) -> None:
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0
    for word in ("--preset", "--mm-per-px", "--clean-fraction", "--workers", "infrared", "hard"):
        assert word in result.output


def test_synth_reports_a_write_failure_with_exit_1(app: typer.Typer, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("x\n")
    result = runner.invoke(app, ["synth", "--out", str(blocked), "--count", "1", "--size", "64"])
    assert result.exit_code == 1
    assert "could not write" in result.output


def test_capture_options_reach_the_config_and_leave_the_truth(app: typer.Typer, tmp_path: Path) -> None:
    from inspector.synth import generate_sample, get_preset

    capture = ["--blur-px", "1.0", "--gain", "1.2", "--gamma", "0.9", "--noise-dn", "2", "--jpeg-quality", "70"]
    base = ["synth", "--count", "1", "--size", "128", "--seed", "4", "--clean-fraction", "0"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "varied"), *capture])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    varied, plain = (
        read_sample(tmp_path / "varied", "default-4-000000"),
        read_sample(tmp_path / "plain", "default-4-000000"),
    )
    config = get_preset("default", psf_blur_px=1.0, gain=1.2, gamma=0.9, sensor_noise_dn=2.0, jpeg_quality=70)
    expected = generate_sample(0, 4, config, size=128, clean_fraction=0.0)
    assert (varied.visible == expected.visible).all()
    assert not (varied.visible == plain.visible).all()
    assert varied.meta == plain.meta and varied.mask is not None and plain.mask is not None
    assert (varied.mask == plain.mask).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--blur-px", "0.5", "--set", "psf_blur_px=1"], "give only one"),
        (["--blur-px", "4"], "--blur-px"),
        (["--jpeg-quality", "0"], "--jpeg-quality"),
        (["--gain", "0"], "--gain"),
    ],
)
def test_capture_options_reject_bad_values_with_exit_2(
    app: typer.Typer, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--size", "128", *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x").exists()


def test_synth_help_explains_the_capture_options(app: typer.Typer) -> None:
    result = runner.invoke(app, ["synth", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for word in ("--blur-px", "--gain", "--gamma", "--noise-dn", "--jpeg-quality", "ground truth"):
        assert word in result.output
