"""Secured transports on real servers: Kafka SASL/SCRAM-SHA-512 and Redis ACL users, wrong credentials, no leaks.

A private SCRAM broker and a private ACL Redis run on their own free ports for this module
(:mod:`tests.integration.secured`); the local stack is only read (one SASL handshake against its
PLAINTEXT listener). The Redis ACL rules tested here are the ones docs/OPERATIONS.md tells operators
to use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from kafka.admin import NewTopic
from redis.exceptions import NoPermissionError
from typer.testing import CliRunner

from inspector.config import KafkaSettings, RedisSettings, Settings, TopicSettings, WorkerSettings
from inspector.results import RedisLayout, RedisResultStore
from tests.conftest import Stack
from tests.integration.frames import publish
from tests.integration.secured import ScramBroker, acl_redis, scram_kafka
from workers.cli import app
from workers.clients import ClientError, kafka_admin, kafka_consumer, kafka_producer, redis_client
from workers.registry import ModelRegistry
from workers.review.decisions import DecisionStore
from workers.review.queue import ReviewQueue
from workers.stores import Claim, ClaimedStore
from workers.vqa import AnswerStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KAFKA_PASSWORD = "kafka-pw-" + uuid.uuid4().hex
WRONG_PASSWORD = "wrong-pw-" + uuid.uuid4().hex
REDIS_PASSWORDS = {user: f"{user}-pw-{uuid.uuid4().hex}" for user in ("worker", "medical", "vqa", "reader", "review")}

CLAIMS = "+xadd +evalsha +script|load +script|exists"  # workers.stores.ClaimedStore: a Lua script in a pipeline

# The rules of docs/OPERATIONS.md ("Redis ACL users"): `user NAME on #<sha256 of the password> RULE`.
ACL_RULES = {
    "inspector-worker": "resetkeys ~inspector:* resetchannels -@all +ping +get +set +xadd +evalsha +script|load",
    "inspector-medical": f"resetkeys ~medical:* resetchannels -@all +ping +set {CLAIMS}",
    "inspector-vqa": f"resetkeys ~vqa:answer:* resetchannels -@all +ping +set {CLAIMS}",
    "inspector-reader": (
        "resetkeys ~inspector:* ~medical:report:* ~medical:stream ~vqa:answer:* resetchannels -@all "
        "+ping +get +mget +ttl +type +scan +xlen +xrange +xrevrange +xread"
    ),
    "inspector-review": (
        "resetkeys ~inspector:* resetchannels -@all +ping +get +mget +set +type +xrevrange +lrange +lindex "
        "+lpush +lpop +ltrim +del +watch +unwatch +multi +exec +discard"
    ),
}


def acl_line(user: str, password: str) -> str:
    """One ACL file line with the password stored as its SHA-256 (no clear text on the server)."""
    return f"user {user} on #{hashlib.sha256(password.encode()).hexdigest()} {ACL_RULES[user]}"


def test_operations_doc_gives_exactly_these_acl_rules() -> None:
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    for user, rule in ACL_RULES.items():
        assert f"user {user} on #<sha256 of the password> {rule}\n" in text


def secret(user: str) -> str:
    return REDIS_PASSWORDS[user.removeprefix("inspector-")]


@pytest.fixture(scope="module")
def broker(stack_module: ModuleType) -> Iterator[ScramBroker]:
    with scram_kafka(stack_module, {"inspector": KAFKA_PASSWORD}) as running:
        yield running


@pytest.fixture(scope="module")
def acl_url() -> Iterator[str]:
    with acl_redis([acl_line(user, secret(user)) for user in ACL_RULES]) as url:
        yield url


def sasl(broker: ScramBroker, password: str = KAFKA_PASSWORD) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=broker.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="inspector", sasl_password=password,
    )  # fmt: skip


def redis_settings(url: str, user: str, password: str | None = None) -> RedisSettings:
    return RedisSettings(url=url, username=user, password=password or secret(user))


# --------------------------------------------------------------------------- Kafka SASL


def test_our_clients_log_in_with_scram_and_round_trip_a_record(broker: ScramBroker) -> None:
    settings, topic = sasl(broker), f"sasl-{uuid.uuid4().hex[:8]}"
    admin = kafka_admin(settings)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = kafka_producer(settings, acks="all")
    producer.send(topic, key=b"rig-1", value=b"authenticated").get(timeout=30)
    producer.close()
    consumer = kafka_consumer(settings, topic, auto_offset_reset="earliest", consumer_timeout_ms=20_000)
    try:
        message = next(iter(consumer))
        assert (message.key, message.value) == (b"rig-1", b"authenticated")
    finally:
        consumer.close()


@pytest.mark.parametrize("factory", [kafka_producer, kafka_consumer, kafka_admin])
def test_wrong_kafka_password_fails_at_once_naming_the_setting(broker: ScramBroker, factory: object) -> None:
    start = time.monotonic()
    with pytest.raises(ClientError) as info:
        factory(sasl(broker, WRONG_PASSWORD))  # type: ignore[operator]
    assert time.monotonic() - start < 10  # not kafka-python's 30 s "Unable to bootstrap"
    text = str(info.value)
    assert f"Kafka at {broker.bootstrap} refused the SCRAM-SHA-512 login" in text
    assert "INSPECTOR__KAFKA__SASL_USERNAME and INSPECTOR__KAFKA__SASL_PASSWORD" in text
    assert WRONG_PASSWORD not in text


def test_wrong_mechanism_and_plaintext_listener_are_named(broker: ScramBroker, stack: Stack) -> None:
    sha256 = sasl(broker).model_copy(update={"sasl_mechanism": "SCRAM-SHA-256"})
    with pytest.raises(
        ClientError, match=r"does not offer the SASL mechanism SCRAM-SHA-256 \(it offers: SCRAM-SHA-512\)"
    ):
        kafka_producer(sha256)
    plaintext = sasl(broker).model_copy(update={"bootstrap": stack.kafka_bootstrap})
    with pytest.raises(ClientError, match="INSPECTOR__KAFKA__SECURITY_PROTOCOL"):
        kafka_admin(plaintext)


# --------------------------------------------------------------------------- Redis ACL


def test_worker_user_writes_results_and_nothing_else(acl_url: str) -> None:
    client = redis_client(redis_settings(acl_url, "inspector-worker"))
    store = RedisResultStore(client, RedisLayout(prefix="inspector"))
    camera = f"rig-{uuid.uuid4().hex[:6]}"
    ok = {"camera_id": camera, "seq": 1, "part_id": f"{camera}-P1", "verdict": "OK"}
    assert store.put(ok)  # no overlay: the script gets only the keys it writes
    assert store.put({**ok, "seq": 2, "verdict": "NG"}, overlay_jpeg=b"png")
    assert store.put({**ok, "seq": 3, "part_id": None})
    assert not store.put(ok)  # still idempotent
    with pytest.raises(NoPermissionError, match="keys"):
        client.set("medical:report:1.2.3", "{}")
    for command in (
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "requirepass"),
        ("DEL", f"inspector:result:{camera}:1"),
    ):
        with pytest.raises(NoPermissionError):
            client.execute_command(*command)

    reader = redis_client(redis_settings(acl_url, "inspector-reader"), decode_responses=True)
    assert json.loads(str(reader.get(f"inspector:result:{camera}:2")))["verdict"] == "NG"
    assert reader.xlen("inspector:results") >= 3
    with pytest.raises(NoPermissionError):
        reader.set(f"inspector:result:{camera}:9", "{}")


def test_worker_follows_the_registry_and_the_review_user_runs_the_station_and_promotions(
    acl_url: str, tmp_path: Path
) -> None:
    prefix = f"inspector:acl-{uuid.uuid4().hex[:6]}"
    model = tmp_path / "crack.pt"
    model.write_bytes(b"not loaded here: the registry only copies and hashes it")
    review = redis_client(redis_settings(acl_url, "inspector-review"), decode_responses=True)
    registry = ModelRegistry(review, prefix, tmp_path / "models")
    first = registry.promote(model, who="rita")
    model.write_bytes(b"a second model")
    registry.promote(model, who="rita")
    assert registry.rollback(who="rita").sha256 == first.sha256  # WATCH/MULTI, LPUSH/LPOP/LTRIM/LINDEX
    registry.shadow(model, fraction=0.2, who="rita")
    registry.clear_shadow(who="rita")

    worker = redis_client(redis_settings(acl_url, "inspector-worker"), decode_responses=True)
    watched = ModelRegistry(worker, prefix, tmp_path / "models")
    active = watched.active()
    assert active is not None and active.sha256 == first.sha256 and watched.shadow_entry() is None
    watched.review_disagreement(f"{prefix}:result:rig-1:7", "OK", "NG", "5" * 64)
    store = RedisResultStore(worker, RedisLayout(prefix=prefix))
    assert store.put({"camera_id": "rig-1", "seq": 7, "part_id": "P-7", "verdict": "OK"})

    decisions = DecisionStore(review, prefix, tmp_path / "audit.jsonl", ttl_s=60)
    queue = ReviewQueue(review, RedisLayout(prefix=prefix), decisions, size=10)
    entries = queue.entries()  # TYPE, XREVRANGE, MGET: the shadow disagreement is listed
    assert [(e.camera_id, e.seq, e.source) for e in entries] == [("rig-1", 7, "shadow")]
    review.set(decisions.key("rig-1", 7), "{}", ex=60)
    assert decisions.get("rig-1", 7) == {}
    for command in (("FLUSHALL",), ("KEYS", "*"), ("SET", "medical:report:1.2.3", "{}"), ("EVALSHA", "0" * 40, 0)):
        with pytest.raises(NoPermissionError):
            review.execute_command(*command)


def test_medical_and_vqa_users_are_held_to_their_keys(acl_url: str) -> None:
    medical = redis_client(redis_settings(acl_url, "inspector-medical"))
    report = Claim(f"medical.studies/0/{uuid.uuid4().int % 10**6}", "medical:report:1.2.840.99", "1.2.840.99", "{}")
    assert ClaimedStore(medical, "medical", 60).put_many([report]) == [True]  # claim, report and stream entry
    with pytest.raises(NoPermissionError):
        medical.set("inspector:result:rig-1:1", "{}")
    vqa = redis_client(redis_settings(acl_url, "inspector-vqa"))
    answers = AnswerStore(vqa)
    record = f"vqa.requests/0/{uuid.uuid4().int % 10**6}"
    assert answers.put_many([answers.claim(record, {"request_id": "q-1", "answer": "red"})]) == [True]
    with pytest.raises(NoPermissionError):
        vqa.set("medical:report:1.2.840.99", "{}")
    reader = redis_client(redis_settings(acl_url, "inspector-reader"))
    assert reader.get("medical:report:1.2.840.99") == b"{}" and reader.xlen("medical:stream") >= 1


def test_wrong_or_missing_redis_login_is_a_clear_error(acl_url: str) -> None:
    with pytest.raises(ClientError) as info:
        redis_client(redis_settings(acl_url, "inspector-worker", WRONG_PASSWORD))
    text = str(info.value)
    assert f"Redis at {acl_url} refused the login" in text and "INSPECTOR__REDIS__PASSWORD" in text
    assert WRONG_PASSWORD not in text
    with pytest.raises(ClientError, match="it wants a login: set INSPECTOR__REDIS__USERNAME"):
        redis_client(RedisSettings(url=acl_url))


# --------------------------------------------------------------------------- the worker command, end to end


@pytest.fixture
def worker_env(broker: ScramBroker, acl_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Secrets and addresses for `inspector worker` in the environment; the frame topics created."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka=sasl(broker),
        redis=redis_settings(acl_url, "inspector-worker"),
        topics=TopicSettings(visible=f"vis-{tag}", infrared=f"ir-{tag}", dlq=f"dlq-{tag}", partitions=2),
        worker=WorkerSettings(group_id=f"group-{tag}", model="baseline"),
    )
    admin = kafka_admin(settings.kafka)
    try:
        admin.create_topics([NewTopic(t, 2, 1) for t in (settings.topics.visible, settings.topics.infrared)])
        admin.create_topics([NewTopic(settings.topics.dlq, 1, 1)])
    finally:
        admin.close()
    env = {
        "KAFKA__BOOTSTRAP": broker.bootstrap, "KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA__SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA__SASL_USERNAME": "inspector",
        "KAFKA__SASL_PASSWORD": KAFKA_PASSWORD, "REDIS__URL": acl_url, "REDIS__USERNAME": "inspector-worker",
        "REDIS__PASSWORD": secret("inspector-worker"), "TOPICS__VISIBLE": settings.topics.visible,
        "TOPICS__INFRARED": settings.topics.infrared, "TOPICS__DLQ": settings.topics.dlq, "TOPICS__PARTITIONS": "2",
        "WORKER__GROUP_ID": settings.worker.group_id, "WORKER__MODEL": "baseline", "METRICS__PORT": "0",
    }  # fmt: skip
    monkeypatch.delenv("INSPECTOR_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(f"INSPECTOR__{key}", value)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield settings
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def run_worker(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["worker", *args])
    return result.exit_code, result.output


def test_worker_command_authenticates_stores_and_leaks_no_secret(
    worker_env: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [KAFKA_PASSWORD, WRONG_PASSWORD, secret("inspector-worker")]
    outputs = []

    monkeypatch.setenv("INSPECTOR__KAFKA__SASL_PASSWORD", WRONG_PASSWORD)
    code, output = run_worker("--duration", "5")
    assert code == 2 and "refused the SCRAM-SHA-512 login" in output and "INSPECTOR__KAFKA__SASL_PASSWORD" in output
    outputs.append(output)
    monkeypatch.setenv("INSPECTOR__KAFKA__SASL_PASSWORD", KAFKA_PASSWORD)

    monkeypatch.setenv("INSPECTOR__REDIS__PASSWORD", WRONG_PASSWORD)
    code, output = run_worker("--duration", "5")
    assert code == 2 and "refused the login" in output and "INSPECTOR__REDIS__PASSWORD" in output
    outputs.append(output)
    monkeypatch.setenv("INSPECTOR__REDIS__PASSWORD", secret("inspector-worker"))

    producer = kafka_producer(worker_env.kafka, acks="all", linger_ms=5)
    sent = publish(worker_env, ["rig-s1", "rig-s2"], range(1, 4), producer=producer)
    producer.close()
    code, output = run_worker("--count", str(len(sent)), "--duration", "60", "--json")
    outputs.append(output)
    assert code == 0, output
    summary = json.loads(output[output.index("{") :])
    assert summary["stored"] == len(sent) and not summary["dlq"]
    reader = redis_client(redis_settings(worker_env.redis.url, "inspector-reader"))
    for camera, seq in sent:
        assert reader.get(f"inspector:result:{camera}:{seq}") is not None

    captured = capfd.readouterr()
    logged = caplog.text + "\n".join(f"{r.args!r}" for r in caplog.records)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    for text in (logged, captured.out, captured.err, *outputs):
        for value in secrets:
            assert value not in text
