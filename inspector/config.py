"""Typed, frozen configuration: ``configs/*.yaml`` overridden by ``INSPECTOR__SECTION__FIELD`` variables.

    settings = load_settings("configs/default.yaml")
    settings.kafka.bootstrap            # "127.0.0.1:9092", or INSPECTOR__KAFKA__BOOTSTRAP if set

Precedence, highest first: environment variables, the YAML file, the defaults below. Every model is
frozen and rejects unknown keys, so a typo fails at start with one message naming the file (or the
variable), the field and what is expected. Secrets are ``SecretStr`` and never appear in messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from inspector.errors import ConfigError

ENV_PREFIX = "INSPECTOR__"
CONFIG_ENV = "INSPECTOR_CONFIG"
SECRETS_DIR_ENV = "INSPECTOR_SECRETS_DIR"
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """How to reach the Kafka cluster."""

    bootstrap: str = Field("127.0.0.1:9092", description="comma-separated host:port list")
    client_id: str = Field("inspector", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: SecretStr | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None

    @field_validator("bootstrap")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not _HOST_PORT.match(s) or not 0 < int(s.rsplit(":", 1)[1]) < 65536]
        if not servers or bad:
            msg = (
                f"expected a comma-separated list of host:port, e.g. 127.0.0.1:9092 (bad: {', '.join(bad) or 'empty'})"
            )
            raise ValueError(msg)
        return ",".join(servers)

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            msg = f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            raise ValueError(msg)
        return self

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers as a list."""
        return self.bootstrap.split(",")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_username is not None and self.sasl_password is not None  # checked above
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username.get_secret_value()
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if (path := getattr(self, key)) is not None:
                    kwargs[key] = str(path)
            if self.ssl_password is not None:
                kwargs["ssl_password"] = self.ssl_password.get_secret_value()
        return kwargs


