"""Relation reasoning over fused cells: every ordered pair of cells, with the question, summed.

After the Relation Network of Santoro et al. (2017, "A simple neural network module for relational
reasoning"): the cells of one level of the fused pyramid are the objects; a shared MLP ``g`` scores
each ordered pair together with the question, the pair outputs are averaged (the paper sums them),
and ``f`` maps the average to the reasoning vector. The first layer of ``g`` is split by input
(cell i, cell j, question), so the pair tensor is built from three projections instead of N² concatenations::

    cells    = level_l + (x, y)                                    (B, N, W + 2)     N = H_l · W_l
    a, b     = Linear_a(cells), Linear_b(cells)                     (B, N, G)
    c        = Linear_c(question)                                   (B, G)
    pairs    = ReLU(a_i + b_j + c)                                  (B, N, N, G)
    relation = f(mean_ij g(pairs))                                  (B, G) → (B, O)

With ``anchor=True`` the question also picks the object it names: a softmax over cells of
``key(cell) · query(question)`` weights each cell's pairs, and that anchored summary joins the plain
mean (questions about one object, "is the red object on the left?", or relative to one, "what is
closest to the red object?", then need no search over all pairs)::

    per_cell = mean_j g(pairs)_ij                                   (B, N, G)
    alpha    = softmax_i(key(cells_i) · query(question) / √K)       (B, N)
    relation = f([Σ_i alpha_i · per_cell_i, mean_i per_cell_i])      (B, 2G) → (B, O)

Cost grows with N²: the mid level of a 64 px image (8 × 8 cells) makes 4,096 pairs.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

ANCHOR_DIM = 32  # size K of the anchor's keys and query


def cell_coordinates(height: int, width: int, like: Tensor) -> Tensor:
    """(H·W, 2) cell centres in [-1, 1], x then y, row-major, with ``like``'s dtype and device."""
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)  # (H·W, 2)


class RelationReasoner(nn.Module):
    """``g`` over all ordered pairs of cells and the question, summed, then ``f``.

    Args:
        width: Channels W of the fused level.
        question_dim: Size of the question vector.
        hidden: Width G of ``g`` and ``f``.
        out_dim: Size O of the output.
        depth: Layers of ``g`` (≥ 2; the first is the split projection).
        dropout: Dropout in ``f``.
        norm: LayerNorm over each cell's channels and BatchNorm over the question first (for
            unnormalised encoder levels and questions that share most of their vector).
        anchor: Weight the pairs by a question-chosen cell as well (see the module docstring).

    """

    def __init__(
        self,
        width: int,
        question_dim: int,
        hidden: int = 128,
        out_dim: int = 128,
        depth: int = 3,
        dropout: float = 0.0,
        norm: bool = False,
        anchor: bool = False,
    ) -> None:
        super().__init__()
        self.norm: nn.Module = nn.LayerNorm(width) if norm else nn.Identity()
        # the question is standardised per feature over the batch: questions share most of their vector
        # (they differ in a word or two), and a per-sample LayerNorm keeps that shared part on top
        self.ask_norm: nn.Module = nn.BatchNorm1d(question_dim) if norm else nn.Identity()
        self.key = nn.Linear(width + 2, ANCHOR_DIM) if anchor else None
        self.query = nn.Linear(question_dim, ANCHOR_DIM) if anchor else None
        self.left = nn.Linear(width + 2, hidden)
        self.right = nn.Linear(width + 2, hidden, bias=False)
        self.ask = nn.Linear(question_dim, hidden, bias=False)
        layers: list[nn.Module] = []
        for _ in range(max(1, depth - 1)):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.g = nn.Sequential(*layers)
        # f ends linear: a final ReLU can die (all its units negative for every input), and then no
        # gradient ever reaches g again; the shipped model of 2026-11-30 trained 25,000 steps like that.
        self.f = nn.Sequential(
            nn.Linear(2 * hidden if anchor else hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, level: Tensor, question: Tensor) -> Tensor:
        """(B, W, H, W') cells and (B, Q) question → (B, O)."""
        return self.reason(level, question)[0]

    def reason(self, level: Tensor, question: Tensor) -> tuple[Tensor, Tensor | None]:
        """As :meth:`forward`, and the anchor's logits over the cells (B, H, W') (None without an anchor)."""
        batch, _, height, width = level.shape
        cells = self.norm(level.flatten(2).transpose(1, 2))  # (B, N, W)
        question = self.ask_norm(question.to(cells.dtype))  # (B, Q)
        coords = cell_coordinates(height, width, cells).expand(batch, -1, -1)  # (B, N, 2)
        cells = torch.cat([cells, coords], dim=2)  # (B, N, W + 2)
        a = self.left(cells)  # (B, N, G)
        b = self.right(cells)  # (B, N, G)
        question = question.to(a.dtype)
        c = self.ask(question)  # (B, G)
        pairs = torch.relu(a[:, :, None] + b[:, None, :] + c[:, None, None])  # (B, N, N, G)
        per_cell = self.g(pairs).mean(dim=2)  # (B, N, G); the mean (not the sum) keeps fp16 in range for any N
        pooled = per_cell.mean(dim=1)  # (B, G)
        scores = None
        if self.key is not None and self.query is not None:
            scores = (self.key(cells) * self.query(question)[:, None]).sum(dim=2) / ANCHOR_DIM**0.5  # (B, N)
            alpha = torch.softmax(scores.float(), dim=1).to(a.dtype)  # (B, N)
            anchored = (alpha[:, :, None] * per_cell).sum(dim=1)  # (B, G)
            pooled = torch.cat([anchored, pooled], dim=1)  # (B, 2G)
        out: Tensor = self.f(pooled)  # (B, O)
        return out, None if scores is None else scores.view(batch, height, width)
