"""The camera gateway against the real broker: topics, records, co-partitioning and the CLI."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from inspector.config import GatewaySettings, KafkaSettings, Settings, TopicSettings
from inspector.frame import Frame, decode_image
from inspector.sources import SyntheticSource
from tests.conftest import Stack
from workers.cli import app
from workers.errors import WorkerError
from workers.gateway import Gateway, ensure_topics
from workers.metrics import GatewayMetrics

pytestmark = pytest.mark.integration

CAMERAS = ["rig-1", "rig-2", "rig-3"]


def topic_settings(partitions: int = 3) -> TopicSettings:
    suffix = uuid.uuid4().hex[:8]
    return TopicSettings(
        visible=f"test.gw.visible.{suffix}",
        infrared=f"test.gw.infrared.{suffix}",
        dlq=f"test.gw.dlq.{suffix}",
        partitions=partitions,
    )


@pytest.fixture
def admin(stack: Stack) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id="test-gateway-admin")
    created: list[str] = []
    client.created = created  # topics to delete afterwards
    yield client
    existing = set(client.list_topics())
    leftovers = [t for t in created if t in existing]
    if leftovers:
        client.delete_topics(leftovers)
    client.close()


def track(admin: KafkaAdminClient, topics: TopicSettings) -> None:
    admin.created += [topics.visible, topics.infrared, topics.dlq]


def partitions_of(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names) if t["error_code"] == 0}


def consume_all(bootstrap: str, topics: list[str], expected: int, timeout: float = 30.0) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        time.sleep(0.5)  # a duplicate, if any, would arrive now
        for batch in consumer.poll(timeout_ms=500).values():
            records += batch
        return records
    finally:
        consumer.close()


# -- the real broker --------------------------------------------------------------------------------


def test_gateway_publishes_captures_that_read_back_co_partitioned(stack: Stack, admin: KafkaAdminClient) -> None:
    topics = topic_settings(partitions=3)
    track(admin, topics)
    settings = Settings(topics=topics, kafka=KafkaSettings(bootstrap=stack.kafka_bootstrap))
    registry = CollectorRegistry()
    source = SyntheticSource(CAMERAS, size=256, pool=3, seed=11)
    captures = 5 * len(CAMERAS)

    report = Gateway(settings, source, GatewayMetrics(registry)).run(count=captures, timeout=60)

    assert report.stop_reason == "count"
    assert report.captures == captures
    assert report.published == {"visible": captures, "infrared": captures}
    assert report.frames_dropped == 0 and report.errors == []
    assert report.publish_p50_ms is not None and report.publish_p95_ms is not None
    assert 0 < report.publish_p50_ms <= report.publish_p95_ms
    for modality in ("visible", "infrared"):
        value = registry.get_sample_value("inspector_gateway_frames_published_total", {"modality": modality})
        assert value == captures
    assert registry.get_sample_value("inspector_gateway_publish_seconds_count") == 2 * captures
    assert partitions_of(admin, [topics.visible, topics.infrared, topics.dlq]) == {
        topics.visible: 3,
        topics.infrared: 3,
        topics.dlq: 3,
    }

    records = consume_all(stack.kafka_bootstrap, [topics.visible, topics.infrared], 2 * captures)
    assert len(records) == 2 * captures
    partition_of: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for record in records:
        frame = Frame.from_headers(record.headers)
        assert record.key == frame.camera_id.encode()
        assert record.topic == (topics.visible if frame.modality == "visible" else topics.infrared)
        image = decode_image(record.value, frame)
        if frame.modality == "visible":
            assert image.shape == (256, 256) and image.dtype == np.uint8 and frame.mm_per_px == 0.05
        else:
            assert image.shape == (64, 64) and image.dtype == np.uint16
        assert frame.modality not in partition_of[(frame.camera_id, frame.seq)], "a frame arrived twice"
        partition_of[(frame.camera_id, frame.seq)][frame.modality] = record.partition
    assert set(partition_of) == {(c, s) for c in CAMERAS for s in range(1, 6)}
    for key, parts in partition_of.items():
        assert parts["visible"] == parts["infrared"], f"capture {key} split over partitions {parts}"


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_every_compression_setting_publishes(stack: Stack, admin: KafkaAdminClient, compression: str) -> None:
    topics = topic_settings(partitions=1)
    track(admin, topics)
    settings = Settings(
        topics=topics,
        kafka=KafkaSettings(bootstrap=stack.kafka_bootstrap),
        gateway=GatewaySettings(compression=compression, encoding="raw"),
    )
    report = Gateway(settings, SyntheticSource(["rig-1"], size=128, pool=1)).run(count=3)
    assert report.published == {"visible": 3, "infrared": 3}
    records = consume_all(stack.kafka_bootstrap, [topics.visible, topics.infrared], 6)
    assert len(records) == 6
    assert all(Frame.from_headers(r.headers).encoding == "raw" for r in records)


def test_unequal_partition_counts_are_refused_with_the_fix(stack: Stack, admin: KafkaAdminClient) -> None:
    topics = topic_settings(partitions=4)
    track(admin, topics)
    admin.create_topics(
        {topics.visible: {"num_partitions": 4, "replication_factor": 1}},
        wait_for_metadata=True,
    )
    admin.create_topics(
        {topics.infrared: {"num_partitions": 2, "replication_factor": 1}},
        wait_for_metadata=True,
    )
    settings = Settings(topics=topics, kafka=KafkaSettings(bootstrap=stack.kafka_bootstrap))
    gateway = Gateway(settings, SyntheticSource(["rig-1"], size=64, pool=1))
    with pytest.raises(WorkerError) as caught:
        gateway.run(count=1)
    message = str(caught.value)
    assert f"{topics.visible} (4 partitions) and {topics.infrared} (2)" in message
    assert "must have equal partition counts" in message
    assert f"recreate {topics.infrared} with 4 partitions" in message
    assert topics.dlq not in admin.list_topics()  # nothing was created before the check


def test_a_missing_frame_topic_is_created_like_the_other(stack: Stack, admin: KafkaAdminClient) -> None:
    topics = topic_settings(partitions=5)
    track(admin, topics)
    admin.create_topics({topics.infrared: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    counts = ensure_topics(admin, topics)
    assert counts == {topics.visible: 2, topics.infrared: 2, topics.dlq: 5}
    assert ensure_topics(admin, topics) == counts  # a second call changes nothing


def test_cli_publishes_and_prints_json(stack: Stack, admin: KafkaAdminClient) -> None:
    topics = topic_settings(partitions=2)
    track(admin, topics)
    env = {
        "INSPECTOR__KAFKA__BOOTSTRAP": stack.kafka_bootstrap,
        "INSPECTOR__TOPICS__VISIBLE": topics.visible,
        "INSPECTOR__TOPICS__INFRARED": topics.infrared,
        "INSPECTOR__TOPICS__DLQ": topics.dlq,
        "INSPECTOR__TOPICS__PARTITIONS": "2",
    }
    args = ["gateway", "--cameras", "rig-1,rig-2", "--count", "4", "--fps", "0", "--size", "128", "--json"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["published"] == {"visible": 4, "infrared": 4}
    assert report["stop_reason"] == "count"
    assert partitions_of(admin, [topics.visible, topics.infrared]) == {topics.visible: 2, topics.infrared: 2}


def test_a_restarted_synthetic_gateway_continues_the_trigger_count(stack: Stack, admin: KafkaAdminClient) -> None:
    topics = topic_settings(partitions=2)
    track(admin, topics)
    env = {
        "INSPECTOR__KAFKA__BOOTSTRAP": stack.kafka_bootstrap,
        "INSPECTOR__TOPICS__VISIBLE": topics.visible,
        "INSPECTOR__TOPICS__INFRARED": topics.infrared,
        "INSPECTOR__TOPICS__DLQ": topics.dlq,
        "INSPECTOR__TOPICS__PARTITIONS": "2",
    }
    args = ["gateway", "--cameras", "rig-1,rig-2", "--count", "4", "--fps", "0", "--size", "64", "--json"]
    for _ in range(2):  # the second run is a restart: no seq may be published twice
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    assert "resuming after seq 2" in result.output
    records = consume_all(stack.kafka_bootstrap, [topics.visible, topics.infrared], 16)
    frames = sorted((f.camera_id, f.seq, f.modality) for f in (Frame.from_headers(r.headers) for r in records))
    expected = sorted((c, s, m) for c in ("rig-1", "rig-2") for s in range(1, 5) for m in ("visible", "infrared"))
    assert frames == expected