class RedisSettings(_Section):
    """How to reach Redis: URL, ACL user, TLS."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis://, rediss:// (TLS) or unix:// URL")
    username: SecretStr | None = Field(None, description="ACL user (Redis 6+); unset: the default user")
    password: SecretStr | None = None
    tls: bool = Field(False, description="TLS on a redis:// URL (same as rediss://)")
    tls_ca_file: Path | None = Field(None, description="CA bundle that signed the server certificate")
    tls_certfile: Path | None = Field(None, description="client certificate, for servers with tls-auth-clients yes")
    tls_keyfile: Path | None = Field(None, description="key of tls_certfile")
    key_prefix: str = Field("inspector", pattern=r"^[A-Za-z0-9_.:-]+$", description="prefix of every key written")
    result_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="how long results and part verdicts are kept")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a URL starting with redis://, rediss:// or unix://")
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("put credentials in redis.username / redis.password, not in the URL")
        return value

    @field_validator("tls_ca_file", "tls_certfile", "tls_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> RedisSettings:
        if self.tls and self.url.startswith("unix://"):
            raise ValueError("tls needs a TCP URL: use rediss://host:port/db instead of unix://")
        files = [name for name in ("tls_ca_file", "tls_certfile", "tls_keyfile") if getattr(self, name) is not None]
        if files and not self.uses_tls:
            raise ValueError(f"{', '.join(files)} set but TLS is off: set redis.tls: true or use a rediss:// URL")
        if self.tls_keyfile is not None and self.tls_certfile is None:
            raise ValueError("tls_keyfile needs tls_certfile (the client certificate it belongs to)")
        return self

    @property
    def uses_tls(self) -> bool:
        """True for a ``rediss://`` URL or ``tls: true``."""
        return self.tls or self.url.startswith("rediss://")

    @property
    def connection_url(self) -> str:
        """``url`` with the ``rediss://`` scheme when ``tls`` is set (redis-py picks TLS from the scheme)."""
        if self.tls and self.url.startswith("redis://"):
            return "rediss://" + self.url.removeprefix("redis://")
        return self.url

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(settings.connection_url, **kwargs)``."""
        kwargs: dict[str, Any] = {}
        if self.username is not None:
            kwargs["username"] = self.username.get_secret_value()
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(self.tls_ca_file)
        if self.tls_certfile is not None:
            kwargs["ssl_certfile"] = str(self.tls_certfile)
        if self.tls_keyfile is not None:
            kwargs["ssl_keyfile"] = str(self.tls_keyfile)
        return kwargs


class MetricsSettings(_Section):
    """Where a worker serves /metrics, /healthz and /readyz."""

    bind_address: str = Field("127.0.0.1", min_length=1)
    port: int = Field(9400, ge=0, le=65535, description="0 picks a free port")


class InferenceSettings(_Section):
    """How crack models run: backend, device, precision, tiling."""

    backend: Literal["onnxruntime", "torch", "tensorrt"] = Field(
        "onnxruntime",
        description="onnxruntime (a .pt is exported once, cached by SHA-256 and parity-checked at load), "
        "torch (eager, about 3x slower on a CPU), tensorrt (a built .engine)",
    )
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    amp: bool | None = Field(
        None, description="half precision in the torch backend; unset: fp16 on CUDA where parity holds, fp32 on a CPU"
    )
    cache_dir: Path | None = Field(None, description="exported ONNX graphs (default: ~/.cache/inspector/onnx)")
    threads: int | None = Field(None, ge=1, description="CPU threads in all (default: all cores)")
    lanes: int = Field(
        2, ge=1, description="pairs decoded and inspected at once by a worker; each runtime call gets threads/lanes"
    )
    tile: int = Field(
        576, ge=64, multiple_of=16,
        description="longest tile side in visible pixels; a frame takes the fewest tiles that fit, shared out evenly",
    )  # fmt: skip
    overlap: int = Field(64, ge=0, multiple_of=4, description="least overlap between tiles in visible pixels")
    batch_size: int = Field(2, ge=1, description="tiles per model call")


class TopicSettings(_Section):
    """Kafka topic names and the partition count the gateway creates them with."""

    visible: str = Field("frames.visible", min_length=1)
    infrared: str = Field("frames.infrared", min_length=1)
    dlq: str = Field("frames.dlq", min_length=1, description="dead letters: records a worker could not use")
    results: str | None = Field(None, description="optional mirror of every stored result for downstream systems")
    partitions: int = Field(4, ge=1, description="partitions of both frame topics (co-partitioned: equal counts)")
    replication: int = Field(1, ge=1)


class WorkerSettings(_Section):
    """How an inspection worker pairs, batches and judges frames."""

    group_id: str = Field("inspector-workers", min_length=1)
    model: str = Field("crack-concat", description="a model name (`inspector models`) or a model file")
    batch_pairs: int = Field(4, ge=1, description="most pairs in one model batch")
    batch_wait_ms: float = Field(20.0, ge=0, description="longest a formed pair waits for its batch to fill")
    pair_timeout_ms: float = Field(2000.0, gt=0, description="longest a frame waits for its partner")
    tolerance_ms: float = Field(2.0, ge=0, description="timestamp pairing tolerance (frames without a seq)")
    deadline_ms: float = Field(0.0, ge=0, description="drop frames older than this at arrival; 0 keeps every frame")
    max_clock_skew_ms: float = Field(60_000.0, gt=0, description="a capture time further in the future is rejected")
    visible_only_unpaired: bool = Field(False, description="inspect a visible frame whose IR partner never came")
    max_record_bytes: int = Field(32 * 2**20, ge=1024, description="larger records go to the dead-letter topic")
    max_frame_side: int = Field(
        4096,
        ge=64,
        description="largest frame side the line's cameras produce (px; inspector.frame.DEFAULT_MAX_FRAME_SIDE)",
    )
    max_pixels: int = Field(
        0, ge=0, description="larger declared images go to the dead-letter topic; 0: max_frame_side squared"
    )
    max_poll_bytes: int = Field(
        128 * 2**20, ge=1024,
        description="record bytes decoded from one poll; the rest are read again next poll (one record at least)",
    )  # fmt: skip
    max_poll_records: int = Field(32, ge=1)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    store_retry_s: float = Field(1.0, gt=0, description="first back-off when Redis or Kafka refuses; doubles to 30 s")
    rejoin_after_s: float = Field(
        60.0, gt=0, description="replace a Kafka consumer whose group membership stayed unsettled this long"
    )
    mm_per_px: float | None = Field(None, gt=0, description="scale for visible frames that carry no mm_per_px header")
    calibration_dir: Path | None = Field(
        None, description="folder of {camera_id}.yaml files from `inspector calibrate`: each rig's IR mapping and scale"
    )
    widths: tuple[str, ...] = Field(
        (), description="model files of one width family, widest first (inspector prune); the worker picks by load"
    )
    latency_budget_ms: float = Field(2000.0, gt=0, description="longest a capture should wait in the queue")
    probe_size: int = Field(1024, ge=64, description="visible frame side used to time each width variant at start")

    @property
    def pixel_limit(self) -> int:
        """The largest ``H * W`` decoded: ``max_pixels``, or ``max_frame_side`` squared when that is 0."""
        return self.max_pixels or self.max_frame_side**2


class GatewaySettings(_Section):
    """How the camera gateway publishes frames."""

    compression: Literal["lz4", "zstd", "gzip", "none"] = "lz4"
    linger_ms: int = Field(5, ge=0)
    encoding: Literal["png", "jpeg", "raw"] = Field("png", description="pixel encoding of published frames")
    fps: float = Field(5.0, gt=0, description="captures per second per camera for replayed and synthetic sources")


class TriggerSettings(_Section):
    """How a camera is fired.

    ``free-run``: at its own frame rate; ``software``: the gateway fires both cameras of a rig
    together at ``gateway.fps``; ``hardware``: on an input line (the conveyor's encoder or light
    barrier, wired to both cameras of the rig).
    """

    mode: Literal["free-run", "software", "hardware"] = "software"
    line: str = Field("Line1", pattern=r"^Line\d{1,2}$", description="input line of a hardware trigger")


class CameraSettings(_Section):
    """One GenICam camera of a rig (GigE Vision through Aravis)."""

    device: str = Field(..., min_length=1, description="device id (vendor-model-serial), serial number or IP address")
    pixel_format: Literal["Mono8", "Mono16", "RGB8"] = "Mono8"
    region: tuple[int, int, int, int] | None = Field(None, description="x, y, width, height; None: the full sensor")
    exposure_us: float | None = Field(None, gt=0)
    gain_db: float | None = Field(None, ge=0)
    packet_size: int | None = Field(None, ge=576, le=16_000, description="GVSP packet size (jumbo frames: 8,000+)")
    trigger: TriggerSettings = TriggerSettings()
    buffers: int = Field(8, ge=2, le=256, description="stream buffers allocated from the payload size")


class RigSettings(_Section):
    """A rig: the visible and infrared cameras over one conveyor position, fired by the same trigger."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="the rig's camera_id in frames")
    visible: CameraSettings
    infrared: CameraSettings
    mm_per_px: float | None = Field(None, gt=0, description="visible-image scale, published with each frame")


