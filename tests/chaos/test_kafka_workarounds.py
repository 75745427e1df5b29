"""kafka-python workarounds that need a broker to stop and start: the reconnect back-off cap.

The chaos stack's broker is restarted here, so the shared stack on 9092 is never touched. The other
workarounds have their real-broker tests in ``tests/integration/test_worker.py``
(docs/RELIABILITY.md, "kafka-python version").
"""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from inspector.config import KafkaSettings
from tests.chaos.harness import PrivateStack
from workers.clients import kafka_consumer
from workers.kafka.consumer import RECONNECT_BACKOFF_MAX_MS, GroupConsumer

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

DOWN_S = 12.0  # long enough for kafka-python's uncapped back-off to reach 6.4 s, then 12.8 s


def test_a_consumer_reads_again_within_seconds_of_the_broker_coming_back(chaos_stack: PrivateStack) -> None:
    settings = KafkaSettings(bootstrap=chaos_stack.bootstrap)
    topic = f"reconnect-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.servers)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    consumer = GroupConsumer(
        lambda: kafka_consumer(settings, group_id=topic, enable_auto_commit=False, auto_offset_reset="earliest"),
        [topic],
    )
    assert consumer.raw.config["reconnect_backoff_max_ms"] == RECONNECT_BACKOFF_MAX_MS
    producer = KafkaProducer(bootstrap_servers=settings.servers, acks="all")
    producer.send(topic, b"before").get(timeout=30)
    deadline = time.monotonic() + 60
    while not consumer.poll(200) and time.monotonic() < deadline:
        pass
    try:
        chaos_stack.command("stop", "kafka")
        stopped = time.monotonic()
        while time.monotonic() - stopped < DOWN_S:
            consumer.poll(200)  # keeps trying to reconnect, backing off
    finally:
        chaos_stack.command("start", "kafka")  # returns once the broker answers
    back = time.monotonic()
    producer.send(topic, b"after").get(timeout=60)
    produced = time.monotonic()
    read_at = None
    while read_at is None and time.monotonic() - back < 60:
        if any(r.value == b"after" for records in consumer.poll(200).values() for r in records):
            read_at = time.monotonic()
    consumer.close()
    producer.close()
    assert read_at is not None, "the consumer never read again after the broker came back"
    # the cap makes the consumer try at least once a second; without it, up to 12.8 s (docs/RELIABILITY.md)
    assert read_at - produced < 5.0, f"read {read_at - produced:.1f} s after the record was produced"
