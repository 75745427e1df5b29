"""The streaming core: every record ends in exactly one place, pairs become stored documents."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.frame import Frame, encode_frame
from inspector.model import ModelInput, ModelOutput
from inspector.stream import Record, Rejection, RejectReason, StreamCore, StreamPolicy, decode_record

WALL = 1_800_000_000 * 10**9


class LineModel:
    """A stand-in crack model: a 6-pixel-wide vertical crack on parts whose mean grey is odd, nothing otherwise."""

    name, version = "line", "1"

    def __init__(self) -> None:
        self.seen: list[ModelInput] = []

    def predict(self, inputs: ModelInput) -> ModelOutput:
        self.seen.append(inputs)
        probability = np.zeros(inputs.visible.shape, np.float32)
        if int(inputs.visible[0, 0]) % 2:
            probability[10:-10, 30:36] = 1.0
        weights = {"visible": 0.4, "infrared": 0.6} if inputs.infrared is not None else {"visible": 1.0}
        return ModelOutput(probability, weights)


def record(
    modality: str,
    camera: str = "rig-1",
    seq: int = 1,
    *,
    offset: int = 0,
    grey: int = 100,
    ts: int | None = None,
    mm_per_px: float | None = 0.05,
    key: bytes | None = None,
) -> Record:
    if modality == "visible":
        frame, data = encode_frame(
            np.full((96, 128), grey, np.uint8), camera_id=camera, modality="visible", seq=seq,
            capture_ts_ns=ts if ts is not None else WALL + seq, mm_per_px=mm_per_px, part_id=f"P-{seq}",
        )  # fmt: skip
    else:
        frame, data = encode_frame(
            np.full((24, 32), 3000, np.uint16), camera_id=camera, modality="infrared", seq=seq,
            capture_ts_ns=ts if ts is not None else WALL + seq,
        )  # fmt: skip
    headers = frame.to_headers()
    return Record(modality, key if key is not None else camera.encode(), data, headers, (modality, offset))  # type: ignore[arg-type]


def test_decode_accepts_a_good_record() -> None:
    arrival = decode_record(record("visible"), StreamPolicy(), wall_ns=WALL)
    assert not isinstance(arrival, Rejection)
    assert arrival.frame.camera_id == "rig-1" and arrival.image.shape == (96, 128)


def _with_header(rec: Record, name: str, value: bytes | None) -> Record:
    headers = [(n, value if n == name else v) for n, v in rec.headers]
    return Record(rec.modality, rec.key, rec.value, headers, rec.position)


def _on_topic(modality: str, rec: Record) -> Record:
    return Record(modality, rec.key, rec.value, rec.headers, rec.position)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: record("visible"), RejectReason.TOO_LARGE),
        (lambda: _with_header(record("visible"), "seq", b"minus one"), RejectReason.BAD_HEADERS),
        (lambda: _with_header(record("visible"), "schema", b"inspector.frame/2"), RejectReason.UNKNOWN_SCHEMA),
        (lambda: Record("visible", b"rig-1", b"\x89PNG garbage", record("visible").headers, 0), RejectReason.BAD_IMAGE),
        (lambda: _on_topic("infrared", record("visible")), RejectReason.WRONG_TOPIC),
        (lambda: record("visible", key=b"rig-2"), RejectReason.KEY_MISMATCH),
        (lambda: record("visible", ts=WALL + 3600 * 10**9), RejectReason.CLOCK_SKEW),
        (lambda: record("visible", mm_per_px=None), RejectReason.NO_CALIBRATION),
    ],
)  # fmt: skip
def test_decode_rejects_with_a_reason(make, reason: RejectReason) -> None:
    policy = StreamPolicy(max_record_bytes=64) if reason == RejectReason.TOO_LARGE else StreamPolicy()
    rejected = decode_record(make(), policy, wall_ns=WALL)
    assert isinstance(rejected, Rejection)
    assert rejected.reason == reason and rejected.detail


def test_pairs_batch_and_become_documents() -> None:
    model = LineModel()
    core = StreamCore(model, StreamPolicy(batch_pairs=2, batch_wait_ns=10**9))
    step = core.feed([record("visible", seq=1, offset=0), record("infrared", seq=1, offset=0)], now_ns=0, wall_ns=WALL)
    assert step.pairs == 1 and step.frames == {"visible": 1, "infrared": 1}
    assert not core.due(now_ns=1) and core.due(now_ns=10**9)  # half a batch waits for batch_wait
    core.feed(
        [record("visible", seq=2, offset=1, grey=101), record("infrared", seq=2, offset=1)], now_ns=2, wall_ns=WALL
    )
    assert core.due(now_ns=2)  # a full batch is due at once
    jobs, rejected = core.inspect_batch(wall_ns=lambda: WALL + 5_000_000)
    assert not rejected and core.queued_pairs == 0 and core.waiting_positions == []
    ok, ng = jobs
    assert ok.document["verdict"] == "OK" and ok.overlay_jpeg is None
    assert ng.document["verdict"] == "NG" and ng.overlay_jpeg is not None and ng.overlay_jpeg.startswith(b"\xff\xd8")
    assert (ng.document["camera_id"], ng.document["seq"], ng.document["part_id"]) == ("rig-1", 2, "P-2")
    assert ng.positions == (("visible", 1), ("infrared", 1))
    assert ng.document["defects"][0]["max_width_mm"] == pytest.approx(0.3, abs=0.06)
    assert ng.document["timings_ms"]["end_to_end"] == pytest.approx(5.0 - 2e-6, abs=1e-3)
    assert ng.document["modal_weights"] == {"visible": 0.4, "infrared": 0.6}
    assert model.seen[0].infrared_raw is not None and model.seen[0].infrared_raw.shape == (24, 32)


def test_every_record_ends_in_exactly_one_place() -> None:
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=3, pair_timeout_ns=100))
    records = [
        record("visible", seq=1, offset=0), record("infrared", seq=1, offset=0),
        record("visible", seq=1, offset=1),                                   # duplicate (re-delivered)
        record("visible", seq=2, offset=2),                                   # its partner never comes
        Record("visible", b"rig-1", b"junk", [], ("visible", 3)),             # no headers
        record("infrared", seq=3, offset=4), record("visible", seq=3, offset=5),
        record("visible", "rig-2", seq=1, offset=6),                          # waits
    ]  # fmt: skip
    step = core.feed(records, now_ns=0, wall_ns=WALL)
    assert [r.reason for r in step.rejected] == [RejectReason.BAD_HEADERS]
    assert [(u.reason, u.position) for u in step.unpaired] == [("duplicate", ("visible", 1))]
    later = core.feed([], now_ns=1000, wall_ns=WALL)  # past pair_timeout: two frames give up
    assert sorted((u.reason, u.position) for u in later.unpaired) == [
        ("no_partner", ("visible", 2)), ("no_partner", ("visible", 6)),
    ]  # fmt: skip
    jobs, _ = core.inspect_batch(wall_ns=lambda: WALL)
    settled = [r.record.position for r in step.rejected] + [u.position for u in step.unpaired + later.unpaired]
    settled += [p for job in jobs for p in job.positions]
    assert sorted(settled) == sorted(r.position for r in records)
    assert len(settled) == len(set(settled))


def test_a_visible_frame_without_partner_goes_on_alone_when_configured() -> None:
    core = StreamCore(LineModel(), StreamPolicy(pair_timeout_ns=10, visible_only_unpaired=True, batch_pairs=1))
    core.feed([record("visible", seq=7)], now_ns=0, wall_ns=WALL)
    step = core.feed([], now_ns=100, wall_ns=WALL)
    assert [(u.reason, u.inspected) for u in step.unpaired] == [("no_partner", True)]
    jobs, _ = core.inspect_batch(wall_ns=lambda: WALL)
    assert jobs[0].document["infrared"] == "missing" and jobs[0].document["modal_weights"] == {"visible": 1.0}


def test_stale_frames_are_dropped_by_the_deadline() -> None:
    core = StreamCore(LineModel(), StreamPolicy(deadline_ns=1_000_000))
    step = core.feed([record("visible", ts=WALL - 5_000_000)], now_ns=0, wall_ns=WALL)
    assert [u.reason for u in step.unpaired] == ["stale"] and core.waiting_positions == []


def test_a_camera_without_a_trigger_counter_is_keyed_by_capture_time() -> None:
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=1))
    core.feed([record("visible", seq=0, ts=WALL + 77), record("infrared", seq=0, ts=WALL + 77)], now_ns=0, wall_ns=WALL)
    jobs, _ = core.inspect_batch(wall_ns=lambda: WALL)
    assert jobs[0].document["seq"] == WALL + 77


def test_forget_drops_the_frames_of_revoked_partitions() -> None:
    core = StreamCore(LineModel())
    core.feed([record("visible", "rig-1", seq=1, offset=0)], now_ns=0, wall_ns=WALL)
    core.feed(
        [record("visible", "rig-2", seq=1, offset=1), record("infrared", "rig-2", seq=1, offset=1)],
        now_ns=0,
        wall_ns=WALL,
    )
    dropped = core.forget(lambda position: position[1] == 0)
    assert dropped == [("visible", 0)]
    assert sorted(core.waiting_positions) == [("infrared", 1), ("visible", 1)]
    core.feed([record("infrared", "rig-1", seq=1, offset=2)], now_ns=1, wall_ns=WALL)  # its partner is gone
    assert core.queued_pairs == 1


def test_a_pair_the_model_cannot_take_is_rejected_not_raised() -> None:
    big_ir, data = encode_frame(np.zeros((200, 200), np.uint16), camera_id="rig-1", modality="infrared", seq=1,
                                capture_ts_ns=WALL + 1)  # fmt: skip
    core = StreamCore(LineModel(), StreamPolicy(batch_pairs=1))
    core.feed(
        [record("visible", seq=1), Record("infrared", b"rig-1", data, big_ir.to_headers(), "ir")],
        now_ns=0,
        wall_ns=WALL,
    )
    jobs, rejected = core.inspect_batch(wall_ns=lambda: WALL)
    assert jobs == [] and {r.reason for r in rejected} == {RejectReason.UNINSPECTABLE}
    assert rejected[1].record.value == data  # the original bytes go to the dead-letter topic
    assert isinstance(Frame.from_headers(rejected[0].record.headers), Frame)


def test_a_calibrated_camera_needs_no_scale_header_and_gets_its_homography() -> None:
    model = LineModel()
    shift = np.array([[4.0, 0, 3.0], [0, 4.0, 2.0], [0, 0, 1]])
    core = StreamCore(model, StreamPolicy(batch_pairs=1), homographies={"rig-1": shift}, scales={"rig-1": 0.08})
    core.feed([record("visible", mm_per_px=None), record("infrared")], now_ns=0, wall_ns=WALL)
    jobs, rejected = core.inspect_batch(wall_ns=lambda: WALL)
    assert not rejected and jobs[0].document["mm_per_px"] == 0.08
    assert model.seen[0].ir_to_visible is not None and np.allclose(model.seen[0].ir_to_visible, shift)
    uncalibrated = decode_record(
        record("visible", "rig-2", mm_per_px=None), StreamPolicy(), wall_ns=WALL, scaled={"rig-1"}
    )
    assert isinstance(uncalibrated, Rejection) and uncalibrated.reason == RejectReason.NO_CALIBRATION
    assert not isinstance(
        decode_record(record("visible", mm_per_px=None), StreamPolicy(default_mm_per_px=0.1), wall_ns=WALL), Rejection
    )


class SlowModel(LineModel):
    """LineModel that holds each call a while (as a runtime call does, without the GIL) and counts overlap."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def predict(self, inputs: ModelInput) -> ModelOutput:
        import time

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        if int(inputs.visible[0, 0]) == 13:
            with self.lock:
                self.running -= 1
            from inspector.model import ModelError

            raise ModelError("grey 13 is not a part")
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return super().predict(inputs)


