"""Pre-training pieces on tiny inputs: masks, masked reconstruction, InfoNCE alignment."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from mla import MLAModel
from mla.errors import MLAConfigError, MLAInputError
from mla.pretrain import (
    AlignmentStage,
    LearnableTemperature,
    ReconstructionStage,
    build_stage,
    fill_masked,
    gather_positions,
    info_nce,
    mask_tokens,
    masked_patch_loss,
    random_patch_mask,
    sample_positions,
)
from mla.text import NUM_SPECIAL, PAD
from tests.mla.tiny import SIZE, TINY_ENCODERS, inputs_for, tiny

CRACK = ("visible", "infrared")


pytestmark = pytest.mark.usefixtures("one_thread")


def crack_model(seed: int = 0) -> MLAModel:
    torch.manual_seed(seed)
    return MLAModel(tiny(CRACK, fusion="hffn", heads=("segmentation",)))


def paired_batch(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Visible and IR views of the same smooth scene (IR 4× coarser, another offset and noise)."""
    gen = torch.Generator().manual_seed(seed)
    scene = F.interpolate(torch.rand(batch, 1, 8, 8, generator=gen), size=(SIZE, SIZE), mode="bilinear")
    visible = scene + 0.02 * torch.randn(batch, 1, SIZE, SIZE, generator=gen)
    infrared = 30.0 + 5.0 * F.avg_pool2d(scene, 4) + 0.05 * torch.randn(batch, 1, SIZE // 4, SIZE // 4, generator=gen)
    return {"visible": visible, "infrared": infrared}


# -- masking ---------------------------------------------------------------------------------------------


def test_mask_hides_the_ratio_of_patches_in_every_sample() -> None:
    mask = random_patch_mask(3, 64, 128, patch=16, ratio=0.6, generator=torch.Generator().manual_seed(0))
    assert mask.grid.shape == (3, 4, 8)
    assert mask.grid.flatten(1).sum(dim=1).tolist() == [round(0.6 * 32)] * 3
    assert mask.ratio == pytest.approx(19 / 32)


def test_infrared_mask_is_the_visible_mask_downsampled() -> None:
    mask = random_patch_mask(2, 64, 64, patch=16, ratio=0.5, generator=torch.Generator().manual_seed(1))
    visible, infrared = mask.pixels(1), mask.pixels(4)
    assert visible.shape == (2, 1, 64, 64)
    assert infrared.shape == (2, 1, 16, 16)
    assert torch.equal(infrared, visible[..., ::4, ::4])
    assert torch.equal(infrared.float(), F.max_pool2d(visible.float(), 4))  # whole 4×4 blocks: aligned patches
    assert torch.equal(mask.cells(4), infrared[:, 0])  # the fine level sits on the IR grid


def test_masks_are_deterministic_given_a_seed() -> None:
    def draw(seed: int) -> torch.Tensor:
        return random_patch_mask(4, 64, 64, generator=torch.Generator().manual_seed(seed)).grid

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))
    torch.manual_seed(3)
    first = random_patch_mask(4, 64, 64).grid
    torch.manual_seed(3)
    assert torch.equal(first, random_patch_mask(4, 64, 64).grid)


def test_mask_errors() -> None:
    with pytest.raises(MLAConfigError, match="ratio"):
        random_patch_mask(1, 64, 64, ratio=1.0)
    with pytest.raises(MLAInputError, match="multiple of the mask patch"):
        random_patch_mask(1, 64, 72, patch=16)
    with pytest.raises(MLAInputError, match="multiple of scale"):
        random_patch_mask(1, 60, 60, patch=6).pixels(4)


def test_fill_hides_the_masked_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    mask = random_patch_mask(2, 16, 16, patch=4, generator=gen).pixels()
    filled = fill_masked(x, mask)
    assert torch.equal(filled[~mask.expand_as(x)], x[~mask.expand_as(x)])
    changed = torch.where(mask, torch.rand(x.shape, generator=gen), x)
    assert torch.allclose(fill_masked(changed, mask), filled)  # the fill does not depend on what it hides
    kept = mask.logical_not().float()
    assert torch.allclose(filled[0, 1][mask[0, 0]], (x[0, 1] * kept[0, 0]).sum() / kept[0, 0].sum())


