from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mla
from mla import (
    EncoderSpec,
    MLACheckpointError,
    MLAConfigError,
    MLAError,
    MLAInputError,
    MLAModel,
    MLAOutput,
    ModalConfig,
    list_fusions,
    list_heads,
    load_model,
    save_model,
)
from mla.text import VOCAB_SIZE
from tests.mla.tiny import DEFAULT_MODALITIES, HEAD_MODALITIES, SIZE, MakeInputs, TinyConfig


def test_published_usage() -> None:
    from mla import MLAModel, ModalConfig

    config = ModalConfig(text_dim=512, image_dim=224, fusion_type="dma")
    model = MLAModel(config)
    output = model("A red car on the road", torch.randn(1, 3, 224, 224))
    assert isinstance(output, MLAOutput)
    assert output.modalities == ("text", "image")
    assert output.fused.shape == (1, config.width)
    assert output.modal_weights.shape == (1, 2)
    torch.testing.assert_close(output.modal_weights.sum(dim=1), torch.ones(1))
    assert output.outputs["classification"].shape == (1, 2)
    assert output.logits is output.outputs["classification"]
    assert output.levels is not None and output.levels[0].shape == (1, config.width, 56, 56)
    assert model.encoder("text").spec.vector_dim == 512
    assert set(output.weights_of(0)) == {"text", "image"}


