"""`inspector bench soak` end to end on a tiny load: the soak, the audit and the clean-up run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient
from typer.testing import CliRunner

from tests.conftest import Stack
from workers.cli import app
from workers.soak import SoakPlan, run_soak

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_soak_runs_audits_and_cleans_up(stack: Stack, tmp_path: Path) -> None:
    args = [
        "bench", "soak", "--minutes", "0.25", "--warmup-minutes", "0.05", "--rate", "10", "--size", "64",
        "--workers", "1", "--out", str(tmp_path), "--kafka", stack.kafka_bootstrap, "--redis", stack.redis_url,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "6-soak.json").read_text())
    assert figures["captures_sent"] >= 100 and figures["results_stored"] == figures["captures_sent"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["commits_ahead_of_store"] == 0
    assert figures["rss"]["per_worker"][0]["rss_first_mib"] > 50
    assert figures["lag"]["samples"] >= 3 and figures["max_captures_per_s"] is None
    assert "RSS growth (worst worker)" in result.output
    client = redis.Redis.from_url(stack.redis_url)
    assert not list(client.scan_iter(f"{figures['redis_prefix']}:*"))  # cleaned up: keys
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        deadline = time.monotonic() + 30
        while set(figures["topics"]) & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not set(figures["topics"]) & set(admin.list_topics())  # and topics
    finally:
        admin.close()


def test_the_maximum_is_measured_with_the_gated_gateway_and_every_worker(stack: Stack, tmp_path: Path) -> None:
    plan = SoakPlan(
        minutes=0.15, warmup_minutes=0.03, size=64, workers=2, max_warmup_s=5, max_seconds=10,
        kafka=stack.kafka_bootstrap, redis_url=stack.redis_url,
    )  # fmt: skip
    figures = run_soak(plan, tmp_path / "logs")
    maximum = figures["maximum"]
    assert maximum["captures_per_s"] > 1 and figures["max_captures_per_s"] == maximum["captures_per_s"]
    assert figures["offered_captures_per_s"] == pytest.approx(0.8 * maximum["captures_per_s"], abs=0.01)
    assert len(maximum["stored_per_worker"]) == 2 and min(maximum["stored_per_worker"]) > 0  # both worked
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["results_stored"] > 0
