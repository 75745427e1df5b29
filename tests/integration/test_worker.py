"""The inspection worker on the real broker and Redis: one result per capture, dead letters, re-delivery."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import ConsumerGroupMetadata, MemberState, TopicPartition
from prometheus_client import CollectorRegistry

from inspector.config import Settings
from inspector.model import create_model
from inspector.results import RedisLayout, RedisResultStore, StoreError
from tests.conftest import STACK_SCRIPT, Stack
from tests.integration.frames import create_topics, fresh_settings, publish
from workers.errors import WorkerError
from workers.inspection import InspectionWorker, WorkerReport
from workers.metrics import WorkerMetrics

pytestmark = pytest.mark.integration

CAMERAS = ["rig-a", "rig-b", "rig-c"]


def make_worker(settings: Settings, registry: CollectorRegistry | None = None) -> tuple[InspectionWorker, redis.Redis]:
    client = redis.Redis.from_url(settings.redis.url)
    store = RedisResultStore(client, RedisLayout(prefix=settings.redis.key_prefix))
    metrics = WorkerMetrics(registry) if registry is not None else None
    info = {"name": "baseline", "version": "1", "width": 1.0, "backend": "numpy", "sha256": "-"}
    return InspectionWorker(settings, create_model("baseline"), store, metrics=metrics, model_info=info), client


def results(client: redis.Redis, settings: Settings) -> dict[tuple[str, int], dict]:
    prefix = settings.redis.key_prefix
    out = {}
    for key in client.scan_iter(f"{prefix}:result:*"):
        document = json.loads(client.get(key))
        out[(document["camera_id"], document["seq"])] = document
    return out


def test_every_capture_gets_exactly_one_result_and_offsets_commit(stack: Stack) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url)
    create_topics(settings)
    sent = publish(settings, CAMERAS, range(1, 21))
    registry = CollectorRegistry()
    worker, client = make_worker(settings, registry)
    report = worker.run(timeout=60, count=len(sent))

    stored = results(client, settings)
    assert sorted(stored) == sorted(sent)
    assert report.stored == len(sent) and report.frames == 2 * len(sent) and not report.dlq
    assert client.xlen(f"{settings.redis.key_prefix}:results") == len(sent)
    ng = [d for d in stored.values() if d["verdict"] == "NG"]
    assert {d["seq"] % 3 for d in ng} == {0} and len(ng) == 3 * len(CAMERAS) * 2  # seqs 3,6,...,18
    assert all(client.exists(f"{settings.redis.key_prefix}:overlay:{d['camera_id']}:{d['seq']}") for d in ng)
    assert json.loads(client.get(f"{settings.redis.key_prefix}:part:rig-a-P3"))["verdict"] == "NG"
    assert all(d["timings_ms"]["end_to_end"] > 0 for d in stored.values())
    assert registry.get_sample_value("inspector_parts_total", {"verdict": "NG"}) == len(ng)
    assert registry.get_sample_value("inspector_frames_consumed_total", {"modality": "infrared"}) == len(sent)

    # Offsets were committed as results were stored: the same group sees nothing new.
    again, _ = make_worker(settings)
    assert again.run(timeout=8).frames == 0


def test_redelivery_to_a_new_group_stores_nothing_twice(stack: Stack) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url)
    create_topics(settings)
    sent = publish(settings, CAMERAS, range(1, 11))
    first, client = make_worker(settings)
    assert first.run(timeout=60, count=len(sent)).stored == len(sent)

    replay = settings.model_copy(update={"worker": settings.worker.model_copy(update={"group_id": "replay-group"})})
    second, _ = make_worker(replay)
    report: WorkerReport = second.run(timeout=60, count=len(sent))
    assert report.stored == 0 and report.already_stored == len(sent)
    assert client.xlen(f"{settings.redis.key_prefix}:results") == len(sent)
    assert len(results(client, settings)) == len(sent)


def test_fresh_groups_on_new_topics_never_stall_in_a_half_finished_join(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """kafka-python 3.0.12 stopped driving the leader's rejoin after new topics settled (CI, 2026-12-06).

    Its debug logging slows its network thread enough to open the race wide: 2 of 6 such runs stalled
    for good before :func:`workers.kafka.consumer.finish_orphaned_join`.
    """
    caplog.set_level(logging.DEBUG, logger="kafka")
    restarted = 0
    for _ in range(8):
        settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url)
        create_topics(settings)
        sent = publish(settings, CAMERAS, range(1, 11))  # as the redelivery test that stalled in CI
        worker, _ = make_worker(settings)
        report = worker.run(timeout=20, count=len(sent))
        assert report.stored == len(sent) and report.seconds < 20 and worker.consumer.rebuilds == 0
        restarted += worker.consumer.orphaned_joins
    assert restarted <= 8  # at most one restart per fresh group (the settling rejoin)


def test_bad_records_go_to_the_dead_letter_topic_with_a_reason(stack: Stack) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, pair_timeout_ms=500)
    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all")
    producer.send(settings.topics.visible, value=b"not an image", key=b"rig-a", headers=[("schema", b"x")])
    producer.send(settings.topics.visible, value=b"no headers at all", key=b"rig-a")
    sent = publish(settings, ["rig-a"], range(1, 4), producer=producer)
    producer.close()
    worker, _ = make_worker(settings)
    report = worker.run(timeout=20, count=len(sent))
    assert report.dlq == {"bad_headers": 2} and report.stored == len(sent)

    consumer = KafkaConsumer(
        settings.topics.dlq, bootstrap_servers=settings.kafka.servers, auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )  # fmt: skip
    dead = list(consumer)
    consumer.close()
    assert len(dead) == 2
    headers = [dict(m.headers) for m in dead]
    assert {h["dlq_reason"] for h in headers} == {b"bad_headers"}
    assert {m.value for m in dead} == {b"not an image", b"no headers at all"}
    assert all(h["dlq_topic"] == settings.topics.visible.encode() and "dlq_offset" in h for h in headers)


def test_unequal_partition_counts_are_refused(stack: Stack) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url)
    create_topics(settings, partitions=4, infrared_partitions=2)
    with pytest.raises(WorkerError, match=r"\(4 partitions\) and .* \(2\) must have equal partition counts"):
        make_worker(settings)


def broker_committed(settings: Settings) -> dict[tuple[str, int], int]:
    """The group's committed offsets as the broker holds them (not the worker's own bookkeeping)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
    try:
        offsets = admin.list_group_offsets(settings.worker.group_id).get(settings.worker.group_id, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.servers)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (settings.topics.visible, settings.topics.infrared)
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        return {(tp.topic, tp.partition): end for tp, end in consumer.end_offsets(partitions).items() if end}
    finally:
        consumer.close()


