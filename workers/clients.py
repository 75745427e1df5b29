"""Every Kafka and Redis client a worker uses, made from settings the same way, and closed the same way.

    consumer = kafka_consumer(settings.kafka, group_id="inspector-workers", enable_auto_commit=False)  # unsubscribed
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
from workers.kafka.consumer import RECONNECT_BACKOFF_MAX_MS
from workers.kafka_login import check_login

if TYPE_CHECKING:
    import redis
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

__all__ = ["ClientError", "kafka_admin", "kafka_consumer", "kafka_producer", "redis_client"]

logger = logging.getLogger(__name__)


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
