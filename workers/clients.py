"""Every Kafka and Redis client a worker uses, made from settings the same way, and closed the same way.

    consumer = kafka_consumer(settings.kafka, group_id="inspector-workers", enable_auto_commit=False)
    producer = kafka_producer(settings.kafka, acks="all")
    admin = kafka_admin(settings.kafka)
    client = redis_client(settings.redis)

The factories pass the security settings (SASL, TLS, Redis ACL user) to the client libraries, and turn
the failures an operator can fix into a :class:`ClientError` that names the setting to change:

* Kafka refuses the SASL login or mechanism (checked first by :func:`workers.kafka_login.check_login`:
  kafka-python alone would retry until its bootstrap timeout and then report ``Unable to bootstrap``);
* no Kafka broker answers within the bootstrap timeout;
* Redis refuses the user name or password, or wants one that is not configured.

A Redis server that does not answer yet is not an error: the worker's store retries. Messages never
contain a secret.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from inspector.config import KafkaSettings, RedisSettings
from workers.errors import ClientError
from workers.kafka_login import check_login

if TYPE_CHECKING:
    import redis
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

__all__ = ["ClientError", "close_clients", "kafka_admin", "kafka_consumer", "kafka_producer", "redis_client"]

logger = logging.getLogger(__name__)

# kafka-python backs off reconnecting exponentially up to 30 s (Java's client: 1 s): a broker back after
# ten seconds of down time was tried again only up to 13 s later. Capped like Java's, a worker is back
# within a second of the broker (tests/chaos, scenario 2).
RECONNECT_BACKOFF_MAX_MS = 1_000


def _unreachable(settings: KafkaSettings, exc: Exception) -> ClientError:
    hint = "start it (deploy/local/stack up) or point INSPECTOR__KAFKA__BOOTSTRAP at your brokers"
    if settings.security_protocol != "PLAINTEXT":
        protocol = settings.security_protocol
        hint += f", and check that its listener speaks {protocol} (INSPECTOR__KAFKA__SECURITY_PROTOCOL)"
    return ClientError(f"cannot reach Kafka at {settings.bootstrap} ({type(exc).__name__}: {exc}): {hint}")


def _kafka(factory: Any, settings: KafkaSettings, *args: Any, **options: Any) -> Any:
    from kafka.errors import KafkaError

    check_login(settings)
    try:
        return factory(
            *args, **settings.client_kwargs(), **{"reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS, **options}
        )
    except KafkaError as exc:
        raise _unreachable(settings, exc) from exc


def kafka_consumer(settings: KafkaSettings, *topics: str, **options: Any) -> KafkaConsumer:
    """A ``KafkaConsumer`` with the connection and security settings, plus ``options`` (group, offsets, ...).

    Raises:
        ClientError: The login was refused, or no broker answered.

    """
    from kafka import KafkaConsumer

    consumer: KafkaConsumer = _kafka(KafkaConsumer, settings, *topics, **options)
    return consumer


def group_stable(consumer: Any) -> bool | None:
    """Whether a ``KafkaConsumer``'s group membership has settled (joined, synced, heartbeating).

    From ``consumer.group_metadata().state`` (kafka-python 3's ``MemberState``); ``None`` when the
    consumer has no group (manual assignment) or cannot say (a test's fake).
    """
    snapshot = getattr(consumer, "group_metadata", None)
    if snapshot is None:
        return None
    try:
        metadata = snapshot()
    except Exception:  # a closed or half-built client: no opinion
        return None
    state = getattr(metadata, "state", None)
    if getattr(metadata, "group_id", None) is None or not isinstance(state, str):
        return None
    return state == "<stable>"


def finish_orphaned_join(consumer: Any) -> bool:
    """Restart a group join that kafka-python 3.0.12 started and then stopped driving; whether it did.

    A consumer that is the group's leader rejoins when its metadata snapshot no longer matches the
    snapshot it assigned from (new topics settling, a partition added). That rejoin is driven only
    while ``need_rejoin()`` is true, and the leader's own assignment inside the join makes the two
    snapshots equal again: if the caller's ``poll`` gives up waiting before the SyncGroup answer
    arrives, the next ``poll`` sees no need to rejoin and never takes the finished join's result. The
    member then stays ``REBALANCING`` for good: no fetches, every commit refused with
    ``RebalanceInProgressError`` (two of six fresh single-worker groups on the local broker stalled
    so, until the test's timeout). Asking for a rejoin lets the next ``poll`` join again (a JoinGroup
    round of a few milliseconds). A consumer that is stable, not auto-assigned, still driving its
    join, or not a kafka-python ``KafkaConsumer`` is left alone.
    """
    from kafka.structs import MemberState

    coordinator = getattr(consumer, "_coordinator", None)
    subscription = getattr(coordinator, "_subscription", None)
    try:
        if coordinator is None or subscription is None or not subscription.partitions_auto_assigned():
            return False
        if coordinator.state == MemberState.STABLE or coordinator.need_rejoin():
            return False
        coordinator.request_rejoin()
    except Exception as exc:  # another client version's internals: keep the slower rebuild as the remedy
        logger.debug("cannot inspect the consumer's group join: %s", exc)
        return False
    return True


def kafka_producer(settings: KafkaSettings, **options: Any) -> KafkaProducer:
    """A ``KafkaProducer`` with the connection and security settings, plus ``options`` (acks, linger, ...).

    Raises:
        ClientError: The login was refused, or no broker answered.

    """
    from kafka import KafkaProducer

    producer: KafkaProducer = _kafka(KafkaProducer, settings, **options)
    return producer


def kafka_admin(settings: KafkaSettings, **options: Any) -> KafkaAdminClient:
    """A ``KafkaAdminClient`` with the connection and security settings.

    Raises:
        ClientError: The login was refused, or no broker answered.

    """
    from kafka import KafkaAdminClient

    admin: KafkaAdminClient = _kafka(KafkaAdminClient, settings, **options)
    return admin


def redis_client(settings: RedisSettings, *, check: bool = True, **options: Any) -> redis.Redis:
    """A ``redis.Redis`` on ``settings.connection_url`` with the ACL user, password and TLS files.

    Args:
        settings: The Redis settings.
        check: Log in once now (``PING``), so wrong credentials fail at start rather than at the first result.
        options: More ``redis.Redis`` arguments (``decode_responses``, timeouts).

    Raises:
        ClientError: Redis refused the login, or needs one that is not configured.
        redis.ResponseError: Redis answered PING with another error.

    """
    import redis

    client = redis.Redis.from_url(settings.connection_url, **settings.client_kwargs(), **options)
    if not check:
        return client
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        client.close()
        if settings.password is None:
            fix = "it wants a login: set INSPECTOR__REDIS__USERNAME and INSPECTOR__REDIS__PASSWORD"
        else:
            fix = "check INSPECTOR__REDIS__USERNAME and INSPECTOR__REDIS__PASSWORD (redis.username / redis.password)"
        raise ClientError(f"Redis at {settings.url} refused the login ({exc}): {fix}") from exc
    except redis.exceptions.NoPermissionError:
        pass  # logged in; only PING is not granted to this ACL user, and the worker does not need it
    except redis.ConnectionError as exc:
        logger.warning("Redis at %s does not answer yet (%s); storing waits for it", settings.url, exc)
    return client


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
