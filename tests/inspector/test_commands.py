"""The CLI commands end to end on a small synthetic line: predict, predict-dir, eval, bench, demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.calibration import Calibration, save_calibration
from inspector.cli import app
from inspector.dataset import list_ids, read_meta

runner = CliRunner()


@pytest.fixture(scope="module")
def predictions(small_line: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pred")
    result = runner.invoke(app, ["predict-dir", str(small_line), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


def pair(data: Path, sample_id: str) -> tuple[str, str]:
    return str(data / f"{sample_id}.visible.png"), str(data / f"{sample_id}.infrared.png")


def test_predict_one_pair_with_mm_per_px(small_line: Path, tmp_path: Path) -> None:
    sample_id = list_ids(small_line)[0]
    result = runner.invoke(
        app, ["predict", *pair(small_line, sample_id), "--mm-per-px", "0.05", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["id"] == sample_id and doc["verdict"] in ("OK", "NG")
    assert set(doc["timings_ms"]) == {"register", "model", "measure", "total"}
    assert (tmp_path / f"{sample_id}.pred.png").exists()
    lenient = runner.invoke(
        app, ["predict", *pair(small_line, sample_id), "--mm-per-px", "0.05", "--out", str(tmp_path), "--json",
              "--min-width-mm", "5"]
    )  # fmt: skip
    assert json.loads(lenient.output)["verdict"] == "OK"  # no crack is 5 mm wide


def test_predict_with_calibration_file(small_line: Path, tmp_path: Path) -> None:
    sample_id = list_ids(small_line)[1]
    meta = read_meta(small_line / f"{sample_id}.json")
    cal = Calibration(
        mm_per_px=meta.mm_per_px, ir_to_visible=meta.ir_to_visible, visible_shape=(384, 384), ir_shape=(96, 96)
    )
    save_calibration(tmp_path / "calibration.yaml", cal)
    args = ["predict", *pair(small_line, sample_id), "--calibration", str(tmp_path / "calibration.yaml")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output


def test_predict_bad_inputs_name_the_file(small_line: Path, tmp_path: Path) -> None:
    visible, infrared = pair(small_line, list_ids(small_line)[0])
    truncated = tmp_path / "broken.visible.png"
    truncated.write_bytes(Path(visible).read_bytes()[:200])
    cases = [
        ([str(truncated), infrared, "--mm-per-px", "0.05"], "broken.visible.png: unreadable or truncated"),
        ([visible, str(tmp_path / "nope.png"), "--mm-per-px", "0.05"], "nope.png: missing infrared image"),
        ([infrared, visible, "--mm-per-px", "0.05"], "must be uint8, found uint16"),
        ([visible, infrared], "exactly one of --calibration"),
        ([visible, infrared, "--mm-per-px", "0.05", "--model", "magic"], "unknown model 'magic': choose one of"),
        ([visible, infrared, "--calibration", str(tmp_path / "none.yaml")], "none.yaml"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["predict", *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (message, result.output)


def test_predict_dir_goes_on_past_broken_pairs(small_line: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_line, data)
    ids = list_ids(data)
    (data / f"{ids[2]}.infrared.png").unlink()  # a missing IR partner
    (data / f"{ids[3]}.visible.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # truncated
    result = runner.invoke(app, ["predict-dir", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"failed {ids[2]}" in result.output and "missing infrared image" in result.output
    assert f"failed {ids[3]}" in result.output
    written = sorted(p.name.removesuffix(".result.json") for p in (tmp_path / "out").glob("*.result.json"))
    assert written == [i for i in ids if i not in (ids[2], ids[3])]


def test_eval_writes_report_and_figures(small_line: Path, predictions: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["eval", "--data", str(small_line), "--predictions", str(predictions), "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["samples"] == 8
    assert set(report["recall_by_width"]) == {"<0.1", "0.1-0.2", "0.2-0.3", ">=0.3"}
    assert 0 <= report["pixel"]["f1"] <= 1
    assert (tmp_path / "pr_curve.png").stat().st_size > 1000
    assert (tmp_path / "pod.png").stat().st_size > 1000
    assert report["failed"] == []
    assert set(report["pod"]) >= {"a50_mm", "a90_mm", "a90_95_mm", "n", "hits", "reason"}
    assert report["pod"]["n"] == sum(b["cracks"] for b in report["recall_by_width"].values())
    assert sum(b["n"] for b in report["pod_by_contrast"]) == report["pod"]["n"]


def test_eval_prints_pod_rows_and_the_contrast_table(small_line: Path, predictions: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["eval", "--data", str(small_line), "--predictions", str(predictions), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "POD a90/95 (mm)" in result.output and "POD by crack contrast" in result.output
    assert "visible contrast" in result.output


def test_eval_reports_missing_predictions(small_line: Path, predictions: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(predictions, partial)
    first = list_ids(small_line)[0]
    (partial / f"{first}.pred.png").unlink()
    result = runner.invoke(app, ["eval", "--data", str(small_line), "--predictions", str(partial)])
    assert result.exit_code == 1
    assert f"not evaluated {first}" in result.output


def test_bench_measure_meets_the_width_target(small_line: Path) -> None:
    result = runner.invoke(app, ["bench", "measure", "--data", str(small_line), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["samples"] == 8
    if doc["cracks_ge_0_2mm"]:
        assert doc["max_width_mae_mm_ge_0_2"] <= 0.03


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--count", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 2
    assert (tmp_path / "gallery.png").exists()
    assert "synthetic" in result.output


def test_bench_synth_reports_a_median_rate() -> None:
    result = runner.invoke(app, ["bench", "synth", "--count", "2", "--repeats", "2", "--size", "256", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert len(doc["pairs_per_s"]) == 2 and doc["pairs_per_s_median"] > 0


def test_bench_models_compares_side_by_side(small_line: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["bench", "models", "--data", str(small_line), "--models", "baseline,baseline-ir", "--limit", "3",
              "--out", str(tmp_path), "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc["models"]) == {"baseline", "baseline-ir"}
    assert (tmp_path / "pr_curves.png").exists() and (tmp_path / "bench.json").exists()
    figures = doc["models"]["baseline"]["data"][small_line.name]
    assert 0 <= figures["pixel"]["f1"] <= 1 and figures["samples"] == 3


def test_bench_models_on_several_folders_gives_one_row_per_model(small_line: Path, tmp_path: Path) -> None:
    second = tmp_path / "second-set"
    second.symlink_to(small_line, target_is_directory=True)
    out = tmp_path / "bench"
    result = runner.invoke(
        app, ["bench", "models", "--data", f"{small_line},{second}", "--models", "baseline", "--limit", "2",
              "--out", str(out)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "bench.json").read_text())
    per_folder = doc["models"]["baseline"]["data"]
    assert set(per_folder) == {small_line.name, "second-set"}
    assert per_folder[small_line.name]["pixel"] == per_folder["second-set"]["pixel"]  # same parts, same figures
    assert (out / "second-set" / "pr_curves.png").exists()
    assert "GMAC" in result.output  # the one-row-per-model summary table


def test_bench_models_missing_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "models", "--data", str(tmp_path / "nope"), "--models", "baseline"])
    assert result.exit_code != 0 and "inspector synth" in result.output


def test_eval_compares_models_on_several_folders_in_one_table(small_line: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    shutil.copytree(small_line, second)
    result = runner.invoke(
        app,
        ["eval", "--model", "baseline", "--model", "crack-concat", "--data", str(small_line), "--data", str(second),
         "--limit", "3", "--out", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(compared) == {str(small_line), str(second)}
    for by_model in compared.values():
        assert set(by_model) == {"baseline", "crack-concat"}
        assert all(report["samples"] == 3 for report in by_model.values())
    # the same parts give the same figures in both folders
    assert compared[str(small_line)]["crack-concat"]["pixel"] == compared[str(second)]["crack-concat"]["pixel"]
    assert "models side by side" in result.output and "compare.json" in result.output


def test_eval_refuses_predictions_with_several_folders(small_line: Path, predictions: Path) -> None:
    result = runner.invoke(
        app, ["eval", "--data", str(small_line), "--data", str(small_line), "--predictions", str(predictions)]
    )
    assert result.exit_code == 2
    assert "one --data folder" in result.output
