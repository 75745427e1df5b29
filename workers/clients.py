"""Closing a worker's Kafka clients, the same way for every worker kind."""

from __future__ import annotations

from typing import Any


def close_clients(consumer: Any, producer: Any, ready: Any | None = None) -> None:
    """Mark the worker not ready, close the consumer without committing, then the producer (5 s to flush).

    Args:
        consumer: The worker's ``KafkaConsumer``; everything settled was committed as it settled.
        producer: The worker's ``KafkaProducer`` (dead letters, replies).
        ready: The worker's readiness gauge, if it has metrics.

    """
    if ready is not None:
        ready.set(0)
    try:
        consumer.close(autocommit=False)
    finally:
        producer.close(timeout=5)
