"""The chaos tests' own stack: Kafka and Redis of ``deploy/local/stack`` on free ports, in a folder of their own.

Faults restart the broker and stop Redis, so these tests never touch the shared stack on 9092/6379
(other tests, and people, may be using it). The Kafka jars come from the usual cache; the stack is
started once per session and stopped at its end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import PrivateStack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    state: Path = tmp_path_factory.mktemp("chaos-stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR")}
    ports = {name: _free_port() for name in ("KAFKA", "KAFKA_CONTROLLER", "REDIS", "PROMETHEUS")}
    env |= {f"INSPECTOR_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"INSPECTOR_STACK_DIR": str(state)}
    if "INSPECTOR_KAFKA_CACHE" in os.environ:
        env["INSPECTOR_KAFKA_CACHE"] = os.environ["INSPECTOR_KAFKA_CACHE"]
    stack = PrivateStack(env, f"127.0.0.1:{ports['KAFKA']}", f"redis://127.0.0.1:{ports['REDIS']}/0")
    try:
        stack.command("up", "kafka", "redis")
        yield stack
    finally:
        stack.command("down")
