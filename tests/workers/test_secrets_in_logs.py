"""Secrets set in the environment never reach logs, console output or error messages (no services needed).

Config loading, ``inspector config show/check``, invalid configuration, client creation against
services that are not there, and ``inspector worker`` refusing to start, all at DEBUG level. The same
check on a worker that logs in to a real SCRAM broker and ACL Redis is in
tests/integration/test_security.py.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.config import load_settings
from inspector.errors import ConfigError
from workers.cli import app
from workers.clients import ClientError, kafka_consumer, kafka_producer, redis_client

SECRETS = {
    "KAFKA__SASL_USERNAME": f"kafka-user-{uuid.uuid4().hex}",
    "KAFKA__SASL_PASSWORD": f"kafka-pw-{uuid.uuid4().hex}",
    "KAFKA__SSL_PASSWORD": f"key-pw-{uuid.uuid4().hex}",
    "REDIS__USERNAME": f"redis-user-{uuid.uuid4().hex}",
    "REDIS__PASSWORD": f"redis-pw-{uuid.uuid4().hex}",
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("INSPECTOR")]:
        monkeypatch.delenv(name)
    for key, value in SECRETS.items():
        monkeypatch.setenv(f"INSPECTOR__{key}", value)
    monkeypatch.setenv("INSPECTOR__KAFKA__BOOTSTRAP", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("INSPECTOR__KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("INSPECTOR__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("INSPECTOR__REDIS__URL", f"redis://127.0.0.1:{closed_port()}/0")


def test_no_secret_in_any_output(
    secret_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    runner, texts = CliRunner(), []

    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    texts += [repr(settings), str(settings), settings.model_dump_json()]
    for args in (["-v", "config", "show"], ["-v", "config", "show", "--json"], ["-v", "config", "check"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        texts.append(result.output)

    # clients against services that are not there
    redis_client(settings.redis, socket_connect_timeout=1)
    for factory in (kafka_producer, kafka_consumer):
        with pytest.raises(ClientError) as info:
            factory(settings.kafka, bootstrap_timeout_ms=300)
        texts.append(str(info.value))

    # invalid configuration, from the environment and from a file that holds a secret
    monkeypatch.setenv("INSPECTOR__METRICS__PORT", "99999")
    monkeypatch.delenv("INSPECTOR__KAFKA__SASL_MECHANISM")
    with pytest.raises(ConfigError) as bad:
        load_settings()
    message = str(bad.value)
    assert "INSPECTOR__METRICS__PORT: metrics.port" in message and "needs sasl_mechanism" in message
    texts.append(message)
    monkeypatch.setenv("INSPECTOR__METRICS__PORT", "0")
    monkeypatch.setenv("INSPECTOR__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    in_file = tmp_path / "leaky.yaml"
    in_file.write_text(f"redis:\n  password: {SECRETS['REDIS__PASSWORD']}\n")
    with pytest.raises(ConfigError, match="secrets are not read from config files") as leaky:
        load_settings(in_file)
    texts.append(str(leaky.value))
    result = runner.invoke(app, ["-v", "config", "check", "--config", str(in_file)])
    assert result.exit_code == 2
    texts.append(result.output)

    # a worker that cannot start: its configuration is invalid, then its model file is missing
    monkeypatch.setenv("INSPECTOR__KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("INSPECTOR__KAFKA__SSL_CAFILE", str(tmp_path / "missing-ca.pem"))
    result = runner.invoke(app, ["-v", "worker", "--duration", "1"])
    assert result.exit_code == 2 and "kafka.ssl_cafile" in result.output
    texts.append(result.output)
    monkeypatch.delenv("INSPECTOR__KAFKA__SSL_CAFILE")
    monkeypatch.setenv("INSPECTOR__KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("INSPECTOR__WORKER__MODEL", str(tmp_path / "missing.pt"))
    result = runner.invoke(app, ["-v", "worker", "--duration", "1"])
    assert result.exit_code == 2 and "missing.pt" in result.output
    texts.append(result.output)

    captured = capfd.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    texts += [f"{r.args!r} {r.exc_info!r}" for r in caplog.records]
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    for text in texts:
        for value in SECRETS.values():
            assert value not in text
