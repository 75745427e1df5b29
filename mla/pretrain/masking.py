"""Random patch masks shared by every modality of a batch, and what they do to inputs.

A mask is drawn once per batch on the reference (visible) grid, in square patches of ``patch``
reference pixels, and read at each modality's own resolution, so every camera hides the same places::

    reference 64×64, patch 16     grid (B, 4, 4)                          True = masked
    visible  (B, 1, 64, 64)       pixels(scale=1) (B, 1, 64, 64)          16×16 blocks
    infrared (B, 1, 16, 16)       pixels(scale=4) (B, 1, 16, 16)          4×4 blocks = visible mask[::4, ::4]
    fine level, stride 4          cells(stride=4) (B, 16, 16)             4×4 blocks

Every sample hides the same number of patches. Draws come from ``generator`` when one is given, else
from torch's global generator (which :class:`mla.train.Trainer` seeds and saves in its checkpoints),
and always on the CPU: a mask depends on the seed only, never on the device.

Text is masked by tokens: a share of the real (non-special) tokens is replaced by a mask id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from mla.errors import MLAConfigError, MLAInputError
from mla.text import NUM_SPECIAL, PAD, SEP

__all__ = ["PatchMask", "fill_masked", "mask_tokens", "patchify", "random_patch_mask"]

logger = logging.getLogger(__name__)

MASK_ID = SEP
"""Token id that stands for a masked token: the byte tokenizer has no mask id, and ``SEP`` never occurs
inside one text."""


@dataclass(frozen=True)
class PatchMask:
    """Which patches of the reference grid are hidden, for a batch.

    Attributes:
        grid: (B, H/patch, W/patch) bool, True where the patch is masked.
        patch: Side of one patch in reference (visible) pixels.

    """

    grid: Tensor
    patch: int

    @property
    def ratio(self) -> float:
        """The share of masked patches over the batch."""
        return float(self.grid.float().mean())

    def pixels(self, scale: int = 1) -> Tensor:
        """The mask on an input ``scale``× coarser than the reference grid: (B, 1, H/scale, W/scale) bool.

        Raises:
            MLAInputError: ``patch`` is not a multiple of ``scale`` (a patch would cut input pixels).

        """
        return self._expand(scale, "scale").unsqueeze(1)

    def cells(self, stride: int) -> Tensor:
        """The mask on a feature map at reference ``stride`` (4 for the fine level): (B, H/stride, W/stride) bool.

        Raises:
            MLAInputError: ``patch`` is not a multiple of ``stride``.

        """
        return self._expand(stride, "stride")

    def to(self, device: torch.device | str) -> PatchMask:
        """The same mask on ``device``."""
        return PatchMask(self.grid.to(device), self.patch)

    def _expand(self, step: int, what: str) -> Tensor:
        if step < 1 or self.patch % step:
            msg = f"patch {self.patch} is not a multiple of {what} {step}: choose a patch that is (e.g. 16)"
            raise MLAInputError(msg)
        side = self.patch // step
        return self.grid.repeat_interleave(side, dim=1).repeat_interleave(side, dim=2)


def random_patch_mask(
    batch: int,
    height: int,
    width: int,
    *,
    patch: int = 16,
    ratio: float = 0.6,
    generator: torch.Generator | None = None,
) -> PatchMask:
    """Draw a mask hiding ``round(ratio · L)`` of the ``L`` patches of each sample (at least one, never all).

    Args:
        batch: B.
        height: Reference (visible) height H, a multiple of ``patch``.
        width: Reference width W, a multiple of ``patch``.
        patch: Patch side in reference pixels.
        ratio: Share of patches to hide, in (0, 1).
        generator: A CPU generator for reproducible masks; the global one when None.

    Returns:
        The mask, on the CPU.

    Raises:
        MLAConfigError: ``ratio`` outside (0, 1) or ``patch`` below 1.
        MLAInputError: The size is not a multiple of ``patch`` or holds fewer than two patches.

    """
    if not 0.0 < ratio < 1.0:
        msg = f"mask ratio must lie in (0, 1), e.g. 0.6; got {ratio}"
        raise MLAConfigError(msg)
    if patch < 1:
        msg = f"patch must be at least 1, got {patch}"
        raise MLAConfigError(msg)
    if height % patch or width % patch:
        msg = f"the reference size {height}×{width} is not a multiple of the mask patch {patch}: crop or pick a patch"
        raise MLAInputError(msg)
    rows, cols = height // patch, width // patch
    count = rows * cols
    if count < 2:
        msg = f"a {height}×{width} input holds {count} patch(es) of {patch}: masking needs at least two"
        raise MLAInputError(msg)
    hidden = min(max(round(ratio * count), 1), count - 1)
    noise = torch.rand(batch, count, generator=generator)  # (B, L) on the CPU
    order = noise.argsort(dim=1)  # (B, L)
    grid = torch.zeros(batch, count, dtype=torch.bool)
    grid.scatter_(1, order[:, :hidden], True)
    return PatchMask(grid.view(batch, rows, cols), patch)


def fill_masked(x: Tensor, mask: Tensor) -> Tensor:
    """Replace the masked pixels with the mean of each sample's and channel's visible pixels.

    The fill carries no information about what it hides, and leaves the mean of the input unchanged
    (so an encoder that standardises its input, such as ``ir_pyramid``, sees the visible pixels as before).

    Args:
        x: (B, C, H, W) input.
        mask: (B, 1, H, W) bool, True where hidden.

    Returns:
        (B, C, H, W), the input with its masked pixels filled.

    """
    keep = (~mask).to(x.dtype)  # (B, 1, H, W)
    total = (x * keep).sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    mean = total / keep.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)  # (B, C, 1, 1)
    return torch.where(mask, mean, x)


def patchify(x: Tensor, side: int) -> Tensor:
    """(B, C, H, W) → (B, L, C·side·side): non-overlapping patches in row-major order (as ``PatchMask.grid``).

    Raises:
        MLAInputError: H or W is not a multiple of ``side``.

    """
    b, c, h, w = x.shape
    if h % side or w % side:
        msg = f"a {h}×{w} map does not split into {side}×{side} patches"
        raise MLAInputError(msg)
    x = x.reshape(b, c, h // side, side, w // side, side)  # (B, C, gh, s, gw, s)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, s, s)
    return x.reshape(b, (h // side) * (w // side), c * side * side)


def mask_tokens(
    ids: Tensor, *, ratio: float = 0.15, mask_id: int = MASK_ID, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Hide a share of the real tokens of each row (at least one per row that has any).

    Special tokens (``PAD``, ``BOS``, ``EOS``, ``SEP``) are never hidden.

    Args:
        ids: (B, T) token ids from :class:`~mla.text.ByteTokenizer`.
        ratio: Share of real tokens to hide, in (0, 1).
        mask_id: The id written in place of a hidden token.
        generator: A CPU generator for reproducible draws; the global one when None.

    Returns:
        ``(masked_ids, hidden)``: (B, T) ids with hidden tokens replaced, and (B, T) bool, True where hidden.

    Raises:
        MLAConfigError: ``ratio`` outside (0, 1).

    """
    if not 0.0 < ratio < 1.0:
        msg = f"token mask ratio must lie in (0, 1), e.g. 0.15; got {ratio}"
        raise MLAConfigError(msg)
    candidates = (ids >= NUM_SPECIAL) & (ids != PAD)  # (B, T)
    scores = torch.rand(ids.shape, generator=generator).to(ids.device)  # (B, T)
    scores = scores.masked_fill(~candidates, 2.0)
    hidden = scores < ratio
    first = scores.argmin(dim=1, keepdim=True)  # (B, 1): the lowest-scored real token of each row
    hidden.scatter_(1, first, True)
    hidden &= candidates
    return ids.masked_fill(hidden, mask_id), hidden
