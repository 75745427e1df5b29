"""Capture sources: synthetic, folder, video; pacing; captures → frames → back."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.frame import Frame, FrameEncodeError, decode_image
from inspector.sources import (
    Capture,
    FolderSource,
    SourceError,
    SyntheticSource,
    VideoSource,
    capture_to_records,
    pace,
)
from inspector.synth import generate_set


class FakeClock:
    """A monotonic clock in seconds that only ``sleep`` advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def counter_ns(start: int = 1_000, step: int = 10) -> Any:
    values = itertools.count(start, step)
    return lambda: next(values)


@pytest.fixture(scope="module")
def synthetic() -> SyntheticSource:
    return SyntheticSource(["rig-1", "rig-2", "rig-3"], preset="default", seed=3, size=256, pool=2)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    generate_set(out, 3, seed=5, size=128)
    return out


# -- synthetic ----------------------------------------------------------------------------------------


def test_synthetic_seqs_count_per_camera_from_one_and_timestamps_come_from_the_clock() -> None:
    source = SyntheticSource(["rig-1", "rig-2"], size=128, pool=3, clock_ns=counter_ns())
    captures = list(itertools.islice(source, 6))
    assert [(c.camera_id, c.seq) for c in captures] == [
        ("rig-1", 1),
        ("rig-2", 1),
        ("rig-1", 2),
        ("rig-2", 2),
        ("rig-1", 3),
        ("rig-2", 3),
    ]
    assert [c.capture_ts_ns for c in captures] == [1_000 + 10 * i for i in range(6)]
    # the pool is cycled: capture 3 shows part 0 again, and neighbours show different parts
    assert captures[3].visible is captures[0].visible
    assert captures[1].visible is not captures[0].visible
    assert len({c.part_id for c in captures}) == 6
    for c in captures:
        assert c.mm_per_px == 0.05
        assert c.infrared_ts_ns is not None and abs(c.infrared_ts_ns - c.capture_ts_ns) <= 3_000_000


def test_synthetic_images_are_grey_visible_and_uint16_infrared(synthetic: SyntheticSource) -> None:
    capture = next(synthetic)
    assert capture.visible is not None and capture.infrared is not None
    assert capture.visible.shape == (256, 256) and capture.visible.dtype == np.uint8
    assert capture.infrared.shape == (64, 64) and capture.infrared.dtype == np.uint16


def test_synthetic_start_seq_and_progress() -> None:
    seen: list[tuple[int, int]] = []
    source = SyntheticSource(["a"], size=64, pool=2, start_seq=500, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)]
    assert next(source).seq == 500
    assert next(source).seq == 501


@pytest.mark.parametrize("cameras", [[], ["rig 1"], ["-rig"], ["rig-1", "rig-1"], ["x" * 65]])
def test_synthetic_refuses_bad_camera_ids(cameras: list[str]) -> None:
    with pytest.raises(SourceError, match="camera ids"):
        SyntheticSource(cameras, size=64, pool=1)


# -- folder -------------------------------------------------------------------------------------------


def test_folder_replays_every_sample_once(tiny_folder: Path) -> None:
    source = FolderSource(tiny_folder, clock_ns=counter_ns(5_000, 100))
    captures = list(source)
    assert len(captures) == 3
    assert all(isinstance(c, Capture) for c in captures)
    typed = [c for c in captures if isinstance(c, Capture)]
    assert [c.camera_id for c in typed] == ["cam-0"] * 3  # the samples' own camera
    assert [c.seq for c in typed] == [1, 2, 3]
    assert [c.part_id for c in typed] == [f"part-5-{i:06d}" for i in range(3)]
    assert [c.capture_ts_ns for c in typed] == [5_000, 5_100, 5_200]
    for c in typed:
        assert c.visible is not None and c.visible.shape == (128, 128) and c.visible.dtype == np.uint8
        assert c.infrared is not None and c.infrared.shape == (32, 32) and c.infrared.dtype == np.uint16
        assert c.mm_per_px == 0.05


