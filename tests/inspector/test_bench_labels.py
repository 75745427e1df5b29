"""The label-efficiency benchmark: its arithmetic, and one tiny run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.commands.bench_labels import pairs_to_reach, steps_to_reach, validation_curve

runner = CliRunner()


def test_pairs_to_reach_interpolates_on_a_log_scale() -> None:
    assert pairs_to_reach([10, 100], [0.5, 0.9], 0.7) == pytest.approx(math.sqrt(10 * 100))
    assert pairs_to_reach([10, 100], [0.95, 0.99], 0.9) == 10
    assert pairs_to_reach([10, 100], [0.5, 0.6], 0.9) is None
    assert pairs_to_reach([100, 10], [0.9, 0.5], 0.9) == pytest.approx(100)  # order of the counts does not matter
    assert pairs_to_reach([50], [0.92], 0.9) == 50


def test_steps_to_reach_a_share_of_the_final_value() -> None:
    curve = [(10, 0.2), (20, 0.6), (30, 0.75), (40, 0.8)]
    assert steps_to_reach(curve, 0.9) == 30  # 0.9 * 0.8 = 0.72
    assert steps_to_reach(curve, 0.5) == 20
    assert steps_to_reach([], 0.9) is None


def test_validation_curve_reads_eval_rows_only(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"split": "train", "step": 1, "loss": 1.0}, {"split": "eval", "step": 2, "val_f1": 0.5}]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert validation_curve(metrics) == [(2, 0.5)]


@pytest.mark.slow
def test_bench_labels_end_to_end(small_line: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 1, seed=128, preset="default", size=256)
    generate_set(tmp_path / "heldout", 2, seed=129, preset="default", size=256)
    out = tmp_path / "labels"
    args = ["bench", "labels", "--data", str(small_line), "--val", str(tmp_path / "val"),
            "--heldout", str(tmp_path / "heldout"), "--out", str(out), "--counts", "2,8", "--steps", "2",
            "--pretrain-steps", "2", "--batch", "2", "--tile", "64", "--width", "8", "--limit", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "bench.json").read_text())
    assert set(doc["f1"]) == {"scratch", "ppt"} and set(doc["f1"]["ppt"]) == {"2", "8"}
    assert all(0 <= v <= 1 for arm in doc["f1"].values() for v in arm.values())
    assert (out / "labels.png").stat().st_size > 0
    assert (out / "hffn-ppt-8.pt").exists() and (out / "hffn-pretrained.pt").exists()
