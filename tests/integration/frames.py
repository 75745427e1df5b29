"""Small synthetic frame records on the real broker, for the worker and scaling tests."""

from __future__ import annotations

import time
import uuid

import numpy as np
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from inspector.config import KafkaSettings, RedisSettings, Settings, TopicSettings, WorkerSettings
from inspector.frame import Frame, encode_frame

VISIBLE_SHAPE, IR_SHAPE = (96, 128), (24, 32)


def fresh_settings(bootstrap: str, redis_url: str, partitions: int = 4, **worker: object) -> Settings:
    """Settings with topics, group and Redis prefix unique to one test."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka=KafkaSettings(bootstrap=bootstrap),
        redis=RedisSettings(url=redis_url, key_prefix=f"test-{tag}"),
        topics=TopicSettings(visible=f"vis-{tag}", infrared=f"ir-{tag}", dlq=f"dlq-{tag}", partitions=partitions),
        worker=WorkerSettings(group_id=f"group-{tag}", model="baseline", **worker),  # type: ignore[arg-type]
    )


def create_topics(settings: Settings, partitions: int | None = None, infrared_partitions: int | None = None) -> None:
    """Both frame topics and the dead-letter topic."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
    n = partitions or settings.topics.partitions
    try:
        admin.create_topics(
            [
                NewTopic(settings.topics.visible, n, 1),
                NewTopic(settings.topics.infrared, infrared_partitions or n, 1),
                NewTopic(settings.topics.dlq, 1, 1),
            ]
        )
    finally:
        admin.close()


def part(seq: int) -> tuple[np.ndarray, np.ndarray]:
    """A visible and an IR image; every third part has a dark 4-pixel crack (0.2 mm at 0.05 mm/px)."""
    rng = np.random.default_rng(seq)
    visible = rng.normal(150, 4, VISIBLE_SHAPE).clip(0, 255).astype(np.uint8)
    infrared = rng.normal(3000, 5, IR_SHAPE).clip(0, 65535).astype(np.uint16)
    if seq % 3 == 0:
        visible[10:86, 60:64] = 40
        infrared[3:21, 15] = 3300
    return visible, infrared


def encoded(
    camera: str, seq: int, capture_ts_ns: int, modalities: tuple[str, ...] = ("visible", "infrared")
) -> list[tuple[str, Frame, bytes]]:
    """The frame records of one capture of :func:`part`: ``(modality, frame, data)``, visible first."""
    visible, infrared = part(seq)
    out = []
    for modality, image in (("visible", visible), ("infrared", infrared)):
        if modality in modalities:
            frame, data = encode_frame(
                image, camera_id=camera, modality=modality, seq=seq, capture_ts_ns=capture_ts_ns,  # type: ignore[arg-type]
                mm_per_px=0.05 if modality == "visible" else None, part_id=f"{camera}-P{seq}",
            )  # fmt: skip
            out.append((modality, frame, data))
    return out


def publish(
    settings: Settings,
    cameras: list[str],
    seqs: range,
    producer: KafkaProducer | None = None,
    modalities: tuple[str, ...] = ("visible", "infrared"),
) -> list[tuple[str, int]]:
    """Publish one capture per camera and seq (the given modalities); return the ``(camera_id, seq)`` sent."""
    own = producer is None
    producer = producer or KafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all", linger_ms=5)
    sent = []
    try:
        for seq in seqs:
            now = time.time_ns()
            for camera in cameras:
                for modality, frame, data in encoded(camera, seq, now, modalities):
                    topic = settings.topics.visible if modality == "visible" else settings.topics.infrared
                    producer.send(topic, value=data, key=camera.encode(), headers=frame.to_headers())
                sent.append((camera, seq))
        producer.flush()
    finally:
        if own:
            producer.close()
    return sent