@pytest.mark.parametrize("fusion", list_fusions())
@pytest.mark.parametrize("head", list_heads())
def test_forward_backward_every_fusion_and_head(
    fusion: str, head: str, tiny_config: TinyConfig, make_inputs: MakeInputs
) -> None:
    modalities = HEAD_MODALITIES.get(head, DEFAULT_MODALITIES)
    model = MLAModel(tiny_config(modalities, fusion=fusion, heads=(head,))).train()
    head_inputs = {"sequence": torch.randint(4, VOCAB_SIZE, (2, 6))} if head == "sequence" else None
    out = model(make_inputs(modalities), head_inputs=head_inputs)
    result = out.outputs[head]
    assert torch.isfinite(result).all()
    if head == "segmentation":
        assert result.shape == (2, 1, SIZE, SIZE)
    loss = result.float().square().mean() + out.fused.square().mean()
    loss.backward()
    for name in modalities:
        grads = [p.grad for p in model.encoder(name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient reaches the {name} encoder"


@pytest.mark.parametrize("fusion", list_fusions())
def test_crack_pair_segmentation_with_missing_infrared(
    fusion: str, tiny_config: TinyConfig, make_inputs: MakeInputs
) -> None:
    model = MLAModel(tiny_config(("visible", "infrared"), fusion=fusion, heads=("segmentation",))).eval()
    inputs = make_inputs(("visible", "infrared"))
    both = model(**inputs)
    assert both.outputs["segmentation"].shape == (2, 1, SIZE, SIZE)
    assert (both.modal_weights > 0).all()
    alone = model({"visible": inputs["visible"], "infrared": None})
    assert alone.modal_weights[:, 1].eq(0).all()
    torch.testing.assert_close(alone.modal_weights[:, 0], torch.ones(2))
    assert torch.isfinite(alone.outputs["segmentation"]).all()
    ir_only = model(infrared=inputs["infrared"])
    assert ir_only.outputs["segmentation"].shape == (2, 1, SIZE, SIZE), "IR alone maps back to the visible grid"


def test_call_styles_agree(tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:
    model = MLAModel(tiny_config(("text", "image"))).eval()
    inputs = make_inputs(("text", "image"))
    positional = model(inputs["text"], inputs["image"]).fused
    torch.testing.assert_close(model(**inputs).fused, positional)
    torch.testing.assert_close(model(inputs).fused, positional)
    torch.testing.assert_close(model(inputs["text"], image=inputs["image"]).fused, positional)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, x: m(x["text"], x["image"], x["image"]), "3 positional inputs but the model has 2"),
        (lambda m, x: m(x["text"], text=x["text"]), "given twice"),
        (lambda m, x: m(sonar=x["image"]), "unknown modality 'sonar': this model takes text, image"),
        (lambda m, x: m(text=None, image=None), "all modalities are missing"),
        (lambda m, x: m(), "all modalities are missing"),
        (lambda m, x: m(x["text"][:1], x["image"]), "different batch sizes"),
        (lambda m, x: m(x["text"], torch.rand(2, 1, SIZE, SIZE)), "has 1 channels but its encoder takes 3"),
        (lambda m, x: m(x["text"], torch.rand(2, 3, 72, 64)), "multiples of 16"),
        (lambda m, x: m(x["text"], torch.full((2, 3, SIZE, SIZE), float("nan"))), "NaN or Inf"),
        (lambda m, x: m(x, head_inputs={"sequence": torch.ones(2, 3)}), "head_inputs for sequence"),
    ],
)
def test_input_errors(call, match: str, tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:  # type: ignore[no-untyped-def]
    model = MLAModel(tiny_config(("text", "image")))
    with pytest.raises(MLAInputError, match=match):
        call(model, make_inputs(("text", "image")))


def test_visible_and_infrared_must_meet(tiny_config: TinyConfig) -> None:
    model = MLAModel(tiny_config(("visible", "infrared"), heads=("segmentation",)))
    with pytest.raises(MLAInputError, match=r"infrared is 32×32 at scale 4.*infrared must be 16×16"):
        model(visible=torch.rand(1, 1, 64, 64), infrared=torch.rand(1, 1, 32, 32))
    with pytest.raises(MLAInputError, match="multiples of 4"):
        model(visible=torch.rand(1, 1, 64, 64), infrared=torch.rand(1, 1, 18, 18))


def test_segmentation_needs_an_image(tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:
    with pytest.raises(MLAConfigError, match="need an image-like modality"):
        MLAModel(tiny_config(("text", "tabular"), heads=("segmentation",)))
    model = MLAModel(tiny_config(("visible", "tabular"), heads=("segmentation",)))
    with pytest.raises(MLAInputError, match="give at least one of visible"):
        model(tabular=make_inputs(("tabular",))["tabular"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion_type": "late"}, "unknown fusion_type 'late': choose one of concat, dma, hffn"),
        ({"heads": ("detector",)}, "unknown head 'detector'"),
        ({"modalities": ("image", "sonar")}, "modality 'sonar' has no default encoder"),
        ({"encoders": {"image": EncoderSpec("resnet")}}, "unknown encoder 'resnet' for 'image'"),
        ({"encoders": {"audio": EncoderSpec()}}, "not among modalities"),
        ({"image_dim": 100}, "multiple of 16"),
        ({"width": 0}, "positive integer"),
        ({"modality_dropout": 1.5}, r"\[0, 1\)"),
        ({"modalities": ("image", "image")}, "repeat"),
        ({"modalities": ("my.image",)}, "identifier"),
        ({"head_options": {"answer": {}}}, "not among heads"),
        ({"fusion_options": {"hidden": object()}}, "JSON-able"),
    ],
)
def test_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(MLAConfigError, match=match):
        ModalConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_encoder_option_is_a_config_error() -> None:
    config = ModalConfig(encoders={"image": EncoderSpec("conv_pyramid", in_channels=3, options={"depth": 3})})
    with pytest.raises(MLAConfigError, match="encoder 'conv_pyramid' cannot take depth"):
        MLAModel(config)
    config = ModalConfig(modalities=("tabular",), encoders={"tabular": EncoderSpec("tabular")})
    with pytest.raises(MLAError, match="in_channels"):
        MLAModel(config)


def test_config_dict_round_trip_is_json() -> None:
    config = mla.crack_config(modality_dropout=0.1, fusion_options={"hidden": 24})
    data = json.loads(json.dumps(MLAModel(config).to_dict()))
    again = ModalConfig.from_dict(data)
    assert again == config
    assert hash(again) == hash(config)
    with pytest.raises(MLAConfigError, match="unknown ModalConfig key 'colour'"):
        ModalConfig.from_dict(data | {"colour": "red"})
    with pytest.raises(MLAConfigError, match="format"):
        ModalConfig.from_dict(data | {"format": "mla.config/99"})


@pytest.mark.parametrize("fusion", list_fusions())
def test_save_load_round_trip(fusion: str, tmp_path: Path, tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:
    modalities = ("visible", "infrared", "text")
    heads = ("segmentation", "classification", "answer")
    model = MLAModel(tiny_config(modalities, fusion=fusion, heads=heads))
    model.train()  # move the BN running statistics away from their defaults
    with torch.no_grad():
        model(make_inputs(modalities, seed=3))
    model.eval()
    path = tmp_path / "model.pt"
    save_model(model, path)
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == model.to_dict()
    loaded = load_model(path, map_location="cpu")
    assert not loaded.training
    inputs = make_inputs(modalities, seed=4)
    with torch.no_grad():
        a, b = model(inputs), loaded(inputs)
    for name in heads:
        assert torch.equal(a.outputs[name], b.outputs[name])
    assert torch.equal(a.modal_weights, b.modal_weights)


def test_load_errors(tmp_path: Path, tiny_config: TinyConfig) -> None:
    with pytest.raises(MLACheckpointError, match="cannot read"):
        load_model(tmp_path / "absent.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(MLACheckpointError, match=r"not an mla\.checkpoint/1 checkpoint"):
        load_model(tmp_path / "other.pt")
    model = MLAModel(tiny_config(("image", "text")))
    state = model.state_dict()
    state.pop(next(iter(state)))
    torch.save({"format": "mla.checkpoint/1", "config": model.to_dict(), "state_dict": state}, tmp_path / "cut.pt")
    with pytest.raises(MLACheckpointError, match="do not match"):
        load_model(tmp_path / "cut.pt")


def test_generate_text(tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:
    model = MLAModel(tiny_config(("image", "text"), heads=("sequence",))).eval()
    ids = model.generate(make_inputs(("image", "text")), max_len=4)
    assert ids.shape[0] == 2 and 1 <= ids.shape[1] <= 4
    assert isinstance(mla.ByteTokenizer().decode(ids[0]), str)
    with pytest.raises(MLAConfigError, match="needs a sequence head"):
        MLAModel(tiny_config(("image", "text"))).generate(make_inputs(("image", "text")))


@pytest.mark.parametrize("fusion", list_fusions())
def test_autocast_bfloat16_on_cpu(fusion: str, tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:
    modalities = ("visible", "infrared", "text")
    model = MLAModel(tiny_config(modalities, fusion=fusion, heads=("segmentation", "classification"))).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(make_inputs(modalities))
    assert torch.isfinite(out.outputs["segmentation"].float()).all()
    assert out.outputs["segmentation"].shape == (2, 1, SIZE, SIZE)
    torch.testing.assert_close(out.modal_weights.sum(dim=1), torch.ones(2))


def test_follows_double_precision(tiny_config: TinyConfig, make_inputs: MakeInputs) -> None:
    model = MLAModel(tiny_config(("visible", "infrared"), fusion="hffn", heads=("segmentation",))).double().eval()
    inputs = {k: v.double() for k, v in make_inputs(("visible", "infrared")).items()}
    out = model(inputs)
    assert out.outputs["segmentation"].dtype == torch.float64


def test_example_inputs_run(tiny_config: TinyConfig) -> None:
    model = MLAModel(tiny_config(("visible", "infrared", "text", "tabular"), heads=("segmentation",))).eval()
    inputs = model.example_inputs(batch=1)
    assert inputs["infrared"].shape == (1, 1, SIZE // 4, SIZE // 4)
    assert model(inputs).outputs["segmentation"].shape == (1, 1, SIZE, SIZE)
