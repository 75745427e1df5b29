from __future__ import annotations

import pytest
import torch
from torch import nn

import mla
from mla import MLAModel, count_macs, count_parameters
from mla.profile import measure_latency, parameter_bytes


def test_count_macs_of_known_layers() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.rand(2, 3, 10, 10)) == 2 * 8 * 10 * 10 * 3 * 9
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(depthwise, torch.rand(1, 8, 4, 4)) == 8 * 4 * 4 * 9
    linear = nn.Linear(5, 7)
    assert count_macs(linear, torch.rand(3, 5)) == 3 * 7 * 5
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    q, k = torch.rand(1, 2, 8), torch.rand(1, 3, 8)
    assert count_macs(attention, q, k, k) == 2 * 2 * 64 + 2 * 3 * 64 + 2 * 2 * 3 * 8


def test_count_parameters() -> None:
    layer = nn.Linear(4, 3)
    assert count_parameters(layer) == 15
    layer.bias.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 12


def test_count_macs_sees_transformer_layers_in_eval() -> None:
    encoder = mla.create_encoder("text", width=16, depth=1, heads=2).eval()
    with torch.no_grad():
        macs = count_macs(encoder, encoder.prepare(["abc"], "text"))
    assert macs > 5 * 4 * 16 * 16  # at least the feed-forward layers of 5 tokens


def test_crack_config_fits_the_cpu_budget() -> None:
    """The suggested crack model: < 1 GMAC per 512×512 visible tile and a < 10 MB fp32 file."""
    model = MLAModel(mla.crack_config()).eval()
    inputs = model.example_inputs(batch=1, image_size=512)
    assert inputs["infrared"].shape == (1, 1, 128, 128)
    with torch.no_grad():
        macs = count_macs(model, inputs)
        out = model(inputs)
    assert out.outputs["segmentation"].shape == (1, 1, 512, 512)
    assert macs < 1e9
    assert parameter_bytes(model) < 10 * 2**20


def test_measure_latency_is_positive() -> None:
    layer = nn.Linear(4, 4)
    assert measure_latency(layer, {"input": torch.rand(1, 4)}, repeats=3, warmup=1) > 0


@pytest.mark.parametrize("fusion", mla.list_fusions())
def test_fusions_cost_about_the_same(fusion: str) -> None:
    model = MLAModel(mla.crack_config(fusion_type=fusion)).eval()
    with torch.no_grad():
        macs = count_macs(model, model.example_inputs(batch=1, image_size=256))
    assert 0 < macs < 0.25e9