def test_mask_tokens_skips_special_tokens() -> None:
    ids = torch.tensor([[1, 80, 81, 82, 83, 2, 0, 0], [1, 90, 2, 0, 0, 0, 0, 0]])
    masked, hidden = mask_tokens(ids, ratio=0.3, generator=torch.Generator().manual_seed(0))
    assert hidden.any(dim=1).all()  # at least one per row
    assert not hidden[(ids < NUM_SPECIAL) | (ids == PAD)].any()
    assert torch.equal(masked[~hidden], ids[~hidden])
    again, _ = mask_tokens(ids, ratio=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)


# -- reconstruction --------------------------------------------------------------------------------------


def test_masked_loss_ignores_unmasked_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 1, 32, 32, generator=gen), torch.randn(2, 1, 32, 32, generator=gen)
    mask = random_patch_mask(2, 32, 32, patch=8, generator=gen)
    hidden = mask.pixels()
    loss = masked_patch_loss(pred, target, mask.grid, 8)
    other_pred = torch.where(hidden, pred, torch.randn(pred.shape, generator=gen))
    other_target = torch.where(hidden, target, torch.randn(target.shape, generator=gen))
    assert torch.allclose(masked_patch_loss(other_pred, other_target, mask.grid, 8), loss)
    moved = torch.where(hidden, target + torch.randn(target.shape, generator=gen), target)
    assert not torch.allclose(masked_patch_loss(pred, moved, mask.grid, 8), loss)


def test_reconstruction_gradients_reach_only_encoders_and_decoders() -> None:
    model = crack_model()
    stage, loss_fn = build_stage(model, "reconstruction", seed=0)
    assert isinstance(stage, ReconstructionStage)
    batch = paired_batch(2)
    mask = stage.draw_mask(2, (SIZE, SIZE))
    pred = stage.reconstruct("visible", batch["visible"], mask)
    pred.retain_grad()
    masked_patch_loss(pred, batch["visible"], mask.grid, 16).backward()
    assert pred.grad is not None
    assert pred.grad[~mask.pixels().expand_as(pred)].abs().max() == 0  # unmasked pixels carry no loss
    stage.zero_grad()
    loss, metrics = loss_fn(stage, batch)
    loss.backward()
    assert set(metrics) == {"visible_rec", "infrared_rec"}
    assert all(p.grad is not None for p in stage.parameters())
    assert all(p.grad is None for p in [*model.fusion.parameters(), *model.heads.parameters()])
    assert stage.encoders["visible"] is model.encoder("visible")  # shared, nothing to copy back


