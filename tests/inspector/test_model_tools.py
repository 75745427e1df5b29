"""Model tools on a tiny crack model: ONNX export and parity, backends by config, prune, bench model, threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import mla
from inspector.cli import app
from inspector.model import ModelError, create_model
from inspector.training import crack_model_config
from inspector.verdict import VerdictRules

pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = mla.MLAModel(crack_model_config("hffn", width=8)).eval()
    path = tmp_path_factory.mktemp("export") / "tiny.pt"
    mla.save_model(model, path, metadata={"name": "tiny", "version": "3"})
    return path


@pytest.fixture(scope="module")
def exported(tiny_pt: Path, small_line: Path) -> Path:
    result = runner.invoke(app, ["export", "--model", str(tiny_pt), "--check", str(small_line), "--limit", "2"])
    assert result.exit_code == 0, result.output
    return tiny_pt.with_suffix(".onnx")


def test_export_writes_graph_and_sidecar_with_parity(exported: Path) -> None:
    sidecar = json.loads(exported.with_name(exported.name + ".json").read_text())
    assert sidecar["modalities"] == ["visible", "infrared"] and sidecar["scales"] == {"visible": 1, "infrared": 4}
    assert sidecar["parity"]["parts"] == 2 and sidecar["parity"]["different_verdict"] == []
    assert sidecar["parity"]["max_abs_probability_diff"] < 1e-3
    # the graph is compared with eager torch, not with itself
    assert sidecar["parity"]["reference"].startswith("torch") and sidecar["parity"]["exported"].startswith("onnx")
    assert sidecar["name"] == "tiny" and len(sidecar["source"]["sha256"]) == 64


def test_predict_dir_with_the_onnx_graph(exported: Path, small_line: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict-dir", str(small_line), "--out", str(tmp_path), "--model", str(exported),
                                 "--limit", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(next(tmp_path.glob("*.result.json")).read_text())
    assert document["model"]["name"] == "tiny" and "sha256:" in document["model"]["version"]
    assert set(document["modal_weights"]) == {"visible", "infrared"}


def test_backend_chosen_by_configuration(exported: Path, tiny_pt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model(str(tiny_pt), inference={"backend": "torch"})
    assert model.metadata["backend"] == "torch cpu fp32"  # type: ignore[attr-defined]
    from inspector.commands.predict import load_model

    assert "onnxruntime" in load_model(str(tiny_pt)).metadata["backend"]  # type: ignore[attr-defined]  # the default
    monkeypatch.setenv("INSPECTOR__INFERENCE__BACKEND", "torch")
    assert load_model(str(tiny_pt)).metadata["backend"].startswith("torch")  # type: ignore[attr-defined]


def test_graph_without_sidecar_is_a_clear_error(tmp_path: Path) -> None:
    graph = tmp_path / "graph.onnx"
    graph.write_bytes(b"not really")
    with pytest.raises(ModelError, match="inspector export"):
        create_model(str(graph))


def test_int8_is_kept_only_when_f1_holds(tiny_pt: Path, small_line: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    base = ["export", "--model", str(tiny_pt), "--out", str(out), "--int8"]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "--calibration" in refused.output
    args = [*base, "--calibration", str(small_line), "--check", str(small_line), "--limit", "2"]
    result = runner.invoke(app, args)
    assert "INT8" in result.output, result.output
    quantised = tmp_path / "tiny.int8.onnx"
    if "kept:" in result.output:  # an untrained tiny model has F1 near 0 either way
        verdict = json.loads(quantised.with_name(quantised.name + ".json").read_text())["int8_check"]
        assert verdict["accepted"] and verdict["drop_points"] <= 1.0
        assert create_model(str(quantised)).predict  # loads through the onnxruntime backend
    else:
        assert "rejected" in result.output and not quantised.exists()


def test_int8_rejected_when_the_drop_is_too_large(
    tiny_pt: Path, small_line: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspector.commands import evaluate

    scores = iter([{"pixel_f1": 0.90}, {"pixel_f1": 0.85}])  # float, then INT8: a 5-point drop
    monkeypatch.setattr(evaluate, "score_model", lambda *a, **k: next(scores))
    out = tmp_path / "tiny.onnx"
    args = ["export", "--model", str(tiny_pt), "--out", str(out), "--int8", "--calibration", str(small_line),
            "--check", str(small_line), "--limit", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert "drop 5.00 points" in result.output and "rejected" in result.output, result.output
    assert not (tmp_path / "tiny.int8.onnx").exists()


def test_export_refuses_non_models(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and ".pt" in result.output


def test_prune_command_shrinks_and_reports(tiny_pt: Path, small_line: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 1, seed=131, preset="default", size=256)
    out = tmp_path / "tiny-pruned.pt"
    args = [
        "prune",
        "--model",
        str(tiny_pt),
        "--data",
        str(small_line),
        "--val",
        str(tmp_path / "val"),
        "--out",
        str(out),
        "--ratio",
        "0.5",
        "--iterations",
        "2",
        "--steps",
        "2",
        "--batch",
        "2",
        "--tile",
        "64",
        "--round-to",
        "4",
        "--no-progress",
    ]  # fmt: skip  (the tiny model is 8 channels wide)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    pruning = mla.load_metadata(out)["pruning"]
    assert pruning["round_to"] == 4
    assert pruning["after"]["parameters"] < 0.6 * pruning["before"]["parameters"]
    assert pruning["after"]["macs_per_512_tile"] < 0.6 * pruning["before"]["macs_per_512_tile"]
    assert len(pruning["rounds"]) == 2 and "ms_per_512" in pruning["after"]
    # The share of convolution channels really kept (for the worker's width family): about half, after
    # rounding to multiples of 4 and with the protected head intact.
    net = mla.load_model(out, map_location="cpu")
    kept = sum(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    before = sum(m.out_channels for m in mla.load_model(tiny_pt).modules() if isinstance(m, torch.nn.Conv2d))
    assert mla.load_metadata(out)["width"] == pytest.approx(kept / before, abs=1e-4) and 0.3 < kept / before < 0.7
    pruned = create_model(str(out))  # loads with its pruned shapes and predicts at full size
    assert pruned.metadata["pruning"]["criterion"] == "taylor"  # type: ignore[attr-defined]


def test_prune_needs_one_target(tiny_pt: Path, small_line: Path, tmp_path: Path) -> None:
    args = ["prune", "--model", str(tiny_pt), "--data", str(small_line), "--val", str(small_line),
            "--out", str(tmp_path / "x.pt")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--ratio" in result.output


def test_bench_model_side_by_side(tiny_pt: Path, small_line: Path, tmp_path: Path) -> None:
    from mla.prune import prune

    net = mla.load_model(tiny_pt)
    prune(net, {"visible": torch.rand(1, 1, 64, 64), "infrared": torch.rand(1, 1, 16, 16)}, ratio=0.5, criterion="l1")
    pruned = tmp_path / "tiny-w50.pt"
    mla.save_model(net, pruned, metadata={"name": "tiny-w50", "parameters": mla.count_parameters(net)})
    out = tmp_path / "bench"
    args = ["bench", "model", "--models", f"{tiny_pt},{pruned}", "--data", str(small_line), "--limit", "1",
            "--batches", "1,2", "--repeats", "4", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "bench.json").read_text())
    assert doc["conv_reference_gflops"] > 0
    assert {(r["model"], r["backend"].split()[0]) for r in doc["rows"]} == {
        ("tiny", "torch"),
        ("tiny", "onnxruntime"),
        ("tiny-w50", "torch"),
        ("tiny-w50", "onnxruntime"),
    }
    for row in doc["rows"]:
        assert row["batch2"]["median_ms"] > 0 and row["batch2"]["p95_ms"] >= row["batch2"]["median_ms"]
        assert 0 <= row["pixel_f1"] <= 1 and row["speedup_vs_unpruned_batch1"] > 0


def test_best_threshold_prefers_the_lower_on_ties() -> None:
    from inspector.commands.threshold import best_threshold
    from inspector.evaluate import PixelCounts

    totals = {
        0.05: PixelCounts(10, 10, 10, 10),  # outside the allowed range
        0.3: PixelCounts(8, 10, 8, 10),
        0.5: PixelCounts(9, 10, 9, 10),
        0.7: PixelCounts(9, 10, 9, 10),
    }
    assert best_threshold(totals) == 0.5


def test_threshold_is_stored_and_used(tiny_pt: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 2, seed=132, preset="default", size=256)
    model = tmp_path / "tuned.pt"
    model.write_bytes(tiny_pt.read_bytes())
    result = runner.invoke(app, ["threshold", "--model", str(model), "--val", str(tmp_path / "val")])
    assert result.exit_code == 0, result.output
    chosen = mla.load_metadata(model)["threshold"]
    assert 0.1 <= chosen <= 0.9
    loaded = create_model(str(model))
    assert loaded.threshold == chosen  # type: ignore[attr-defined]
    rules = mla.load_metadata(model)["verdict_rules"]
    assert 0.14 <= rules["min_width_mm"] <= 0.26 and rules["min_length_mm"] == 1.0
    assert loaded.verdict_rules == VerdictRules.model_validate(rules)  # type: ignore[attr-defined]
    assert "verdict rules" in result.output


def test_threshold_can_keep_the_pixel_threshold_and_choose_only_the_rules(tiny_pt: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 2, seed=133, preset="default", size=256)
    model = tmp_path / "kept.pt"
    model.write_bytes(tiny_pt.read_bytes())
    args = ["threshold", "--model", str(model), "--val", str(tmp_path / "val"), "--pixel-threshold", "0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = mla.load_metadata(model)
    assert meta["threshold"] == 0.5 and meta["verdict_rules"]["min_length_mm"] == 1.0
    assert runner.invoke(app, [*args[:-1], "0.99"]).exit_code == 2  # outside 0.05-0.95
