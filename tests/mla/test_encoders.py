from __future__ import annotations

from typing import Any

import pytest
import torch

from mla import MLAConfigError, MLAInputError, ModalFeatures, create_encoder, list_encoders

# Small constructor arguments per registered encoder (an encoder added later is built with defaults).
SMALL: dict[str, dict[str, Any]] = {
    "conv_pyramid": {"in_channels": 1, "width": 8, "depths": (1, 1, 1)},
    "ir_pyramid": {"in_channels": 1, "width": 8, "depths": (1, 1, 1)},
    "text": {"width": 16, "depth": 1, "heads": 2, "max_len": 32},
    "tabular": {"in_channels": 5, "width": 16},
    "unshuffle_pyramid": {"in_channels": 1, "width": 8, "depths": (1, 1, 1)},
}


@pytest.mark.parametrize("name", list_encoders())
def test_every_encoder_matches_its_spec(name: str) -> None:
    encoder = create_encoder(name, **SMALL.get(name, {}))
    x = encoder.prepare(encoder.example(2, 64), name)
    features = encoder(x)
    assert isinstance(features, ModalFeatures)
    assert features.vector.shape == (2, encoder.spec.vector_dim)
    if encoder.spec.level_channels is None:
        assert features.levels is None
    else:
        assert features.levels is not None
        assert [t.shape[1] for t in features.levels] == list(encoder.spec.level_channels)
        # levels at reference strides 4, 8, 16 of the 64-px reference grid
        assert [tuple(t.shape[-2:]) for t in features.levels] == [(16, 16), (8, 8), (4, 4)]
    if encoder.spec.token_dim is not None:
        assert features.tokens is not None
        assert features.tokens.shape[-1] == encoder.spec.token_dim
    features.vector.float().sum().backward()
    assert any(p.grad is not None for p in encoder.parameters())


def test_unshuffle_stem_convolves_nothing_at_full_resolution() -> None:
    encoder = create_encoder("unshuffle_pyramid", in_channels=1, width=8)
    seen: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda _m, i, _o: seen.append(tuple(i[0].shape[-2:])))
             for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    encoder(torch.rand(1, 1, 64, 64))
    for hook in hooks:
        hook.remove()
    assert seen and max(seen) == (16, 16)  # every convolution reads stride 4 or coarser
    with pytest.raises(MLAConfigError, match="scale 1"):
        create_encoder("unshuffle_pyramid", scale=4)