def stack_command(*args: str) -> None:
    done = subprocess.run([sys.executable, str(STACK_SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"stack {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


def test_redis_outage_commits_nothing_unstored_and_recovers(stack: Stack) -> None:
    """Redis really stopped (``deploy/local/stack stop redis``): the broker holds no commit until results are stored."""
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, store_retry_s=0.2)
    create_topics(settings)
    sent = publish(settings, CAMERAS, range(1, 6))
    worker, client = make_worker(settings)
    runner = threading.Thread(target=worker.run, kwargs={"timeout": 120, "count": len(sent)})
    stack_command("stop", "redis")
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while worker.report.store_errors < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.report.store_errors >= 3, "the worker never found Redis down"
        during = broker_committed(settings)
    finally:
        stack_command("start", "redis")
    runner.join(timeout=120)
    assert not runner.is_alive(), "the worker did not finish after Redis came back"
    # nothing was ever stored, so no committed offset may have moved past a partition's first record
    assert all(offset == 0 for offset in during.values()), f"offsets committed past unstored records: {during}"
    assert worker.report.stored == len(sent) and sorted(results(client, settings)) == sorted(sent)
    ends = end_offsets(settings)
    assert ends and broker_committed(settings) == ends  # everything stored, everything committed


def test_a_lopsided_backlog_still_pairs_every_capture(stack: Stack) -> None:
    """All visible frames sit in Kafka before any infrared one: nothing is declared unpaired for being unread."""
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, pair_timeout_ms=300, max_poll_records=8)
    create_topics(settings)
    sent = publish(settings, CAMERAS, range(1, 31), modalities=("visible",))
    publish(settings, CAMERAS, range(1, 31), modalities=("infrared",))
    worker, client = make_worker(settings)
    report = worker.run(timeout=120, count=len(sent))
    assert not report.unpaired and report.stored == len(sent)
    assert sorted(results(client, settings)) == sorted(sent)


def test_frames_waiting_for_a_partner_survive_a_redis_outage(stack: Stack) -> None:
    """While Redis is down the worker is paused: a partner that reaches Kafka meanwhile is not "missing".

    Chaos scenario 3 lost 432 captures this way: the paused worker's stale high-water marks said it
    had read everything, so the pairing timeout ran; frames waiting for a partner were given up and
    committed, and the partners arrived "late" after the outage. Here, with ``pause()``/``resume()``,
    the resumed infrared partition was moreover never fetched again (kafka-python 3.0).
    """
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, pair_timeout_ms=300, store_retry_s=0.2)
    create_topics(settings)
    sent = publish(settings, ["rig-a"], range(1, 2))  # one whole capture: its store call finds Redis down
    publish(settings, ["rig-a"], range(2, 6), modalities=("visible",))  # these wait for their partners
    worker, client = make_worker(settings)
    real_put, down = worker.store.put, {"until": None}

    def put_while_down(document, overlay_jpeg=None):
        down["until"] = down["until"] or time.monotonic() + 3.0  # down for 3 s from the first write
        if time.monotonic() < down["until"]:
            raise StoreError("redis down (injected)")
        return real_put(document, overlay_jpeg)

    worker.store.put = put_while_down  # type: ignore[method-assign]
    runner = threading.Thread(target=worker.run, kwargs={"timeout": 60, "count": 5})
    runner.start()
    deadline = time.monotonic() + 30
    while worker.report.store_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    sent += publish(settings, ["rig-a"], range(2, 6), modalities=("infrared",))  # the partners, during the outage
    runner.join(timeout=90)
    assert not worker.report.unpaired, worker.report.unpaired
    assert sorted(results(client, settings)) == sorted(sent)


