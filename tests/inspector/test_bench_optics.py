"""``inspector bench optics``: the same held-out parts at several optics levels, scored per model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.commands.bench_optics import SETTINGS_FILE, score_row
from inspector.commands.evaluate import FolderEvaluation
from inspector.dataset import list_ids, read_sample
from inspector.evaluate import evaluate_sample
from inspector.synth import generate_sample
from inspector.synth.sweep import SweepLevel

runner = CliRunner()
ROW_KEYS = {
    "label", "factor", "value", "samples", "pixel_f1", "crack_recall_ge_0_2", "cracks_ge_0_2", "escape_rate",
    "false_reject_rate", "width_bias_mm_ge_0_2", "width_mae_mm_ge_0_2", "a90_95_mm", "bias_ok", "mae_ok", "meets",
    "failed",
}  # fmt: skip


def test_bench_optics_end_to_end_on_a_tiny_sweep(tmp_path: Path) -> None:
    args = ["bench", "optics", "--count", "3", "--size", "256", "--blur", "0,1.0", "--models", "baseline"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert printed == doc and doc["benchmark"] == "optics" and doc["seed"] == 9005
    assert [lv["label"] for lv in doc["levels"]] == ["blur 0 px", "blur 1 px"]
    rows = doc["models"]["baseline"]["rows"]
    assert len(rows) == 2 and all(set(r) == ROW_KEYS for r in rows)
    assert [r["value"] for r in rows] == [0.0, 1.0] and all(r["samples"] == 3 for r in rows)
    for row in rows:
        assert row["meets"] == (row["bias_ok"] and row["mae_ok"])
        if row["width_bias_mm_ge_0_2"] is not None:
            assert row["bias_ok"] == (abs(row["width_bias_mm_ge_0_2"]) <= 0.02)
    assert (tmp_path / "width_vs_blur.png").stat().st_size > 0
    # same parts at every level, only the visible image differs
    plain, blurred = tmp_path / "data" / "identity", tmp_path / "data" / "blur-1"
    assert list_ids(plain) == list_ids(blurred) and len(list_ids(plain)) == 3
    a, b = read_sample(plain, list_ids(plain)[0]), read_sample(blurred, list_ids(plain)[0])
    assert a.meta == b.meta and not np.array_equal(a.visible, b.visible)
    assert (blurred / SETTINGS_FILE).is_file()

    stamp = (plain / list_ids(plain)[0]).with_suffix(".visible.png").stat().st_mtime_ns
    again = runner.invoke(app, [*args, "--out", str(tmp_path), "--blur", "0"])
    assert again.exit_code == 0, again.output
    assert "reusing the blur 0 px set" in again.output and "baseline: optics sweep" in again.output
    assert (plain / list_ids(plain)[0]).with_suffix(".visible.png").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "100"], "held-out data must never overlap"),
        (["--blur", "0,x"], "is not a number"),
        (["--blur", "4"], "psf_blur_px"),
        (["--jpeg", "50.5"], "whole number"),
        (["--preset", "medium"], "choose one of"),
        (["--models", "nope"], "nope"),
        (["--size", "130"], "multiple of the IR downscale"),
    ],
)
def test_bench_optics_refuses_bad_input_with_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", "optics", "--count", "1", "--size", "64", "--out", str(tmp_path), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "data").exists()


def test_bench_optics_never_deletes_a_folder_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "data" / "identity"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine\n")
    result = runner.invoke(
        app, ["bench", "optics", "--count", "1", "--size", "64", "--blur", "0", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "did not write" in result.output
    assert (foreign / "notes.txt").exists()


def test_an_interrupted_or_changed_set_of_ours_is_made_again(tmp_path: Path) -> None:
    args = ["bench", "optics", "--count", "1", "--size", "128", "--blur", "0", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    folder = tmp_path / "data" / "identity"
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    (folder / SETTINGS_FILE).write_text(json.dumps(settings | {"complete": False}))  # as if interrupted
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "generated the blur 0 px set" in result.output
    result = runner.invoke(app, [*args, "--count", "2"])
    assert result.exit_code == 0 and "generated the blur 0 px set" in result.output
    assert len(list_ids(folder)) == 2 and json.loads((folder / SETTINGS_FILE).read_text())["count"] == 2


def test_width_bias_of_perfect_predictions() -> None:
    samples = [generate_sample(i, 9100, "default", size=256, clean_fraction=0.0) for i in range(3)]
    evaluations = []
    for s in samples:
        assert s.mask is not None
        evaluations.append(evaluate_sample(s.meta, s.mask, s.mask.astype(np.float32), "NG"))
    evaluated = FolderEvaluation(evaluations=evaluations, failures=[])
    row = score_row(SweepLevel("blur", 0.0), evaluated)
    bias = row["width_bias_mm_ge_0_2"]
    assert np.isfinite(bias) and abs(bias) < 0.05  # the ground-truth mask measures the true width
    assert row["width_mae_mm_ge_0_2"] >= abs(bias)
    assert row["a90_95_mm"] is None  # every crack found: no misses, no POD fit
