"""``inspector promote`` against the real Redis of the local stack: promote, status, shadow, rollback, refusals."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from tests.conftest import Stack
from workers.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    return {
        "INSPECTOR__REDIS__URL": stack.redis_url,
        "INSPECTOR__REDIS__KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
        "INSPECTOR__REGISTRY__MODELS_DIR": str(tmp_path / "models"),
        "USER": "ana",
    }


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["promote", *args], env=env)
    return result.exit_code, result.output


def write(folder: Path, name: str, content: bytes) -> tuple[Path, str]:
    path = folder / name
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_promote_status_shadow_and_rollback(env: dict[str, str], tmp_path: Path) -> None:
    first, first_sha = write(tmp_path, "first.pt", b"weights v1")
    second, second_sha = write(tmp_path, "second.pt", b"weights v2")
    figures = tmp_path / "eval.json"
    figures.write_text(json.dumps({"f1": 0.91}))

    code, out = invoke(env, str(first), "--no-check", "--json")
    assert code == 0, out
    assert json.loads(out)["sha256"] == first_sha and json.loads(out)["who"] == "ana"
    code, out = invoke(env, str(second), "--no-check", "--metrics", str(figures), "--who", "ben", "--json")
    assert code == 0, out
    code, out = invoke(env, str(first), "--no-check", "--shadow", "--fraction", "0.25")
    assert code == 0 and "25% of captures" in out, out

    code, out = invoke(env, "--status", "--json")
    status = json.loads(out)
    assert status["active"]["sha256"] == second_sha and status["active"]["metrics"] == {"f1": 0.91}
    assert status["active"]["who"] == "ben" and status["shadow"]["fraction"] == 0.25
    assert [e["sha256"] for e in status["history"]] == [first_sha]
    code, out = invoke(env, "--status")
    assert code == 0 and "model registry" in out and second_sha[:16] in out and "history 1" in out

    code, out = invoke(env, "--shadow-off")
    assert code == 0 and "ended" in out
    code, out = invoke(env, "--rollback", "--json")
    assert code == 0 and json.loads(out)["sha256"] == first_sha and json.loads(out)["action"] == "rollback"
    code, out = invoke(env, "--rollback")
    assert code == 1 and "nothing to roll back to" in out


def test_a_model_that_does_not_load_is_refused_at_the_door(env: dict[str, str], tmp_path: Path, stack: Stack) -> None:
    broken, _ = write(tmp_path, "broken.pt", b"this is not a torch file")
    code, out = invoke(env, str(broken))
    assert code == 2 and "does not load" in out and "not promoted" in out
    client = redis.Redis.from_url(stack.redis_url)
    assert client.get(f"{env['INSPECTOR__REDIS__KEY_PREFIX']}:model:active") is None
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rollback", "--status"], "do not go together"),
        (["--shadow"], "--shadow needs a MODEL"),
        ([], "give a MODEL"),
        (["nope.pt", "--no-check"], "does not exist"),
        (["x.pt", "--shadow", "--fraction", "1.5"], "must be in (0, 1]"),
    ],
)
def test_bad_options_exit_2_with_what_to_do(env: dict[str, str], args: list[str], message: str) -> None:
    code, out = invoke(env, *args)
    assert code == 2 and message in out, out
