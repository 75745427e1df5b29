from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mla import FeatureSpec, FusionOutput, MLAConfigError, MLAInputError, ModalFeatures, create_fusion, list_fusions
from mla.fusion import FUSIONS, Fusion
from mla.fusion.base import drop_modalities

SPECS = {
    "visible": FeatureSpec(vector_dim=32, level_channels=(8, 16, 32)),
    "infrared": FeatureSpec(vector_dim=16, level_channels=(4, 8, 16)),
    "text": FeatureSpec(vector_dim=12, token_dim=12),
}


def features(batch: int = 2, seed: int = 0, size: int = 32) -> dict[str, ModalFeatures]:
    gen = torch.Generator().manual_seed(seed)

    def pyramid(channels: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.randn(batch, c, size >> i, size >> i, generator=gen) for i, c in enumerate(channels))

    return {
        "visible": ModalFeatures(vector=torch.randn(batch, 32, generator=gen), levels=pyramid((8, 16, 32))),
        "infrared": ModalFeatures(vector=torch.randn(batch, 16, generator=gen), levels=pyramid((4, 8, 16))),
        "text": ModalFeatures(
            vector=torch.randn(batch, 12, generator=gen),
            tokens=torch.randn(batch, 5, 12, generator=gen),
            token_mask=torch.ones(batch, 5, dtype=torch.bool),
        ),
    }


def check_output(out: FusionOutput, batch: int, width: int = 16, size: int = 32) -> None:
    assert out.vector.shape == (batch, width)
    assert out.weights.shape == (batch, len(SPECS))
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(batch))
    assert torch.isfinite(out.vector).all()
    assert out.levels is not None
    assert [tuple(t.shape) for t in out.levels] == [(batch, width, size >> i, size >> i) for i in range(3)]
    assert all(torch.isfinite(t).all() for t in out.levels)


@pytest.mark.parametrize("name", list_fusions())
def test_every_fusion_contract(name: str) -> None:
    fusion = create_fusion(name, modalities=SPECS, width=16)
    out = fusion(features())
    check_output(out, batch=2)
    (out.vector.sum() + sum(t.sum() for t in out.levels or ())).backward()
    assert all(p.grad is not None for p in fusion.proj.parameters())


@pytest.mark.parametrize("name", list_fusions())
@pytest.mark.parametrize("missing", list(SPECS))
@pytest.mark.parametrize("train", [False, True])
def test_missing_modality_gets_weight_zero(name: str, missing: str, train: bool) -> None:
    fusion = create_fusion(name, modalities=SPECS, width=16).train(train)
    given: dict[str, ModalFeatures | None] = dict(features())
    given[missing] = None
    out = fusion(given)
    index = list(SPECS).index(missing)
    assert (out.weights[:, index] == 0).all()
    check_output(out, batch=2)
    # leaving the key out is the same as None
    del given[missing]
    assert (fusion(given).weights[:, index] == 0).all()


@pytest.mark.parametrize("name", list_fusions())
def test_only_non_spatial_modality_has_no_levels(name: str) -> None:
    out = create_fusion(name, modalities=SPECS, width=16)({"text": features()["text"]})
    assert out.levels is None
    torch.testing.assert_close(out.weights, torch.tensor([[0.0, 0.0, 1.0]] * 2))


@pytest.mark.parametrize("name", ["dma", "hffn"])
def test_weights_vary_per_sample(name: str) -> None:
    fusion = create_fusion(name, modalities=SPECS, width=16).eval()
    with torch.no_grad():
        a = fusion(features(batch=2, seed=1)).weights
        b = fusion(features(batch=2, seed=2)).weights
    assert not torch.allclose(a[0], a[1])
    assert not torch.allclose(a, b)


def test_hffn_reports_per_level_weights() -> None:
    out = create_fusion("hffn", modalities=SPECS, width=16)(features())
    assert out.level_weights is not None
    assert out.level_weights.shape == (2, 3, 3)
    torch.testing.assert_close(out.level_weights.sum(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(out.level_weights.mean(dim=1), out.weights)


@pytest.mark.parametrize("name", list_fusions())
def test_modality_dropout_only_in_training(name: str) -> None:
    fusion = create_fusion(name, modalities=SPECS, width=16, modality_dropout=0.5)
    batch = features(batch=64, size=16)
    torch.manual_seed(0)
    trained = fusion.train()(batch).weights
    dropped = trained == 0
    assert dropped.any(), "some modalities are dropped in training mode"
    assert not dropped.all(dim=1).any(), "never all modalities of a sample"
    torch.testing.assert_close(trained.sum(dim=1), torch.ones(64))
    assert (fusion.eval()(batch).weights > 0).all(), "nothing is dropped in eval mode"


def test_drop_modalities_keeps_one_present() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[True, False, True]] * 500)
    kept = drop_modalities(mask, 0.9)
    assert (kept.sum(dim=1) >= 1).all()
    assert not (kept & ~mask).any()
    assert kept[:, 0].any() and kept[:, 2].any()


def test_fusion_input_errors() -> None:
    fusion = create_fusion("dma", modalities=SPECS, width=16)
    with pytest.raises(MLAInputError, match="all modalities are missing"):
        fusion({"visible": None})
    with pytest.raises(MLAInputError, match="unknown modality 'sonar'"):
        fusion({"sonar": features()["text"]})
    with pytest.raises(MLAConfigError, match="unknown fusion 'late': choose one of concat, dma, hffn"):
        create_fusion("late", modalities=SPECS, width=16)
    with pytest.raises(MLAConfigError, match=r"modality_dropout must lie in \[0, 1\)"):
        create_fusion("dma", modalities=SPECS, width=16, modality_dropout=1.0)


@pytest.fixture
def mean_fusion() -> Iterator[str]:
    """A fusion defined in one place, as a new file would: registered, used, then removed again."""

    class MeanFusion(Fusion):
        def forward(self, features: dict[str, ModalFeatures | None]) -> FusionOutput:  # type: ignore[override]
            found, mask = self.present(features)
            weights = mask.float() / mask.sum(dim=1, keepdim=True)
            vectors = self.project_vectors(found)
            vector = sum(weights[:, i : i + 1] * v for i, v in vectors.items())
            return FusionOutput(vector=vector, weights=weights)  # type: ignore[arg-type]

    FUSIONS.register("mean_test")(MeanFusion)
    yield "mean_test"
    FUSIONS._factories.pop("mean_test")


def test_a_new_fusion_needs_no_other_edit(mean_fusion: str, tiny_config, make_inputs) -> None:  # type: ignore[no-untyped-def]
    from mla import MLAModel

    model = MLAModel(tiny_config(("image", "text"), fusion=mean_fusion))
    out = model(make_inputs(("image", "text")))
    assert out.outputs["classification"].shape == (2, 2)
