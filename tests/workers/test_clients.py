"""The client factories without servers: TLS wiring, unreachable services, the SCRAM exchange (RFC 7677 vector)."""

from __future__ import annotations

import base64
import logging
import socket
import time
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.connection import SSLConnection

from inspector.config import KafkaSettings, RedisSettings
from workers.clients import (
    ClientError,
    kafka_admin,
    kafka_consumer,
    kafka_producer,
    redis_client,
)
from workers.kafka_login import _Scram, check_login


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_tls_settings_reach_the_connection(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("not read before connecting")
    settings = RedisSettings(
        url="redis://cache.example:6380/2", tls=True, tls_ca_file=ca, tls_certfile=cert, tls_keyfile=key,
        username="svc", password="pw",
    )  # fmt: skip
    client = redis_client(settings, check=False)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    connection = cast(SSLConnection, pool.make_connection())  # a plain Connection with ssl=True: TypeError here
    assert (connection.ca_certs, connection.certfile, connection.keyfile) == (str(ca), str(cert), str(key))
    assert (connection.host, connection.port, connection.db) == ("cache.example", 6380, 2)
    assert (connection.username, connection.password) == ("svc", "pw")
    plain = redis_client(RedisSettings(), check=False).connection_pool
    assert plain.connection_class is redis.connection.Connection


def test_unreachable_redis_is_a_warning_not_a_start_failure(caplog: pytest.LogCaptureFixture) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{closed_port()}/0", password="pw")
    with caplog.at_level(logging.WARNING, logger="workers.clients"):
        client = redis_client(settings, socket_connect_timeout=1)
    assert isinstance(client, redis.Redis)
    assert f"Redis at {settings.url} does not answer yet" in caplog.text


@pytest.mark.parametrize("factory", [kafka_producer, kafka_consumer, kafka_admin])
def test_unreachable_kafka_names_the_bootstrap_setting(factory: object) -> None:
    settings = KafkaSettings(bootstrap=f"127.0.0.1:{closed_port()}")
    with pytest.raises(ClientError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+ .*INSPECTOR__KAFKA__BOOTSTRAP"):
        factory(settings, bootstrap_timeout_ms=300)  # type: ignore[operator]


def test_unreachable_sasl_broker_also_names_the_security_protocol() -> None:
    settings = KafkaSettings(
        bootstrap=f"127.0.0.1:{closed_port()}", security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc", sasl_password="pw",
    )  # fmt: skip
    start = time.monotonic()
    check_login(settings, timeout_s=1)  # nobody answers: inconclusive, the clients keep trying
    assert time.monotonic() - start < 2
    with pytest.raises(ClientError, match=r"listener speaks SASL_PLAINTEXT \(INSPECTOR__KAFKA__SECURITY_PROTOCOL\)"):
        kafka_producer(settings, bootstrap_timeout_ms=300)


def test_plaintext_needs_no_login_check() -> None:
    check_login(KafkaSettings(bootstrap="192.0.2.1:9092"), timeout_s=0.01)  # returns without connecting


def test_scram_sha256_exchange_matches_rfc7677() -> None:
    scram = _Scram("SCRAM-SHA-256", "user", "pencil")
    scram.nonce = "rOprNGfwEbeRWgbNEkqO"
    scram.first_bare = f"n=user,r={scram.nonce}"
    assert scram.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert scram.final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert not scram.verify(b"v=" + base64.b64encode(b"forged" * 6))


def test_scram_refuses_a_challenge_that_does_not_extend_our_nonce() -> None:
    scram = _Scram("SCRAM-SHA-512", "user", "pencil")
    with pytest.raises(ConnectionError, match="malformed"):
        scram.final(b"r=someone-elses-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_kafka_clients_reconnect_within_a_second_of_the_broker_coming_back() -> None:
    from workers.clients import _kafka
    from workers.kafka.consumer import RECONNECT_BACKOFF_MAX_MS

    made = _kafka(lambda **kwargs: kwargs, KafkaSettings(bootstrap="127.0.0.1:1"))
    assert made["reconnect_backoff_max_ms"] == RECONNECT_BACKOFF_MAX_MS == 1000  # kafka-python's default: 30 s
    kept = _kafka(lambda **kwargs: kwargs, KafkaSettings(bootstrap="127.0.0.1:1"), reconnect_backoff_max_ms=5)
    assert kept["reconnect_backoff_max_ms"] == 5  # a caller's own choice wins
