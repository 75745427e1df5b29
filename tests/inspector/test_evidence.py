"""Evidence of a part (``inspector.evidence/1``): which parts keep it, where it goes, and what the bundle holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from inspector.evidence import (
    EVIDENCE_FILES,
    EVIDENCE_SCHEMA,
    EvidenceBuildError,
    build_evidence,
    crack_outlines,
    evidence_files,
    evidence_path,
    half_scale,
    kept_as,
    registered_8bit,
)
from inspector.model import ModelInput, ModelOutput
from inspector.pipeline import InspectionResult, inspect_pair, nominal_homography, probability_to_png
from inspector.registration import warp_to_visible
from inspector.stream import StreamCore, StreamPolicy
from tests.inspector.shapes import capsule
from tests.inspector.test_stream import WALL, LineModel, record

TS = int(datetime(2025, 12, 6, 23, 59, 59, tzinfo=UTC).timestamp()) * 10**9 + 999_999_999


class MapModel:
    """A crack model that returns a fixed probability map."""

    name, version = "fixed", "1"

    def __init__(self, probability: np.ndarray) -> None:
        self.probability = probability

    def predict(self, inputs: ModelInput) -> ModelOutput:
        return ModelOutput(self.probability, {"visible": 0.7, "infrared": 0.3})


def two_cracks(shape: tuple[int, int] = (128, 160)) -> np.ndarray:
    """A wide slanted crack (a defect at 0.05 mm/px) and a thin short one (not), as a probability map."""
    wide = capsule(shape, (20, 20), (120, 100), 7)
    thin = capsule(shape, (140, 10), (146, 30), 2)
    probability = np.where(wide, 0.95, 0.0) + np.where(thin, 0.8, 0.0)
    return np.asarray(np.clip(probability + 0.01, 0, 1), np.float32)


def inspected(infrared: bool = True) -> tuple[InspectionResult, np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(3)
    visible = rng.integers(0, 255, (128, 160), dtype=np.uint8)
    ir = rng.integers(1000, 60000, (32, 40), dtype=np.uint16) if infrared else None
    probability = two_cracks()
    result, probability = inspect_pair(visible, ir, None, 0.05, MapModel(probability), part_id="P-7")
    return result, probability, visible, ir


def test_every_ng_part_is_kept_and_the_ok_sample_is_stable_and_near_its_fraction() -> None:
    assert kept_as("rig-1", 7, "NG", 0.0) == "ng"
    choices = [kept_as("rig-1", seq, "OK", 0.1) for seq in range(20_000)]
    assert choices == [kept_as("rig-1", seq, "OK", 0.1) for seq in range(20_000)]  # a re-delivery decides the same
    assert set(choices) == {"ok-sample", None}
    assert 0.09 < choices.count("ok-sample") / len(choices) < 0.11
    other = [kept_as("rig-2", seq, "OK", 0.1) for seq in range(20_000)]
    assert other != choices  # decided by the capture (camera and seq), not by the seq alone
    assert {kept_as("rig-1", seq, "OK", 0.0) for seq in range(1000)} == {None}
    assert {kept_as("rig-1", seq, "OK", 1.0) for seq in range(1000)} == {"ok-sample"}


def test_the_path_is_the_utc_day_camera_and_seq() -> None:
    assert evidence_path("rig-1", 42, TS) == "2025-12-06/rig-1/42"
    assert evidence_path("rig_2.b", 0, TS + 1) == "2025-12-07/rig_2.b/0"  # the next UTC day


@pytest.mark.parametrize(
    "camera", ["", ".", "..", "../x", "a/b", "a\\b", "/etc", "rig 1", "rig\x001", "rig-é", "x" * 129]
)
def test_a_camera_id_that_cannot_name_a_folder_gets_no_path(camera: str) -> None:
    assert evidence_path(camera, 1, TS) is None


def test_negative_identities_get_no_path() -> None:
    assert evidence_path("rig-1", -1, TS) is None and evidence_path("rig-1", 1, -5) is None


def test_the_bundle_decodes_back_to_the_capture() -> None:
    result, probability, visible, ir = inspected()
    assert result.verdict == "NG" and len(result.cracks) == 2 and len(result.defects) == 1
    bundle = build_evidence(
        result, probability, visible, ir, ir_to_visible=None, camera_id="rig-1", seq=42,
        capture_ts_ns=TS, kept="ng", jpeg_quality=90,
    )  # fmt: skip
    assert bundle.path == "2025-12-06/rig-1/42" and set(bundle.files) == set(EVIDENCE_FILES) - {"visible.png"}
    assert bundle.nbytes == sum(len(v) for v in bundle.files.values())

    def decode(name: str) -> np.ndarray:
        return np.asarray(cv2.imdecode(np.frombuffer(bundle.files[name], np.uint8), cv2.IMREAD_UNCHANGED))

    seen = decode("visible.jpg")
    assert seen.shape == visible.shape and seen.dtype == np.uint8
    assert np.abs(seen.astype(int) - visible).mean() < 20  # lossy, but the same image
    infrared = decode("infrared.png")
    assert (
        ir is not None and infrared.dtype == np.uint16 and np.array_equal(infrared, ir)
    )  # lossless, native resolution
    registered = decode("registered.jpg")  # display layers: half the visible resolution
    assert registered.shape == (64, 80) and registered.dtype == np.uint8
    pooled = decode("probability.png")
    assert np.array_equal(pooled, probability_to_png(probability.reshape(64, 2, 80, 2).max(axis=(1, 3))))
    assert pooled.max() == probability_to_png(probability).max()  # max-pooled: the strongest crack pixel survives

    meta = json.loads(bundle.files["evidence.json"])
    assert meta["schema"] == EVIDENCE_SCHEMA and meta["kept"] == "ng" and meta["verdict"] == "NG"
    assert (meta["camera_id"], meta["seq"], meta["part_id"], meta["capture_ts_ns"]) == ("rig-1", 42, "P-7", TS)
    assert meta["visible_shape"] == [128, 160] and meta["infrared_shape"] == [32, 40]
    assert meta["display_shape"] == [64, 80] and evidence_files(meta)["visible"] == "visible.jpg"
    assert np.allclose(meta["ir_to_visible"], nominal_homography((32, 40), (128, 160)))
    assert meta["mm_per_px"] == 0.05 and meta["modal_weights"] == {"visible": 0.7, "infrared": 0.3}
    assert meta["model"] == {"name": "fixed", "version": "1"} and "infrared" not in meta
    assert [c["index"] for c in meta["cracks"]] == [0, 1] and [c["defect"] for c in meta["cracks"]] == [True, False]
    for crack, measured in zip(meta["cracks"], result.cracks, strict=True):
        assert crack["bbox"] == list(measured.bbox) and crack["length_mm"] == round(measured.length_mm, 3)
        outline = np.asarray(crack["outline"])
        x0, y0, x1, y1 = crack["bbox"]
        assert len(outline) >= 3
        assert (outline[:, 0] >= x0).all() and (outline[:, 0] <= x1).all()  # inside its box, so inside the image
        assert (outline[:, 1] >= y0).all() and (outline[:, 1] <= y1).all()
        assert outline[:, 0].min() == x0 and outline[:, 0].max() == x1  # the outer contour spans the region


def test_a_frame_sent_as_png_is_kept_as_it_came() -> None:
    result, probability, visible, ir = inspected()
    sent = cv2.imencode(".png", visible)[1].tobytes()
    bundle = build_evidence(
        result, probability, visible, ir, ir_to_visible=None, camera_id="rig-1", seq=42,
        capture_ts_ns=TS, kept="ng", visible_encoded=("png", sent),
    )  # fmt: skip
    meta = json.loads(bundle.files["evidence.json"])
    assert evidence_files(meta)["visible"] == "visible.png" and "visible.jpg" not in bundle.files
    assert bundle.files["visible.png"] is sent  # the very bytes: no second encoding


def test_the_half_scale_homography_lands_pixel_centres_on_the_half_grid() -> None:
    h = nominal_homography((32, 40), (128, 160))
    corner = half_scale(h) @ np.array([0.0, 0.0, 1.0])
    visible_corner = h @ np.array([0.0, 0.0, 1.0])  # IR pixel 0 covers visible 0..3, centre 1.5
    assert np.isclose(visible_corner[0], 1.5) and np.isclose(corner[0], (1.5 + 0.5) / 2 - 0.5)


def test_outlines_follow_the_region_and_stay_small() -> None:
    result, probability, *_ = inspected()
    outlines = crack_outlines(probability, result.cracks)
    region = (probability >= 0.5).astype(np.uint8)
    for outline in outlines:
        polygon = np.zeros_like(region)
        cv2.fillPoly(polygon, [np.asarray(outline, np.int32)], 1)
        inside = polygon.astype(bool)
        assert region[inside].mean() > 0.8  # the polygon covers crack pixels, not background (1 px simplification)
    wide = np.zeros((128, 160), np.uint8)
    cv2.fillPoly(wide, [np.asarray(outlines[0], np.int32)], 1)
    measured = capsule((128, 160), (20, 20), (120, 100), 7)
    assert (wide.astype(bool) & measured).sum() / measured.sum() > 0.95  # and nearly all of the crack
    assert len(outlines[0]) < 40  # simplified: a straight band needs few vertices


def test_a_capture_without_infrared_still_keeps_evidence_and_says_so() -> None:
    result, probability, visible, _ = inspected(infrared=False)
    bundle = build_evidence(
        result, probability, visible, None, ir_to_visible=None, camera_id="rig-1", seq=1,
        capture_ts_ns=TS, kept="ng",
    )  # fmt: skip
    assert set(bundle.files) == {"visible.jpg", "probability.png", "evidence.json"}
    meta = json.loads(bundle.files["evidence.json"])
    assert meta["infrared"] == "missing" and meta["infrared_shape"] is None and meta["ir_to_visible"] is None


def test_a_bad_camera_id_is_refused_with_the_rule() -> None:
    result, probability, visible, ir = inspected()
    with pytest.raises(EvidenceBuildError, match=r"A-Za-z0-9_\.-"):
        build_evidence(
            result, probability, visible, ir, ir_to_visible=None, camera_id="..", seq=1,
            capture_ts_ns=TS, kept="ng",
        )  # fmt: skip


def test_the_registered_image_uses_the_full_8_bit_range_and_leaves_unseen_pixels_black() -> None:
    ir = np.tile(np.arange(1000, 1040, dtype=np.uint16), (32, 1))
    shift = np.array([[4.0, 0, 40.0], [0, 4.0, 0], [0, 0, 1]])  # the IR sees only x >= 40 of the visible grid
    image = registered_8bit(ir, shift, (128, 200))
    assert image.dtype == np.uint8 and image.shape == (128, 200)
    assert image[:, :38].max() == 0 and image[:, 40:].max() == 255 and image[:, 40:42].max() <= 3


def test_the_streaming_core_keeps_evidence_for_ng_parts_only_when_asked() -> None:
    policy = StreamPolicy(batch_pairs=4, evidence=True, evidence_ok_fraction=0.0, evidence_jpeg_quality=80)
    core = StreamCore(LineModel(), policy)
    records = [record("visible", seq=1, grey=101, offset=1), record("infrared", seq=1, offset=1)]  # odd grey: NG
    records += [record("visible", seq=2, grey=100, offset=2), record("infrared", seq=2, offset=2)]  # even: OK
    core.feed(records, now_ns=0, wall_ns=WALL)
    jobs, rejected = core.inspect_batch(wall_ns=lambda: WALL)
    assert not rejected and [j.document["verdict"] for j in jobs] == ["NG", "OK"]
    ng, ok = jobs
    assert ng.evidence is not None and ng.evidence.path == evidence_path("rig-1", 1, WALL + 1)
    assert ng.document["evidence"] == ng.evidence.path and ng.evidence.kept == "ng"
    assert ng.evidence.files["infrared.png"] == records[1].value  # the IR PNG as received, not encoded again
    assert ok.evidence is None and "evidence" not in ok.document
    off = StreamCore(LineModel(), StreamPolicy(batch_pairs=4))  # the default keeps none
    off.feed(records[:2], now_ns=0, wall_ns=WALL)
    (job,), _ = off.inspect_batch(wall_ns=lambda: WALL)
    assert job.evidence is None and "evidence" not in job.document


def test_the_streaming_core_keeps_evidence_of_a_visible_only_capture_and_none_for_a_bad_camera_id() -> None:
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=1, evidence=True, pair_timeout_ns=10,
                                                visible_only_unpaired=True))  # fmt: skip
    core.feed([record("visible", seq=3, grey=101)], now_ns=0, wall_ns=WALL)
    core.feed([], now_ns=100, wall_ns=WALL)  # its partner is given up on: inspected visible-only
    (job,), _ = core.inspect_batch(wall_ns=lambda: WALL)
    assert job.document["infrared"] == "missing" and job.evidence is not None
    assert json.loads(job.evidence.files["evidence.json"])["infrared"] == "missing"


def test_policy_from_settings_takes_the_evidence_choices() -> None:
    from inspector.config import EvidenceSettings, WorkerSettings

    worker = WorkerSettings()
    on = StreamPolicy.from_settings(worker, 2, EvidenceSettings(ok_fraction=0.25, jpeg_quality=70))
    assert (on.evidence, on.evidence_ok_fraction, on.evidence_jpeg_quality, on.lanes) == (True, 0.25, 70, 2)
    assert not StreamPolicy.from_settings(worker, evidence=EvidenceSettings(enabled=False)).evidence
    assert not StreamPolicy.from_settings(worker).evidence


@pytest.mark.parametrize(
    "homography",
    [
        None,
        np.array([[4.0, 0, 40.0], [0, 4.0, 0], [0, 0, 1]]),
        np.array([[3.9, 0.05, 3], [0.02, 4.1, -2], [1e-4, 0, 1]]),
    ],
)
def test_the_registered_image_is_the_min_max_scaled_warp(homography: np.ndarray | None) -> None:
    ir = np.random.default_rng(1).integers(2000, 9000, (32, 40), dtype=np.uint16)
    h = homography if homography is not None else nominal_homography((32, 40), (128, 160))
    warped = warp_to_visible(ir.astype(np.float32), h, (128, 160))  # NaN where the IR does not see
    lo, hi = float(ir.min()), float(ir.max())
    expected = np.nan_to_num((warped - lo) * 255 / (hi - lo), nan=0.0)
    assert np.abs(registered_8bit(ir, h, (128, 160)).astype(float) - expected).max() <= 1.0
