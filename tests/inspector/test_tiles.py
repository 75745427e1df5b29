from __future__ import annotations

import numpy as np
import pytest

from inspector.pipeline import nominal_homography
from inspector.tiles import (
    blend_window,
    ir_on_quarter_grid,
    normalise_ir,
    quarter_grid_homography,
    tile_origins,
    tiled_predict,
)


def test_origins_cover_the_axis_and_end_flush() -> None:
    assert tile_origins(1024, 512, 64) == [0, 448, 512]
    assert tile_origins(512, 512, 64) == [0]
    with pytest.raises(ValueError, match="larger than the image"):
        tile_origins(100, 512, 64)
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(1024, 512, 512)


def test_window_is_one_inside_and_small_at_the_border() -> None:
    w = blend_window(64, 16)
    assert w[32, 32] == 1.0 and 0 < w[0, 0] < 0.01 and w.shape == (64, 64)


def test_pointwise_model_is_reproduced_exactly_with_no_seams() -> None:
    rng = np.random.default_rng(0)
    visible = rng.normal(size=(300, 420)).astype(np.float32)  # not a multiple of anything
    ir = None

    def sigmoid_model(vis: np.ndarray, _ir: np.ndarray | None) -> np.ndarray:
        return np.asarray(1 / (1 + np.exp(-vis)))

    out = tiled_predict(sigmoid_model, visible, ir, tile=128, overlap=32)
    assert out.shape == visible.shape
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-visible)), rtol=1e-5, atol=1e-6)


def test_ir_tiles_are_the_aligned_quarter_of_the_visible_tile() -> None:
    # a model that checks that each IR tile is the visible tile's quarter (both carry the pixel position)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    visible = yy * 1000 + xx
    ir = visible[1::4, 1::4][:, :]  # quarter grid: visible pixel 4k+1.5 ~ its centre; use 4k+1 for exact ints
    seen = []

    def checking_model(vis: np.ndarray, ir_t: np.ndarray | None) -> np.ndarray:
        assert ir_t is not None and ir_t.shape[1:] == (vis.shape[1] // 4, vis.shape[2] // 4)
        np.testing.assert_array_equal(ir_t, vis[:, 1::4, 1::4])
        seen.append(len(vis))
        return np.zeros_like(vis)

    tiled_predict(checking_model, visible, ir, tile=64, overlap=16, batch_size=3)
    assert sum(seen) == len(tile_origins(256, 64, 16)) ** 2


def test_quarter_grid_lines_up_with_the_visible_image() -> None:
    h = nominal_homography((64, 64), (256, 256))
    assert np.allclose(quarter_grid_homography(h, 4), np.eye(3))  # coaxial cameras: IR pixels = quarter grid
    ir = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    grid = ir_on_quarter_grid(ir, h, (256, 256))
    np.testing.assert_allclose(grid, ir.astype(np.float32))


def test_ir_normalisation_ignores_the_outside() -> None:
    ir = np.full((8, 8), np.nan, dtype=np.float32)
    ir[:4] = 20000 + np.arange(32).reshape(4, 8)
    out = normalise_ir(ir)
    assert np.isfinite(out).all() and (out[4:] == 0).all() and abs(float(np.median(out[:4]))) < 0.1