def test_folder_spreads_samples_over_cameras_and_loops(tiny_folder: Path) -> None:
    source = FolderSource(tiny_folder, ["rig-1", "rig-2"], loop=True)
    captures = [c for c in itertools.islice(source, 7) if isinstance(c, Capture)]
    assert [(c.camera_id, c.seq) for c in captures] == [
        ("rig-1", 1),
        ("rig-2", 1),
        ("rig-1", 2),
        ("rig-1", 3),  # second pass: sample 0 goes to rig-1 again, seq keeps counting
        ("rig-2", 2),
        ("rig-1", 4),
        ("rig-1", 5),
    ]


def test_folder_yields_a_broken_sample_as_an_error_and_goes_on(tiny_folder: Path, tmp_path: Path) -> None:
    for item in tiny_folder.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    broken = sorted(tmp_path.glob("*.visible.png"))[1]
    broken.write_bytes(b"not a png")
    items = list(FolderSource(tmp_path))
    assert [type(i) for i in items] == [Capture, SourceError, Capture]
    assert "skipped" in str(items[1])


def test_folder_refuses_a_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope")
    with pytest.raises(SourceError, match="holds no sample"):
        FolderSource(tmp_path)


# -- pace ---------------------------------------------------------------------------------------------


def test_pace_spaces_items_by_the_period() -> None:
    clock = FakeClock()
    times = []
    for _ in pace(range(5), 10.0, sleep=clock.sleep, clock=clock):
        times.append(clock.now)
    assert times == pytest.approx([100.0, 100.1, 100.2, 100.3, 100.4])
    # it waits before taking each item, so the end of the source is found a period after the last one
    assert clock.sleeps == pytest.approx([0.1] * 5)


def test_pace_does_not_burst_after_a_slow_consumer() -> None:
    clock = FakeClock()
    times = []
    for i in pace(range(5), 10.0, sleep=clock.sleep, clock=clock):
        times.append(clock.now)
        if i == 1:
            clock.now += 1.0  # the consumer stalls for ten periods
    # items 2 and 3 come at once (at most one period of catch-up), then a period apart again: not ten at once
    assert times == pytest.approx([100.0, 100.1, 101.1, 101.1, 101.2])


@pytest.mark.parametrize("fps", [None, 0.0, -1.0])
def test_pace_without_a_rate_passes_items_straight_through(fps: float | None) -> None:
    clock = FakeClock()
    assert list(pace(iter("abc"), fps, sleep=clock.sleep, clock=clock)) == ["a", "b", "c"]
    assert clock.sleeps == []


# -- capture → records --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["png", "raw", "jpeg"])
def test_capture_round_trips_through_headers_and_pixels(synthetic: SyntheticSource, encoding: str) -> None:
    capture = next(synthetic)
    records = capture_to_records(capture, encoding)  # type: ignore[arg-type]
    assert [f.modality for f, _ in records] == ["visible", "infrared"]
    for frame, data in records:
        back = Frame.from_headers(frame.to_headers())
        assert back == frame
        assert (back.camera_id, back.seq, back.part_id) == (capture.camera_id, capture.seq, capture.part_id)
        image = decode_image(data, back)
        original = capture.visible if back.modality == "visible" else capture.infrared
        assert original is not None and image.shape == original.shape and image.dtype == original.dtype
        if back.encoding != "jpeg":
            np.testing.assert_array_equal(image, original)
    visible, infrared = (f for f, _ in records)
    assert visible.capture_ts_ns == capture.capture_ts_ns and visible.mm_per_px == capture.mm_per_px
    assert infrared.capture_ts_ns == capture.infrared_ts_ns and infrared.mm_per_px is None
    assert infrared.dtype == "uint16"
    # JPEG holds 8 bits: the 16-bit infrared image goes as lossless PNG instead
    assert infrared.encoding == ("png" if encoding == "jpeg" else encoding)


def test_capture_without_infrared_makes_one_record() -> None:
    capture = Capture("rig-1", 0, 123, np.zeros((8, 8, 3), np.uint8))
    [(frame, _)] = capture_to_records(capture)
    assert (frame.modality, frame.shape, frame.seq, frame.mm_per_px) == ("visible", (8, 8, 3), 0, None)


