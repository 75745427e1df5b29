"""The inspection worker on in-memory Kafka and Redis stand-ins: pairing, results, dead letters, holds, rebalances.

The same worker runs against the real broker and Redis in ``tests/integration/test_worker.py`` and
under faults in ``tests/chaos``; here each behaviour is checked alone, fast, and without services.
"""

from __future__ import annotations

import time

import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from inspector.config import Settings, TopicSettings, WorkerSettings
from inspector.model import create_model
from tests.integration.frames import encoded
from tests.workers.fakes import FakeKafkaConsumer, FakeProducer, FakeResultStore, Record
from workers.errors import WorkerError
from workers.inspection import InspectionWorker
from workers.metrics import WorkerMetrics

VIS, IR, DLQ = "frames.visible", "frames.infrared", "frames.dlq"


def settings(**worker: object) -> Settings:
    return Settings(
        topics=TopicSettings(visible=VIS, infrared=IR, dlq=DLQ, partitions=2),
        worker=WorkerSettings(model="baseline", store_retry_s=0.01, **worker),  # type: ignore[arg-type]
    )


def capture(
    camera: str, seq: int, partition: int = 0, modalities: tuple[str, ...] = ("visible", "infrared")
) -> list[Record]:
    now = time.time_ns()
    return [
        Record(VIS if modality == "visible" else IR, data, camera.encode(), frame.to_headers(), now // 10**6, partition)
        for modality, frame, data in encoded(camera, seq, now, modalities)
    ]


def make(
    records: list[Record], store: FakeResultStore | None = None, partitions: tuple[int, int] = (2, 2), **worker: object
) -> tuple[InspectionWorker, FakeKafkaConsumer, FakeProducer, FakeResultStore, CollectorRegistry]:
    raw = FakeKafkaConsumer({VIS: partitions[0], IR: partitions[1]}, records)
    producer, store, registry = FakeProducer(), store or FakeResultStore(), CollectorRegistry()
    worker_ = InspectionWorker(
        settings(**worker), create_model("baseline"), store, metrics=WorkerMetrics(registry), consumer=raw,  # type: ignore[arg-type]
        producer=producer,
    )  # fmt: skip
    worker_.drain_s = 0.5
    return worker_, raw, producer, store, registry


def test_every_capture_is_paired_inspected_stored_once_and_committed() -> None:
    records = [r for seq in range(1, 7) for r in capture("rig-a", seq)] + capture("rig-b", 1, partition=1)
    worker, raw, _, store, registry = make(records)
    report = worker.run(timeout=20, count=7)
    assert (
        report.pairs == 7
        and report.stored == 7
        and sorted(store.results) == [*(("rig-a", s) for s in range(1, 7)), ("rig-b", 1)]
    )
    assert raw.committed == {(VIS, 0): 6, (IR, 0): 6, (VIS, 1): 1, (IR, 1): 1}
    assert registry.get_sample_value("inspector_parts_total", {"verdict": "NG"}) == 2  # seqs 3 and 6 have a crack
    assert registry.get_sample_value("inspector_ready") == 0  # closed


def test_a_re_delivered_capture_is_found_stored_and_not_stored_twice() -> None:
    store = FakeResultStore()
    first, *_ = make(capture("rig-a", 1), store)
    first.run(timeout=10, count=1)
    again, raw, _, _, _ = make(capture("rig-a", 1), store)  # the same records read again (a crash before commit)
    report = again.run(timeout=10, count=1)
    assert report.stored == 0 and report.already_stored == 1 and store.entries == [("rig-a", 1)]
    assert raw.committed == {(VIS, 0): 1, (IR, 0): 1}


def test_a_bad_frame_is_dead_lettered_with_its_origin_and_committed() -> None:
    records = [Record(VIS, b"not a frame", b"rig-a", [("schema", b"inspector.frame/1")]), *capture("rig-a", 1)]
    worker, raw, producer, store, registry = make(records)
    report = worker.run(timeout=10, count=1)
    dead = producer.to(DLQ)
    assert len(dead) == 1 and report.dlq == {"bad_headers": 1}
    headers = dict(dead[0][3])
    assert headers["dlq_topic"] == VIS.encode() and headers["dlq_offset"] == b"0" and dead[0][1] == b"not a frame"
    assert registry.get_sample_value("inspector_dlq_total", {"reason": "bad_headers"}) == 1
    assert raw.committed[(VIS, 0)] == 2 and store.results


def test_while_the_store_refuses_the_worker_holds_reads_nothing_new_and_commits_nothing() -> None:
    records = [r for seq in range(1, 5) for r in capture("rig-a", seq)]
    worker, raw, _, store, registry = make(records, FakeResultStore(failures=3))
    worker.step()  # polls, pairs, inspects, the store refuses
    while not worker.checkpoint.holding and store.refused == 0:
        worker.step()
    assert worker.checkpoint.holding and raw.commits == [] and not worker.ready()[0]
    taken = dict(raw.positions)
    worker.step()  # holding: one record polled and read again
    assert raw.polls[-1] == 1 and raw.positions == taken
    report = worker.run(timeout=20, count=4)
    assert report.stored == 4 and report.store_errors == 3 and raw.committed == {(VIS, 0): 4, (IR, 0): 4}
    assert registry.get_sample_value("inspector_store_errors_total") == 3


def test_frames_of_a_partition_that_moved_away_are_dropped_uncommitted() -> None:
    records = capture("rig-a", 1, partition=0) + capture("rig-b", 1, partition=1, modalities=("visible",))
    worker, raw, _, store, _ = make(records, pair_timeout_ms=60_000)
    for _ in range(3):
        worker.step()
    assert worker.core.pairing_frames == 1  # rig-b's visible frame waits for its partner
    raw.rebalance({TopicPartition(VIS, 0), TopicPartition(IR, 0)})  # partition 1 went to another worker
    assert worker.core.pairing_frames == 0 and (VIS, 1) not in raw.committed
    worker.run(timeout=10, count=1)
    assert list(store.results) == [("rig-a", 1)] and raw.committed == {(VIS, 0): 1, (IR, 0): 1}


def test_frame_topics_must_be_co_partitioned() -> None:
    with pytest.raises(WorkerError, match="must have equal partition counts"):
        make([], partitions=(4, 2))
