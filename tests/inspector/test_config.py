from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inspector.config import KafkaSettings, RedisSettings, Settings, WorkerSettings, load_settings
from inspector.errors import ConfigError
from inspector.frame import DEFAULT_MAX_PIXELS
from inspector.stream import StreamPolicy

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_shipped_default_file_loads() -> None:
    settings = load_settings(REPO / "configs" / "default.yaml")
    assert settings.kafka.servers == ["127.0.0.1:9092"]
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.metrics.bind_address == "127.0.0.1"


def test_no_file_gives_defaults_and_config_env_picks_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().kafka.client_id == "inspector"
    monkeypatch.setenv("INSPECTOR_CONFIG", str(write(tmp_path, "kafka:\n  client_id: line-7\n")))
    assert load_settings().kafka.client_id == "line-7"


def test_environment_overrides_file_field_by_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap: a:1\n  client_id: from-file\nmetrics:\n  port: 9500\n")
    monkeypatch.setenv("INSPECTOR__KAFKA__BOOTSTRAP", "b1:9092, b2:9092")
    monkeypatch.setenv("INSPECTOR__METRICS__PORT", "9601")
    settings = load_settings(path)
    assert settings.kafka.servers == ["b1:9092", "b2:9092"]
    assert settings.kafka.client_id == "from-file"  # untouched by the environment
    assert settings.metrics.port == 9601


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.kafka.client_id = "other"  # type: ignore[misc]


def test_bad_file_value_names_file_field_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, "metrics:\n  port: 70000\nkafka:\n  botstrap: x:1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert f"config file {path}: metrics.port: Input should be less than or equal to 65535 (got 70000)" in text
    assert "kafka.botstrap: unknown setting; expected one of: bootstrap," in text


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR__KAFKA__BOOTSTRAP", "no-port-here")
    with pytest.raises(
        ConfigError, match=r"environment variable INSPECTOR__KAFKA__BOOTSTRAP: kafka.bootstrap: expected"
    ):
        load_settings()


