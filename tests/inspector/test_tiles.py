from __future__ import annotations

import itertools

import numpy as np
import pytest

from inspector.pipeline import nominal_homography
from inspector.tiles import (
    blend_window,
    ir_on_quarter_grid,
    normalise_ir,
    quarter_grid_homography,
    tile_layout,
    tile_origins,
    tile_weights,
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


def test_tile_layout_takes_the_fewest_tiles_that_fit_shared_out_evenly() -> None:
    assert tile_layout(1024, 1024, 64) == (1024, [0])  # the default: a 1024 px frame in one call
    assert tile_layout(1000, 1024, 64) == (1008, [0])  # padded to the model's stride
    assert tile_layout(1024, 576, 64) == (544, [0, 480])  # two tiles of 544, not two of 576
    tile, origins = tile_layout(2048, 1024, 64)
    assert (tile, len(origins)) == (736, 3) and origins[-1] + tile == 2048
    assert all(b - a <= tile - 64 for a, b in itertools.pairwise(origins))  # at least the overlap
    with pytest.raises(ValueError, match="multiple of 16"):
        tile_layout(1024, 500, 64)


def test_tile_weights_sum_to_one_everywhere_and_are_shared_read_only() -> None:
    origins, weights = tile_weights(1024, 1280, 544, 672, 64)
    assert origins == ((0, 0), (0, 608), (480, 0), (480, 608)) and weights.shape == (4, 544, 672)
    total = np.zeros((1024, 1280), np.float32)
    for (y, x), w in zip(origins, weights, strict=True):
        total[y : y + 544, x : x + 672] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert tile_weights(1024, 1280, 544, 672, 64)[1] is weights and not weights.flags.writeable


def test_a_wide_frame_is_tiled_along_its_long_axis_only_and_reproduced_exactly() -> None:
    visible = np.random.default_rng(2).normal(size=(200, 700)).astype(np.float32)
    shapes: list[tuple[int, ...]] = []

    def model(vis: np.ndarray, _ir: np.ndarray | None) -> np.ndarray:
        shapes.append(vis.shape)
        return np.asarray(np.tanh(vis))

    out = tiled_predict(model, visible, None, tile=256, overlap=32)
    # 200 -> one row of 208; 700 -> 704 padded -> three columns of 256 overlapping >= 32: 208x256 tiles
    assert {s[1:] for s in shapes} == {(208, 256)} and sum(s[0] for s in shapes) == 3
    np.testing.assert_allclose(out, np.tanh(visible), rtol=1e-5, atol=1e-6)


def test_one_tile_frame_is_the_model_output_and_read_only_outputs_are_not_written() -> None:
    visible = np.random.default_rng(1).normal(size=(128, 128)).astype(np.float32)
    frozen = np.full((1, 128, 128), 0.25, np.float32)
    frozen.flags.writeable = False
    out = tiled_predict(lambda v, _i: frozen, visible, None, tile=128, overlap=32)
    np.testing.assert_array_equal(out, 0.25)
    shared = np.full((4, 64, 64), 0.5, np.float32)
    shared.flags.writeable = False
    out = tiled_predict(lambda v, _i: shared[: len(v)], visible, None, tile=64, overlap=16)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
