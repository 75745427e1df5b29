"""``inspector bench step``: the whole worker step per configuration, ratios from the run's own figures."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

import mla
from inspector.cli import app
from inspector.training import crack_model_config


def test_bench_step_times_each_configuration_side_by_side(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "tiny.pt"
    mla.save_model(mla.MLAModel(crack_model_config("concat", width=8)).eval(), model, metadata={"name": "tiny"})
    out = tmp_path / "step.json"
    args = ["bench", "step", "--models", f"baseline,{model}", "--backends", "onnxruntime", "--lanes", "1,2",
            "--size", "256", "--captures", "4", "--repeats", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    rows = document["rows"]
    expected = [("baseline", 1), ("baseline", 2), (str(model), 1), (str(model), 2)]
    assert [(r["model"], r["lanes"]) for r in rows] == expected
    assert rows[0]["speedup_vs_baseline"] == 1.0 and document["conv_reference_gflops"] > 0
    for row in rows:
        assert len(row["seconds_per_pass"]) == 2 and row["captures"] == 4
        median = sorted(row["seconds_per_pass"])[0] / 2 + sorted(row["seconds_per_pass"])[1] / 2
        assert abs(row["megapixels_per_s"] - 4 * 256 * 256 / 1e6 / median) < 1e-9
        assert set(row["stage_ms_p50"]) == {"register", "model", "measure"} and row["model_alone_ms"] > 0
    learned = rows[2]
    assert learned["backend"] == "onnxruntime CPUExecutionProvider" and learned["parity_max_abs_diff"] < 1e-3
    assert learned["threads_per_lane"] >= 1 and rows[3]["threads_per_lane"] == max(1, learned["threads_per_lane"] // 2)
    assert "worker step" in result.output
