"""Pre-training stages through the real training engine, then supervised fine-tuning of the same model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import mla
from mla import MLAModel
from mla.errors import MLACheckpointError, MLAConfigError
from mla.pretrain import (
    applicable_stages,
    build_stage,
    continue_pretraining,
    encoder_state_dict,
    load_pretrained,
    pretrain,
)
from mla.train import TrainConfig, Trainer, read_metrics
from tests.mla.tiny import SIZE, tiny

CRACK = ("visible", "infrared")


pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Tiles:
    """Like the crack data stream's batches: visible, infrared and a label mask pre-training must ignore."""

    visible: torch.Tensor
    infrared: torch.Tensor
    mask: torch.Tensor


def crack_model(seed: int = 0) -> MLAModel:
    torch.manual_seed(seed)
    return MLAModel(tiny(CRACK, fusion="hffn", heads=("segmentation",)))


def tiles(batch: int = 2, seed: int = 0) -> Tiles:
    gen = torch.Generator().manual_seed(seed)
    scene = F.interpolate(torch.rand(batch, 1, 8, 8, generator=gen), size=(SIZE, SIZE), mode="bilinear")
    mask = (torch.rand(batch, 1, SIZE, SIZE, generator=gen) > 0.97).float()
    return Tiles(scene, F.avg_pool2d(scene, 4) + 0.05, mask)


def config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {"lr": 1e-2, "total_steps": 2, "device": "cpu", "log_every": 1, "seed": 1}
    return TrainConfig.model_validate(base | overrides)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(value, after[key]) for key, value in before.items() if value.is_floating_point())


def segmentation_loss(model: MLAModel, batch: Tiles) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(visible=batch.visible, infrared=batch.infrared).outputs["segmentation"]
    return F.binary_cross_entropy_with_logits(logits.float(), batch.mask), {}


@pytest.mark.parametrize("stage", ["reconstruction", "alignment"])
def test_stage_through_trainer_then_fine_tune(stage: str, tmp_path: Path) -> None:
    model = crack_model()
    encoders = {m: snapshot(model.encoder(m)) for m in CRACK}
    fusion, heads = snapshot(model.fusion), snapshot(model.heads)
    module, loss_fn = build_stage(model, stage, positions=16) if stage == "alignment" else build_stage(model, stage)
    result = Trainer(module, loss_fn, config(), tmp_path / stage, progress=False).fit([tiles()])
    assert result.step == 2
    assert all(changed(encoders[m], model.encoder(m)) for m in CRACK)
    assert not changed(fusion, model.fusion)
    assert not changed(heads, model.heads)
    records = [r for r in read_metrics(tmp_path / stage / "metrics.jsonl") if r["split"] == "train"]
    assert len(records) == 2
    key = "visible_rec" if stage == "reconstruction" else "visible_infrared_nce"
    assert key in records[0]

    fine = Trainer(model, segmentation_loss, config(total_steps=1), tmp_path / "fine", progress=False)
    assert fine.fit([tiles(seed=1)]).step == 1
    assert changed(heads, model.heads)


def test_pretrain_runs_the_stages_and_dapt_continues_from_them(tmp_path: Path) -> None:
    model = crack_model()
    results = pretrain(
        model,
        [tiles()],
        tmp_path / "ppt",
        train={"reconstruction": config(), "alignment": config(total_steps=1)},
        options={"alignment": {"positions": 16}},
        progress=False,
    )
    assert list(results) == ["reconstruction", "alignment"]
    assert [r.step for r in results.values()] == [2, 1]

    fresh = crack_model(seed=1)
    assert load_pretrained(fresh, tmp_path / "ppt" / "alignment") == list(CRACK)  # the last stage's run folder
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in encoder_state_dict(model).items())

    again = pretrain(model, [tiles()], tmp_path / "ppt", train=config(), resume=True, progress=False)
    assert again["reconstruction"].step == 2  # a finished stage is only reloaded
    assert again["alignment"].step == 2  # one more step: its run was configured for 1

    mla.save_model(model, tmp_path / "ppt.pt")
    adapted = crack_model(seed=2)
    before = snapshot(adapted)
    dapt = continue_pretraining(
        adapted,
        [tiles(seed=3)],
        tmp_path / "dapt",
        init=tmp_path / "ppt.pt",
        train=config(lr=1e-3, total_steps=1),
        stages=["reconstruction"],
        progress=False,
    )
    assert list(dapt) == ["reconstruction"]
    pretrained = dict(model.encoder("visible").named_parameters())
    for name, param in adapted.encoder("visible").named_parameters():  # loaded, then one small step
        assert (param - pretrained[name]).abs().max() < 3e-3
    assert not changed({k: v for k, v in before.items() if k.startswith(("fusion.", "heads."))}, adapted)


def test_build_stage_and_load_errors() -> None:
    model = crack_model()
    with pytest.raises(MLAConfigError, match="unknown pre-training stage"):
        build_stage(model, "distillation")
    with pytest.raises(MLAConfigError, match="bad option"):
        build_stage(model, "reconstruction", colour=True)
    with pytest.raises(MLAConfigError, match="unknown modality"):
        build_stage(model, "reconstruction", modalities=["text"])
    with pytest.raises(MLACheckpointError, match="holds no encoder"):
        load_pretrained(model, {"fusion.weight": torch.zeros(1)})
    other = MLAModel(tiny(CRACK, fusion="hffn", heads=("segmentation",), encoders={}))  # default widths
    with pytest.raises(MLACheckpointError, match="does not fit"):
        load_pretrained(model, other)
    assert applicable_stages(model) == ("reconstruction", "alignment")
    assert applicable_stages(MLAModel(tiny(("visible",), fusion="concat"))) == ("reconstruction",)
