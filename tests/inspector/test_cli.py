from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "config" in result.output


def test_config_check_ok_and_bad(tmp_path: Path) -> None:
    assert runner.invoke(app, ["config", "check"]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("redis:\n  url: http://nope\n")
    result = runner.invoke(app, ["config", "check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "redis.url" in result.output and str(bad) in result.output


def test_config_show_json_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR__REDIS__PASSWORD", "s3cret-value")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["redis"]["password"] == "**********"
    assert "s3cret-value" not in result.output
