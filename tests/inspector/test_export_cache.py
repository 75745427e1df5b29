"""The default fast path: a .pt runs on onnxruntime as an ONNX export cached by SHA-256 and parity-checked at load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mla
from inspector.cli import app
from inspector.export_cache import PARITY_BOUND, cached_export, file_sha256, parity_input, sidecar_path
from inspector.mla_model import load_crack_model
from inspector.model import ModelError
from inspector.pipeline import inspect_pair
from inspector.training import crack_model_config

runner = CliRunner()


def tiny(path: Path, seed: int, arch: str = "unshuffle") -> Path:
    torch.manual_seed(seed)
    model = mla.MLAModel(crack_model_config("concat", width=8, arch=arch)).eval()
    mla.save_model(model, path, metadata={"name": path.stem, "version": "1"})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cache-models")
    return tiny(folder / "a.pt", 0), tiny(folder / "b.pt", 1)


def test_a_pt_runs_on_onnxruntime_by_default_exported_once(
    models: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = models
    with caplog.at_level(logging.INFO, logger="inspector.export_cache"):
        first = load_crack_model(a, cache_dir=tmp_path)
    assert first.metadata["backend"] == "onnxruntime CPUExecutionProvider"
    assert "exporting" in caplog.text
    graph = Path(first.metadata["onnx"])
    assert graph.parent == tmp_path and file_sha256(a)[:16] in graph.name
    assert json.loads(sidecar_path(graph).read_text())["source"]["sha256"] == file_sha256(a)
    assert 0.0 <= first.metadata["parity_max_abs_diff"] <= PARITY_BOUND["fp32"]
    caplog.clear()
    stamp = graph.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="inspector.export_cache"):
        second = load_crack_model(a, cache_dir=tmp_path)
    assert "exporting" not in caplog.text and graph.stat().st_mtime_ns == stamp  # the cache answered
    assert second.metadata["onnx"] == str(graph)
    assert sorted(p.name for p in tmp_path.iterdir()) == [graph.name, sidecar_path(graph).name]  # no scratch left


def test_backends_agree_and_results_name_sha_and_backend(models: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = models
    rng = np.random.default_rng(3)
    visible = (rng.random((128, 128)) * 255).astype(np.uint8)
    infrared = rng.random((32, 32)).astype(np.float32)
    results = {}
    for backend in ("onnxruntime", "torch"):
        model = load_crack_model(a, backend=backend, cache_dir=tmp_path)
        results[backend] = inspect_pair(visible, infrared, None, 0.05, model)
    (fast, p_fast), (eager, p_eager) = results["onnxruntime"], results["torch"]
    assert float(np.abs(p_fast - p_eager).max()) <= PARITY_BOUND["fp32"]
    assert fast.model["sha256"] == eager.model["sha256"] == file_sha256(a)
    assert fast.model["backend"].startswith("onnxruntime") and eager.model["backend"] == "torch cpu fp32"
    assert fast.to_dict()["model"] == fast.model


def test_a_new_model_at_the_same_path_gets_a_new_graph(tmp_path: Path) -> None:
    path = tiny(tmp_path / "m.pt", 0)
    first = cached_export(path, tmp_path / "cache")
    tiny(path, 5)  # retrained in place
    second = cached_export(path, tmp_path / "cache")
    assert first != second and first.is_file() and second.is_file()


def test_a_graph_that_breaks_parity_is_refused(models: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = models
    graph_a = cached_export(a, tmp_path)
    shutil.copyfile(cached_export(b, tmp_path / "other"), graph_a)  # the cache now holds another model's graph
    with pytest.raises(ModelError, match=r"disagrees with .*a\.pt .*delete the cached graph"):
        load_crack_model(a, cache_dir=tmp_path)


def test_an_unwritable_cache_says_which_setting_to_change(models: tuple[Path, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(ModelError, match="INSPECTOR__INFERENCE__CACHE_DIR"):
        load_crack_model(models[0], cache_dir=blocker / "cache")


def test_parity_input_is_fixed_and_shows_a_crack() -> None:
    one, two = parity_input(), parity_input()
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert one["visible"].shape == (1, 1, 256, 256) and one["infrared"].shape == (1, 1, 64, 64)
    assert one["visible"].min() < 0.3 < one["visible"].mean()  # the dark crack line under a mid-grey surface


def test_inspector_run_honours_the_inference_backend(
    models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = models
    monkeypatch.setenv("INSPECTOR__INFERENCE__CACHE_DIR", str(tmp_path / "cache"))
    seen = {}
    for backend in ("onnxruntime", "torch"):
        monkeypatch.setenv("INSPECTOR__INFERENCE__BACKEND", backend)
        out = tmp_path / backend
        args = ["run", "--out", str(out), "--count", "2", "--size", "128", "--model", str(a), "--fps", "0"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        documents = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert len(documents) == 2
        seen[backend] = {d["model"]["backend"] for d in documents}
    assert seen == {"onnxruntime": {"onnxruntime CPUExecutionProvider"}, "torch": {"torch cpu fp32"}}


def test_tensorrt_without_a_gpu_says_what_it_needs(models: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="TensorRT through onnxruntime needs device cuda"):
        load_crack_model(models[0], backend="tensorrt", cache_dir=tmp_path)
