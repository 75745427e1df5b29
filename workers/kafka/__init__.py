"""The delivery layer every worker reads and writes through: at-least-once from Kafka to its sinks.

* :mod:`workers.kafka.consumer`: :class:`GroupConsumer`, the one wrapper around kafka-python's
  ``KafkaConsumer``; every kafka-python workaround lives there, documented once.
* :mod:`workers.kafka.checkpoint`: :class:`Checkpoint`, the at-least-once contract: offsets tracked
  per record, sink writes, dead letters, commit ordering, and the hold and back-off policy for a
  sink that refuses writes.
* :mod:`workers.kafka.offsets`: :class:`OffsetTracker`, which offsets may be committed.
* :mod:`workers.kafka.topics`: :func:`ensure_topics`, the one way topics are created.

A worker supplies only decode → domain → model → what to write. This package imports kafka-python,
prometheus_client and ``workers.errors``; no worker kind and nothing of ``inspector`` (``workers.clients``
imports it for the reconnect cap).
"""

from workers.kafka.checkpoint import Checkpoint, Outcome, Outgoing
from workers.kafka.consumer import GroupConsumer
from workers.kafka.metrics import DeliveryMetrics
from workers.kafka.offsets import OffsetTracker
from workers.kafka.topics import TopicSpec, ensure_topics

__all__ = [
    "Checkpoint",
    "DeliveryMetrics",
    "GroupConsumer",
    "OffsetTracker",
    "Outcome",
    "Outgoing",
    "TopicSpec",
    "ensure_topics",
]