def test_unknown_environment_section_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR__KAFKA__BOOTSTRAPP", "x:1")
    with pytest.raises(ConfigError, match=r"INSPECTOR__KAFKA__BOOTSTRAPP: kafka\.bootstrapp: unknown setting"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka: [1\n", "line 2, column 1: not valid YAML"),
        ("- just\n- a list\n", "expected a mapping of sections"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR__KAFKA__SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("INSPECTOR__REDIS__PASSWORD", "redis-secret")
    path = write(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n  sasl_username: svc\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "needs sasl_mechanism" in str(info.value)
    assert "hunter2" not in str(info.value) and "svc" not in str(info.value)
    monkeypatch.delenv("INSPECTOR__KAFKA__SASL_PASSWORD")
    settings = load_settings()
    assert "redis-secret" not in repr(settings) and "redis-secret" not in settings.model_dump_json()
    assert settings.redis.client_kwargs()["password"] == "redis-secret"


def test_sasl_client_kwargs_for_kafka_python() -> None:
    kafka = KafkaSettings(
        bootstrap="k:9093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="inspector",  # type: ignore[arg-type]
        sasl_password="pw",  # type: ignore[arg-type]
    )
    kwargs = kafka.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "inspector"
    assert kwargs["sasl_plain_password"] == "pw"
    assert "ssl_cafile" not in kwargs


def test_ssl_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "ca.pem")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert KafkaSettings(security_protocol="SSL", ssl_cafile=ca).client_kwargs()["ssl_cafile"] == str(ca)


@pytest.mark.parametrize("url", ["http://x", "redis://user:pw@host:6379/0"])
def test_redis_url_checked(url: str) -> None:
    with pytest.raises(ValidationError):
        RedisSettings(url=url)


def test_redis_tls_flag_switches_the_scheme_and_passes_the_files(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("x")
    redis = RedisSettings(url="redis://cache:6380/1", tls=True, tls_ca_file=ca, tls_certfile=cert, tls_keyfile=key)
    assert redis.uses_tls and redis.connection_url == "rediss://cache:6380/1"
    assert redis.client_kwargs() == {"ssl_ca_certs": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    assert RedisSettings(url="rediss://cache:6380/0").uses_tls
    plain = Settings().redis
    assert plain.client_kwargs() == {} and plain.connection_url == plain.url and not plain.uses_tls


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tls_ca_file": "ca.pem"}, "tls_ca_file set but TLS is off: set redis.tls: true or use a rediss:// URL"),
        ({"tls": True, "tls_keyfile": "ca.pem"}, "tls_keyfile needs tls_certfile"),
        ({"tls": True, "url": "unix:///run/redis.sock"}, "tls needs a TCP URL"),
        ({"tls": True, "tls_ca_file": "missing.pem"}, "does not exist"),
    ],
)
def test_inconsistent_redis_tls_is_refused(tmp_path: Path, fields: dict[str, object], expected: str) -> None:
    (tmp_path / "ca.pem").write_text("x")
    values = {k: tmp_path / v if k.endswith(("file", "keyfile")) else v for k, v in fields.items()}
    with pytest.raises(ValidationError, match=expected):
        RedisSettings(**values)  # type: ignore[arg-type]


def test_kafka_tls_files_and_key_password_reach_the_client(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("x")
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p",  # type: ignore[arg-type]
        ssl_cafile=ca, ssl_certfile=cert, ssl_keyfile=key, ssl_password="key-pass",  # type: ignore[arg-type]
    )  # fmt: skip
    kwargs = kafka.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_plain_password"] == "p"
    assert (kwargs["ssl_cafile"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (str(ca), str(cert), str(key))
    assert kwargs["ssl_password"] == "key-pass"
    assert "key-pass" not in repr(kafka) and "key-pass" not in kafka.model_dump_json()


def test_secrets_in_the_config_file_are_refused_without_echo(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  sasl_password: in-file-pw\nredis:\n  username: svc-line7\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert f"config file {path}: kafka.sasl_password: secrets are not read from config files" in text
    assert "set INSPECTOR__KAFKA__SASL_PASSWORD or put it in a file named INSPECTOR__KAFKA__SASL_PASSWORD" in text
    assert "redis.username" in text and "INSPECTOR__REDIS__USERNAME" in text
    assert "in-file-pw" not in text and "svc-line7" not in text


def test_secret_files_fill_secrets_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "INSPECTOR__KAFKA__SASL_PASSWORD").write_text("from-file\n")  # a trailing newline is dropped
    (secrets / "INSPECTOR__REDIS__PASSWORD").write_text("redis-from-file")
    monkeypatch.setenv("INSPECTOR_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("INSPECTOR__REDIS__PASSWORD", "redis-from-env")
    settings = load_settings(write(tmp_path, "kafka:\n  client_id: line-7\n"))
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == "from-file"
    assert settings.redis.password is not None and settings.redis.password.get_secret_value() == "redis-from-env"
    assert settings.kafka.client_id == "line-7"

    monkeypatch.setenv("INSPECTOR_SECRETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"INSPECTOR_SECRETS_DIR=.*nowhere is not a folder"):
        load_settings()


def test_the_pixel_limit_follows_the_largest_frame_side_unless_set() -> None:
    worker = WorkerSettings()
    assert worker.max_frame_side == 4096 and worker.pixel_limit == 4096 * 4096 == DEFAULT_MAX_PIXELS
    assert WorkerSettings(max_frame_side=2048).pixel_limit == 2048 * 2048
    assert WorkerSettings(max_frame_side=2048, max_pixels=5_000_000).pixel_limit == 5_000_000
    assert StreamPolicy.from_settings(WorkerSettings(max_frame_side=1024)).max_pixels == 1024 * 1024
    assert worker.max_poll_bytes == 128 * 2**20
    with pytest.raises(ValidationError, match="max_frame_side"):
        WorkerSettings(max_frame_side=10)
