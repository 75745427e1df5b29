"""Tiny configurations and inputs for the mla tests (widths of 8-16, 64×64 visible, 16×16 infrared)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mla import EncoderSpec, ModalConfig

SIZE = 64  # visible side; infrared is SIZE / 4
FEATURES = 5  # tabular features

TINY_ENCODERS: dict[str, EncoderSpec] = {
    "visible": EncoderSpec("conv_pyramid", in_channels=1, width=8, options={"depths": [1, 1, 1]}),
    "image": EncoderSpec("conv_pyramid", in_channels=3, width=8, options={"depths": [1, 1, 1]}),
    "infrared": EncoderSpec("ir_pyramid", in_channels=1, width=8, scale=4, options={"depths": [1, 1, 1]}),
    "text": EncoderSpec("text", width=16, options={"depth": 1, "heads": 2, "max_len": 32}),
    "tabular": EncoderSpec("tabular", in_channels=FEATURES, width=16),
}

# Which modalities each head is exercised with (a head added later gets the default).
HEAD_MODALITIES: dict[str, tuple[str, ...]] = {
    "segmentation": ("visible", "infrared", "tabular"),
    "classification": ("image", "text", "tabular"),
    "answer": ("image", "text"),
    "sequence": ("image", "text"),
}
DEFAULT_MODALITIES = ("image", "text")

TinyConfig = Callable[..., ModalConfig]
MakeInputs = Callable[..., dict[str, Any]]


def tiny(
    modalities: Sequence[str], fusion: str = "dma", heads: Sequence[str] = ("classification",), **kw: Any
) -> ModalConfig:
    """A tiny ModalConfig for ``modalities``."""
    head_options: dict[str, dict[str, Any]] = {}
    if "answer" in heads:
        head_options["answer"] = {"num_answers": 7, "heads": 2}
    if "sequence" in heads:
        head_options["sequence"] = {"depth": 1, "heads": 2, "max_len": 8}
    values: dict[str, Any] = {
        "modalities": tuple(modalities),
        "encoders": {name: TINY_ENCODERS[name] for name in modalities},
        "fusion_type": fusion,
        "heads": tuple(heads),
        "width": 16,
        "text_dim": 16,
        "image_dim": SIZE,
        "head_options": head_options,
    }
    return ModalConfig(**(values | kw))


def inputs_for(modalities: Sequence[str], batch: int = 2, size: int = SIZE, seed: int = 0) -> dict[str, Any]:
    """Random inputs for ``modalities`` (visible size×size, infrared size/4, two short texts)."""
    gen = torch.Generator().manual_seed(seed)
    texts = ["a crack near the edge", "no defect", "two cracks", "a hot spot"]
    made: dict[str, Any] = {
        "visible": torch.rand(batch, 1, size, size, generator=gen),
        "image": torch.rand(batch, 3, size, size, generator=gen),
        "infrared": torch.rand(batch, 1, size // 4, size // 4, generator=gen),
        "text": [texts[(seed + i) % len(texts)] for i in range(batch)],
        "tabular": torch.randn(batch, FEATURES, generator=gen),
    }
    return {name: made[name] for name in modalities}


def tiny_crack_model(fusion: str = "hffn", width: int = 8) -> Any:
    """A seeded visible + infrared crack model of fused and visible width ``width`` (infrared width 8), in eval mode."""
    import mla

    torch.manual_seed(0)
    config = mla.crack_config(
        fusion_type=fusion,
        width=width,
        encoders={
            "visible": EncoderSpec("conv_pyramid", in_channels=1, width=width),
            "infrared": EncoderSpec("ir_pyramid", in_channels=1, width=8, scale=4),
        },
    )
    return mla.MLAModel(config).eval()
