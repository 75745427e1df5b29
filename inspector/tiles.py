"""Full-resolution inference by overlapping tiles, and the IR image on a grid aligned with them.

The visible frame is never downscaled. A frame no larger than the tile side is predicted whole; a
larger one is cut into the fewest overlapping tiles that fit, shared out evenly (a 1024 px frame
takes 2x2 tiles of 544 px at the default 576), and the tiles are blended back with a window that
falls to a small value at the tile borders, so no seam shows where tiles meet.

The infrared image stays at its native resolution, 4x coarser than visible. It is warped onto the
*quarter grid* of the visible image (one IR-grid pixel covers 4x4 visible pixels, pixel centres
aligned), so a visible tile at (x, y) of side T pairs with the IR tile at (x/4, y/4) of side T/4.

Pure functions over arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

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


def blend_window(tile: int, overlap: int, width: int | None = None) -> np.ndarray:
    """(tile, width or tile) weights: 1 in the centre, a raised-cosine ramp over ``overlap`` px at each border."""

    def ramp(length: int) -> np.ndarray:
        values = np.ones(length, dtype=np.float32)
        if overlap > 0:
            t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
            edge = 0.5 - 0.5 * np.cos(np.pi * t)  # 0 -> 1
            values[:overlap] = np.maximum(edge, 1e-3)
            values[-overlap:] = np.maximum(edge[::-1], 1e-3)
        return values

    return np.asarray(np.outer(ramp(tile), ramp(tile if width is None else width)), dtype=np.float32)


def tile_layout(length: int, max_tile: int, overlap: int, multiple: int = 16) -> tuple[int, list[int]]:
    """The tile side and origins along one axis: as few tiles as fit ``max_tile``, shared out evenly.

    The axis is first padded to a multiple of ``multiple``. A padded axis no longer than ``max_tile``
    is one tile (no seam, no pixel computed twice); a longer one takes the fewest tiles of at most
    ``max_tile`` that overlap by at least ``overlap``, each as short as that allows (a 1024 px side
    with ``max_tile`` 576 takes two 544 px tiles, not two of 576).
    """
    if max_tile % multiple:
        raise ValueError(f"tile ({max_tile}) must be a multiple of {multiple}")
    padded = -(-length // multiple) * multiple
    if padded <= max_tile:
        return padded, [0]
    count = -(-(padded - overlap) // (max_tile - overlap))
    tile = -(-(padded + (count - 1) * overlap) // (count * multiple)) * multiple
    return tile, tile_origins(padded, tile, overlap)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]))
    return np.pad(image, pad, mode="reflect") if any(p[1] for p in pad) else image


@lru_cache(maxsize=16)
def tile_weights(
    side_h: int, side_w: int, tile_h: int, tile_w: int, overlap: int
) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """Tile origins over a (side_h, side_w) image and each tile's blending weights, normalised to sum to 1.

    Returns ``(origins, weights)`` with ``weights[i]`` the (tile_h, tile_w) factor of the tile at
    ``origins[i]``: :func:`blend_window` divided by the sum of every window over that pixel, so the
    blend is one multiply-add per tile. Cached per geometry (a line's frames share one) and read-only.
    """
    window = blend_window(tile_h, overlap, tile_w)
    origins = tuple(
        (y, x) for y in tile_origins(side_h, tile_h, overlap) for x in tile_origins(side_w, tile_w, overlap)
    )
    total = np.zeros((side_h, side_w), dtype=np.float32)
    for y, x in origins:
        total[y : y + tile_h, x : x + tile_w] += window
    weights = np.stack([window / total[y : y + tile_h, x : x + tile_w] for y, x in origins]).astype(np.float32)
    weights.flags.writeable = False
    return origins, weights


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
        predict: the model on a batch of tiles (see :data:`TilePredictor`); its output may be
            overwritten here.
        visible: (H, W) float32 normalised visible image.
        ir_grid: (H/scale, W/scale) float32 normalised IR on the quarter grid, or None.
        tile: the longest tile side in visible pixels (a multiple of ``multiple`` and of ``scale``);
            each axis takes as few tiles as fit (:func:`tile_layout`), so a frame no larger than
            ``tile`` is predicted whole.
        overlap: least overlap between neighbouring tiles in visible pixels (a multiple of ``scale``).
        scale: visible / IR resolution ratio.
        multiple: the model's stride: tiles and padded sizes are multiples of it.
        batch_size: tiles per call of ``predict``.

    Returns:
        (H, W) float32 probability.

    """
    if tile % multiple or tile % scale or overlap % scale:
        raise ValueError(f"tile ({tile}) must be a multiple of {multiple} and {scale}, overlap of {scale}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    height, width = visible.shape
    if ir_grid is not None and ir_grid.shape != (height // scale, width // scale):
        raise ValueError(f"IR grid {ir_grid.shape} does not match visible {visible.shape} at scale {scale}")
    tile_h, _ = tile_layout(height, tile, overlap, multiple)
    tile_w, _ = tile_layout(width, tile, overlap, multiple)
    side_h, side_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    vis = _pad_to(visible, side_h, side_w)
    ir = _pad_to(ir_grid, side_h // scale, side_w // scale) if ir_grid is not None else None
    origins, weights = tile_weights(side_h, side_w, tile_h, tile_w, overlap)
    if len(origins) == 1:  # one tile covers the frame: no blending
        probs = predict(vis[None], ir[None] if ir is not None else None)
        return np.ascontiguousarray(probs[0, :height, :width], dtype=np.float32)
    total = np.zeros((side_h, side_w), dtype=np.float32)
    small_h, small_w = tile_h // scale, tile_w // scale
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        vis_tiles = np.stack([vis[y : y + tile_h, x : x + tile_w] for y, x in chunk])
        ir_tiles = None
        if ir is not None:
            ir_tiles = np.stack(
                [ir[y // scale : y // scale + small_h, x // scale : x // scale + small_w] for y, x in chunk]
            )
        probs = np.asarray(predict(vis_tiles, ir_tiles), dtype=np.float32)
        if not probs.flags.writeable:
            probs = probs.copy()
        for index, ((y, x), prob) in enumerate(zip(chunk, probs, strict=True)):
            np.multiply(prob, weights[start + index], out=prob)
            total[y : y + tile_h, x : x + tile_w] += prob
    return np.ascontiguousarray(total[:height, :width])
