"""``inspector review``: serve the operators' review station; ``inspector review user``: manage its users."""

from __future__ import annotations

import getpass
import logging
import sys
import time
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry
from rich.table import Table

from inspector.cli import ConfigOption, JsonOption, settings_or_exit
from inspector.commands.common import console, fail
from inspector.config import Settings
from workers.errors import WorkerError

logger = logging.getLogger(__name__)

HELP = (
    "Serve the review station (docs/REVIEW.md §2): a live queue of NG parts from the results stream, the part "
    "view (visible, registered IR and crack-map layers on the keys v, i, c; outlines on o), and the decisions "
    "of reviewers: confirm NG, false call (OK), per crack real / not a crack, brush strokes for missed cracks. "
    "Every decision is appended to review.audit_log, stored in Redis ({prefix}:decision:{camera}:{seq}) and "
    "written as a training sample (inspector.sample/1) into review.labels for `inspector train --data`.\n\n"
    "Serves on review.bind_address:review.port (/healthz, /readyz and /metrics without sign-in). Users come "
    "from review.users_file: add them with `inspector review user add NAME --role reviewer`. Set "
    "INSPECTOR__REVIEW__SESSION_SECRET so sessions survive a restart, and review.secure_cookies behind TLS.\n\n"
    "Exit codes: 0 stopped by Ctrl-C / SIGTERM; 1 Redis or the port unusable; 2 bad configuration."
)

review_app = typer.Typer(
    help=HELP,
    short_help="Serve the operators' review station (queue, part view, decisions → labels); `user` manages sign-ins.",
    invoke_without_command=True,
    no_args_is_help=False,
)
user_app = typer.Typer(help="Add, list or remove the review station's users (review.users_file, mode 0600).")
review_app.add_typer(user_app, name="user")


@review_app.callback()
def review(
    ctx: typer.Context,
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Override review.port.")] = None,
) -> None:
    """Serve the review station (see the description above); `user` sub-commands manage who may sign in."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_or_exit(config)
    serve(settings, port)


def serve(settings: Settings, port: int | None = None) -> None:
    """Build the app from settings (Redis, evidence store, users) and run it under uvicorn until stopped."""
    import uvicorn

    from workers.clients import redis_client
    from workers.evidence import EvidenceStore
    from workers.review import UserStore, create_app

    users = UserStore(settings.review.users_file)
    try:
        known = users.users()
        client = redis_client(settings.redis)
        evidence = EvidenceStore.from_settings(settings.evidence)
    except WorkerError as exc:
        fail(exc, code=1)
    except Exception as exc:  # Redis unreachable: say where
        fail(f"cannot start the review station ({type(exc).__name__}: {exc}); is Redis at {settings.redis.url} up?", 1)
    if not any(u.may_decide for u in known.values()):
        logger.warning(
            "no reviewer in %s: nobody can decide; add one with `inspector review user add NAME --role reviewer`",
            settings.review.users_file,
        )
    app = create_app(settings, redis=client, evidence=evidence, registry=CollectorRegistry(), clock=time.time,
                     users=users)  # fmt: skip
    host, bound = settings.review.bind_address, settings.review.port if port is None else port
    console.print(f"review station on http://{host}:{bound}/ (users from {settings.review.users_file})")
    config = uvicorn.Config(app, host=host, port=bound, log_level="info", access_log=False, server_header=False)
    server = uvicorn.Server(config)
    try:
        server.run()
    except (OSError, SystemExit) as exc:
        fail(f"the review station stopped: {exc}; is port {bound} free?", 1)
    finally:
        client.close()
    if not server.started:
        fail(f"the review station could not listen on {host}:{bound}: choose another review.port", 1)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        fail("the two passwords differ: nothing was changed")
    return first


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's sign-in name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option("--role", help="viewer (read only) or reviewer (may decide).")] = "viewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin (no prompt).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Add a user, or set a new role and password for an existing one (argon2 hash in review.users_file)."""
    from workers.review import UserError, UserStore

    settings = settings_or_exit(config)
    store = UserStore(settings.review.users_file)
    try:
        user = store.add(name, role, _read_password(password_stdin))
    except UserError as exc:
        fail(exc)
    console.print(f"{user.name} is a {user.role} in {settings.review.users_file}")


@user_app.command("list")
def user_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the users and their roles (never the hashes)."""
    from workers.review import UserError, UserStore

    settings = settings_or_exit(config)
    try:
        users = UserStore(settings.review.users_file).users()
    except UserError as exc:
        fail(exc)
    if as_json:
        console.print_json(data=[{"name": u.name, "role": u.role} for u in users.values()])
        return
    table = Table("name", "role", title=str(settings.review.users_file))
    for user in users.values():
        table.add_row(user.name, user.role)
    console.print(table)


@user_app.command("remove")
def user_remove(name: Annotated[str, typer.Argument(help="The user to remove.")], config: ConfigOption = None) -> None:
    """Remove a user; their open sessions end at their next request."""
    from workers.review import UserError, UserStore

    settings = settings_or_exit(config)
    try:
        removed = UserStore(settings.review.users_file).remove(name)
    except UserError as exc:
        fail(exc)
    if not removed:
        fail(f"no user {name!r} in {settings.review.users_file}", 1)
    console.print(f"{name} removed from {settings.review.users_file}")


def register(app: typer.Typer) -> None:
    """Add ``inspector review`` and ``inspector review user add|list|remove``."""
    app.add_typer(review_app, name="review")