_AE_TITLE = r"^[ -~]{1,16}$"  # DICOM AE titles: 1-16 printable ASCII characters


class PacsSettings(_Section):
    """DICOM networking of the medical pipeline: ``inspector medical-gateway`` (studies in) and the reports out."""

    ae_title: str = Field("INSPECTOR", pattern=_AE_TITLE, description="our AE title, as SCP and as SCU")
    bind_address: str = Field("127.0.0.1", min_length=1, description="where medical-gateway listens")
    port: int = Field(11112, ge=0, le=65535, description="medical-gateway's DICOM port (0: a free one)")
    allowed_calling_aets: tuple[str, ...] = Field(
        ("ORTHANC",), min_length=1, description="calling AE titles medical-gateway accepts associations from"
    )
    quiet_s: float = Field(5.0, gt=0, description="a study is complete once no instance of it came for this long")
    complete_on_release: bool = Field(
        False,
        description="also complete a study when the association that sent it is released (senders that "
        "send a whole study in one association, as Orthanc's routing does; not modalities that send series apart)",
    )
    incoming: Path = Field(Path("data/medical/incoming"), description="where received instances are kept (claims)")
    max_study_instances: int = Field(2000, ge=1, description="a study with more instances is refused")
    send: Literal["none", "cstore", "stow"] = Field(
        "none", description="how the medical worker sends its Structured Reports: C-STORE, STOW-RS, or not at all"
    )
    pacs_ae_title: str = Field("ORTHANC", pattern=_AE_TITLE, description="the PACS's AE title (C-STORE)")
    pacs_host: str = Field("127.0.0.1", min_length=1)
    pacs_port: int = Field(4242, ge=1, le=65535, description="the PACS's DICOM port (C-STORE)")
    stow_url: str = Field("http://127.0.0.1:8042/dicom-web", description="DICOMweb root of the PACS (STOW-RS)")
    timeout_s: float = Field(10.0, gt=0, description="connection and answer timeout towards the PACS")