def test_capture_needs_an_image_and_valid_metadata() -> None:
    with pytest.raises(SourceError, match="neither"):
        Capture("rig-1", 1, 1, None, None)
    with pytest.raises(FrameEncodeError):
        capture_to_records(Capture("rig 1", 1, 1, np.zeros((4, 4), np.uint8)))
    with pytest.raises(FrameEncodeError):
        capture_to_records(Capture("rig-1", 1, 1, np.zeros((4, 4), np.float32)))


# -- video --------------------------------------------------------------------------------------------


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (0, 0, 40 + 20 * i), np.uint8)  # BGR: red grows
        writer.write(image)
    writer.release()


def test_video_file_gives_rgb_visible_captures_and_stops_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    write_video(path, 5)
    source = VideoSource(str(path), "rig-1", mm_per_px=0.1, clock_ns=counter_ns())
    captures = list(source)
    assert len(captures) == 5
    assert source.reconnects == 0
    for i, c in enumerate(captures):
        assert c.infrared is None and c.seq == 0 and c.mm_per_px == 0.1
        assert c.visible is not None and c.visible.shape == (48, 64, 3) and c.visible.dtype == np.uint8
        red, green, blue = (float(c.visible[..., ch].mean()) for ch in range(3))
        assert red == pytest.approx(40 + 20 * i, abs=8) and green < 10 and blue < 10  # RGB, not BGR
    [(frame, _)] = capture_to_records(captures[0])
    assert frame.modality == "visible" and frame.seq == 0


def test_video_file_loops_and_infrared_frames_are_grey(tmp_path: Path) -> None:
    path = tmp_path / "ir.avi"
    write_video(path, 3)
    source = VideoSource(path.as_posix(), "rig-1", modality="infrared", loop=True)
    captures = list(itertools.islice(source, 7))
    source.close()
    assert len(captures) == 7 and source.reconnects == 0  # a file's end is not a failure
    for c in captures:
        assert c.visible is None and c.infrared is not None and c.infrared.shape == (48, 64)
    [(frame, _)] = capture_to_records(captures[0])
    assert frame.modality == "infrared"


def test_video_bad_uri_reconnects_with_backoff_then_gives_up(tmp_path: Path) -> None:
    sleeps: list[float] = []
    source = VideoSource(
        str(tmp_path / "missing.avi"),
        "rig-1",
        sleep=sleeps.append,
        backoff_s=0.5,
        max_backoff_s=1.5,
        max_reconnects=4,
    )
    with pytest.raises(SourceError, match="after 4 reconnect attempt"):
        next(source)
    assert source.reconnects == 4
    assert sleeps == [0.5, 1.0, 1.5, 1.5]


class FlakyCapture:
    """A device that delivers ``script`` reads (True: a frame, False: a failed read), then fails."""

    def __init__(self, script: list[bool], opened: bool = True) -> None:
        self.script = list(script)
        self.opened = opened
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, Any]:
        ok = self.script.pop(0) if self.script else False
        return ok, np.zeros((4, 6, 3), np.uint8) if ok else None

    def release(self) -> None:
        self.released = True


def test_video_stream_reopens_after_failed_reads_and_counts_reconnects() -> None:
    devices = [FlakyCapture([True, True, False]), FlakyCapture([], opened=False), FlakyCapture([True, True])]
    opened: list[FlakyCapture] = []

    def open_capture(uri: str | int, api: int) -> FlakyCapture:
        assert uri == 2  # "2" is a device index
        device = devices.pop(0)
        opened.append(device)
        return device

    sleeps: list[float] = []
    source = VideoSource("2", "rig-7", open_capture=open_capture, sleep=sleeps.append, backoff_s=1.0)
    captures = list(itertools.islice(source, 4))
    assert len(captures) == 4 and all(c.camera_id == "rig-7" for c in captures)
    assert source.reconnects == 2  # after the failed read, and after the failed open
    assert sleeps == [1.0, 2.0]  # consecutive failures double the wait
    assert all(d.released for d in opened[:2])
    source.close()
    assert opened[2].released
