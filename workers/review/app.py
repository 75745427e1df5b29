"""The review station's web app (FastAPI + Jinja2): queue, part view, decisions, sign-in, health, metrics.

    app = create_app(settings, redis=client, evidence=EvidenceStore.from_settings(settings.evidence),
                     registry=CollectorRegistry(), clock=time.time)
    uvicorn.run(app, host=settings.review.bind_address, port=settings.review.port)

Endpoints (docs/REVIEW.md §2):

====================================  =========  ==============================================================
``GET /healthz``                      anyone     liveness: ``{"status": "ok"}``
``GET /readyz``                       anyone     Redis answers PING (200) or not (503)
``GET /metrics``                      anyone     Prometheus text from the injected registry
``GET /signin``, ``POST /signin``     anyone     the sign-in form; POST checks CSRF, throttles, sets the session
``POST /signout``                     signed in  ends every session of that user begun before it
``GET /``                             viewer     the queue page (polls ``/api/queue``)
``GET /api/queue``                    viewer     the queue as JSON, with the backlog
``GET /part/{camera_id}/{seq}``       viewer     the part view: layers, cracks, model, decision forms
``POST /part/{camera_id}/{seq}/decision``  reviewer  save a decision (form: ``kind``, ``crack.{i}``, ``strokes``)
``GET /evidence/{day}/{camera}/{seq}/{file}``  viewer  an evidence image, via the store's safe resolver
====================================  =========  ==============================================================

Refusals: no session → pages redirect to ``/signin`` (303), other requests get 401; a viewer on a
reviewer's endpoint, or a POST without the session's CSRF token → 403. Auth is checked before the
body is looked at, so a refused write changes nothing. Every response carries a strict
Content-Security-Policy (scripts and styles only from ``/static``), ``X-Frame-Options: DENY`` and
``nosniff``; pages are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware.sessions import SessionMiddleware

from inspector.config import Settings
from inspector.evidence import evidence_files
from inspector.labels import Decision, LabelError
from workers.review import security
from workers.review.decisions import DecisionError
from workers.review.metrics import ReviewMetrics
from workers.review.station import EvidenceFiles, PartNotFoundError, ReviewStation
from workers.review.users import User, UserStore

logger = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
_LOCAL_PATH: Final = re.compile(r"/[A-Za-z0-9/_.~%=&?-]*")
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _safe_next(target: str | None) -> str:
    """A local path to go to after sign-in; anything else (another site, ``//``, a backslash, a tab) is ``/``."""
    if not target or not _LOCAL_PATH.fullmatch(target) or target.startswith("//"):
        return "/"
    return target


def _parse_decision(form: FormData) -> Decision:
    """The decision a form describes: ``kind``, ``crack.{i}`` = real | not_crack, ``strokes`` (JSON), ``note``."""
    kind = form.get("kind")
    cracks = {key.removeprefix("crack."): value for key, value in form.multi_items() if key.startswith("crack.")}
    raw_strokes = str(form.get("strokes") or "").strip()
    try:
        strokes = json.loads(raw_strokes) if raw_strokes else []
    except json.JSONDecodeError:
        raise HTTPException(400, "strokes must be a JSON list of {points: [[x, y], ...], width_px}") from None
    if kind == "confirm":
        cracks = {}  # confirm keeps every crack as the model measured it
    try:
        return Decision.model_validate(
            {"kind": kind, "cracks": cracks, "strokes": strokes, "note": str(form.get("note") or "")}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HTTPException(400, f"invalid decision: {where}: {first['msg'].removeprefix('Value error, ')}") from None


@dataclass(frozen=True)
class _Context:
    """What the route groups share."""

    redis: Any
    station: ReviewStation
    users: UserStore
    throttle: security.SignInThrottle
    sign_outs: security.SignOuts
    templates: Jinja2Templates
    registry: CollectorRegistry
    clock: Callable[[], float]

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Render a template with the session's CSRF token and its one-time flash message."""
        context |= {"csrf_token": security.csrf_token(request), "flash": request.session.pop("flash", None)}
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def viewer(self, request: Request) -> User:
        """The signed-in user (any role), or :class:`~workers.review.security.NotSignedInError`."""
        return security.current_user(request, self.users, self.sign_outs)

    async def writer(self, request: Request) -> tuple[User, FormData]:
        """A reviewer with the session's CSRF token: checked before the form means anything."""
        user = security.require_reviewer(self.viewer(request))
        form = await request.form()
        security.check_csrf(request, _field(form, security.CSRF_FIELD))
        return user, form


def create_app(
    settings: Settings,
    *,
    redis: Any,
    evidence: EvidenceFiles,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    users: UserStore | None = None,
    secret: str | None = None,
) -> FastAPI:
    """The review station's ASGI app.

    Args:
        settings: all settings; ``review`` above all.
        redis: a ``redis.Redis`` (results, decisions).
        evidence: the evidence store (``EvidenceStore``); paths are resolved only through it.
        registry: where the ``inspector_review_*`` metrics live (a fresh one when None).
        clock: epoch seconds, for the audit trail and the sign-in throttle.
        users: the users store (default: ``review.users_file``).
        secret: the session signing key (default: ``review.session_secret``, else random with a warning).

    """
    registry = registry if registry is not None else CollectorRegistry()
    station = ReviewStation(settings, redis, evidence, ReviewMetrics(registry), clock)
    ctx = _Context(
        redis=redis, station=station, users=users or UserStore(settings.review.users_file),
        throttle=security.SignInThrottle(clock),
        sign_outs=security.SignOuts(redis, settings.redis.key_prefix, settings.review.session_max_age_s),
        templates=Jinja2Templates(directory=HERE / "templates"),
        registry=registry, clock=clock,
    )  # fmt: skip
    app = FastAPI(title="inspector review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware, secret_key=secret or security.session_secret(settings.review),
        **security.session_options(settings.review),
    )  # fmt: skip
    app.middleware("http")(_security_headers)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.station = station
    _add_error_handlers(app, ctx)
    _add_probes(app, ctx)
    _add_sign_in(app, ctx)
    _add_pages(app, ctx)
    _add_decisions(app, ctx)
    return app


async def _security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _add_error_handlers(app: FastAPI, ctx: _Context) -> None:
    @app.exception_handler(security.NotSignedInError)
    async def not_signed_in(request: Request, _exc: security.NotSignedInError) -> Response:
        if request.method == "GET" and not request.url.path.startswith(("/api/", "/evidence/")):
            return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
        return JSONResponse({"detail": "sign in first"}, status_code=401)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        machine = request.url.path.startswith(("/api/", "/evidence/"))
        if not machine and "text/html" in request.headers.get("accept", ""):
            name = request.session.get("user")
            user = ctx.users.get(name) if isinstance(name, str) else None
            return ctx.page(request, "error.html", exc.status_code, message=exc.detail, user=user)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def _add_probes(app: FastAPI, ctx: _Context) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            ctx.redis.ping()
        except Exception as exc:  # any client error means not ready
            return JSONResponse({"status": "unready", "reason": f"redis: {type(exc).__name__}"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    def metrics() -> Response:
        try:
            ctx.station.entries()  # refreshes inspector_review_backlog
        except Exception as exc:  # a scrape still answers, with the last backlog
            logger.warning("backlog not refreshed: %s", exc)
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)


def _add_sign_in(app: FastAPI, ctx: _Context) -> None:
    @app.get("/signin")
    def signin_form(request: Request, next: str = "/") -> Response:
        return ctx.page(request, "signin.html", next=_safe_next(next), error=None, user=None)

    @app.post("/signin")
    async def signin(request: Request) -> Response:
        form = await request.form()
        security.check_csrf(request, _field(form, security.CSRF_FIELD))
        name, password = _field(form, "username") or "", _field(form, "password") or ""
        target = _safe_next(_field(form, "next"))
        if ctx.throttle.locked(name):
            error = "Too many attempts: wait a minute."
            return ctx.page(request, "signin.html", 429, next=target, error=error, user=None)
        user = await run_in_threadpool(ctx.users.verify, name, password)
        if user is None:
            ctx.throttle.failed(name)
            logger.info("sign-in refused for %r", name[:64])
            return ctx.page(request, "signin.html", 401, next=target, error="Wrong name or password.", user=None)
        ctx.throttle.succeeded(name)
        security.start_session(request, user, ctx.clock())
        logger.info("%s (%s) signed in", user.name, user.role)
        return RedirectResponse(target, status_code=303)

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        user = ctx.viewer(request)
        form = await request.form()
        security.check_csrf(request, _field(form, security.CSRF_FIELD))
        await run_in_threadpool(ctx.sign_outs.record, user.name, ctx.clock())
        request.session.clear()
        return RedirectResponse("/signin", status_code=303)


def _add_pages(app: FastAPI, ctx: _Context) -> None:
    @app.get("/")
    def queue_page(request: Request) -> Response:
        user = ctx.viewer(request)
        entries = ctx.station.entries()
        backlog = sum(not e.decided for e in entries)
        return ctx.page(request, "queue.html", user=user, entries=entries, backlog=backlog)

    @app.get("/api/queue")
    def queue_json(request: Request) -> dict[str, Any]:
        ctx.viewer(request)
        entries = ctx.station.entries()
        return {"backlog": sum(not e.decided for e in entries), "entries": [e.to_json() for e in entries]}

    @app.get("/part/{camera_id}/{seq}")
    def part_page(request: Request, camera_id: str, seq: str) -> Response:
        user = ctx.viewer(request)
        try:
            part = ctx.station.part(camera_id, _seq(seq))
        except PartNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        files = evidence_files(part.evidence) if part.evidence else {}
        layers = {layer: f"/evidence/{part.evidence_path}/{name}" for layer, name in files.items()}
        return ctx.page(request, "part.html", user=user, part=part, camera_id=camera_id, seq=seq, layers=layers)

    @app.get("/evidence/{relative:path}")
    def evidence_file(request: Request, relative: str) -> Response:
        ctx.viewer(request)
        folder, _, name = relative.rpartition("/")
        path = ctx.station.evidence_file(folder, name) if folder else None
        if path is None:
            raise HTTPException(404, "no such evidence file")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


def _add_decisions(app: FastAPI, ctx: _Context) -> None:
    @app.post("/part/{camera_id}/{seq}/decision")
    async def decide(request: Request, camera_id: str, seq: str) -> Response:
        user, form = await ctx.writer(request)
        decision = _parse_decision(form)
        try:
            number = _seq(seq)
            saved = await run_in_threadpool(ctx.station.decide, user, camera_id, number, decision)
        except PartNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except LabelError as exc:
            raise HTTPException(400, str(exc)) from None
        except DecisionError as exc:
            raise HTTPException(503, str(exc)) from None
        note = f"Saved: {decision.kind.replace('_', ' ')} ({saved.record.verdict})."
        request.session["flash"] = note + (f" No training sample: {saved.label_error}" if saved.label_error else "")
        if "application/json" in request.headers.get("accept", ""):
            body = {"verdict": saved.record.verdict, "label": saved.label_id, "label_error": saved.label_error}
            return JSONResponse(body)
        return RedirectResponse(f"/part/{quote(camera_id)}/{number}", status_code=303)


def _seq(text: str) -> int:
    """A capture's seq from a URL (404 for anything but digits: parsed after the sign-in check)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise PartNotFoundError(f"no capture with seq {text[:20]!r}")
    return int(text)


def _field(form: FormData, name: str) -> str | None:
    """A text field of a form (None when absent or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else None
