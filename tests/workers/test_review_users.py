"""The review station's users file: argon2 hashes, roles, mode 0600, and the `inspector review user` commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from workers.cli import app
from workers.review.users import UserError, UserStore, read_users

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # test speed; production keeps the defaults


def test_the_right_password_signs_in_and_a_wrong_one_does_not(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yaml", FAST)
    users.add("rita", "reviewer", "rita-reviews-parts")
    user = users.verify("rita", "rita-reviews-parts")
    assert user is not None and user.role == "reviewer" and user.may_decide
    assert users.verify("rita", "rita-reviews-partz") is None
    assert users.verify("nobody", "rita-reviews-parts") is None
    assert user.password_hash.startswith("$argon2id$")
    assert "rita-reviews-parts" not in (tmp_path / "users.yaml").read_text()


def test_viewers_may_not_decide_and_roles_are_checked(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yaml", FAST)
    viewer = users.add("vic", "viewer", "vic-only-looks-here")
    assert viewer.role == "viewer" and not viewer.may_decide
    with pytest.raises(UserError, match="role 'admin' is unknown"):
        users.add("eve", "admin", "eve-wants-it-all")
    with pytest.raises(UserError, match="too short"):
        users.add("eve", "viewer", "short")
    with pytest.raises(UserError, match="not allowed"):
        users.add("eve/../x", "viewer", "long enough password")


def test_the_file_is_0600_and_adding_again_replaces_role_and_password(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users.yaml"
    users = UserStore(path, FAST)
    users.add("vic", "viewer", "vic-only-looks-here")
    users.add("vic", "reviewer", "vic-got-promoted-today")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [(u.name, u.role) for u in read_users(path).values()] == [("vic", "reviewer")]
    assert users.verify("vic", "vic-only-looks-here") is None
    assert users.verify("vic", "vic-got-promoted-today") is not None


def test_a_running_store_sees_changes_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    running, cli = UserStore(path, FAST), UserStore(path, FAST)
    assert running.get("rita") is None
    cli.add("rita", "viewer", "rita-reviews-parts")
    assert running.get("rita") is not None and running.get("rita").role == "viewer"  # type: ignore[union-attr]
    cli.remove("rita")
    assert running.get("rita") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users: 3\n", "expected a mapping with a 'users:' list"),
        ("users:\n  - {name: a, role: viewer}\n", "entry 1 needs name, role and hash"),
        ("users:\n  - {name: a, role: boss, hash: $argon2id$x}\n", "role 'boss' is unknown"),
        ("users:\n  - {name: a, role: viewer, hash: plain}\n", "not an argon2 hash"),
        ("users: [\n", "unreadable"),
    ],
)
def test_a_malformed_users_file_is_refused_with_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_users(path)


def test_cli_adds_lists_and_removes_users(tmp_path: Path) -> None:
    env = {"INSPECTOR__REVIEW__USERS_FILE": str(tmp_path / "users.yaml")}
    runner = CliRunner()
    added = runner.invoke(app, ["review", "user", "add", "rita", "--role", "reviewer", "--password-stdin"],
                          input="rita-reviews-parts\n", env=env)  # fmt: skip
    assert added.exit_code == 0, added.output
    assert UserStore(tmp_path / "users.yaml").verify("rita", "rita-reviews-parts") is not None
    short = runner.invoke(app, ["review", "user", "add", "bob", "--password-stdin"], input="short\n", env=env)
    assert short.exit_code == 2 and "too short" in short.output
    listed = runner.invoke(app, ["review", "user", "list", "--json"], env=env)
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [{"name": "rita", "role": "reviewer"}]
    assert "$argon2" not in listed.stdout
    assert runner.invoke(app, ["review", "user", "remove", "rita"], env=env).exit_code == 0
    assert runner.invoke(app, ["review", "user", "remove", "rita"], env=env).exit_code == 1


def test_cli_prompts_twice_and_refuses_a_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["first password long", "second password long"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt: next(answers))
    env = {"INSPECTOR__REVIEW__USERS_FILE": str(tmp_path / "users.yaml")}
    result = CliRunner().invoke(app, ["review", "user", "add", "rita"], env=env)
    assert result.exit_code == 2 and "differ" in result.output
    assert not (tmp_path / "users.yaml").exists()
