"""The delivery metrics every worker kind exports, under its own prefix, from an injected registry.

    DeliveryMetrics(registry, "inspector_vqa", reasons=("bad_image", ...))

* ``{prefix}_dlq_total{reason}``: records sent to the dead-letter topic, by reason (every reason of
  the worker kind plus :data:`DELIVERY_REASONS` starts at 0).
* ``{prefix}_store_errors_total``: flushes in which a sink or the producer refused a write (retried).
* ``{prefix}_holding``: 1 while writes are refused and the worker holds (takes no new records).
* ``{prefix}_ready``: 1 when the worker is ready (polling, partitions assigned, writes accepted).
* ``{prefix}_last_poll_timestamp_seconds``: Unix time of the last Kafka poll (alert when stale).
* ``{prefix}_consumer_rebuilds_total``: members replaced by the stuck-member watchdog.
* ``{prefix}_orphaned_joins_total``: group joins restarted after kafka-python stopped driving them.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["DELIVERY_REASONS", "DeliveryMetrics"]

DELIVERY_REASONS = ("write_failed",)  # dead-letter reasons of the delivery layer itself


class DeliveryMetrics:
    """The delivery metrics of one worker (see the module docs).

    Args:
        registry: Where to register.
        prefix: Metric name prefix (``inspector``, ``inspector_medical``, ``inspector_vqa``).
        reasons: The worker kind's dead-letter reasons, exported at 0 from the start.

    """

    def __init__(self, registry: CollectorRegistry, prefix: str, reasons: Iterable[str] = ()) -> None:
        r, p = registry, prefix
        self.dlq = Counter(f"{p}_dlq_total", "Records sent to the dead-letter topic.", ["reason"], registry=r)
        self.store_errors = Counter(f"{p}_store_errors_total", "Flushes with a refused write (retried).", registry=r)
        self.holding = Gauge(f"{p}_holding", "1 while writes are refused and no new record is taken.", registry=r)
        self.ready = Gauge(f"{p}_ready", "1 when the worker is ready, else 0.", registry=r)
        self.last_poll = Gauge(f"{p}_last_poll_timestamp_seconds", "Unix time of the last Kafka poll.", registry=r)
        self.rebuilds = Counter(f"{p}_consumer_rebuilds_total", "Stuck group members replaced.", registry=r)
        self.orphaned_joins = Counter(f"{p}_orphaned_joins_total", "Orphaned group joins restarted.", registry=r)
        for reason in dict.fromkeys([*reasons, *DELIVERY_REASONS]):
            self.dlq.labels(reason)
