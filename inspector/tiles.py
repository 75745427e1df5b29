"""Full-resolution inference by overlapping tiles, and the IR image on a grid aligned with them.

The visible frame is never downscaled: a 1024x1024 frame is cut into overlapping tiles (512 px by
default), each tile is predicted, and the tiles are blended back with a window that falls to a small
value at the tile borders, so no seam shows where tiles meet.

The infrared image stays at its native resolution, 4x coarser than visible. It is warped onto the
*quarter grid* of the visible image (one IR-grid pixel covers 4x4 visible pixels, pixel centres
aligned), so a visible tile at (x, y) of side T pairs with the IR tile at (x/4, y/4) of side T/4.

Pure functions over arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from inspector.registration import warp_to_visible

TilePredictor = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""(N, T, T) float32 visible tiles and (N, T/s, T/s) IR tiles (or None) -> (N, T, T) crack probability."""


def quarter_grid_homography(ir_to_visible: np.ndarray, scale: int = 4) -> np.ndarray:
    """IR pixel -> pixel of the visible image's 1/scale grid (pixel centres at integer coordinates).

    Visible pixel ``x`` lies at ``(x - (scale - 1) / 2) / scale`` on the coarse grid.
    """
    offset = (scale - 1) / 2
    to_grid = np.array([[1 / scale, 0, -offset / scale], [0, 1 / scale, -offset / scale], [0, 0, 1]])
    return np.asarray(to_grid @ ir_to_visible, dtype=np.float64)


def ir_on_quarter_grid(
    infrared: np.ndarray, ir_to_visible: np.ndarray, visible_shape: tuple[int, int], scale: int = 4
) -> np.ndarray:
    """(H/scale, W/scale) float32 IR counts aligned with the visible image; NaN outside the IR field."""
    height, width = visible_shape
    if height % scale or width % scale:
        raise ValueError(f"visible size {visible_shape} must be a multiple of {scale}")
    grid = (height // scale, width // scale)
    return warp_to_visible(infrared, quarter_grid_homography(ir_to_visible, scale), grid)


def normalise_ir(ir: np.ndarray) -> np.ndarray:
    """Counts -> zero median, unit robust spread per image; NaN (outside the field) -> 0."""
    valid = np.isfinite(ir)
    if not valid.any():
        return np.zeros_like(ir, dtype=np.float32)
    values = ir[valid]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median))) + 1e-3
    return np.asarray(np.where(valid, (ir - median) / spread, 0.0), dtype=np.float32)


def normalise_visible(grey: np.ndarray) -> np.ndarray:
    """uint8 grey -> float32 around 0 with unit-ish spread."""
    return np.asarray((grey.astype(np.float32) / 255.0 - 0.5) / 0.25, dtype=np.float32)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start positions covering ``[0, length)``; the last tile ends exactly at ``length``."""
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the image side {length}: pad the image first")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    step = tile - overlap
    origins = list(range(0, length - tile + 1, step))
    if origins[-1] != length - tile:
        origins.append(length - tile)
    return origins


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) weights: 1 in the centre, a raised-cosine ramp over ``overlap`` px at each border."""
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        edge = 0.5 - 0.5 * np.cos(np.pi * t)  # 0 -> 1
        ramp[:overlap] = np.maximum(edge, 1e-3)
        ramp[-overlap:] = np.maximum(edge[::-1], 1e-3)
    return np.asarray(np.outer(ramp, ramp), dtype=np.float32)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]))
    return np.pad(image, pad, mode="reflect") if any(p[1] for p in pad) else image


def tiled_predict(
    predict: TilePredictor,
    visible: np.ndarray,
    ir_grid: np.ndarray | None,
    *,
    tile: int = 512,
    overlap: int = 64,
    scale: int = 4,
    multiple: int = 16,
    batch_size: int = 4,
) -> np.ndarray:
    """Crack probability at full visible resolution, from overlapping tiles blended without seams.

    Args:
        predict: the model on a batch of tiles (see :data:`TilePredictor`).
        visible: (H, W) float32 normalised visible image.
        ir_grid: (H/scale, W/scale) float32 normalised IR on the quarter grid, or None.
        tile: tile side in visible pixels (a multiple of ``multiple`` and of ``scale``).
        overlap: overlap between neighbouring tiles in visible pixels (a multiple of ``scale``).
        scale: visible / IR resolution ratio.
        multiple: the model's stride: tiles and padded sizes are multiples of it.
        batch_size: tiles per call of ``predict``.

    Returns:
        (H, W) float32 probability.

    """
    if tile % multiple or tile % scale or overlap % scale:
        raise ValueError(f"tile ({tile}) must be a multiple of {multiple} and {scale}, overlap of {scale}")
    height, width = visible.shape
    if ir_grid is not None and ir_grid.shape != (height // scale, width // scale):
        raise ValueError(f"IR grid {ir_grid.shape} does not match visible {visible.shape} at scale {scale}")
    side_h = max(-(-height // multiple) * multiple, tile)
    side_w = max(-(-width // multiple) * multiple, tile)
    vis = _pad_to(visible, side_h, side_w)
    ir = _pad_to(ir_grid, side_h // scale, side_w // scale) if ir_grid is not None else None
    window = blend_window(tile, overlap)
    total = np.zeros((side_h, side_w), dtype=np.float32)
    weight = np.zeros((side_h, side_w), dtype=np.float32)
    origins = [(y, x) for y in tile_origins(side_h, tile, overlap) for x in tile_origins(side_w, tile, overlap)]
    small = tile // scale
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        vis_tiles = np.stack([vis[y : y + tile, x : x + tile] for y, x in chunk])
        ir_tiles = None
        if ir is not None:
            ir_tiles = np.stack(
                [ir[y // scale : y // scale + small, x // scale : x // scale + small] for y, x in chunk]
            )
        probs = predict(vis_tiles, ir_tiles)
        for (y, x), prob in zip(chunk, probs, strict=True):
            total[y : y + tile, x : x + tile] += prob * window
            weight[y : y + tile, x : x + tile] += window
    return np.asarray((total / weight)[:height, :width], dtype=np.float32)
