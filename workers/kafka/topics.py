"""The one way topics are created: what exists is left alone, what is missing is created and waited for.

    specs = [TopicSpec("vqa.requests", partitions=4), TopicSpec("vqa.dlq")]
    counts = ensure_topics(admin, specs)          # {"vqa.requests": 4, "vqa.dlq": 1}

Used by the gateway (frame topics, with their co-partitioning check on top) and by the medical and
VQA workers at start. Creating a topic that another process created meanwhile is not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.errors import WorkerError

__all__ = ["TopicSpec", "ensure_topics", "partition_counts", "with_admin"]

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36  # Kafka's TOPIC_ALREADY_EXISTS error code


@dataclass(frozen=True)
class TopicSpec:
    """A topic to have: its name, and the partitions, replication and configs it gets if created."""

    name: str
    partitions: int = 1
    replication: int = 1
    configs: dict[str, str] = field(default_factory=dict, hash=False)


def partition_counts(admin: Any, names: Sequence[str]) -> dict[str, int]:
    """Partition count of each topic in ``names`` that exists (``admin``: a ``KafkaAdminClient``)."""
    found = {}
    for topic in admin.describe_topics(list(names)):
        if topic.get("error_code", 0) == 0 and topic.get("name") in names:
            found[topic["name"]] = len(topic.get("partitions") or ())
    return found


def ensure_topics(admin: Any, specs: Sequence[TopicSpec], *, timeout_ms: int = 30_000) -> dict[str, int]:
    """Create the topics of ``specs`` that are missing, wait for their leaders; every topic's partition count.

    Args:
        admin: A ``kafka.KafkaAdminClient``.
        specs: The topics wanted (a name listed twice is created once, from its first spec).
        timeout_ms: How long to wait for created topics to have leaders.

    Raises:
        WorkerError: The broker refused to create a topic (the message names it and what to check).

    """
    wanted_specs = {spec.name: spec for spec in reversed(specs)}
    found = partition_counts(admin, list(wanted_specs))
    missing = [spec for name, spec in wanted_specs.items() if name not in found]
    if not missing:
        return found
    request = {
        s.name: {"num_partitions": s.partitions, "replication_factor": s.replication, "configs": s.configs}
        for s in missing
    }
    response = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
    for topic in response.get("topics", ()):
        code = topic.get("error_code", 0)
        if code not in (0, _TOPIC_ALREADY_EXISTS):  # created meanwhile by someone else: fine
            spec = wanted_specs.get(topic.get("name"), TopicSpec(str(topic.get("name"))))
            msg = (
                f"Kafka refused to create topic {spec.name} with {spec.partitions} partitions and replication "
                f"{spec.replication}: {topic.get('error_message') or code} (check the replication factor against "
                "the number of brokers, and the client's ACLs)"
            )
            raise WorkerError(msg)
    admin.wait_for_topics([s.name for s in missing], timeout_ms=timeout_ms)
    logger.info("created Kafka topics %s", ", ".join(f"{s.name} ({s.partitions} partitions)" for s in missing))
    return partition_counts(admin, list(wanted_specs))


def with_admin(make_admin: Callable[[], Any], bootstrap: str, act: Callable[[Any], Any]) -> Any:
    """Run ``act(admin)`` with a short-lived admin client; a Kafka failure becomes a :class:`WorkerError`."""
    from kafka.errors import KafkaError

    admin = make_admin()
    try:
        return act(admin)
    except KafkaError as exc:
        msg = f"could not check or create the Kafka topics on {bootstrap}: {type(exc).__name__}: {exc}"
        raise WorkerError(msg) from exc
    finally:
        admin.close()
