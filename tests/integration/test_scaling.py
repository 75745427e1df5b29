"""Horizontal scaling: two `inspector worker` processes in one group share 4 partitions, then one takes over."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from inspector.config import Settings
from tests.conftest import Stack
from tests.integration.frames import create_topics, fresh_settings, publish
from workers.pipeline_bench import worker_env

pytestmark = pytest.mark.integration

CAMERAS = [f"rig-{i}" for i in range(6)]


class WorkerProcess:
    """One `inspector worker` process and its log."""

    def __init__(self, name: str, settings: Settings, folder: Path) -> None:
        self.log = folder / f"{name}.log"
        self.out = folder / f"{name}.json"
        command = [sys.executable, "-m", "workers.cli", "worker", "--json"]
        with self.log.open("w") as err, self.out.open("w") as out:
            env = worker_env(settings, workers=2) | {"INSPECTOR__WORKER__MODEL": "baseline"}
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err)

    def assignment(self) -> set[tuple[str, int]] | None:
        """The partitions of the last assignment this worker logged."""
        lines = [line for line in self.log.read_text().splitlines() if "partitions assigned:" in line]
        if not lines:
            return None
        listed = lines[-1].split("partitions assigned:", 1)[1].split(" (gone:", 1)[0]
        return set(ast.literal_eval(listed.strip()))

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0, self.log.read_text()[-3000:]
        text = self.out.read_text()
        return json.loads(text[text.index("{") :])


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stored(client: redis.Redis, settings: Settings) -> list[tuple[str, int]]:
    keys = client.keys(f"{settings.redis.key_prefix}:result:*")
    return sorted((k.decode().split(":")[-2], int(k.decode().split(":")[-1])) for k in keys)


def test_two_workers_share_partitions_and_one_takes_over(stack: Stack, tmp_path: Path) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=4)
    create_topics(settings)
    client = redis.Redis.from_url(settings.redis.url)
    every = {(t, p) for t in (settings.topics.visible, settings.topics.infrared) for p in range(4)}
    a, b = WorkerProcess("a", settings, tmp_path), WorkerProcess("b", settings, tmp_path)
    try:

        def split_evenly() -> bool:
            mine_a, mine_b = a.assignment(), b.assignment()
            return bool(mine_a and mine_b and not mine_a & mine_b and mine_a | mine_b == every)

        wait_for(split_evenly, 90, "both workers to own disjoint halves of the partitions")
        mine_a, mine_b = a.assignment(), b.assignment()
        assert mine_a is not None and mine_b is not None
        # Range assignor: partition n of both topics goes to the same worker (co-partitioning).
        assert {p for _, p in mine_a} == {p for t, p in mine_a if t == settings.topics.infrared}
        assert len(mine_a) == len(mine_b) == 4

        first = publish(settings, CAMERAS, range(1, 11))
        wait_for(lambda: len(stored(client, settings)) >= len(first), 120, f"{len(first)} results")
        report_a = a.stop()
        wait_for(lambda: b.assignment() == every, 90, "the remaining worker to take every partition")

        second = publish(settings, CAMERAS, range(11, 21))
        wait_for(lambda: len(stored(client, settings)) >= len(first) + len(second), 120, "all results")
        time.sleep(2)  # anything late would show up as an extra stream entry
        report_b = b.stop()
    finally:
        for worker in (a, b):
            if worker.process.poll() is None:
                worker.process.kill()

    assert stored(client, settings) == sorted(first + second)  # one result per capture, none missing
    assert client.xlen(f"{settings.redis.key_prefix}:results") == len(first) + len(second)
    assert report_a["stored"] > 0 and report_b["stored"] > 0  # both did work
    assert report_a["stored"] + report_b["stored"] == len(first) + len(second)
    assert report_a["frames"] + report_b["frames"] >= 2 * (len(first) + len(second))