class EvidenceSettings(_Section):
    """What the inspection worker keeps of a part for review (docs/REVIEW.md): where, which parts, for how long."""

    enabled: bool = Field(True, description="keep evidence of every NG part and of a sample of OK parts")
    root: Path = Field(Path("data/evidence"), description="evidence folder (a shared volume); never written outside")
    ok_fraction: float = Field(0.02, ge=0, le=1, description="share of OK parts kept too (picked by capture)")
    max_age_days: float = Field(14.0, gt=0, description="older evidence is deleted")
    max_bytes: int = Field(20 * 2**30, ge=2**20, description="size cap of the folder: the oldest evidence goes first")
    jpeg_quality: int = Field(90, ge=50, le=100, description="quality of the visible and registered IR JPEGs")
    prune_every_s: float = Field(60.0, gt=0, description="how often a worker applies the age and size limits")


class ReviewSettings(_Section):
    """The operator review station, ``inspector review`` (docs/REVIEW.md)."""

    bind_address: str = Field("127.0.0.1", min_length=1, description="0.0.0.0 to serve other hosts (behind TLS)")
    port: int = Field(8800, ge=0, le=65535, description="0 picks a free port")
    users_file: Path = Field(
        Path("data/review/users.yaml"), description="users, roles and argon2 password hashes (`inspector review user`)"
    )
    labels: Path = Field(Path("data/review/labels"), description="decided parts as inspector.sample/1 training samples")
    audit_log: Path = Field(Path("data/review/audit.jsonl"), description="every decision: who, when, before -> after")
    session_secret: SecretStr | None = Field(
        None, description="signs session cookies; unset: a random one per start (everyone signs in again)"
    )
    session_max_age_s: int = Field(12 * 3600, ge=60, description="a session cookie expires after this long")
    secure_cookies: bool = Field(False, description="cookies only over HTTPS (set when served behind TLS)")
    queue_size: int = Field(200, ge=1, description="newest results scanned for the review queue")


class RegistrySettings(_Section):
    """The model registry that ``inspector promote`` writes and running workers watch (docs/REVIEW.md)."""

    models_dir: Path = Field(Path("data/models"), description="shared folder the promoted model files are copied to")
    watch: bool = Field(True, description="workers follow promotions without a restart")
    poll_s: float = Field(2.0, gt=0, description="how often a worker reads the registry key")


