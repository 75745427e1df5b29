"""Structured pruning: channels really leave the tensors, the model still runs, saves and reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import mla
from mla.prune import CRITERIA, protected_layers, prune, ratio_for_speedup
from tests.mla.tiny import tiny_crack_model

pytestmark = pytest.mark.usefixtures("one_thread")


def crack_model(fusion: str) -> mla.MLAModel:
    return tiny_crack_model(fusion, width=16)  # type: ignore[no-any-return]


def example(size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"visible": torch.rand(1, 1, size, size), "infrared": torch.rand(1, 1, size // 4, size // 4)}


def seg_loss(model: mla.MLAModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(visible=batch["visible"], infrared=batch["infrared"]).outputs["segmentation"]
    return F.binary_cross_entropy_with_logits(logits, batch["mask"])


def batches(count: int = 2) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(2)
    return [example(64) | {"mask": (torch.rand(1, 1, 64, 64) > 0.95).float()} for _ in range(count)]


def conv_channels(model: mla.MLAModel) -> int:
    return sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("fusion", ["concat", "dma", "hffn"])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_pruning_removes_channels_and_keeps_the_model_working(fusion: str, criterion: str) -> None:
    model = crack_model(fusion)
    channels = conv_channels(model)
    report = prune(model, example(), ratio=0.5, criterion=criterion, loss_fn=seg_loss, batches=batches())
    assert report.parameters_after < 0.7 * report.parameters_before
    assert report.macs_after < 0.7 * report.macs_before
    assert conv_channels(model) < 0.8 * channels  # physically smaller weight tensors, not masks
    with torch.no_grad():
        out = model(**example(128))  # another size than the traced one
    assert out.outputs["segmentation"].shape == (1, 1, 128, 128)
    assert torch.isfinite(out.outputs["segmentation"]).all()
    torch.testing.assert_close(out.modal_weights.sum(dim=1), torch.ones(1))


@pytest.mark.parametrize("fusion", ["dma", "hffn"])
def test_pruned_model_still_degrades_gracefully_without_ir(fusion: str) -> None:
    model = crack_model(fusion)
    prune(model, example(), ratio=0.5, criterion="l1")
    with torch.no_grad():
        out = model(visible=example()["visible"])
    torch.testing.assert_close(out.modal_weights, torch.tensor([[1.0, 0.0]]))


def test_heads_and_gates_keep_their_outputs() -> None:
    model = crack_model("hffn")
    before = [(m.weight.shape[0]) for m in protected_layers(model)]
    prune(model, example(), ratio=0.6, criterion="l1")
    assert [m.weight.shape[0] for m in protected_layers(model)] == before
    assert model.fusion.prior.shape == (3, 2)  # one prior per level and modality, untouched


def test_pruned_model_saves_and_reloads_identically(tmp_path: Path) -> None:
    model = crack_model("hffn")
    prune(model, example(), ratio=0.4, criterion="taylor", loss_fn=seg_loss, batches=batches())
    path = tmp_path / "pruned.pt"
    mla.save_model(model, path, metadata={"pruned": True})
    loaded = mla.load_model(path)
    assert mla.count_parameters(loaded) == mla.count_parameters(model)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**example(96)).outputs["segmentation"], model(**example(96)).outputs["segmentation"]
        )
    pruned_again = mla.load_model(path)  # and a loaded pruned model can be saved again
    mla.save_model(pruned_again, tmp_path / "again.pt")
    assert mla.count_parameters(mla.load_model(tmp_path / "again.pt")) == mla.count_parameters(model)


def test_bad_arguments_are_clear_errors() -> None:
    model = crack_model("concat")
    with pytest.raises(mla.MLAConfigError, match="taylor, l1, bn_scale"):
        prune(model, example(), ratio=0.5, criterion="random")
    with pytest.raises(mla.MLAConfigError, match=r"\[0, 1\)"):
        prune(model, example(), ratio=1.0, criterion="l1")
    with pytest.raises(mla.MLAConfigError, match="loss_fn"):
        prune(model, example(), ratio=0.5, criterion="taylor")


def test_ratio_for_a_target_speedup_reaches_the_mac_budget() -> None:
    model = crack_model("hffn")
    ratio = ratio_for_speedup(model, example(), speedup=2.0)
    report = prune(model, example(), ratio=ratio, criterion="l1")
    assert 0.3 <= report.mac_ratio <= 0.5
    lighter = prune(crack_model("hffn"), example(), ratio=ratio - 0.05, criterion="l1")
    assert lighter.mac_ratio > 0.5  # the smallest ratio that reaches the budget
    with pytest.raises(mla.MLAConfigError, match="> 1"):
        ratio_for_speedup(model, example(), speedup=0.5)


def test_round_to_keeps_every_pruned_width_a_multiple_of_the_runtime_block() -> None:
    model = tiny_crack_model("concat", width=32)
    prunable = {id(m) for m in protected_layers(model)}
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    prune(model, example(), ratio=0.5, criterion="l1", round_to=16)
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    changed = {n: c for n, c in after.items() if c != before[n]}
    assert changed, "nothing was pruned"
    assert all(c % 16 == 0 for c in changed.values()), changed
    assert all(id(m) not in prunable for n, m in model.named_modules() if n in changed)
