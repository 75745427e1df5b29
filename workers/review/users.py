"""The review station's users: a YAML file of names, roles and argon2 password hashes.

    users:
      - {name: ana, role: reviewer, hash: "$argon2id$v=19$m=65536,t=3,p=4$..."}
      - {name: ben, role: viewer, hash: "$argon2id$..."}

``viewer`` may read every page; ``reviewer`` may also decide. The file is written by
``inspector review user add`` with mode 0600 (it holds password hashes) and re-read by the running
station when it changes, so a new user or a changed role counts without a restart. Passwords are
checked with argon2-cffi; an unknown name costs one hash like a known one, so timing does not tell
which names exist.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from workers.errors import WorkerError

logger = logging.getLogger(__name__)

Role = Literal["viewer", "reviewer"]
ROLES: Final[tuple[Role, ...]] = ("viewer", "reviewer")
MIN_PASSWORD_LENGTH: Final = 10
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UserError(WorkerError):
    """The users file is unreadable or malformed, or a user to add is invalid."""


@dataclass(frozen=True)
class User:
    """A person who may sign in: name, role and argon2 hash."""

    name: str
    role: Role
    password_hash: str

    @property
    def may_decide(self) -> bool:
        """Only reviewers record decisions."""
        return self.role == "reviewer"


def check_name(name: str) -> str:
    """A user name: 1–64 of ``A-Z a-z 0-9 _ . @ -``."""
    if not _NAME.match(name):
        raise UserError(f"user name {name!r} is not allowed: use 1-64 letters, digits, '_', '.', '@' or '-'")
    return name


def check_role(role: str) -> Role:
    """``viewer`` or ``reviewer``."""
    if role not in ROLES:
        raise UserError(f"role {role!r} is unknown: use one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    """At least :data:`MIN_PASSWORD_LENGTH` characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters")
    return password


def read_users(path: Path) -> dict[str, User]:
    """Every user of a users file (an absent file has none).

    Raises:
        UserError: the file is not YAML of the documented shape; the message names the entry.

    """
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        msg = f"users file {path} is unreadable ({exc}): fix it or recreate it with `inspector review user add`"
        raise UserError(msg) from None
    entries: Any = (data or {}).get("users", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UserError(f"users file {path}: expected a mapping with a 'users:' list (see `inspector review user add`)")
    users: dict[str, User] = {}
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not {"name", "role", "hash"} <= set(entry):
            raise UserError(f"users file {path}: entry {number} needs name, role and hash")
        try:
            user = User(check_name(str(entry["name"])), check_role(str(entry["role"])), str(entry["hash"]))
        except UserError as exc:
            raise UserError(f"users file {path}: entry {number}: {exc}") from None
        if not user.password_hash.startswith("$argon2"):
            raise UserError(f"users file {path}: entry {number} ({user.name}): hash is not an argon2 hash")
        users[user.name] = user
    return users


def write_users(path: Path, users: dict[str, User]) -> None:
    """Replace the users file atomically; the new file has mode 0600 from its creation on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"users": [{"name": u.name, "role": u.role, "hash": u.password_hash} for u in users.values()]}
    text = "# inspector review users: written by `inspector review user add`\n" + yaml.safe_dump(body, sort_keys=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # an existing tmp file keeps its mode through O_CREAT
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class UserStore:
    """The users file, re-read when its modification time changes; verifies passwords.

    Args:
        path: the users file (``review.users_file``).
        hasher: the argon2 parameters (argon2-cffi's defaults: argon2id, RFC 9106 low-memory profile).

    """

    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self.hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self._dummy = self.hasher.hash("not a password of anyone")

    def users(self) -> dict[str, User]:
        """Every user now (the file is re-read when it changed)."""
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp or stamp is None:
                self._users = read_users(self.path) if stamp is not None else {}
                self._stamp = stamp
            return dict(self._users)

    def get(self, name: str) -> User | None:
        """The user of that name, or None."""
        return self.users().get(name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs; None otherwise (unknown name, wrong password, broken hash)."""
        user = self.get(name)
        try:
            self.hasher.verify(user.password_hash if user else self._dummy, password)
        except VerifyMismatchError:
            return None
        except (VerificationError, InvalidHashError):
            logger.warning("user %s has a broken password hash in %s: set it again with `inspector review user add`",
                           name, self.path)  # fmt: skip
            return None
        return user

    def add(self, name: str, role: str, password: str) -> User:
        """Add a user, or replace the role and password of an existing one; writes the file (0600)."""
        user = User(check_name(name), check_role(role), self.hasher.hash(check_password(password)))
        users = self.users()
        users[user.name] = user
        write_users(self.path, users)
        return user

    def remove(self, name: str) -> bool:
        """Remove a user; False when there was none of that name."""
        users = self.users()
        if users.pop(name, None) is None:
            return False
        write_users(self.path, users)
        return True
