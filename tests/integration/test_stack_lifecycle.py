"""A second, private stack on free ports: up twice, status, down leaves nothing of ours running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STACK_SCRIPT, isolated_env

pytestmark = pytest.mark.integration
DEFAULT = ("kafka", "redis", "prometheus")  # what `stack up` starts without names


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    env.pop("INSPECTOR_KAFKA_CACHE")  # share the real jar cache: fetched once, reused
    first = run(env, "up")
    try:
        assert first.returncode == 0, first.stderr
        status = json.loads(run(env, "status", "--json").stdout)
        assert {name: row["state"] for name, row in status.items()} == dict.fromkeys(DEFAULT, "running") | {
            "orthanc": "off"  # optional: `up` without names leaves it out
        }
        pids = {name: row["pid"] for name, row in status.items() if name in DEFAULT}
        assert all(isinstance(pid, int) for pid in pids.values())

        second = run(env, "up")
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == 3
        again = json.loads(run(env, "status", "--json").stdout)
        assert {name: row["pid"] for name, row in again.items() if name in DEFAULT} == pids
    finally:
        down = run(env, "down")
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"{name} (pid {pid}) still runs after down"
    final = run(env, "status")
    assert final.returncode == 3 and final.stdout.count("stopped") == 3
    assert not any(p.read_text() for p in (tmp_path / "state" / "pids").glob("*.pid"))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def test_down_leaves_foreign_processes_alone(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pids = tmp_path / "state" / "pids"
        pids.mkdir(parents=True)
        (pids / "redis.pid").write_text(f"{sleeper.pid} 1\n")  # a PID file that does not describe this process
        assert run(env, "down").returncode == 0
        assert sleeper.poll() is None, "down killed a process the stack did not start"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.exists(tmp_path / "state")


def _redis(port: int, *command: str) -> bytes:
    import socket

    payload = f"*{len(command)}\r\n".encode() + b"".join(f"${len(c)}\r\n{c}\r\n".encode() for c in command)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(256)


def test_stop_and_start_keep_redis_data_and_down_does_not(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    port = int(env["INSPECTOR_REDIS_PORT"])
    try:
        assert run(env, "up", "redis").returncode == 0
        assert _redis(port, "SET", "kept", "yes") == b"+OK\r\n"
        stopped = run(env, "stop", "redis")
        assert stopped.returncode == 0 and "redis       stopped" in stopped.stdout, stopped.stderr
        assert run(env, "status").stdout.splitlines()[1].split()[1] == "stopped"
        assert run(env, "start", "redis").returncode == 0
        assert _redis(port, "GET", "kept") == b"$3\r\nyes\r\n"  # SHUTDOWN SAVE, then loaded at start
        assert not (tmp_path / "state" / "redis" / "dump.rdb").exists()  # no stale copy for a later `up`
        restarted = run(env, "restart", "redis")
        assert restarted.returncode == 0 and "started" in restarted.stdout, restarted.stderr
        assert _redis(port, "GET", "kept") == b"$3\r\nyes\r\n"
        assert run(env, "down").returncode == 0
        assert run(env, "up", "redis").returncode == 0
        assert _redis(port, "GET", "kept") == b"$-1\r\n"  # down + up: an empty Redis, as before
        assert run(env, "stop", "nosuch").returncode == 1
    finally:
        run(env, "down")
