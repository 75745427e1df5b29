"""deploy/local/stack without services: settings, generated configs, missing tools, status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import REPO, STACK_SCRIPT, isolated_env


def test_ports_and_folders_come_from_the_environment(stack_module: ModuleType, tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    s = stack_module.Settings.from_env(env)
    assert s.kafka_port == int(env["INSPECTOR_KAFKA_PORT"])
    assert s.state == tmp_path / "state"
    assert s.cache == tmp_path / "cache" / "4.1.1"
    defaults = stack_module.Settings.from_env({"HOME": str(tmp_path)})
    assert (defaults.kafka_port, defaults.redis_port, defaults.prometheus_port) == (9092, 6379, 9090)


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_bad_port_is_refused(stack_module: ModuleType, value: str) -> None:
    with pytest.raises(stack_module.StackError, match=f"INSPECTOR_REDIS_PORT='{value}' is not a TCP port"):
        stack_module.Settings.from_env({"INSPECTOR_REDIS_PORT": value})


def test_generated_configs_bind_loopback(stack_module: ModuleType, tmp_path: Path) -> None:
    s = stack_module.Settings.from_env(isolated_env(tmp_path))
    kafka = stack_module.kafka_config(s).read_text()
    assert "group.initial.rebalance.delay.ms=0" in kafka
    assert f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.controller_port}" in kafka
    assert "process.roles=broker,controller" in kafka
    prometheus = stack_module.prometheus_config(s).read_text()
    assert f"{s.state / 'prometheus' / 'targets'}/*.json" in prometheus


def test_generated_prometheus_config_loads_the_repository_rules(stack_module: ModuleType, tmp_path: Path) -> None:
    """promtool checks the generated config and, through its rule_files, every rule file of deploy/prometheus."""
    s = stack_module.Settings.from_env(isolated_env(tmp_path))
    config = stack_module.prometheus_config(s)
    parsed = yaml.safe_load(config.read_text())
    assert parsed["rule_files"] == [f"{REPO / 'deploy' / 'prometheus' / 'rules'}/*.rules.yml"]
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: apt-get install -y --no-install-recommends prometheus", pytrace=False)
    result = subprocess.run([tool, "check", "config", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))
    assert rule_files and all(f"Checking {path}" in result.stdout for path in rule_files), result.stdout


@pytest.mark.integration
def test_a_private_prometheus_loads_the_rules_and_evaluates_them(tmp_path: Path) -> None:
    """Only Prometheus, on a free port: every rule group of deploy/prometheus is loaded and evaluates cleanly."""
    env = isolated_env(tmp_path) | {"INSPECTOR_PROMETHEUS_SCRAPE_INTERVAL": "1s"}
    up = subprocess.run([sys.executable, str(STACK_SCRIPT), "up", "prometheus"], env=env, capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        expected = {
            group["name"]
            for path in sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))
            for group in yaml.safe_load(path.read_text())["groups"]
        }
        url = f"http://127.0.0.1:{env['INSPECTOR_PROMETHEUS_PORT']}/api/v1/rules"
        deadline = time.monotonic() + 30
        while True:  # every rule evaluated at least once (1 s evaluation interval here)
            with urllib.request.urlopen(url, timeout=5) as response:
                groups = json.load(response)["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert {group["name"] for group in groups} == expected
        broken = [f"{rule['name']}: {rule.get('lastError')}" for rule in rules if rule["health"] != "ok"]
        assert not broken, broken
    finally:
        down = subprocess.run([sys.executable, str(STACK_SCRIPT), "down"], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert down.returncode == 0, down.stderr


def test_missing_system_tools_print_the_install_command(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = isolated_env(tmp_path) | {"PATH": str(bin_dir)}
    result = subprocess.run(
        [str(bin_dir / "python3"), str(STACK_SCRIPT), "up"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "missing system dependency: java, mvn, redis-server, prometheus" in result.stderr
    for package in ("openjdk-17-jre-headless", "maven", "redis-server", "prometheus"):
        assert f"apt-get install -y --no-install-recommends {package}" in result.stderr


def test_status_of_a_stack_that_never_started(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    result = subprocess.run([sys.executable, str(STACK_SCRIPT), "status"], env=env, capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stdout.count("stopped") == 3


def test_unknown_service_is_named(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    result = subprocess.run(
        [sys.executable, str(STACK_SCRIPT), "up", "zookeeper"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "unknown service zookeeper: choose from kafka, redis, prometheus" in result.stderr


def test_recycled_pid_is_not_taken_for_ours(stack_module: ModuleType, tmp_path: Path) -> None:
    s = stack_module.Settings.from_env(isolated_env(tmp_path))
    path = stack_module.pid_file(s, "redis")
    path.parent.mkdir(parents=True)
    path.write_text(f"{os.getpid()} 1\n")  # our own PID, but a start time that is not ours
    assert stack_module.recorded_pid(s, "redis") is None
    path.write_text(f"{os.getpid()} {stack_module._start_time(os.getpid())}\n")
    assert stack_module.recorded_pid(s, "redis") == os.getpid()
