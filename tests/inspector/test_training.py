"""The learned crack-model path end to end: train a tiny model for a few steps, save, load, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mla
from inspector.cli import app
from inspector.commands.train import initial_model
from inspector.dataset import list_ids, read_sample
from inspector.model import ModelError, ModelInput, create_model
from inspector.training import VARIANTS, crack_model_config

runner = CliRunner()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds(variant: str) -> None:
    model = mla.MLAModel(crack_model_config(variant, width=8))
    expected = {"visible-only": ("visible",), "ir-only": ("infrared",)}.get(variant, ("visible", "infrared"))
    assert tuple(model.modalities) == expected


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="choose one of hffn, dma"):
        crack_model_config("transformer")


@pytest.fixture(scope="module")
def tiny_model(small_line: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspector.synth import generate_set

    root = tmp_path_factory.mktemp("train")
    generate_set(root / "val", 2, seed=124, preset="default", size=256)
    out = root / "tiny.pt"
    args = ["train", "--data", str(small_line), "--val", str(root / "val"), "--out", str(out), "--steps", "3",
            "--batch", "2", "--tile", "64", "--width", "8", "--no-progress",
            "--workdir", str(root / "run")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_training_writes_model_card_curves_and_metrics(tiny_model: Path) -> None:
    card = tiny_model.with_suffix(".md").read_text()
    assert "synthetic data only" in card and "inspector train" in card
    run = tiny_model.parent / "run"
    assert (run / "curves.png").exists()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_f1" in x for x in lines) and any("loss" in x for x in lines)
    meta = mla.load_metadata(tiny_model)
    assert meta["variant"] == "hffn" and meta["train_data"]["seeds"] == [123]


def test_training_refuses_validation_on_training_parts(small_line: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--data",
        str(small_line),
        "--val",
        str(small_line),
        "--out",
        str(tmp_path / "m.pt"),
        "--steps",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "share seeds" in result.output


def test_trained_file_is_a_model_for_predict_dir(tiny_model: Path, small_line: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["predict-dir", str(small_line), "--out", str(tmp_path), "--model", str(tiny_model), "--limit", "2"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(next(tmp_path.glob("*.result.json")).read_text())
    assert set(doc["modal_weights"]) == {"visible", "infrared"}
    assert abs(sum(doc["modal_weights"].values()) - 1) < 1e-3
    assert "sha256:" in doc["model"]["version"]


def test_missing_infrared_degrades_gracefully(tiny_model: Path, small_line: Path) -> None:
    model = create_model(str(tiny_model))
    sample = read_sample(small_line, list_ids(small_line)[0])
    out = model.predict(ModelInput(visible=sample.visible, infrared=None, mm_per_px=0.05))
    assert out.probability.shape == sample.visible.shape and np.isfinite(out.probability).all()
    assert out.modal_weights is not None and out.modal_weights["infrared"] == 0.0


def test_ir_only_model_needs_infrared(tmp_path: Path) -> None:
    path = tmp_path / "ir.pt"
    mla.save_model(mla.MLAModel(crack_model_config("ir-only", width=8)), path)
    model = create_model(str(path))
    with pytest.raises(ModelError, match="sees only infrared"):
        model.predict(ModelInput(visible=np.zeros((64, 64), np.uint8), infrared=None, mm_per_px=0.05))


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        create_model(str(tmp_path / "none.pt"))


def test_training_with_progressive_pretraining(small_line: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 1, seed=125, preset="default", size=256)
    out = tmp_path / "ppt.pt"
    args = ["train", "--data", str(small_line), "--val", str(tmp_path / "val"), "--out", str(out), "--steps", "2",
            "--batch", "2", "--tile", "64", "--width", "8", "--no-progress", "--pretrain-steps", "2",
            "--workdir", str(tmp_path / "run")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert mla.load_metadata(out)["pretrain_steps"] == 2
    assert (tmp_path / "run" / "pretrain").is_dir()


def test_pretrained_only_model_then_fine_tuning_from_it(small_line: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 1, seed=125, preset="default", size=256)
    common = ["--data", str(small_line), "--val", str(tmp_path / "val"), "--batch", "2", "--tile", "64",
              "--width", "8", "--no-progress"]  # fmt: skip
    pre = tmp_path / "pre.pt"
    args = [
        "train",
        *common,
        "--out",
        str(pre),
        "--steps",
        "0",
        "--pretrain-steps",
        "2",
        "--workdir",
        str(tmp_path / "a"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert mla.load_metadata(pre)["steps"] == 0
    tuned = tmp_path / "tuned.pt"
    args = ["train", *common, "--out", str(tuned), "--steps", "1", "--init", str(pre), "--limit", "3",
            "--workdir", str(tmp_path / "b")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = mla.load_metadata(tuned)
    assert meta["init"] == str(pre) and meta["train_data"]["labelled_samples"] == 3
    start = initial_model("hffn", 8, pre).state_dict()
    for key, value in mla.load_model(pre).state_dict().items():
        assert torch.equal(start[key], value), key


def test_init_of_another_shape_is_a_clear_error(tiny_model: Path, small_line: Path, tmp_path: Path) -> None:
    from inspector.synth import generate_set

    generate_set(tmp_path / "val", 1, seed=127, preset="default", size=256)
    args = ["train", "--data", str(small_line), "--val", str(tmp_path / "val"), "--out", str(tmp_path / "x.pt"),
            "--steps", "1", "--width", "16", "--init", str(tiny_model)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "--init" in result.output and "width 16" in result.output


def test_steps_zero_without_pretraining_is_refused(small_line: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(small_line), "--val", str(small_line), "--out", str(tmp_path / "x.pt"),
            "--steps", "0"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "--pretrain-steps" in result.output


def test_modality_dropout_is_the_variants_unless_given() -> None:
    assert initial_model("concat", 8, None).config.modality_dropout == 0.0
    assert initial_model("hffn", 8, None).config.modality_dropout == 0.15
    assert initial_model("concat", 8, None, modality_dropout=0.2).config.modality_dropout == 0.2


def test_a_pruned_model_is_fine_tuned_in_its_own_shape(tmp_path: Path) -> None:
    from inspector.commands.train import inherited_metadata
    from mla.prune import prune

    torch.manual_seed(0)
    model = mla.MLAModel(crack_model_config("concat", width=16)).eval()
    example = {"visible": torch.rand(1, 1, 64, 64), "infrared": torch.rand(1, 1, 16, 16)}
    prune(model, example, criterion="l1", ratio=0.5)
    path = tmp_path / "w50.pt"
    mla.save_model(model, path, metadata={"name": "w50", "width": 0.5, "pruning": {"ratio": 0.5}})
    start = initial_model("concat", 16, path)
    assert sum(p.numel() for p in start.parameters()) == sum(p.numel() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), model.state_dict().values(), strict=True))
    assert inherited_metadata(path) == {"width": 0.5, "pruning": {"ratio": 0.5}} and inherited_metadata(None) == {}


def test_fine_tuning_the_shipped_model_takes_its_shape_and_rules_and_mixes_replay_data(
    small_line: Path, tmp_path: Path
) -> None:
    from inspector.synth import generate_set

    shipped = Path("inspector/models/crack-concat.pt")
    generate_set(tmp_path / "val", 1, seed=128, preset="default", size=256)
    generate_set(tmp_path / "reviewed", 2, seed=129, preset="default", size=256)
    tuned = tmp_path / "tuned.pt"
    args = ["train", "--init", str(shipped), "--data", str(tmp_path / "reviewed"), "--mix", str(small_line),
            "--mix-fraction", "0.5", "--val", str(tmp_path / "val"), "--out", str(tuned), "--steps", "1",
            "--batch", "2", "--tile", "64", "--no-progress", "--workdir", str(tmp_path / "run")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta, base = mla.load_metadata(tuned), mla.load_metadata(shipped)
    assert (meta["variant"], meta["arch"]) == (base["variant"], base["arch"]) == ("concat", "unshuffle")
    assert mla.load_model(tuned).config.width == mla.load_model(shipped).config.width
    assert meta["verdict_rules"] == base["verdict_rules"] and "inherited" in meta["verdict_rules_choice"]
    assert meta["mix_data"]["fraction"] == 0.5 and meta["mix_data"]["samples"] == len(list_ids(small_line))


def test_mixed_batches_draw_each_set_in_its_share() -> None:
    from inspector.crack_data import CrackTileSet, mixed_batches

    def flat(value: int) -> CrackTileSet:
        tiles = CrackTileSet()
        tiles.visible.append(np.full((64, 64), value, np.uint8))
        tiles.infrared.append(np.zeros((16, 16), np.float16))
        tiles.masks.append(np.zeros((64, 64), np.uint8))
        tiles.crack_pixels.append(np.zeros((0, 2), np.int64))
        tiles.distractor_boxes.append(np.zeros((0, 4)))
        return tiles

    stream = mixed_batches([(flat(10), 0.75), (flat(240), 0.25)], seed=0, size=8, tile=32, augment=False)
    batches = [next(stream) for _ in range(200)]
    assert all(b["visible"].shape == (8, 1, 32, 32) for b in batches)
    bright = np.mean([(b["visible"][:, 0, 0, 0] > 0).mean() for b in batches])  # 240 is above mid-grey, 10 below
    assert 0.2 < bright < 0.3
    with pytest.raises(ValueError, match="shares"):
        next(mixed_batches([(flat(1), 0.0)], seed=0, size=2, tile=32))
