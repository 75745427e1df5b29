from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.dataset import Sample, list_ids, read_sample
from inspector.synth import (
    SynthError,
    generate_sample,
    generate_set,
    get_preset,
    list_presets,
    sample_id,
    width_bin,
)
from inspector.synth.infrared import map_points

SIZE = 256


@pytest.fixture(scope="module")
def cracked() -> dict[str, list[Sample]]:
    """Six cracked parts per preset, 256x256."""
    return {p: [generate_sample(i, 7, p, size=SIZE, clean_fraction=0.0) for i in range(6)] for p in list_presets()}


def _band_margin(shape: tuple[int, int], lines: list[np.ndarray], halves: list[np.ndarray]) -> np.ndarray:
    """max over segments of (local half-width - distance): >= 0 exactly inside some tapered capsule."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    best = np.full(shape, -np.inf)
    for pts, half in zip(lines, halves, strict=True):
        for k in range(len(pts) - 1):
            p0, d = pts[k], pts[k + 1] - pts[k]
            t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
            dist = np.hypot(xs - p0[0] - t * d[0], ys - p0[1] - t * d[1])
            best = np.maximum(best, half[k] + t * (half[k + 1] - half[k]) - dist)
    return best


def test_same_seed_and_index_give_the_same_sample() -> None:
    a = generate_sample(3, 11, "default", size=SIZE)
    b = generate_sample(3, 11, "default", size=SIZE)
    c = generate_sample(3, 12, "default", size=SIZE)
    assert a.meta == b.meta
    assert np.array_equal(a.visible, b.visible) and np.array_equal(a.infrared, b.infrared)
    assert a.mask is not None and b.mask is not None and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.visible, c.visible)


def test_sample_does_not_depend_on_count_start_or_workers(tmp_path: Path) -> None:
    generate_set(tmp_path / "one", 4, seed=5, preset="hard", size=128)
    generate_set(tmp_path / "split", 2, seed=5, preset="hard", size=128, start=2, workers=2)
    ids = list_ids(tmp_path / "split")
    assert ids == [sample_id("hard", 5, 2), sample_id("hard", 5, 3)]
    for i in ids:
        a, b = read_sample(tmp_path / "one", i), read_sample(tmp_path / "split", i)
        assert a.meta == b.meta and np.array_equal(a.visible, b.visible) and np.array_equal(a.infrared, b.infrared)


def test_round_trip_through_the_dataset_format(tmp_path: Path) -> None:
    summary = generate_set(tmp_path, 3, seed=2, preset="default", size=SIZE, clean_fraction=0.0, rgb=True)
    assert summary.count == 3 and summary.clean_parts == 0 and summary.cracks >= 3
    for index, sid in enumerate(list_ids(tmp_path)):
        back = read_sample(tmp_path, sid)
        made = generate_sample(index, 2, "default", size=SIZE, clean_fraction=0.0, rgb=True)
        assert back.meta == made.meta
        assert back.visible.shape == (SIZE, SIZE, 3) and np.array_equal(back.visible, made.visible)
        assert back.infrared.dtype == np.uint16 and np.array_equal(back.infrared, made.infrared)
        assert back.mask is not None and made.mask is not None and np.array_equal(back.mask, made.mask)


def test_metadata_geometry_and_timing(cracked: dict[str, list[Sample]]) -> None:
    for sample in cracked["default"]:
        meta = sample.meta
        assert sample.visible.shape == (SIZE, SIZE) and sample.visible.dtype == np.uint8
        assert sample.infrared.shape == (SIZE // 4, SIZE // 4)
        assert 15000 < float(np.median(sample.infrared)) < 35000
        assert meta.id == sample_id("default", 7, meta.seq) and meta.preset == "default" and meta.seed == 7
        assert abs(meta.infrared_ts_ns - meta.visible_ts_ns) <= 3_000_000
        # IR pixel centres land near 4u + 1.5 in the visible image: a few pixels of misregistration
        corners = np.array([[0.0, 0.0], [63.0, 0.0], [0.0, 63.0], [63.0, 63.0]])
        error = map_points(meta.homography, corners) - (4 * corners + 1.5)
        assert np.abs(error).max() < 8.0
        assert not np.allclose(error, 0.0)
        for d in meta.distractors:
            x0, y0, x1, y1 = d.bbox
            assert 0 <= x0 <= x1 <= SIZE - 1 and 0 <= y0 <= y1 <= SIZE - 1


def test_ground_truth_agrees_with_the_mask(cracked: dict[str, list[Sample]]) -> None:
    for sample in [s for samples in cracked.values() for s in samples]:
        assert sample.mask is not None and sample.mask.any()
        mm = sample.meta.mm_per_px
        lines = [np.array(p) for c in sample.meta.cracks for p in c.polylines]
        halves = [np.array(w) / mm / 2 for c in sample.meta.cracks for w in c.widths_mm]
        margin = _band_margin(sample.mask.shape, lines, halves)
        sure = np.abs(margin) > 1e-3  # leave out centres on the very edge (rounding)
        # the mask is exactly the pixels whose centre lies within the local half-width of a polyline
        assert np.array_equal(sample.mask[sure], margin[sure] > 0)
        area = sum(c.length_mm * c.mean_width_mm for c in sample.meta.cracks) / mm**2
        assert sample.mask.sum() == pytest.approx(area, rel=0.15)


def test_widths_at_0_1_mm_per_px_are_resolved_in_pixels() -> None:
    wide = get_preset("default", width_bin_weights=(0, 0, 1, 0), max_branches=0, crack_count_weights=(1.0,))
    for index in range(4):
        sample = generate_sample(index, 3, wide, mm_per_px=0.1, size=SIZE, clean_fraction=0.0)
        crack = sample.meta.cracks[0]
        assert sample.meta.mm_per_px == 0.1 and 0.2 <= crack.max_width_mm < 0.3
        assert sample.mask is not None
        # 0.2-0.3 mm at 0.1 mm/px: a 2-3 px wide crack; area = length x mean width in pixels
        assert sample.mask.sum() == pytest.approx(crack.length_mm * crack.mean_width_mm / 0.01, rel=0.15)


def test_crack_is_warmer_in_ir_at_its_mapped_location(cracked: dict[str, list[Sample]]) -> None:
    for preset in list_presets():
        for index in range(3):
            with_crack = cracked[preset][index]
            without = generate_sample(index, 7, preset, size=SIZE, clean_fraction=1.0)
            # only the crack differs: same surface, distractors, noise (independent random streams)
            heat = with_crack.infrared.astype(np.int32) - without.infrared.astype(np.int32)
            assert heat.min() >= 0 and heat.max() > 5
            on = np.zeros(heat.shape, np.uint8)
            to_ir = np.linalg.inv(with_crack.meta.homography)
            for crack in with_crack.meta.cracks:
                for line in crack.polylines:
                    pts = np.round(map_points(to_ir, np.array(line))).astype(np.int32)
                    cv2.polylines(on, [pts], False, 1, 1)
            far = cv2.dilate(on, np.ones((13, 13), np.uint8)) == 0
            assert heat[on > 0].mean() > 3 * heat[far].mean() + 2
            # and in the image itself the crack line is warmer than the ring around it
            ring = (cv2.dilate(on, np.ones((9, 9), np.uint8)) - cv2.dilate(on, np.ones((5, 5), np.uint8))) > 0
            if preset == "clean":
                ir = with_crack.infrared.astype(np.float64)
                assert ir[on > 0].mean() > ir[ring].mean()


def test_clean_parts_have_an_empty_mask_and_no_cracks() -> None:
    for index in range(4):
        sample = generate_sample(index, 1, "hard", size=SIZE, clean_fraction=1.0)
        assert sample.meta.is_clean and sample.mask is not None and not sample.mask.any()


def test_clean_fraction_and_width_bins_over_a_set() -> None:
    metas = [generate_sample(i, 4, "default", size=SIZE).meta for i in range(60)]
    clean = sum(m.is_clean for m in metas)
    assert 8 <= clean <= 30  # 30% of 60 = 18
    bins = np.bincount([width_bin(c.max_width_mm) for m in metas for c in m.cracks], minlength=4)
    assert (bins >= 5).all(), bins


def test_every_preset_differs_in_difficulty(cracked: dict[str, list[Sample]]) -> None:
    contrast = {p: np.mean([c.contrast for s in cracked[p] for c in s.meta.cracks]) for p in list_presets()}
    assert contrast["clean"] > contrast["default"] > contrast["hard"]
    distractors = {p: np.mean([len(s.meta.distractors) for s in cracked[p]]) for p in list_presets()}
    assert distractors["clean"] < distractors["hard"]


def test_visible_only_distractors_leave_the_ir_untouched() -> None:
    base = get_preset("hard", distractor_count=(0, 0))
    visible_only = get_preset(
        "hard", distractor_count=(6, 6), distractor_weights={"scratch": 1.0, "machining_mark": 1.0, "dust": 1.0}
    )
    ir_only = get_preset(
        "hard", distractor_count=(6, 6), distractor_weights={"ir_emissivity": 1.0, "ir_reflection": 1.0}
    )
    a, b, c = (generate_sample(0, 9, cfg, size=SIZE) for cfg in (base, visible_only, ir_only))
    assert np.array_equal(a.infrared, b.infrared) and not np.array_equal(a.visible, b.visible)
    assert {d.modality for d in b.meta.distractors} == {"visible"}
    assert np.array_equal(a.visible, c.visible) and not np.array_equal(a.infrared, c.infrared)
    assert {d.modality for d in c.meta.distractors} == {"infrared"}


def test_ink_and_oil_show_in_both_cameras() -> None:
    both = get_preset("default", distractor_count=(3, 3), distractor_weights={"oil": 1.0, "printed_mark": 1.0})
    sample = generate_sample(0, 3, both, size=SIZE)
    assert {d.modality for d in sample.meta.distractors} == {"both"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 250}, "multiple of the IR downscale"),
        ({"mm_per_px": 0.0}, "mm_per_px"),
        ({"clean_fraction": 1.5}, "clean fraction"),
        ({"preset": "nope"}, "clean, default, hard"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    preset = kwargs.pop("preset", "default")
    with pytest.raises(SynthError, match=message):
        generate_sample(0, 0, preset, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SynthError, match="seed"):
        generate_sample(0, -1, "default")


def test_a_worker_error_stops_the_set(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the data folder should go\n")
    with pytest.raises(OSError):
        generate_set(blocked, 4, seed=0, size=64, workers=2)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    index=st.integers(0, 10**6),
    preset=st.sampled_from(["clean", "default", "hard"]),
    mm_per_px=st.floats(0.02, 0.2),
    size=st.sampled_from([64, 96, 128]),
    rgb=st.booleans(),
)
def test_any_sample_is_consistent(seed: int, index: int, preset: str, mm_per_px: float, size: int, rgb: bool) -> None:
    sample = generate_sample(index, seed, preset, mm_per_px=mm_per_px, size=size, rgb=rgb)
    assert sample.visible.shape[:2] == (size, size) and sample.infrared.shape == (size // 4, size // 4)
    assert sample.mask is not None
    if sample.meta.is_clean:
        assert not sample.mask.any()
    elif any(c.max_width_mm / mm_per_px >= 0.6 for c in sample.meta.cracks):
        assert sample.mask.any()  # (a crack under half a pixel wide has no pixel at coverage >= 0.5)
    for crack in sample.meta.cracks:
        x0, y0, x1, y1 = crack.bbox
        assert 0 <= x0 <= x1 <= size - 1 and 0 <= y0 <= y1 <= size - 1
        assert 0.05 <= crack.max_width_mm <= 0.6 and crack.length_mm > 0
    assert sample.meta.visible_ts_ns > 0 and sample.meta.infrared_ts_ns > 0


def test_preview_montage_has_three_panels_per_sample(cracked: dict[str, list[Sample]]) -> None:
    from inspector.synth.preview import montage

    image = montage(cracked["hard"][:2], panel=100)
    assert image.shape == (2 * 100 + 6, 3 * 100 + 2 * 6, 3) and image.dtype == np.uint8
    mask_panel = image[30:100, 212:]
    assert mask_panel.max() == 255  # the crack shows in the mask panel
