"""Pointer reasoning: find the object a question names, then the one it asks about by distance to it.

A Relation Network compares distances only implicitly, through sums over cell pairs, and on 16 px
cells the centres it can see are too coarse to rank distances that differ by a few pixels (ranking
the objects of held-out synthetic scenes by their cell centres answers 81.7% of closest/furthest
questions at 16 px cells, 97.7% at 4 px). The pointer reads the finest level (4 px cells at 64 px)
with the coarser levels upsampled onto it, and makes the two look-ups explicit. Each cell also
proposes where its object's centre is (an offset of up to two cells), so distances are taken between
centres rather than between the nearest cells::

    cells    = LN([level_0, up(level_1), up(level_2)])                (B, N, C)     N = H_0 · W_0
    where    = centre of cell + 2 cells · tanh(Linear(cells))         (B, N, 2)
    alpha    = softmax_i(key_a(cells) · query_a(q) / √K)              (B, N)        the named object
    anchor   = Σ_i alpha_i · where_i                                  (B, 2)
    dist     = |where_j − anchor|                                      (B, N)
    beta     = softmax_j(key_b(cells) · query_b(q) / √K + slope(q) · dist_j)   (B, N)   closest / furthest
    out      = f([Σ alpha·value, Σ beta·value, anchor, Σ beta·where])  (B, O)
    out     += look(cells sampled on a G × G window of cells around Σ beta·where)   (B, O)   ``glimpse=G``

The glimpse is there for reading the found object's shape: a softmax over cells averages the cells
an object covers, which keeps its colour but blurs its outline. Without it, the VQA model answered
closest / furthest → colour at 95.9–98.8% on held-out synthetic scenes but → shape at 69.5–71.3%,
although its second softmax put more than half its mass on the asked object in 95–100% of those
questions; with it, → shape 95.3–97.8% (docs/VQA.md). The window, sampled bilinearly one cell apart
around the found centre, keeps the cells' arrangement.

In training (or with ``keep_maps`` set), ``maps`` keeps the last pass's logits of ``alpha`` and ``beta``
(B, N): a training loop that knows where the objects are may add a loss on them (``inspector vqa train
--pointer-supervision``), an evaluation may measure where it looks (``inspector vqa eval --looks``).

``slope(q)`` is the question's own sign and scale for distance (negative for "closest", positive for
"furthest"), learned like every other weight. ``f`` ends in a zero-initialised layer, so a model
warm-started with a pointer answers exactly as before until training moves it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from mla.heads.relation import cell_coordinates

logger = logging.getLogger(__name__)

POINTER_KEY_DIM = 32  # size K of the keys and queries
DISTANCE_SCALE = 50.0  # slope(q) = ±1 sets logits 50 apart per unit of distance (half the image): 1.2 per px
CENTRE_REACH = 2.0  # cells a cell's centre proposal may move
GLIMPSE_DIM = 24  # channels each glimpse sample is projected to


class PointerReasoner(nn.Module):
    """Anchor on the named object, point at the closest or furthest other one, read both.

    Args:
        level_channels: Channels of each level of the source pyramid, finest first.
        question_dim: Size of the question vector.
        hidden: Width of the values and of ``f``.
        out_dim: Size O of the output.
        glimpse: Side G of the window of cells read around the found object (0: none).

    """

    def __init__(
        self, level_channels: Sequence[int], question_dim: int, hidden: int = 64, out_dim: int = 64, glimpse: int = 0
    ) -> None:
        super().__init__()
        channels = sum(level_channels)
        self.norm = nn.LayerNorm(channels)
        self.ask_norm = nn.BatchNorm1d(question_dim)
        self.centre = nn.Linear(channels, 2)
        nn.init.zeros_(self.centre.weight)
        nn.init.zeros_(self.centre.bias)
        self.key_a = nn.Linear(channels, POINTER_KEY_DIM)
        self.query_a = nn.Linear(question_dim, POINTER_KEY_DIM)
        self.key_b = nn.Linear(channels, POINTER_KEY_DIM)
        self.query_b = nn.Linear(question_dim, POINTER_KEY_DIM)
        self.slope = nn.Linear(question_dim, 1)
        self.value = nn.Linear(channels, hidden)
        last = nn.Linear(hidden, out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.f = nn.Sequential(nn.Linear(2 * hidden + 4, hidden), nn.ReLU(), last)
        self.glimpse = glimpse
        self.glimpse_in: nn.Module | None = None
        self.look: nn.Module | None = None
        if glimpse:
            seen = nn.Linear(hidden, out_dim)
            nn.init.zeros_(seen.weight)
            nn.init.zeros_(seen.bias)
            self.glimpse_in = nn.Linear(channels, GLIMPSE_DIM)
            self.look = nn.Sequential(nn.Linear(glimpse * glimpse * GLIMPSE_DIM, hidden), nn.GELU(), seen)
        self.maps: tuple[Tensor, Tensor] | None = None  # (named, asked) logits of the last training pass
        self.keep_maps = False  # keep ``maps`` in evaluation too

    def forward(self, levels: Sequence[Tensor], question: Tensor, prior: Tensor | None = None) -> Tensor:
        """Pyramid levels (B, C_l, H_l, W_l), finest first, and question (B, Q) → (B, O).

        ``prior`` (B, h, w): anchor logits on a coarser grid (the relation head's anchor), spread over
        the fine cells they cover and added to the pointer's own. It helps only if it finds the named
        object: the shipped VQA model's relation anchor does not (3% of its spread mass on the object,
        docs/VQA.md), and its pointer learned where to look from ``maps`` supervision instead.
        """
        fine = levels[0]
        height, width = fine.shape[2:]
        grid = [fine] + [functional.interpolate(level, size=(height, width), mode="nearest") for level in levels[1:]]
        cells = self.norm(torch.cat(grid, dim=1).flatten(2).transpose(1, 2))  # (B, N, C)
        question = self.ask_norm(question.to(cells.dtype))  # (B, Q)
        reach = CENTRE_REACH * 2.0 / max(height, width)  # two cells in [-1, 1] units
        where = cell_coordinates(height, width, cells) + reach * torch.tanh(self.centre(cells))  # (B, N, 2)
        scale = POINTER_KEY_DIM**0.5
        named = (self.key_a(cells) * self.query_a(question)[:, None]).sum(dim=2) / scale  # (B, N)
        if prior is not None:
            spread = functional.interpolate(prior[:, None].to(named.dtype), size=(height, width))  # (B, 1, H, W)
            named = named + spread.flatten(1)  # (B, N)
        alpha = torch.softmax(named.float(), dim=1).to(cells.dtype)  # (B, N)
        anchor = (alpha[:, :, None] * where).sum(dim=1)  # (B, 2)
        dist = (where - anchor[:, None]).square().sum(dim=2).add(1e-6).sqrt()  # (B, N)
        asked = (self.key_b(cells) * self.query_b(question)[:, None]).sum(dim=2) / scale  # (B, N)
        logits = asked + DISTANCE_SCALE * self.slope(question) * dist  # (B, N)
        beta = torch.softmax(logits.float(), dim=1).to(cells.dtype)  # (B, N)
        self.maps = (named, logits) if self.training or self.keep_maps else None  # where it looks, for a loss
        values = self.value(cells)  # (B, N, V)
        found = (beta[:, :, None] * where).sum(dim=1)  # (B, 2)
        read = torch.cat([(alpha[:, :, None] * values).sum(1), (beta[:, :, None] * values).sum(1), anchor, found], 1)
        out: Tensor = self.f(read)  # (B, 2V + 4) → (B, O)
        if self.look is not None:
            out = out + self.look(self._window(cells, found, height, width).flatten(1))  # (B, G·G·D) → (B, O)
        return out

    def _window(self, cells: Tensor, centre: Tensor, height: int, width: int) -> Tensor:
        """Cells (B, N, C) sampled bilinearly on a G × G window, one cell apart, around centre (B, 2) → (B, G·G, D)."""
        batch = cells.shape[0]
        grid = cells.transpose(1, 2).reshape(batch, -1, height, width)  # (B, C, H, W)
        steps = torch.arange(self.glimpse, device=cells.device, dtype=cells.dtype) - (self.glimpse - 1) / 2
        span_x, span_y = 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)  # one cell in [-1, 1] units
        dy, dx = torch.meshgrid(steps * span_y, steps * span_x, indexing="ij")  # (G, G) each
        where = centre[:, None, None, :] + torch.stack([dx, dy], dim=2)[None]  # (B, G, G, 2), x then y
        seen = functional.grid_sample(grid, where, mode="bilinear", padding_mode="zeros", align_corners=True)
        assert self.glimpse_in is not None  # built with the window
        out: Tensor = self.glimpse_in(seen.flatten(2).transpose(1, 2))  # (B, C, G, G) → (B, G·G, D)
        return out
