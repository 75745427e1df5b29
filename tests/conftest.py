"""Session fixtures shared by the whole suite.

Integration tests use the real local stack (Kafka, Redis, Prometheus). If it already answers on the
configured ports it is used as it is; otherwise the ``stack`` fixture starts it with
``deploy/local/stack up`` and stops it again at the end. If it cannot be started the tests fail with
the stack's own message: they are never skipped silently.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.py"


def load_stack_module() -> ModuleType:
    """Import deploy/local/stack.py (a standalone script, not a package) as a module."""
    spec = importlib.util.spec_from_file_location("local_stack", STACK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_stack"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Stack:
    """Where the real services of the local stack listen."""

    kafka_bootstrap: str
    redis_url: str
    prometheus_url: str
    targets_dir: Path


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exported graphs of this session go to a private cache (worker subprocesses inherit it), not ~/.cache."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def stack_module() -> ModuleType:
    return load_stack_module()


@pytest.fixture(scope="session")
def stack(stack_module: ModuleType) -> Iterator[Stack]:
    settings = stack_module.Settings.from_env()
    answering = {name: probe(settings) for name, probe in stack_module.PROBES.items()}
    started = False
    if not all(answering.values()):
        result = subprocess.run([sys.executable, str(STACK_SCRIPT), "up"], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(
                "the local stack is not running and could not be started "
                f"(deploy/local/stack up exited {result.returncode}):\n{result.stdout}{result.stderr}",
                pytrace=False,
            )
        started = True
    yield Stack(
        kafka_bootstrap=f"127.0.0.1:{settings.kafka_port}",
        redis_url=f"redis://127.0.0.1:{settings.redis_port}/0",
        prometheus_url=f"http://127.0.0.1:{settings.prometheus_port}",
        targets_dir=settings.state / "prometheus" / "targets",
    )
    if started:
        subprocess.run([sys.executable, str(STACK_SCRIPT), "down"], capture_output=True, text=True, check=False)


def free_port() -> int:
    """A loopback TCP port free now (another process may take it before it is used)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """deploy/local/stack's environment for a stack of its own: no INSPECTOR_* from outside, free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    env.update(
        INSPECTOR_STACK_DIR=str(tmp_path / "state"),
        INSPECTOR_KAFKA_CACHE=str(tmp_path / "cache"),
        INSPECTOR_KAFKA_PORT=str(free_port()),
        INSPECTOR_KAFKA_CONTROLLER_PORT=str(free_port()),
        INSPECTOR_REDIS_PORT=str(free_port()),
        INSPECTOR_PROMETHEUS_PORT=str(free_port()),
    )
    return env
