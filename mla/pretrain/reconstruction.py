"""Stage 1: per-modality masked reconstruction (masked image modelling; masked tokens for text).

One patch mask is drawn per batch on the reference grid (see :mod:`mla.pretrain.masking`); each image
modality hides the same places at its own resolution, is encoded by its own encoder, and a small
throw-away decoder predicts the hidden pixels from the encoder's pyramid::

    visible (B, 1, T, T) ──hide 16×16 patches (mean fill)──► conv_pyramid ──► fine/mid/coarse
    infrared (B, 1, T/4, T/4) ──hide the same 4×4 patches──► ir_pyramid  ──► fine/mid/coarse
    PixelDecoder   coarse ─up─► + mid ─up─► + fine (1×1 laterals, width D) ─3×3─► 1×1 ─pixel shuffle─►
                   (B, C_in, h, w) at the input's own resolution (shuffle ×4 for visible, ×1 for IR)
    loss           MSE on masked patches only, each target patch normalised (zero mean, unit variance)

Text (optional, on by default when the encoders include one): 15% of the real tokens are replaced by a
mask id and a linear head predicts them from the encoder's tokens (cross-entropy on those only).
The modality losses are averaged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mla.encoders import Encoder
from mla.encoders.base import REFERENCE_STRIDES
from mla.errors import MLAConfigError, MLAInputError
from mla.pretrain.base import Batch, PretrainStage, StageOutput, has_tokens, is_image_like
from mla.pretrain.masking import PatchMask, fill_masked, mask_tokens, patchify, random_patch_mask
from mla.text import VOCAB_SIZE

__all__ = ["PixelDecoder", "ReconstructionStage", "masked_patch_loss", "reconstruction_loss"]

logger = logging.getLogger(__name__)

TargetNorm = Literal["patch", "none"]


def masked_patch_loss(pred: Tensor, target: Tensor, grid: Tensor, side: int, *, norm: TargetNorm = "patch") -> Tensor:
    """Mean squared error over the masked patches only; unmasked pixels contribute nothing.

    Args:
        pred: (B, C, H, W) reconstruction.
        target: (B, C, H, W) original input.
        grid: (B, H/side, W/side) bool, True on masked patches (``PatchMask.grid``).
        side: Patch side at this resolution (``patch // scale``).
        norm: ``"patch"`` standardises each target patch over its pixels and channels (as MAE);
            ``"none"`` compares raw values.

    Returns:
        A scalar: the mean over masked patches of the per-patch mean squared error.

    """
    pred_p = patchify(pred.float(), side)  # (B, L, C·s·s)
    target_p = patchify(target.float(), side)  # (B, L, C·s·s)
    if norm == "patch":
        mean = target_p.mean(dim=-1, keepdim=True)
        var = target_p.var(dim=-1, keepdim=True, unbiased=False)
        target_p = (target_p - mean) / (var + 1e-6).sqrt()
    per_patch = (pred_p - target_p).pow(2).mean(dim=-1)  # (B, L)
    weight = grid.reshape(per_patch.shape).to(per_patch.dtype)  # (B, L)
    return (per_patch * weight).sum() / weight.sum().clamp(min=1.0)


class PixelDecoder(nn.Module):
    """A small FPN-style decoder from a three-level pyramid back to the input's pixels.

    Args:
        level_channels: Channels of (fine, mid, coarse).
        out_channels: Channels of the input to reconstruct.
        stride: Input pixels per fine-level cell (4 for a visible pyramid, 1 for ``ir_pyramid`` at scale 4).
        width: Channels inside the decoder.

    """

    def __init__(self, level_channels: Sequence[int], out_channels: int, stride: int, width: int = 32) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(width, out_channels * stride * stride, 1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, levels: Sequence[Tensor]) -> Tensor:
        """(fine, mid, coarse) → (B, out_channels, stride·H_fine, stride·W_fine)."""
        x = self.laterals[-1](levels[-1])  # (B, D, H/16, W/16)
        for lateral, level in zip(list(self.laterals)[-2::-1], list(levels)[-2::-1], strict=True):
            x = F.interpolate(x, size=level.shape[-2:], mode="nearest") + lateral(level)  # (B, D, H_l, W_l)
        x = self.smooth(x)  # (B, D, H/4, W/4)
        out: Tensor = self.shuffle(self.out(x))  # (B, C_in, h, w)
        return out


class ReconstructionStage(PretrainStage):
    """Masked reconstruction for every image modality (and masked tokens for text) of the given encoders.

    Args:
        encoders: Modality name → encoder (shared with the model, trained in place).
        modalities: Which to pre-train; by default every image-like one, and text ones when ``text``.
        patch: Mask patch side in reference (visible) pixels; a multiple of every image modality's scale.
        ratio: Share of patches hidden per sample.
        norm: Target normalisation (see :func:`masked_patch_loss`).
        decoder_width: Channels of the throw-away decoders.
        text: Also pre-train token encoders by masked-token prediction.
        text_ratio: Share of real tokens hidden.
        seed: Seed of a private mask generator; None uses torch's global one (see :class:`PretrainStage`).

    Raises:
        MLAConfigError: No modality to pre-train, a modality without an encoder or that cannot be
            reconstructed, or a patch that is not a multiple of a scale.

    """

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        modalities: Sequence[str] | None = None,
        *,
        patch: int = 16,
        ratio: float = 0.6,
        norm: TargetNorm = "patch",
        decoder_width: int = 32,
        text: bool = True,
        text_ratio: float = 0.15,
        seed: int | None = None,
    ) -> None:
        if modalities is None:
            modalities = [m for m, e in encoders.items() if is_image_like(e) or (text and has_tokens(e))]
        unknown = sorted(set(modalities) - set(encoders))
        if unknown:
            msg = f"no encoder for {', '.join(unknown)}: the model has {', '.join(encoders)}"
            raise MLAConfigError(msg)
        if not modalities:
            msg = f"none of {', '.join(encoders)} can be pre-trained by reconstruction (needs an image or text encoder)"
            raise MLAConfigError(msg)
        if norm not in ("patch", "none"):
            msg = f'norm must be "patch" or "none", got {norm!r}'
            raise MLAConfigError(msg)
        super().__init__({m: encoders[m] for m in modalities}, seed)
        self.modalities = tuple(modalities)
        self.patch, self.ratio, self.norm, self.text_ratio = patch, ratio, norm, text_ratio
        self.decoders = nn.ModuleDict()
        self.token_heads = nn.ModuleDict()
        for name in self.modalities:
            encoder = self.encoder(name)
            if is_image_like(encoder):
                self.decoders[name] = self._decoder(name, encoder, decoder_width)
            elif has_tokens(encoder) and encoder.spec.token_dim is not None:
                self.token_heads[name] = nn.Linear(encoder.spec.token_dim, VOCAB_SIZE)
            else:
                msg = f"{name} ({type(encoder).__name__}) has neither a pyramid nor tokens: it cannot be reconstructed"
                raise MLAConfigError(msg)
        logger.debug("reconstruction stage over %s, patch %d, ratio %.2f", self.modalities, patch, ratio)

    def _decoder(self, name: str, encoder: Encoder, width: int) -> PixelDecoder:
        if self.patch % encoder.scale or REFERENCE_STRIDES[0] % encoder.scale:
            msg = f"{name} has scale {encoder.scale}: the mask patch ({self.patch}) and 4 must be multiples of it"
            raise MLAConfigError(msg)
        channels = encoder.spec.level_channels or ()
        example = encoder.example(1, REFERENCE_STRIDES[-1] * encoder.scale)  # the smallest valid input
        in_channels = int(example.shape[1])
        return PixelDecoder(channels, in_channels, REFERENCE_STRIDES[0] // encoder.scale, width)

    def forward(self, batch: Batch) -> StageOutput:
        """Mean reconstruction loss over the present modalities, and ``{modality}_rec`` per modality."""
        inputs = self.inputs(batch, self.modalities)
        losses: dict[str, Tensor] = {}
        size = self.reference_size(inputs)
        if size is not None:
            mask = self.draw_mask(len(next(iter(inputs.values()))), size)
            for name, x in inputs.items():
                if name in self.decoders:
                    losses[name] = self.image_loss(name, x, mask)
        for name, ids in inputs.items():
            if name in self.token_heads:
                losses[name] = self.token_loss(name, ids)
        loss = torch.stack(list(losses.values())).mean()
        metrics = {f"{name}_rec": float(value.detach()) for name, value in losses.items()}
        return loss, metrics

    def draw_mask(self, batch: int, size: tuple[int, int]) -> PatchMask:
        """A patch mask for a batch on a reference grid of ``size`` (H, W)."""
        return random_patch_mask(batch, *size, patch=self.patch, ratio=self.ratio, generator=self.generator)

    def reconstruct(self, name: str, x: Tensor, mask: PatchMask) -> Tensor:
        """Hide ``mask`` in ``x`` (B, C, h, w), encode and decode: the (B, C, h, w) reconstruction."""
        encoder = self.encoder(name)
        hidden = mask.pixels(encoder.scale).to(x.device)  # (B, 1, h, w)
        levels = encoder(fill_masked(x, hidden)).levels
        if levels is None:
            msg = f"the {name} encoder returned no pyramid"
            raise MLAInputError(msg)
        pred: Tensor = self.decoders[name](levels)
        if pred.shape != x.shape:
            msg = f"the {name} decoder gives {tuple(pred.shape)} for an input of {tuple(x.shape)}: check its strides"
            raise MLAInputError(msg)
        return pred

    def image_loss(self, name: str, x: Tensor, mask: PatchMask) -> Tensor:
        """Masked-patch loss of modality ``name`` for input ``x`` (B, C, h, w)."""
        pred = self.reconstruct(name, x, mask)
        side = self.patch // self.encoder(name).scale
        return masked_patch_loss(pred, x, mask.grid.to(x.device), side, norm=self.norm)

    def token_loss(self, name: str, ids: Tensor) -> Tensor:
        """Cross-entropy of the hidden tokens of ``ids`` (B, T) predicted from the encoder's tokens."""
        masked, hidden = mask_tokens(ids, ratio=self.text_ratio, generator=self.generator)
        tokens = self.encoder(name)(masked).tokens
        if tokens is None:
            msg = f"the {name} encoder returned no tokens"
            raise MLAInputError(msg)
        logits = self.token_heads[name](tokens[hidden]).float()  # (K, V)
        return F.cross_entropy(logits, ids[hidden])


def reconstruction_loss(stage: PretrainStage, batch: Batch) -> StageOutput:
    """``loss_fn(module, batch)`` for :class:`mla.train.Trainer` over a :class:`ReconstructionStage`.

    Raises:
        MLAConfigError: ``stage`` is another kind of stage.

    """
    if not isinstance(stage, ReconstructionStage):
        msg = f"reconstruction_loss needs a ReconstructionStage, got {type(stage).__name__}"
        raise MLAConfigError(msg)
    return stage(batch)
