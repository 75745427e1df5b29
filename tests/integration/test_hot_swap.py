"""Hot swap on the real stack: `inspector promote` while the synthetic gateway streams to one `inspector worker`.

Results switch from the configured model's SHA to the promoted one's, once and for good, with every
capture the gateway sent stored exactly once (result keys and stream entries), and the worker process
never restarts. A promoted file that does not load (past the CLI's own check, with ``--no-check``)
leaves the promoted model serving, with ``inspector_worker_model_load_failures_total`` up on /metrics
and an ERROR line in the worker's log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

from inspector.config import RegistrySettings, Settings
from inspector.frame import Frame
from inspector.model import shipped_model_path
from tests.conftest import Stack, free_port
from tests.integration.frames import create_topics, fresh_settings
from workers.commands.worker import build_worker
from workers.pipeline_bench import worker_env
from workers.registry import ModelRegistry

pytestmark = pytest.mark.integration

CAMERAS = "rig-1,rig-2"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


def stream_shas(client: redis.Redis, prefix: str) -> list[tuple[tuple[str, int], str]]:
    """Each entry of the result stream, in order: its capture and the model SHA of its stored result."""
    entries = client.xrange(f"{prefix}:results")
    keys = [fields[b"key"].decode() for _, fields in entries]
    documents = [json.loads(raw) for raw in client.mget(keys)] if keys else []
    return [((d["camera_id"], int(d["seq"])), d["model"].get("sha256", "")) for d in documents]


def sent_captures(settings: Settings) -> list[tuple[str, int]]:
    """Every capture on the visible topic (what the gateway published), from the broker itself."""
    consumer = KafkaConsumer(
        settings.topics.visible, bootstrap_servers=settings.kafka.servers, auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )  # fmt: skip
    try:
        frames = [Frame.from_headers(record.headers) for record in consumer]
    finally:
        consumer.close()
    return sorted((f.camera_id, f.seq) for f in frames)


def failures(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("inspector_worker_model_load_failures_total{")
    )


def promote(env: dict[str, str], *args: str) -> dict:
    """``inspector promote ... --json`` as an operator runs it: a process of its own."""
    command = [sys.executable, "-m", "workers.cli", "promote", *args, "--who", "ci", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_promoted_model_is_hot_swapped_with_nothing_lost_or_stored_twice(stack: Stack, tmp_path: Path) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=2)
    create_topics(settings)
    prefix, port = settings.redis.key_prefix, free_port()
    old_sha = sha256(Path(str(shipped_model_path("crack-concat"))))
    new_model = Path(str(shipped_model_path("crack-concat-w65")))
    new_sha = sha256(new_model)
    env = worker_env(settings) | {
        "INSPECTOR__WORKER__MODEL": "crack-concat", "INSPECTOR__METRICS__PORT": str(port),
        "INSPECTOR__REGISTRY__MODELS_DIR": str(tmp_path / "models"), "INSPECTOR__REGISTRY__POLL_S": "0.5",
    }  # fmt: skip
    client = redis.Redis.from_url(settings.redis.url)
    log = tmp_path / "worker.log"
    with log.open("w") as err, (tmp_path / "worker.json").open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--json"], env=env, stdout=out, stderr=err
        )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: "partitions assigned:" in log.read_text(), 60, "the worker to join its group", log)
        gateway_args = ["gateway", "--source", "synthetic", "--cameras", CAMERAS, "--fps", "4", "--duration", "120",
                        "--size", "128"]  # fmt: skip
        with (tmp_path / "gateway.log").open("w") as gateway_log:
            command = [sys.executable, "-m", "workers.cli", *gateway_args]
            gateway = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=gateway_log)
        wait_for(lambda: len(stream_shas(client, prefix)) >= 10, 30, "results of the configured model", log)

        promoted = promote(env, str(new_model))  # loaded by the command first, then recorded
        assert promoted["sha256"] == new_sha
        wait_for(lambda: any(sha == new_sha for _, sha in stream_shas(client, prefix)), 45, "the new SHA", log)

        corrupt = tmp_path / "corrupt.pt"
        corrupt.write_bytes(b"PK\x03\x04 half of a model file")
        promote(env, str(corrupt), "--no-check")  # past the command's own check: the worker's must hold
        wait_for(lambda: failures(port) >= 1, 15, "the load failure metric", log)
        served_at_failure = len(stream_shas(client, prefix))
        wait_for(lambda: len(stream_shas(client, prefix)) >= served_at_failure + 8, 15, "results after it", log)

        gateway.send_signal(signal.SIGTERM)  # the line stops; what was sent must all be stored
        assert gateway.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()[-2000:]
        sent = sent_captures(settings)
        wait_for(lambda: len(stream_shas(client, prefix)) >= len(sent), 30, "every result", log)
        time.sleep(1.0)  # a late duplicate would show up as an extra stream entry
        assert worker.poll() is None, "the worker exited: it must serve throughout, never restarted"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        for process in (worker, gateway):
            if process is not None and process.poll() is None:
                process.kill()

    entries = stream_shas(client, prefix)
    counts = Counter(capture for capture, _ in entries)
    assert sorted(counts) == sent and set(counts.values()) == {1}  # 0 lost, 0 stream entries twice
    assert len(list(client.scan_iter(f"{prefix}:result:*", count=1000))) == len(sent)  # one result key each
    shas = [sha for _, sha in entries]
    switch = shas.index(new_sha)
    assert switch >= 10 and shas == [old_sha] * switch + [new_sha] * (len(shas) - switch)  # once, never back
    assert len(shas) > served_at_failure  # results kept coming after the failed load: all of the promoted model
    text = (tmp_path / "worker.json").read_text()
    report = json.loads(text[text.index("{") :])
    assert report["stored"] == len(sent)  # one process stored them all: it never restarted
    worker_log = log.read_text()
    assert f"model swapped: {old_sha} -> {new_sha}" in worker_log
    errors = [line for line in worker_log.splitlines() if line.startswith("ERROR") and sha256(corrupt) in line]
    assert errors and "cannot load the active model" in errors[0] and f"keeping {new_sha} serving" in errors[0]


def test_a_worker_started_after_a_promotion_serves_the_promoted_model(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=2)
    settings = settings.model_copy(update={"registry": RegistrySettings(models_dir=tmp_path / "models")})
    create_topics(settings)
    registry = ModelRegistry(redis.Redis.from_url(settings.redis.url), settings.redis.key_prefix, tmp_path / "models")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a model")
    registry.promote(corrupt, who="ci")
    metrics = CollectorRegistry()
    with caplog.at_level(logging.INFO):
        fallback = build_worker(settings, metrics)  # the promoted file is broken: worker.model serves
    fallback.close()
    assert fallback.core.model.name == "baseline"
    assert metrics.get_sample_value("inspector_worker_model_load_failures_total", {"role": "active"}) == 1

    new_model = Path(str(shipped_model_path("crack-concat-w65")))
    registry.promote(new_model, who="ci")
    with caplog.at_level(logging.INFO):
        worker = build_worker(settings, CollectorRegistry())
    worker.close()
    assert (worker.core.model.metadata["sha256"], worker.widths) == (sha256(new_model), None)  # type: ignore[attr-defined]
    assert worker.core.model_width == pytest.approx(0.65, abs=0.01)
    assert any("serving the registry's active model" in r.getMessage() for r in caplog.records)
