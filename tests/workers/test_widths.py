"""Width family in the worker: the load meter, the policy's decisions, and the worker switching its model."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from inspector.config import Settings
from inspector.model import ModelInput, ModelOutput
from inspector.width import WidthPolicy, WidthVariant
from workers.inspection import InspectionWorker
from workers.metrics import WorkerMetrics
from workers.widths import LoadMeter, WidthFamily, probe_ms


class Variant:
    def __init__(self, name: str, width: float) -> None:
        self.name, self.version, self.metadata = name, "1", {"width": width, "backend": "fake", "sha256": "ab"}

    def predict(self, inputs: ModelInput) -> ModelOutput:
        return ModelOutput(np.zeros(inputs.visible.shape, np.float32))


class Consumer:
    """Just enough of KafkaConsumer for a worker that is never run."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}

    def subscribe(self, topics: list[str], listener: object = None) -> None:
        self.topics = topics

    def assignment(self) -> set[object]:
        return set()


def family() -> WidthFamily:
    variants = (WidthVariant("w100", 1.0, 200.0), WidthVariant("w60", 0.6, 90.0), WidthVariant("w35", 0.35, 50.0))
    policy = WidthPolicy(variants, latency_budget_ms=2000, dwell=3)
    return WidthFamily([Variant(v.name, v.width) for v in variants], policy)


def test_load_meter_counts_captures_per_second_over_its_window() -> None:
    meter = LoadMeter(window_s=10)
    for second in range(20):
        meter.arrived(float(second), frames=8)  # 4 captures/s
    load = meter.load(19.0, lag_records=30)
    assert load.arrival_fps == 4.0  # 10 arrivals of 8 frames in the last 10 s, two frames a capture
    assert load.lag_frames == 15


def test_load_meter_counts_what_the_broker_received_not_what_was_read() -> None:
    meter = LoadMeter(window_s=4)
    meter.offered(0.0, {("v", 0): 100, ("i", 0): 100})  # first sight: a mark, no arrivals yet
    meter.offered(2.0, {("v", 0): 120, ("i", 0): 120})  # 40 records in 2 s
    meter.offered(4.0, {("v", 0): 140, ("i", 0): 140, ("v", 1): 500})  # a new partition only sets its mark
    assert meter.load(4.0, lag_records=0).arrival_fps == 80 / 4 / 2  # 80 records in the 4 s window, 2 a capture
    meter.offered(6.0, {("v", 1): 510})  # a partition gone from the assignment adds nothing
    assert meter.load(6.0, lag_records=0).arrival_fps == (40 + 10) / 4 / 2


def test_the_family_narrows_under_load_and_widens_after_it() -> None:
    widths = family()
    meter = LoadMeter(window_s=1)
    trace = [(2, 0)] * 3 + [(12, 40)] * 3 + [(2, 0)] * 12  # captures/s, records behind
    chosen = []
    for second, (rate, lag) in enumerate(trace):
        meter.arrived(float(second), frames=2 * rate)
        chosen.append(widths.decide(meter.load(float(second), lag))[0])
    assert chosen[:3] == [0, 0, 0]  # 2/s x 200 ms = 40% of the worker: widest
    assert chosen[3] == 2  # 12/s needs the 50 ms variant at once
    # Calm again: one step wider each time a variant has been held for `dwell` (3) decisions.
    assert chosen[6:] == [2, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


def test_the_worker_switches_its_model_and_reports_the_width() -> None:
    registry = CollectorRegistry()
    widths = family()
    worker = InspectionWorker(
        Settings(), widths.active, store=None, metrics=WorkerMetrics(registry), consumer=Consumer(),  # type: ignore[arg-type]
        producer=object(), model_info=widths.info(), widths=widths,  # type: ignore[arg-type]
    )  # fmt: skip
    assert registry.get_sample_value("inspector_model_width_ratio") == 1.0
    worker.load_meter.arrived(0.0, frames=10**4)
    worker._adapt(lag_records=400)
    assert worker.core.model.name == "w35" and worker.core.model_width == 0.35
    assert registry.get_sample_value("inspector_model_width_ratio") == 0.35
    assert registry.get_sample_value(
        "inspector_model_info", {"name": "w35", "version": "1", "width": "0.35", "backend": "fake", "sha256": "ab"}
    ) == 1.0  # fmt: skip


def test_probe_times_a_capture() -> None:
    assert probe_ms(Variant("w", 1.0), 64) >= 0.0


def test_polls_are_sized_from_the_time_per_capture() -> None:
    from inspector.config import WorkerSettings
    from inspector.stream import InspectedJob

    settings = Settings(worker=WorkerSettings(max_poll_records=32, max_poll_interval_ms=8000))
    worker = InspectionWorker(settings, Variant("w", 1.0), store=None, consumer=Consumer(), producer=object())  # type: ignore[arg-type]
    assert worker.poll_records == 32
    slow = [InspectedJob({}, None, (), inference_s=0.5)]  # 2 s budget (a quarter of 8 s) fits 4 captures
    worker._size_polls(slow)
    assert worker.poll_records == 8
    worker._size_polls([InspectedJob({}, None, (), inference_s=5.0)] * 5)
    assert worker.poll_records == 2  # never below one capture