def test_a_consumer_stuck_outside_its_group_is_replaced_and_nothing_is_lost_or_stored_twice(stack: Stack) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url)
    create_topics(settings)
    sent = publish(settings, CAMERAS, range(1, 41))
    worker, client = make_worker(settings)
    first = worker.consumer.raw
    worker.consumer.rejoin_after_s = 0.0  # replace at the first unsettled look: no race with a fast drain
    stuck = ConsumerGroupMetadata(settings.worker.group_id, 1, "member", None, MemberState.REBALANCING)
    turn, forget = worker.step, worker.forget_all
    stored_at_rebuild: list[int] = []

    def step() -> None:
        turn()
        if worker.consumer.raw is first and worker.report.stored > 0:  # kafka-python's stalled join, as seen
            first.group_metadata = lambda: stuck  # type: ignore[method-assign]

    def forget_all() -> None:
        stored_at_rebuild.append(worker.report.stored)
        worker.consumer.rejoin_after_s = 60.0  # the new consumer's own join takes seconds: the usual patience
        forget()

    worker.step = step  # type: ignore[method-assign]
    worker.forget_all = forget_all  # type: ignore[method-assign]
    worker.settled = lambda: worker.report.stored  # type: ignore[method-assign]  # new results only
    report = worker.run(timeout=90, count=len(sent))

    assert report.consumer_rebuilds == 1 and worker.consumer.raw is not first
    assert 0 < stored_at_rebuild[0] < len(sent)  # the new consumer stored the rest
    assert sorted(results(client, settings)) == sorted(sent)
    assert client.xlen(f"{settings.redis.key_prefix}:results") == len(sent) == report.stored  # none twice
