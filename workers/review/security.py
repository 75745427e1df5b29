"""Who is asking and may they: signed session cookies, CSRF tokens, roles, sign-in throttling.

Sessions are Starlette's signed cookies (itsdangerous): the cookie holds the user name, the CSRF token
and the sign-in time; it is HttpOnly, SameSite=Strict and, with ``review.secure_cookies``, Secure.
The role is never taken from the cookie: every request looks the user up in the users file, so a
removed user or a changed role counts at once. A signed cookie cannot be taken back, so signing out
also records the time in Redis (:class:`SignOuts`): every session of that user begun earlier, copied
cookies included, is refused from then on.

Every POST must carry the session's CSRF token, as the form field ``csrf_token`` or the header
``X-CSRF-Token`` (compared with :func:`hmac.compare_digest`); the token is made when a session
starts and replaced at sign-in.

Refusals: no session → :class:`NotSignedInError` (pages redirect to ``/signin``, everything else answers
401); a viewer where a reviewer is needed, or a missing or wrong CSRF token → 403.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import HTTPException, Request

from inspector.config import ReviewSettings
from workers.review.users import User, UserStore

logger = logging.getLogger(__name__)

CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
SESSION_COOKIE: Final = "inspector_review"


class NotSignedInError(Exception):
    """The request has no valid session (the app turns it into a redirect or a 401)."""


def session_secret(settings: ReviewSettings) -> str:
    """``review.session_secret``, or a random one for this process (logged: sessions end at every restart)."""
    if settings.session_secret is not None and settings.session_secret.get_secret_value():
        return settings.session_secret.get_secret_value()
    logger.warning(
        "review.session_secret is not set: using a random one, so everyone signs in again after a restart and "
        "several replicas do not share sessions; set INSPECTOR__REVIEW__SESSION_SECRET"
    )
    return secrets.token_urlsafe(32)


def session_options(settings: ReviewSettings) -> dict[str, Any]:
    """Keyword arguments of Starlette's ``SessionMiddleware`` (the secret aside)."""
    return {
        "session_cookie": SESSION_COOKIE,
        "max_age": settings.session_max_age_s,
        "same_site": "strict",
        "https_only": settings.secure_cookies,
    }


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403) a write whose token (form field, else header) is not the session's."""
    expected = request.session.get(CSRF_FIELD)
    given = submitted or request.headers.get(CSRF_HEADER)
    if not (isinstance(expected, str) and expected and given and hmac.compare_digest(expected, given)):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page and try again")


def start_session(request: Request, user: User, now: float) -> None:
    """Sign ``user`` in: a fresh session with a new CSRF token, stamped with the sign-in time."""
    request.session.clear()
    request.session.update({"user": user.name, "since": float(now), CSRF_FIELD: secrets.token_urlsafe(32)})


class SignOuts:
    """When each user last signed out, in Redis: a sign-out ends every session of that user started before it.

    Signed cookies cannot be taken back, so without this a copied cookie would work until it expires.
    Key ``{prefix}:review:signed-out:{name}`` (epoch seconds), kept as long as a session lives.
    """

    def __init__(self, client: Any, prefix: str, max_age_s: int) -> None:
        self.client, self.prefix, self.max_age_s = client, prefix, max_age_s

    def key(self, name: str) -> str:
        """``{prefix}:review:signed-out:{name}``."""
        return f"{self.prefix}:review:signed-out:{name}"

    def record(self, name: str, now: float) -> None:
        """``name`` signed out at ``now``."""
        self.client.set(self.key(name), repr(float(now)), ex=self.max_age_s)

    def ended(self, name: str, since: float) -> bool:
        """True when ``name`` signed out after a session started at ``since``."""
        raw = self.client.get(self.key(name))
        return raw is not None and since < float(raw)


def current_user(request: Request, users: UserStore, sign_outs: SignOuts | None = None) -> User:
    """The signed-in user, looked up in the users file now.

    Raises:
        NotSignedInError: no session, its user is gone from the users file, or signed out since it started.
        HTTPException: 503 when the sign-outs cannot be read (Redis down): refused rather than let through.

    """
    name = request.session.get("user")
    user = users.get(name) if isinstance(name, str) else None
    if user is not None and sign_outs is not None:
        since = request.session.get("since")
        try:
            ended = not isinstance(since, int | float) or sign_outs.ended(user.name, float(since))
        except Exception as exc:  # redis.RedisError, connection errors
            raise HTTPException(status_code=503, detail=f"cannot check the session ({type(exc).__name__})") from exc
        user = None if ended else user
    if user is None:
        if name is not None:
            request.session.clear()
        raise NotSignedInError
    return user


def require_reviewer(user: User) -> User:
    """Refuse (403) a user who may only read."""
    if not user.may_decide:
        raise HTTPException(status_code=403, detail=f"{user.name} is a {user.role}: only reviewers may decide")
    return user


@dataclass
class SignInThrottle:
    """Refuse sign-in to a name for ``lock_s`` after ``limit`` wrong passwords within ``window_s``.

    Kept in memory, per process: it slows guessing down, it is not an account lock.
    """

    clock: Callable[[], float]
    limit: int = 5
    window_s: float = 300.0
    lock_s: float = 60.0
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def locked(self, name: str) -> bool:
        """True while ``name`` may not try again."""
        now = self.clock()
        recent = [t for t in self._failures.get(name, []) if now - t < self.window_s]
        self._failures[name] = recent
        return len(recent) >= self.limit and now - recent[-1] < self.lock_s

    def failed(self, name: str) -> None:
        """Count a wrong password (the oldest entries go first, so memory stays small)."""
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures.setdefault(name, []).append(self.clock())
        self._failures[name] = self._failures[name][-self.limit :]

    def succeeded(self, name: str) -> None:
        """Forget the failures of a name that signed in."""
        self._failures.pop(name, None)