@pytest.mark.parametrize("lanes", [1, 3])
def test_lanes_inspect_pairs_at_once_and_keep_batch_order(lanes: int) -> None:
    model = SlowModel()
    core = StreamCore(model, StreamPolicy(batch_pairs=6, batch_wait_ns=0, lanes=lanes))
    greys = [101, 100, 13, 103, 104, 105]  # the third cannot be inspected
    records = [record(m, seq=i + 1, grey=g, offset=i) for i, g in enumerate(greys) for m in ("visible", "infrared")]
    step = core.feed(records, now_ns=0, wall_ns=WALL)
    assert step.pairs == 6 and not step.rejected
    done, rejected = core.inspect_batch(wall_ns=lambda: WALL)
    assert [d.document["seq"] for d in done] == [1, 2, 4, 5, 6]  # batch order, whatever finished first
    assert [d.document["verdict"] for d in done] == ["NG", "OK", "NG", "OK", "NG"]
    assert len(rejected) == 2 and {r.reason for r in rejected} == {RejectReason.UNINSPECTABLE}
    assert "grey 13" in rejected[0].detail
    assert model.most == min(lanes, 5)  # one lane: strictly one after another; three: three in flight


def test_lanes_share_the_thread_budget() -> None:
    from inspector.model import lane_threads

    assert lane_threads(2, 2) == 1 and lane_threads(16, 2) == 8 and lane_threads(3, 2) == 1 and lane_threads(1, 4) == 1
    assert lane_threads(None, 1) >= 1