def test_reconstruction_loss_falls_on_a_fixed_batch() -> None:
    stage, _ = build_stage(crack_model(), "reconstruction")
    assert isinstance(stage, ReconstructionStage)
    batch = paired_batch(2)
    mask = random_patch_mask(2, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(stage.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return sum((stage.image_loss(m, batch[m], mask) for m in CRACK), torch.zeros(()))

    first = float(loss().detach())
    for _ in range(15):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < 0.8 * first


def test_reconstruction_ignores_the_label_mask() -> None:
    model = crack_model()
    batch: dict[str, Any] = paired_batch(2)
    losses = []
    for extra in ({}, {"mask": torch.ones(2, 1, SIZE, SIZE)}):
        torch.manual_seed(0)  # the same throw-away decoders
        stage, loss_fn = build_stage(model, "reconstruction", seed=4)
        losses.append(float(loss_fn(stage, batch | extra)[0].detach()))
    assert losses[0] == losses[1]


@pytest.mark.parametrize("modality", sorted(TINY_ENCODERS))
def test_reconstruction_over_the_registry(modality: str) -> None:
    model = MLAModel(tiny((modality,), fusion="concat"))
    if modality == "tabular":
        with pytest.raises(MLAConfigError, match="reconstruction"):
            build_stage(model, "reconstruction")
        return
    stage, loss_fn = build_stage(model, "reconstruction", seed=0)
    loss, metrics = loss_fn(stage, inputs_for((modality,), batch=2))
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert set(metrics) == {f"{modality}_rec"}


# -- alignment -------------------------------------------------------------------------------------------


def test_info_nce_is_low_for_identical_and_log_n_for_random_features() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(32, 64, generator=gen)
    same, metrics = info_nce(a, a.clone(), 1 / 0.07)
    assert float(same) < 1e-3
    assert metrics["acc"] == 1.0
    assert metrics["pos_sim"] == pytest.approx(1.0)
    n = 256
    random, _ = info_nce(torch.randn(n, 128, generator=gen), torch.randn(n, 128, generator=gen), 1.0)
    assert float(random) == pytest.approx(math.log(n), rel=0.03)


def test_temperature_is_learnable_and_clamped() -> None:
    temperature = LearnableTemperature(0.07, minimum=0.01, maximum=1.0)
    assert temperature.temperature == pytest.approx(0.07)
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    info_nce(a, b, temperature())[0].backward()
    assert temperature.log_scale.grad is not None
    assert temperature.log_scale.grad != 0
    with torch.no_grad():
        temperature.log_scale.fill_(20.0)
    assert temperature.temperature == pytest.approx(0.01)
    with torch.no_grad():
        temperature.log_scale.fill_(-20.0)
    assert temperature.temperature == pytest.approx(1.0)
    stage, _ = build_stage(crack_model(), "alignment")
    learned = stage.get_submodule("temperatures.visible_infrared")
    assert isinstance(learned, LearnableTemperature)
    assert any(p is learned.log_scale for p in stage.parameters())


def test_positions_are_shared_drawn_from_visible_cells_and_gathered() -> None:
    exclude = torch.zeros(2, 4, 4, dtype=torch.bool)
    exclude[:, :2] = True
    index = sample_positions(2, 4, 4, 20, exclude=exclude, generator=torch.Generator().manual_seed(0))
    assert index.shape == (2, 8)  # only 8 cells left in each sample
    assert (index >= 8).all()
    again = sample_positions(2, 4, 4, 20, exclude=exclude, generator=torch.Generator().manual_seed(0))
    assert torch.equal(index, again)
    features = torch.arange(2 * 3 * 16, dtype=torch.float32).reshape(2, 3, 4, 4)
    picked = gather_positions(features, index)  # (2·8, 3)
    assert torch.equal(picked[9], features[1, :, index[1, 1] // 4, index[1, 1] % 4])


def test_alignment_raises_co_located_similarity() -> None:
    stage, loss_fn = build_stage(crack_model(), "alignment", positions=16, seed=0)
    assert isinstance(stage, AlignmentStage)
    batch = paired_batch(4)

    def measure() -> dict[str, float]:
        stage.generator = torch.Generator().manual_seed(99)  # the same positions every time
        with torch.no_grad():
            return loss_fn(stage, batch)[1]

    before = measure()
    optimizer = torch.optim.Adam(stage.parameters(), lr=3e-3)
    for _ in range(10):
        optimizer.zero_grad()
        loss_fn(stage, batch)[0].backward()
        optimizer.step()
    after = measure()
    assert after["visible_infrared_pos_sim"] > before["visible_infrared_pos_sim"]
    gap = after["visible_infrared_pos_sim"] - after["visible_infrared_neg_sim"]
    assert gap > before["visible_infrared_pos_sim"] - before["visible_infrared_neg_sim"]
    assert after["visible_infrared_nce"] < before["visible_infrared_nce"]


def test_alignment_of_image_and_text_uses_pooled_vectors() -> None:
    model = MLAModel(tiny(("image", "text")))
    stage, loss_fn = build_stage(model, "alignment", seed=0)
    loss, metrics = loss_fn(stage, inputs_for(("image", "text"), batch=4))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(math.log(4), abs=1.0)
    assert metrics["image_text_temperature"] == pytest.approx(0.07)


def test_masked_alignment_and_bad_pairs() -> None:
    stage, loss_fn = build_stage(crack_model(), "alignment", mask_ratio=0.5, positions=512, seed=0)
    _, metrics = loss_fn(stage, paired_batch(2))
    assert math.isfinite(metrics["visible_infrared_nce"])
    with pytest.raises(MLAConfigError, match="bad pairs"):
        build_stage(crack_model(), "alignment", pairs=[("visible", "visible")])
    with pytest.raises(MLAConfigError, match="two modalities"):
        build_stage(MLAModel(tiny(("visible",), fusion="concat")), "alignment")
