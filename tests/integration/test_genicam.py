"""GenICam rigs against Aravis's GigE Vision camera simulator (real GVCP/GVSP on loopback addresses).

Each test starts its own simulated cameras (``arv-fake-gv-camera-0.8``, one loopback address each)
as subprocesses, recording their PIDs, and kills them at the end. The simulator stamps a frame when
its own loop sees the trigger, so its timing jitters by tens of milliseconds; the tests trigger at
4 per second, as a slow line would, which leaves that jitter far from a whole trigger period.

The simulator fills every frame with a diagonal ramp that starts at its frame ID
(Mono8: ``(x + y + id) % 255``; Mono16: ``256 (x + y + id) % 65535``, both at exposure 10 ms and
gain 0), so the bytes in Kafka can be checked against what the camera sent, and the frame IDs of a
pair against each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from inspector.config import GatewaySettings, RigSettings, Settings
from inspector.frame import Frame, decode_image
from inspector.sources import Capture, SourceError
from tests.conftest import Stack
from tests.integration.frames import fresh_settings
from tests.integration.test_gateway import consume_all
from tests.integration.test_worker import make_worker, results
from workers.camera_bench import ramp_id
from workers.cli import app
from workers.fake_cameras import FakeCameras
from workers.gateway import Gateway
from workers.genicam import GenICamError, GenICamSource
from workers.metrics import GatewayMetrics

pytestmark = pytest.mark.integration


@pytest.fixture
def simulators() -> Iterator[FakeCameras]:
    with FakeCameras() as running:
        yield running


def rig(rig_id: str, visible: str, infrared: str) -> RigSettings:
    return RigSettings(
        id=rig_id, mm_per_px=0.05,
        visible={"device": visible, "pixel_format": "Mono8", "region": (0, 0, 1024, 1024), "exposure_us": 10_000},
        infrared={"device": infrared, "pixel_format": "Mono16", "region": (0, 0, 256, 256), "exposure_us": 10_000},
    )  # fmt: skip


def frame_id(image: np.ndarray) -> int:
    """The simulator's frame ID behind ``image`` (:func:`ramp_id`), checking that every pixel is the
    simulator's ramp: the bytes are the camera's, unconverted."""
    found = ramp_id(image)
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    expected = (x + y + found) % 255 if image.dtype == np.uint8 else (256 * (x + y + found)) % 65535
    assert np.array_equal(image, expected.astype(image.dtype)), "pixels differ from the camera's ramp"
    return found


def take(source: GenICamSource, captures: int, timeout_s: float = 30) -> tuple[list[Capture], list[SourceError]]:
    good: list[Capture] = []
    bad: list[SourceError] = []
    deadline = time.monotonic() + timeout_s
    for item in source:
        (bad if isinstance(item, SourceError) else good).append(item)  # type: ignore[arg-type]
        if len(good) >= captures or time.monotonic() > deadline:
            break
    return good, bad


def test_one_software_line_trigger_fires_both_cameras_and_their_frames_share_the_seq(simulators: FakeCameras) -> None:
    simulators.start("VIS-A", "127.0.0.1")
    simulators.start("IR-A", "127.0.0.2")
    source = GenICamSource([rig("rig-a", "VIS-A", "IR-A")], fps=4)
    try:
        good, bad = take(source, 30)
    finally:
        source.close()
    assert [c.seq for c in good] == list(range(1, 31)) and not bad
    first = good[0]
    assert first.camera_id == "rig-a" and first.mm_per_px == 0.05
    assert first.visible is not None and first.visible.shape == (1024, 1024) and first.visible.dtype == np.uint8
    assert first.infrared is not None and first.infrared.shape == (256, 256) and first.infrared.dtype == np.uint16
    assert all(abs(c.capture_ts_ns - time.time_ns()) < 60e9 for c in good)  # on the host's clock
    assert source.counts["published"] == 60
    offsets = {(frame_id(c.visible) - frame_id(c.infrared)) % 255 for c in good}  # type: ignore[arg-type]
    assert len(offsets) == 1  # every pair: the two cameras' frames of one trigger


def test_frames_with_lost_packets_are_counted_and_never_become_captures(simulators: FakeCameras) -> None:
    simulators.start("VIS-B", "127.0.0.1", "-r", "1")  # 1 GVSP packet in 1,000 lost: about half the 1 MB frames
    simulators.start("IR-B", "127.0.0.2")
    source = GenICamSource([rig("rig-b", "VIS-B", "IR-B")], fps=4)
    try:
        good, bad = take(source, 15, timeout_s=60)
    finally:
        source.close()
    outcomes = {e.outcome for e in bad if isinstance(e, GenICamError)}
    assert source.counts["incomplete"] > 0 and "incomplete" in outcomes and "unpaired" in outcomes
    assert source.counts["missed_trigger"] == 0  # a lost frame still counts its frame ID: no trigger was missed
    assert len(good) == 15 and all(c.visible is not None and c.infrared is not None for c in good)
    assert len({(frame_id(c.visible) - frame_id(c.infrared)) % 255 for c in good}) == 1  # type: ignore[arg-type]
    seqs = [c.seq for c in good]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # whatever was lost, pairs never shift


def test_a_trigger_one_camera_missed_is_reported_and_every_other_capture_still_pairs(simulators: FakeCameras) -> None:
    simulators.start("VIS-C", "127.0.0.1")
    simulators.start("IR-C", "127.0.0.2")
    source = GenICamSource([rig("rig-c", "VIS-C", "IR-C")], fps=0)  # triggers fired by the test
    try:
        assert source.wait_ready(), "the simulated cameras did not start streaming"
        for trigger in range(1, 21):
            source.fire("rig-c", ("visible",) if trigger == 6 else ("visible", "infrared"))  # IR misses trigger 6
            time.sleep(0.25)
        good, bad = take(source, 19, timeout_s=20)
    finally:
        source.close()
    assert [c.seq for c in good] == [s for s in range(1, 21) if s != 6]
    missed = [e for e in bad if isinstance(e, GenICamError) and e.outcome == "missed_trigger"]
    assert len(missed) == 1 and "IR-C missed 1 trigger(s) before seq 7" in str(missed[0])
    assert [str(e) for e in bad if isinstance(e, GenICamError) and e.outcome == "unpaired"] == [
        "rig rig-c: seq 6 has no good infrared frame"
    ]
    lag = [(frame_id(c.visible) - frame_id(c.infrared)) % 255 for c in good]  # type: ignore[arg-type]
    assert (
        lag == [lag[0]] * 5 + [(lag[0] + 1) % 255] * 14
    )  # from seq 7 on, IR frame IDs are one behind: paired by trigger


def test_line_triggers_reach_kafka_as_the_cameras_bytes_with_one_seq_and_one_result_per_trigger(
    simulators: FakeCameras, stack: Stack
) -> None:
    simulators.start("VIS-E", "127.0.0.1")
    simulators.start("IR-E", "127.0.0.2")
    base = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=2)
    settings = Settings(**{**base.model_dump(), "gateway": GatewaySettings(encoding="raw")})
    triggers = 12
    source = GenICamSource([rig("rig-e", "VIS-E", "IR-E")], fps=4)
    registry = CollectorRegistry()
    report = Gateway(settings, source, GatewayMetrics(registry), fps=None).run(count=triggers, timeout=60)
    source.close()
    assert report.stop_reason == "count" and report.frames_published == 2 * triggers and not report.frames_dropped

    records = consume_all(stack.kafka_bootstrap, [settings.topics.visible, settings.topics.infrared], 2 * triggers)
    by_seq: dict[int, dict[str, np.ndarray]] = {}
    for record in records:
        frame = Frame.from_headers(record.headers)
        assert frame.encoding == "raw" and record.key == b"rig-e"
        assert (frame.dtype, frame.shape) in {("uint8", (1024, 1024)), ("uint16", (256, 256))}
        by_seq.setdefault(frame.seq, {})[frame.modality] = decode_image(record.value, frame)
    assert sorted(by_seq) == list(range(1, triggers + 1))  # one seq per trigger, both cameras under it
    assert all(set(pair) == {"visible", "infrared"} for pair in by_seq.values())
    lags = {(frame_id(p["visible"]) - frame_id(p["infrared"])) % 255 for p in by_seq.values()}  # checks every byte
    assert len(lags) == 1

    worker, client = make_worker(settings)
    outcome = worker.run(timeout=120, count=triggers)
    stored = results(client, settings)
    assert sorted(stored) == [("rig-e", seq) for seq in range(1, triggers + 1)]
    assert outcome.stored == triggers and client.xlen(f"{settings.redis.key_prefix}:results") == triggers


def test_a_camera_killed_and_started_again_is_reopened_while_the_other_rig_keeps_publishing(
    simulators: FakeCameras,
) -> None:
    for serial, address in (
        ("VIS-F", "127.0.0.1"),
        ("IR-F", "127.0.0.2"),
        ("VIS-G", "127.0.0.3"),
        ("IR-G", "127.0.0.4"),
    ):
        simulators.start(serial, address)
    assert len(set(simulators.pids.values())) == 4
    changes: list[tuple[str, bool]] = []
    source = GenICamSource(
        [rig("rig-f", "VIS-F", "IR-F"), rig("rig-g", "VIS-G", "IR-G")], fps=4, reconnect_s=0.5,
        on_ready=lambda rig_id, ready: changes.append((rig_id, ready)),
    )  # fmt: skip
    try:
        assert source.wait_ready(), "the simulated cameras did not start streaming"
        before, _ = take(source, 8)
        simulators.kill("IR-F")
        outage_end = time.monotonic() + 12  # past LOST_AFTER_S: the camera is found lost and reopened in vain
        during: list[Capture] = []
        lost = []
        while time.monotonic() < outage_end:
            good, bad = take(source, 1, timeout_s=outage_end - time.monotonic())
            during += good
            lost += [e for e in bad if isinstance(e, GenICamError) and e.outcome == "camera_lost"]
        assert lost and not source.ready["rig-f"] and source.ready["rig-g"]
        assert source.readiness() == (False, "rigs down: rig-f")
        simulators.restart("IR-F")
        deadline = time.monotonic() + 30
        after: list[Capture] = []
        while time.monotonic() < deadline and not any(c.camera_id == "rig-f" for c in after):
            good, _ = take(source, 1, timeout_s=deadline - time.monotonic())
            after += good
    finally:
        source.close()
    during_rigs = [c.camera_id for c in during]
    assert during_rigs.count("rig-g") >= 25 and during_rigs.count("rig-f") <= 3  # rig-g on at 4 per second
    assert ("rig-f", False) in changes and changes[-1] == ("rig-f", True) and source.reconnects >= 1
    resumed = [c for c in after if c.camera_id == "rig-f"]
    assert resumed and resumed[0].seq > max(c.seq for c in before + during if c.camera_id == "rig-f")


def test_inspector_cameras_lists_the_simulated_cameras_and_the_features_of_one(simulators: FakeCameras) -> None:
    simulators.start("VIS-H", "127.0.0.1")
    simulators.start("IR-H", "127.0.0.2")
    listed = CliRunner().invoke(app, ["cameras", "--json"])
    assert listed.exit_code == 0, listed.output
    found = {d["serial"]: d for d in json.loads(listed.stdout)}
    assert found["IR-H"]["address"] == "127.0.0.2" and found["VIS-H"]["protocol"] == "GigEVision"
    shown = CliRunner().invoke(app, ["cameras", "--device", "IR-H", "--json"])
    assert shown.exit_code == 0, shown.output
    features = json.loads(shown.stdout)
    assert features["serial"] == "IR-H" and {"Mono8", "Mono16"} <= set(features["pixel_formats"])
    assert "Software" in features["trigger_sources"] and features["payload_bytes"] > 0
    missing = CliRunner().invoke(app, ["cameras", "--device", "NO-SUCH-CAMERA"])
    assert missing.exit_code != 0 and "not found" in missing.output and "IR-H" in missing.output