def test_folded_stem_is_the_same_function_in_one_strided_convolution() -> None:
    torch.manual_seed(3)
    encoder = create_encoder("unshuffle_pyramid", in_channels=1, width=8).eval()
    for module in encoder.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        before = encoder(x)
        encoder.fold_stem()
        after = encoder(x)
    stem = encoder.stem[0]
    assert isinstance(encoder.unshuffle, torch.nn.Identity)
    assert (stem.kernel_size, stem.stride, stem.padding, stem.in_channels) == ((12, 12), (4, 4), (4, 4), 1)
    assert before.levels is not None and after.levels is not None
    for a, b in zip(before.levels, after.levels, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    encoder.fold_stem()  # folding twice changes nothing
    assert encoder.stem[0] is stem


def test_visible_pyramid_strides_4_8_16() -> None:
    encoder = create_encoder("conv_pyramid", in_channels=3, width=8)
    levels = encoder(torch.rand(1, 3, 256, 128)).levels
    assert levels is not None
    assert [tuple(t.shape[-2:]) for t in levels] == [(64, 32), (32, 16), (16, 8)]


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_ir_levels_meet_visible_levels(scale: int) -> None:
    visible = create_encoder("conv_pyramid", in_channels=1, width=8)
    infrared = create_encoder("ir_pyramid", in_channels=1, width=8, scale=scale)
    v = visible(torch.rand(1, 1, 256, 256)).levels
    ir = infrared(torch.rand(1, 1, 256 // scale, 256 // scale)).levels
    assert v is not None and ir is not None
    assert [t.shape[-2:] for t in ir] == [t.shape[-2:] for t in v]
    assert infrared.size_multiple == 16 // scale


def test_ir_fine_level_is_at_ir_resolution() -> None:
    """The IR encoder starts at IR resolution: its fine level has the IR input's own size (stride 1)."""
    infrared = create_encoder("ir_pyramid")
    levels = infrared(torch.rand(1, 1, 64, 64)).levels
    assert levels is not None
    assert [tuple(t.shape[-2:]) for t in levels] == [(64, 64), (32, 32), (16, 16)]


def test_ir_normalisation_ignores_offset_and_gain() -> None:
    infrared = create_encoder("ir_pyramid", width=8).eval()
    x = torch.rand(1, 1, 32, 32)
    a = infrared(x).vector
    b = infrared(x * 40.0 + 7000.0).vector
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_ir_scale_must_divide_4() -> None:
    with pytest.raises(MLAConfigError, match="scale must be one of"):
        create_encoder("ir_pyramid", scale=8)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.rand(1, 3, 64, 64), "has 3 channels but its encoder takes 1"),
        (torch.rand(1, 1, 60, 64), "multiples of 16"),
        (torch.rand(1, 64, 64), "add a batch dimension"),
        (torch.zeros(1, 1, 64, 64, dtype=torch.uint8), "floating-point"),
        ("not an image", "must be a torch.Tensor"),
    ],
)
def test_image_checks(value: object, match: str) -> None:
    encoder = create_encoder("conv_pyramid", in_channels=1, width=8)
    with pytest.raises(MLAInputError, match=match):
        encoder.prepare(value, "visible")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    x = torch.rand(1, 1, 64, 64)
    x[0, 0, 3, 5] = bad
    with pytest.raises(MLAInputError, match="1 NaN or Inf"):
        create_encoder("conv_pyramid", in_channels=1).prepare(x, "visible")
    with pytest.raises(MLAInputError, match="NaN or Inf"):
        create_encoder("tabular", in_channels=2).prepare(torch.tensor([[0.0, bad]]), "tabular")


def test_text_accepts_str_list_and_ids() -> None:
    encoder = create_encoder("text", **SMALL["text"]).eval()
    one = encoder(encoder.prepare("a crack", "text"))
    assert one.vector.shape == (1, 16)
    many = encoder(encoder.prepare(["a crack", "a much longer description"], "text"))
    ids = encoder.tokenizer.batch(["a crack", "a much longer description"])[0]
    again = encoder(encoder.prepare(ids, "text"))
    torch.testing.assert_close(many.vector, again.vector)
    assert many.token_mask is not None and many.tokens is not None
    assert many.tokens.shape[:2] == many.token_mask.shape
    # padding does not change a text's features
    torch.testing.assert_close(one.vector, many.vector[:1], atol=1e-5, rtol=1e-5)


def test_text_max_pool_takes_each_channel_s_largest_real_token_and_ignores_padding() -> None:
    encoder = create_encoder("text", **SMALL["text"], pool="max").eval()
    ids = encoder.prepare(["a crack", "a much longer description"], "text")
    found = encoder(ids)
    assert found.tokens is not None and found.token_mask is not None
    real = found.token_mask[0]
    torch.testing.assert_close(found.vector[0], found.tokens[0, real].amax(dim=0))
    alone = encoder(encoder.prepare("a crack", "text"))
    torch.testing.assert_close(alone.vector, found.vector[:1], atol=1e-5, rtol=1e-5)  # padding changes nothing
    with pytest.raises(MLAConfigError, match="'mean' or 'max'"):
        create_encoder("text", **SMALL["text"], pool="sum")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.zeros(2, 4, dtype=torch.long), "only padding"),
        (torch.full((1, 4), 999), r"lie in \[0, 260\)"),
        (torch.ones(1, 40, dtype=torch.long), "takes 1 to 32"),
        (torch.rand(1, 4), "integer tensor"),
        (3.5, "must be a str"),
    ],
)
def test_text_checks(value: object, match: str) -> None:
    encoder = create_encoder("text", **SMALL["text"])
    with pytest.raises(MLAInputError, match=match):
        encoder.prepare(value, "text")


def test_tabular_checks_feature_count() -> None:
    encoder = create_encoder("tabular", in_channels=5)
    with pytest.raises(MLAInputError, match="has 4 features but its encoder takes 5"):
        encoder.prepare(torch.rand(2, 4), "tabular")
