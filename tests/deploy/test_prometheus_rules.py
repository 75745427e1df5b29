"""deploy/prometheus with promtool: the config and rules are valid and the alert rules pass their unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.rules.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
INSTALL = "apt-get install -y --no-install-recommends prometheus  (Debian's package ships promtool)"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail(f"promtool is not installed: {INSTALL}", pytrace=False)
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)


def passes(result: subprocess.CompletedProcess[str]) -> None:
    output = f"$ {' '.join(result.args)}\n{result.stdout}{result.stderr}"
    print(output)
    assert result.returncode == 0, output


def test_there_are_rules_and_rule_tests() -> None:
    assert RULES, f"no *.rules.yml under {PROMETHEUS / 'rules'}"
    assert RULE_TESTS, f"no promtool unit tests under {PROMETHEUS / 'tests'}"


def test_promtool_check_config() -> None:
    passes(promtool("check", "config", PROMETHEUS / "prometheus.yml"))


def test_promtool_check_rules() -> None:
    passes(promtool("check", "rules", *RULES))


def test_promtool_test_rules() -> None:
    passes(promtool("test", "rules", *RULE_TESTS))


def test_every_alert_has_a_unit_test_and_a_severity() -> None:
    alerts = {
        rule["alert"]: rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    assert sorted(set(alerts) - tested) == [], "alerts never shown firing in a promtool test"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name


WORKER_JOBS = (
    "inspector-worker", "inspector-gateway", "inspector-medical-worker", "inspector-vqa-worker", "inspector-review",
)  # fmt: skip


def test_scrape_jobs_are_the_ones_dashboards_and_rules_select() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    folders = []
    for name in WORKER_JOBS:
        (sd,) = jobs[name]["file_sd_configs"]
        folders.append({str(Path(pattern).parent) for pattern in sd["files"]})
    assert all(len(f) == 1 for f in folders) and len({f.pop() for f in folders}) == len(WORKER_JOBS), (
        "one target folder per job: a target file sets the job by where it lies"
    )
    assert config["rule_files"] == ["rules/*.rules.yml"]
    selected = {
        job
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        for job in re.findall(r'job="([^"]+)"', rule["expr"])
    }
    assert selected == set(WORKER_JOBS), "the rules select on exactly the scraped worker jobs"
