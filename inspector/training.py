"""Training a crack model: which ``mla`` configuration, which loss, which validation figure.

The engine (optimiser, schedule, mixed precision, accumulation, checkpoints, metrics) is
:mod:`mla.train`; this module only says what a crack model is:

- **variants**: ``hffn``, ``dma``, ``concat`` (visible + infrared), ``visible-only``, ``ir-only``;
- **loss**: binary cross-entropy plus soft Dice on the crack class (cracks cover ~1% of a tile, so
  BCE alone learns "no crack everywhere");
- **validation**: pixel F1 with the 2-pixel tolerance of :mod:`inspector.evaluate` on fixed tiles
  of a separate folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

import mla
from inspector.crack_data import CrackTileSet
from inspector.evaluate import PixelCounts, tolerant_counts

VARIANTS = ("hffn", "dma", "concat", "visible-only", "ir-only")
ARCHITECTURES = ("unshuffle", "pyramid")


def crack_model_config(
    variant: str, width: int = 32, modality_dropout: float | None = None, arch: str = "unshuffle"
) -> mla.ModalConfig:
    """The ``mla`` configuration of a crack-model variant.

    Args:
        variant: Fusion (``hffn``, ``dma``, ``concat``) or a single modality (``visible-only``, ``ir-only``).
        width: Base width of the visible encoder and the fusion (the IR encoder has half).
        modality_dropout: Chance of dropping one modality per training sample of a fused variant
            (default: 0.15 for ``dma`` and ``hffn``, which renormalise their modal weights, 0 for ``concat``).
        arch: ``unshuffle``: space-to-depth visible stem and pixel-shuffle decoder, ReLU, no convolution
            above stride 4 (the fast one, about 3x faster on onnxruntime); ``pyramid``: the first-round
            network (strided stem, bilinear decoder to full resolution, SiLU).

    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    fast = arch == "unshuffle"
    act = {"act": "relu"} if fast else {}
    visible = mla.EncoderSpec("unshuffle_pyramid" if fast else "conv_pyramid", in_channels=1, width=width)
    infrared = mla.EncoderSpec("ir_pyramid", in_channels=1, width=max(width // 2, 8), scale=4, options=act)
    common: dict[str, Any] = {"width": width}
    if fast:
        common["head_options"] = {"segmentation": {"decoder": "shuffle", "act": "relu"}}
    single = {"visible-only": ("visible", visible), "ir-only": ("infrared", infrared)}
    if variant in single:
        name, spec = single[variant]
        return mla.crack_config(
            modalities=(name,), encoders={name: spec}, fusion_type="concat", fusion_options=act, **common
        )
    dropout = modality_dropout if modality_dropout is not None else 0.15 if variant in ("dma", "hffn") else 0.0
    return mla.crack_config(
        encoders={"visible": visible, "infrared": infrared},
        fusion_type=variant,
        fusion_options=act if variant == "concat" else {},
        modality_dropout=dropout,
        **common,
    )


@dataclass(frozen=True)
class TileBatch:
    """Tensors of one training batch (moved to the device by the engine)."""

    visible: torch.Tensor  # (B, 1, T, T)
    infrared: torch.Tensor  # (B, 1, T/4, T/4)
    mask: torch.Tensor  # (B, 1, T, T)


def to_batch(arrays: Mapping[str, np.ndarray]) -> TileBatch:
    """Numpy batch from :class:`CrackTileSet` -> tensors."""
    return TileBatch(*(torch.from_numpy(arrays[k]) for k in ("visible", "infrared", "mask")))


def model_inputs(model: mla.MLAModel, batch: TileBatch) -> dict[str, torch.Tensor]:
    """The modalities this model takes, by name."""
    available = {"visible": batch.visible, "infrared": batch.infrared}
    return {m: available[m] for m in model.modalities}


def crack_loss(model: mla.MLAModel, batch: TileBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE + soft Dice on the crack class; also reports the batch's Dice."""
    logits = model(**model_inputs(model, batch)).outputs["segmentation"].float()
    target = batch.mask.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1.0) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    loss = bce + (1 - dice.mean())
    return loss, {"bce": float(bce.detach()), "dice": float(dice.mean().detach())}


def validation_batches(tiles: CrackTileSet, count: int, size: int, tile: int, seed: int = 12345) -> list[TileBatch]:
    """Fixed validation tiles (half near cracks, a quarter on distractors), the same at every evaluation."""
    rng = np.random.default_rng(seed)
    return [
        to_batch(tiles.batch(rng, size, tile, crack_fraction=0.5, augment=False, distractor_fraction=0.25))
        for _ in range(count)
    ]


def validation_f1(model: mla.MLAModel, batches: list[TileBatch]) -> dict[str, float]:
    """Pixel precision, recall and F1 (2 px tolerance) of a model on fixed validation tiles."""
    total = PixelCounts()
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v.to(device) for k, v in model_inputs(model, batch).items()}
            prob = torch.sigmoid(model(**inputs).outputs["segmentation"].float()).cpu().numpy()
            for p, m in zip(prob[:, 0], batch.mask.numpy()[:, 0], strict=True):
                total = total + tolerant_counts(p >= 0.5, m > 0.5)
    return {"val_f1": total.f1, "val_precision": total.precision, "val_recall": total.recall}


def describe(model: mla.MLAModel, tile: int = 512) -> dict[str, Any]:
    """Size figures of a model: parameters, MACs per tile of ``tile`` visible pixels."""
    inputs: dict[str, torch.Tensor] = {}
    if "visible" in model.modalities:
        inputs["visible"] = torch.zeros(1, 1, tile, tile)
    if "infrared" in model.modalities:
        inputs["infrared"] = torch.zeros(1, 1, tile // 4, tile // 4)
    return {
        "parameters": mla.count_parameters(model),
        "macs_per_512_tile": mla.count_macs(model, **inputs) if tile == 512 else None,
    }
