from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspector.crack_data import CrackTileSet
from inspector.dataset import DataError


@pytest.fixture(scope="module")
def tiles(small_line: Path) -> CrackTileSet:
    return CrackTileSet.load(small_line)


def test_batch_shapes_and_alignment(tiles: CrackTileSet) -> None:
    batch = tiles.batch(np.random.default_rng(0), 6, 128)
    assert batch["visible"].shape == (6, 1, 128, 128) and batch["mask"].shape == (6, 1, 128, 128)
    assert batch["infrared"].shape == (6, 1, 32, 32)
    assert all(a.dtype == np.float32 for a in batch.values())
    assert set(np.unique(batch["mask"])) <= {0.0, 1.0}


def test_crack_fraction_puts_cracks_in_tiles(tiles: CrackTileSet) -> None:
    rng = np.random.default_rng(1)
    with_cracks = tiles.batch(rng, 40, 96, crack_fraction=1.0)["mask"].reshape(40, -1).max(axis=1)
    assert with_cracks.mean() > 0.9
    anywhere = tiles.batch(rng, 40, 96, crack_fraction=0.0)["mask"].reshape(40, -1).max(axis=1)
    assert anywhere.mean() < with_cracks.mean()


def test_distractor_tiles_cover_a_distractor(tiles: CrackTileSet) -> None:
    rng = np.random.default_rng(3)
    with_boxes = [k for k, boxes in enumerate(tiles.distractor_boxes) if len(boxes)]
    assert with_boxes, "the fixture parts record distractors"
    tile = 96
    for k in with_boxes:
        for _ in range(10):
            y, x = tiles._origin(rng, k, tile, "distractor")
            boxes = tiles.distractor_boxes[k]
            overlaps = (boxes[:, 0] < x + tile) & (boxes[:, 2] >= x) & (boxes[:, 1] < y + tile) & (boxes[:, 3] >= y)
            assert overlaps.any()


def test_fractions_out_of_range(tiles: CrackTileSet) -> None:
    with pytest.raises(ValueError, match="distractor_fraction"):
        tiles.batch(np.random.default_rng(0), 2, 64, crack_fraction=0.7, distractor_fraction=0.5)


def test_limit_spreads_over_the_folder(small_line: Path) -> None:
    from inspector.dataset import list_ids

    ids = list_ids(small_line)
    subset = CrackTileSet.load(small_line, limit=3)
    assert len(subset) == 3
    np.testing.assert_array_equal(subset.visible[-1], CrackTileSet.load(small_line).visible[len(ids) - 1])


def test_augmentation_keeps_ir_aligned(tiles: CrackTileSet) -> None:
    # replace the IR of every sample by the block means of its mask: aligned IR equals the mask's 4x4 means
    for k, mask in enumerate(tiles.masks):
        h, w = mask.shape
        tiles.infrared[k] = mask.reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3)).astype(np.float16)
    batch = tiles.batch(np.random.default_rng(2), 20, 64, crack_fraction=1.0, augment=True)
    m = batch["mask"][:, 0]
    expected = m.reshape(20, 16, 4, 16, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(batch["infrared"][:, 0], expected, atol=1e-3)


def test_batches_are_seeded(tiles: CrackTileSet) -> None:
    a = next(tiles.batches(seed=5, size=2, tile=64))
    b = next(tiles.batches(seed=5, size=2, tile=64))
    np.testing.assert_array_equal(a["visible"], b["visible"])


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        CrackTileSet.load(tmp_path / "none")


def test_capture_variation_changes_the_image_and_never_the_mask(tiles: CrackTileSet) -> None:
    from inspector.capture import CaptureRanges

    always = CaptureRanges(probability=1.0)
    for seed in range(4):  # one tile a batch: the variation is drawn after the tile is chosen
        plain = tiles.batch(np.random.default_rng(seed), 1, 96, crack_fraction=1.0)
        varied = tiles.batch(np.random.default_rng(seed), 1, 96, crack_fraction=1.0, capture=always)
        np.testing.assert_array_equal(plain["mask"], varied["mask"])  # same tile, same truth
        assert not np.allclose(plain["visible"], varied["visible"])
        assert varied["visible"].dtype == np.float32 and varied["infrared"].dtype == np.float32
