"""The gateway without a broker: a fake producer for send errors, acks, overflow, sources, signals and limits."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from inspector.config import GatewaySettings, Settings, TopicSettings
from inspector.frame import Frame
from inspector.sources import Capture, SourceError
from workers.cli import app
from workers.gateway import Gateway
from workers.genicam import GenICamError
from workers.metrics import GatewayMetrics


def test_cli_help_and_bad_options() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["gateway", "--help"])
    assert result.exit_code == 0
    for word in ("--source", "--cameras", "--fps", "--count", "--duration", "--preset", "--seed", "--size"):
        assert word in result.output
    assert runner.invoke(app, ["gateway", "--source", "folder"]).exit_code == 2  # needs --path
    assert runner.invoke(app, ["gateway", "--source", "video", "--path", "/no/such.avi"]).exit_code == 2
    assert runner.invoke(app, ["gateway", "--cameras", "bad id"]).exit_code == 2


# -- failure paths, with a stand-in producer (no broker) --------------------------------------------


class FakeProducer:
    """Records sends; acknowledges, fails, holds or refuses them as ``mode`` says."""

    def __init__(self, mode: str = "ack") -> None:
        self.mode = mode
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.held: list[Future] = []
        self.flushed = False

    def send(self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Future:
        if self.mode == "refuse":
            raise KafkaTimeoutError("Failed to update metadata after 10.0 secs.")
        self.sent.append((topic, key, headers))
        future = Future()
        if self.mode == "ack":
            future.success(object())
        elif self.mode == "fail":
            future.failure(NotLeaderForPartitionError("gave up after retries"))
        else:
            self.held.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True


def offline_settings(encoding: str = "png") -> Settings:
    gateway = GatewaySettings(encoding=encoding)
    return Settings(topics=TopicSettings(visible="v", infrared="i", dlq="d"), gateway=gateway)


def captures(n: int) -> list[Capture | SourceError]:
    image, ir = np.zeros((16, 16), np.uint8), np.zeros((4, 4), np.uint16)
    return [Capture("rig-1", i + 1, 1_000 + i, image, ir, mm_per_px=0.1) for i in range(n)]


def test_fake_broker_acks_count_as_published_with_headers_and_keys() -> None:
    producer = FakeProducer()
    registry = CollectorRegistry()
    report = Gateway(offline_settings(), captures(3), GatewayMetrics(registry), producer).run()
    assert report.stop_reason == "source_end" and report.captures == 3
    assert report.published == {"visible": 3, "infrared": 3}
    assert [topic for topic, _, _ in producer.sent] == ["v", "i"] * 3
    assert all(key == b"rig-1" for _, key, _ in producer.sent)
    assert Frame.from_headers(producer.sent[1][2]).modality == "infrared"
    assert producer.flushed


def test_send_errors_and_failed_acks_are_dropped_not_raised() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    refused = Gateway(offline_settings(), captures(2), metrics, FakeProducer("refuse")).run()
    failed = Gateway(offline_settings(), captures(2), metrics, FakeProducer("fail")).run()
    for report in (refused, failed):
        assert report.dropped["publish_error"] == 4 and report.frames_published == 0
        assert report.stop_reason == "source_end"
    assert "KafkaTimeoutError" in refused.errors[0] and "NotLeaderForPartitionError" in failed.errors[0]
    assert registry.get_sample_value("inspector_gateway_frames_dropped_total", {"reason": "publish_error"}) == 8


def test_unacknowledged_frames_overflow_then_count_as_lost_at_shutdown() -> None:
    producer = FakeProducer("hold")
    registry = CollectorRegistry()
    items = captures(4)  # each frame is 256 (visible) or 32 (infrared) bytes as raw
    settings = offline_settings("raw")
    gateway = Gateway(settings, items, GatewayMetrics(registry), producer, max_pending_bytes=600, flush_timeout_s=0)
    report = gateway.run()
    # 256 + 32 + 256 + 32 = 576 bytes wait; every later frame finds no room
    assert len(producer.sent) == 4
    assert report.dropped["overflow"] == 4
    assert report.dropped["publish_error"] == 4  # the held ones, never acknowledged
    for future in producer.held:  # a late ack after shutdown changes nothing
        future.success(object())
    assert gateway.snapshot().published == {"visible": 0, "infrared": 0}
    assert registry.get_sample_value("inspector_gateway_frames_dropped_total", {"reason": "overflow"}) == 4


def test_source_and_encode_errors_are_counted_and_the_run_goes_on() -> None:
    bad = Capture("rig-1", 9, 1, np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.uint16))
    items: list[Capture | SourceError] = [SourceError("sample x skipped"), bad, *captures(1)]
    settings = offline_settings("jpeg")
    report = Gateway(settings, items, None, FakeProducer()).run()
    # a uint16 visible image cannot be JPEG: both frames of that capture are dropped
    assert report.dropped == {"source_error": 1, "encode_error": 2} | dict.fromkeys(
        ("publish_error", "overflow", "incomplete", "missed_trigger", "unpaired", "skewed"), 0
    )
    assert report.published == {"visible": 1, "infrared": 1}


def test_camera_outcomes_are_dropped_by_reason_and_a_lost_camera_is_not_a_frame() -> None:
    items: list[Capture | SourceError] = [
        GenICamError("incomplete", "VIS frame 7 missing packets"),
        GenICamError("missed_trigger", "IR missed 1 trigger(s) before seq 9"),
        GenICamError("unpaired", "rig rig-1: seq 8 has no good infrared frame"),
        GenICamError("overflow", "the gateway fell behind", frames=6),
        GenICamError("camera_lost", "rig rig-1, infrared camera: IR does not answer"),
        *captures(1),
    ]
    registry = CollectorRegistry()
    report = Gateway(offline_settings("raw"), items, GatewayMetrics(registry), FakeProducer()).run()
    assert {k: v for k, v in report.dropped.items() if v} == {
        "incomplete": 1, "missed_trigger": 1, "unpaired": 1, "overflow": 6
    }  # fmt: skip
    assert report.published == {"visible": 1, "infrared": 1}
    assert registry.get_sample_value("inspector_gateway_frames_dropped_total", {"reason": "overflow"}) == 6


class ReconnectingSource:
    """A source that 'reconnects' twice and ends; or raises for good."""

    def __init__(self, fail: bool = False) -> None:
        self.reconnects = 0
        self.fail = fail
        self.closed = False
        self.items = iter(captures(2))

    def __iter__(self) -> ReconnectingSource:
        return self

    def __next__(self) -> Capture | SourceError:
        item = next(self.items)
        self.reconnects += 1
        if self.fail and self.reconnects == 2:
            raise SourceError("camera rig-1: could not open 'rtsp://x' after 3 reconnect attempt(s)")
        return item

    def close(self) -> None:
        self.closed = True


def test_reconnects_are_counted_and_a_failed_source_ends_the_run() -> None:
    registry = CollectorRegistry()
    source = ReconnectingSource()
    report = Gateway(offline_settings(), source, GatewayMetrics(registry), FakeProducer()).run()
    assert report.source_reconnects == 2 and source.closed
    assert registry.get_sample_value("inspector_gateway_source_reconnects_total") == 2
    failing = ReconnectingSource(fail=True)
    report = Gateway(offline_settings(), failing, None, FakeProducer()).run()
    assert report.stop_reason == "source_failed" and report.captures == 1
    assert "could not open" in report.errors[0] and failing.closed


def test_sigterm_stops_after_the_current_capture_and_flushes() -> None:
    producer = FakeProducer()

    def endless() -> Iterator[Capture | SourceError]:
        n = 0
        while True:
            n += 1
            if n == 4:
                os.kill(os.getpid(), signal.SIGTERM)
            yield from captures(1)

    before = signal.getsignal(signal.SIGTERM)
    report = Gateway(offline_settings(), endless(), None, producer, fps=1000).run(timeout=30)
    assert report.stop_reason == "signal"
    assert report.captures in (3, 4)  # the signal lands while the 4th capture is taken
    assert producer.flushed
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_count_and_timeout_limit_a_run() -> None:
    def endless() -> Iterator[Capture | SourceError]:
        while True:
            yield from captures(1)

    assert Gateway(offline_settings(), endless(), None, FakeProducer()).run(count=7).captures == 7
    report = Gateway(offline_settings(), endless(), None, FakeProducer(), fps=50).run(timeout=0.3)
    assert report.stop_reason == "timeout" and 5 <= report.captures <= 20
