"""Training tiles for crack models: visible tile, its IR tile at native resolution, its mask.

A data folder is loaded once into memory (visible as uint8, IR warped onto the visible image's
quarter grid as float16, masks as uint8). Batches are random tiles: a share of them centred near a
crack pixel (cracks are thin and rare, so uniform tiles would be nearly all background), a share
centred on a recorded distractor (scratch, machining mark, print, oil, IR reflection: the hard
negatives a model must learn to leave alone), the rest anywhere.
Origins are multiples of the scale, so a visible tile of side T at (x, y) pairs exactly
with the IR tile of side T/4 at (x/4, y/4). Flips and quarter turns are applied to all three alike.
With ``capture`` ranges, each visible tile is also re-captured with a random optics and sensor
variation (:mod:`inspector.capture`: blur, gain, gamma, noise, JPEG) and its IR tile gets extra blur
and noise; the mask never changes, so a model learns the true width whatever the optics.

Pure numpy; the caller turns batches into tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspector.capture import CaptureRanges, apply_variation, draw_variation, vary_infrared
from inspector.dataset import DataError, list_ids, read_sample
from inspector.pipeline import to_grey
from inspector.tiles import ir_on_quarter_grid, normalise_ir, normalise_visible


@dataclass
class CrackTileSet:
    """Samples of a data folder held in memory, ready to cut into training tiles."""

    visible: list[np.ndarray] = field(default_factory=list)  # (H, W) uint8
    infrared: list[np.ndarray] = field(default_factory=list)  # (H/s, W/s) float16, normalised
    masks: list[np.ndarray] = field(default_factory=list)  # (H, W) uint8 0/1
    crack_pixels: list[np.ndarray] = field(default_factory=list)  # (K, 2) rows, cols of mask pixels
    distractor_boxes: list[np.ndarray] = field(default_factory=list)  # (D, 4) x0, y0, x1, y1 visible pixels
    scale: int = 4

    @classmethod
    def load(cls, folder: Path, limit: int | None = None, scale: int = 4) -> CrackTileSet:
        """Load a data folder; a sample without a mask is an error.

        ``limit`` keeps N samples spread evenly over the sorted ids (so a folder holding several
        presets or seeds contributes from each), not the first N.
        """
        tiles = cls(scale=scale)
        ids = list_ids(folder)
        if limit is not None and limit < len(ids):
            ids = [ids[int(k)] for k in np.linspace(0, len(ids) - 1, max(limit, 0)).round()]
        for sample_id in ids:
            sample = read_sample(folder, sample_id)
            if sample.mask is None:
                raise DataError(f"{folder / sample_id}.mask.png: training needs ground-truth masks")
            grey = to_grey(sample.visible)
            ir = ir_on_quarter_grid(sample.infrared, sample.meta.homography, grey.shape, scale)
            tiles.visible.append(grey)
            tiles.infrared.append(normalise_ir(ir).astype(np.float16))
            tiles.masks.append(sample.mask.astype(np.uint8))
            tiles.crack_pixels.append(np.argwhere(sample.mask))
            boxes = [d.bbox for d in sample.meta.distractors]
            tiles.distractor_boxes.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        if not tiles.visible:
            raise DataError(f"data folder {folder} has no samples")
        return tiles

    def __len__(self) -> int:
        return len(self.visible)

    def _origin(self, rng: np.random.Generator, index: int, tile: int, centre: str) -> tuple[int, int]:
        height, width = self.visible[index].shape
        s = self.scale
        pixels, boxes = self.crack_pixels[index], self.distractor_boxes[index]
        if centre == "crack" and len(pixels):
            row, col = pixels[rng.integers(len(pixels))]
            y = int(row) - tile // 2 + int(rng.integers(-tile // 4, tile // 4 + 1))
            x = int(col) - tile // 2 + int(rng.integers(-tile // 4, tile // 4 + 1))
        elif centre == "distractor" and len(boxes):
            x0, y0, x1, y1 = boxes[rng.integers(len(boxes))]
            y = int(rng.uniform(y0, max(y1, y0 + 1))) - tile // 2
            x = int(rng.uniform(x0, max(x1, x0 + 1))) - tile // 2
        else:
            y, x = int(rng.integers(0, height - tile + 1)), int(rng.integers(0, width - tile + 1))
        y = min(max(y, 0), height - tile) // s * s
        x = min(max(x, 0), width - tile) // s * s
        return y, x

    def batch(
        self,
        rng: np.random.Generator,
        size: int,
        tile: int,
        crack_fraction: float = 0.6,
        augment: bool = True,
        distractor_fraction: float = 0.0,
        capture: CaptureRanges | None = None,
    ) -> dict[str, np.ndarray]:
        """A random batch: ``visible`` (B, 1, T, T), ``infrared`` (B, 1, T/s, T/s), ``mask`` (B, 1, T, T).

        ``crack_fraction`` of the tiles are centred near a crack, ``distractor_fraction`` on a
        distractor (where the folder records any), the rest anywhere. ``capture``: draw an optics and
        sensor variation per tile from these ranges (only when ``augment``).
        """
        s = self.scale
        if tile % s:
            raise ValueError(f"tile {tile} must be a multiple of the scale {s}")
        if crack_fraction < 0 or distractor_fraction < 0 or crack_fraction + distractor_fraction > 1:
            raise ValueError(
                f"crack_fraction {crack_fraction} + distractor_fraction {distractor_fraction} must lie in [0, 1]"
            )
        vis, ir, mask = [], [], []
        pools = {
            "crack": [k for k, pixels in enumerate(self.crack_pixels) if len(pixels)],
            "distractor": [k for k, boxes in enumerate(self.distractor_boxes) if len(boxes)],
        }
        for _ in range(size):
            draw = rng.random()
            centre = (
                "crack"
                if draw < crack_fraction
                else "distractor"
                if draw < crack_fraction + distractor_fraction
                else "any"
            )
            pool = pools.get(centre) or list(range(len(self)))
            index = pool[int(rng.integers(len(pool)))]
            y, x = self._origin(rng, index, tile, centre)
            v = self.visible[index][y : y + tile, x : x + tile]
            i = self.infrared[index][y // s : (y + tile) // s, x // s : (x + tile) // s]
            m = self.masks[index][y : y + tile, x : x + tile]
            if augment:
                k, flip = int(rng.integers(4)), bool(rng.integers(2))
                v, i, m = (np.rot90(a, k) for a in (v, i, m))
                if flip:
                    v, i, m = (a[:, ::-1] for a in (v, i, m))
                if capture is not None:
                    v = apply_variation(np.ascontiguousarray(v), draw_variation(rng, capture), rng)
                    i = vary_infrared(np.asarray(i, dtype=np.float32), rng, capture.probability / 2)
            vis.append(normalise_visible(np.ascontiguousarray(v)))
            ir.append(np.ascontiguousarray(i, dtype=np.float32))
            mask.append(np.ascontiguousarray(m, dtype=np.float32))
        return {
            "visible": np.stack(vis)[:, None],
            "infrared": np.stack(ir)[:, None],
            "mask": np.stack(mask)[:, None],
        }

    def batches(
        self,
        seed: int,
        size: int,
        tile: int,
        crack_fraction: float = 0.6,
        augment: bool = True,
        distractor_fraction: float = 0.0,
        capture: CaptureRanges | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """An endless, seeded stream of batches."""
        rng = np.random.default_rng(seed)
        while True:
            yield self.batch(rng, size, tile, crack_fraction, augment, distractor_fraction, capture)


def mixed_batches(
    sets: Sequence[tuple[CrackTileSet, float]],
    seed: int,
    size: int,
    tile: int,
    crack_fraction: float = 0.6,
    augment: bool = True,
    distractor_fraction: float = 0.0,
    capture: CaptureRanges | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """An endless, seeded stream of batches whose tiles come from several sets in the given shares.

    Each batch draws its tile counts per set from a multinomial of the shares, so a small set (a few
    reviewed parts) gets its share of every batch however small it is, and a replay set (synthetic
    training data) keeps what the model knew. One set with share 1 is :meth:`CrackTileSet.batches`.
    """
    shares = np.asarray([share for _, share in sets], dtype=np.float64)
    if not len(sets) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"mixed_batches needs sets with non-negative shares summing above 0, got {shares.tolist()}")
    shares = shares / shares.sum()
    rng = np.random.default_rng(seed)
    while True:
        counts = rng.multinomial(size, shares)
        parts = [
            tiles.batch(rng, int(n), tile, crack_fraction, augment, distractor_fraction, capture)
            for (tiles, _), n in zip(sets, counts, strict=True)
            if n
        ]
        yield {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