class Settings(BaseSettings):
    """All settings; sections are added by the pieces that need them."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_dir_missing="error",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    metrics: MetricsSettings = MetricsSettings()
    inference: InferenceSettings = InferenceSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    gateway: GatewaySettings = GatewaySettings()
    cameras: tuple[RigSettings, ...] = Field((), description="GenICam rigs for `inspector gateway --source genicam`")
    pacs: PacsSettings = PacsSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    review: ReviewSettings = ReviewSettings()
    registry: RegistrySettings = RegistrySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then secret files (``$INSPECTOR_SECRETS_DIR``), then the YAML file (init arguments)."""
        return env_settings, NestedSecretsSettingsSource(file_secret_settings), init_settings


_SECRET_WORDS = ("password", "username", "secret", "token")


def _valid_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def _describe(error: Mapping[str, Any], origin: str, environ: Mapping[str, str]) -> str:
    loc = [str(p) for p in error["loc"]]
    field = ".".join(loc)
    variable = ENV_PREFIX + "__".join(loc).upper()
    source = f"environment variable {variable}" if variable in {k.upper() for k in environ} else origin
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown setting; expected one of: {', '.join(_valid_keys(loc))}"
    text = f"{source}: {field}: {message}"
    if error["type"] not in ("missing", "extra_forbidden") and not any(w in field for w in _SECRET_WORDS):
        value = error.get("input")
        if not isinstance(value, dict):
            text += f" (got {value!r})"
    return text


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, or raise ConfigError naming the file and the line."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        msg = f"config file {path} not found: pass an existing file (see configs/default.yaml)"
        raise ConfigError(msg) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        msg = f"config file {path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
        raise ConfigError(msg) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = (
            f"config file {path}: expected a mapping of sections (kafka:, redis:, metrics:), got {type(data).__name__}"
        )
        raise ConfigError(msg)
    return data


def _secret_fields() -> dict[str, str]:
    """``section.field`` of every secret setting, with its environment variable."""
    found = {}
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, field in model.model_fields.items():
            if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ())):
                found[f"{section}.{name}"] = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
    return found


def _secrets_in_file(data: Mapping[str, Any], origin: str) -> list[str]:
    """One line per secret written in the YAML file: secrets come from the environment or secret files only."""
    lines = []
    for dotted, variable in _secret_fields().items():
        section, name = dotted.split(".")
        if isinstance(data.get(section), Mapping) and name in data[section]:
            lines.append(
                f"{origin}: {dotted}: secrets are not read from config files; set {variable} "
                f"or put it in a file named {variable} in ${SECRETS_DIR_ENV}"
            )
    return lines


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from a YAML file (or ``$INSPECTOR_CONFIG``, or defaults) plus secret files and the environment.

    Secrets (every ``SecretStr`` setting: passwords, user names) come only from environment variables
    or from files named like those variables in the folder ``$INSPECTOR_SECRETS_DIR`` (e.g. a mounted
    Kubernetes Secret holding ``INSPECTOR__KAFKA__SASL_PASSWORD``); a config file that holds one is refused.

    Args:
        path: YAML file; ``None`` reads ``$INSPECTOR_CONFIG`` if set, else uses the built-in defaults.

    Returns:
        The frozen settings.

    Raises:
        ConfigError: one message listing every invalid field with its file or variable.

    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    origin = f"config file {path}" if path is not None else "defaults"
    data = read_yaml(Path(path)) if path is not None else {}
    secrets_dir = os.environ.get(SECRETS_DIR_ENV) or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        msg = f"{SECRETS_DIR_ENV}={secrets_dir} is not a folder: point it at the folder of secret files, or unset it"
        raise ConfigError(msg)
    in_file = _secrets_in_file(data, origin)
    try:
        settings = Settings(**data, _secrets_dir=secrets_dir)
    except ValidationError as exc:
        lines = in_file + [_describe(e, origin, os.environ) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # pydantic-settings' SettingsError for undecodable variables
        raise ConfigError(f"invalid configuration from the environment: {exc}") from None
    if in_file:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(in_file))
    return settings
