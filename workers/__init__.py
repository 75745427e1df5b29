"""Thin service shells that wire Kafka, Redis and Prometheus around ``inspector`` and ``mla``."""

from workers.errors import WorkerError

__all__ = ["WorkerError"]
