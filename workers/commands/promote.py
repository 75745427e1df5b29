"""``inspector promote``: put a model in the registry the inspection workers follow; shadow, roll back, show it."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inspector.cli import ConfigOption, JsonOption, settings_or_exit
from inspector.commands.common import console, fail
from inspector.config import Settings
from inspector.model import SHIPPED_MODELS, create_model, shipped_model_path
from workers.clients import redis_client
from workers.errors import WorkerError
from workers.registry import ModelRegistry, RegistryEntry

HELP = (
    "Promote a model to every running inspection worker, without a restart (docs/REVIEW.md, section 4).\n\n"
    "inspector promote MODEL copies the model file to registry.models_dir/{sha256[:16]}/{file name} (with its .md "
    "model card) and writes {redis.key_prefix}:model:active (path, SHA-256, --metrics, who, when); the previous "
    "model goes on {prefix}:model:history. Workers with registry.watch read the key every registry.poll_s, load the "
    "file in the background, check its SHA-256 and swap it in between batches; a model that fails there leaves the "
    "old one serving (inspector_worker_model_load_failures_total and an ERROR line).\n\n"
    "MODEL is a .pt/.onnx/.engine file or a shipped model name (crack-concat, crack-concat-w65, crack-hffn). It is "
    "loaded here first (as the workers will, with the inference settings) and refused if it does not load; "
    "--no-check skips that (tests of the workers' own check, emergencies).\n\n"
    "--shadow MODEL --fraction 0.2 runs a candidate beside the active model on that share of captures (chosen by a "
    "hash of camera and seq): its verdict never reaches a result; disagreements go to {prefix}:review:shadow (the "
    "review queue) and inspector_worker_shadow_comparisons_total{agree} gives the agreement rate. --shadow-off ends "
    "it. --rollback makes the previous model active again. --status shows the registry (--json for machines).\n\n"
    "Exit codes: 0 done; 1 the registry refused (nothing to roll back to, the model is active already) or Redis is "
    "unreachable; 2 bad options, or a model file that is missing or does not load."
)


def model_file(model: str) -> Path:
    """The file behind MODEL: a path as given, or the file of a shipped model name."""
    path = Path(model)
    if not path.exists() and model in SHIPPED_MODELS:
        return Path(str(shipped_model_path(model)))
    return path


def check_loads(path: Path, settings: Settings) -> str:
    """Load ``path`` as a worker would; its model name, or exit 2 with the reason it does not load."""
    try:
        return create_model(str(path), inference=settings.inference.model_dump()).name
    except Exception as exc:  # any failure to load is a refusal, with its reason
        fail(f"{path} does not load ({type(exc).__name__}: {exc}): not promoted")


def read_metrics(path: Path | None) -> dict[str, Any]:
    """The ``--metrics`` JSON object (e.g. ``inspector eval --json`` output), or exit 2."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"--metrics {path} is not readable JSON ({exc})")
    if not isinstance(data, dict):
        fail(f'--metrics {path} must hold a JSON object of figures, e.g. {{"f1": 0.88}}')
    return data


def status_table(
    active: RegistryEntry | None, shadow: RegistryEntry | None, history: list[RegistryEntry], models_dir: Path
) -> Table:
    """The registry for people: the active model, the shadow (with its share), the history newest first."""
    table = Table(title=f"model registry (files in {models_dir})")
    for column in ("role", "name", "sha256", "who", "when (UTC)"):
        table.add_column(column, no_wrap=column in ("role", "sha256", "when (UTC)"))
    rows = [("active", active), ("shadow", shadow)] + [(f"history {i + 1}", e) for i, e in enumerate(history)]
    for role, entry in rows:
        if entry is None:
            table.add_row(role, "-", "-", "-", "-")
            continue
        label = f"{role} {100 * entry.fraction:g}%" if entry.fraction is not None else role
        if entry.action == "rollback":
            label += " (rolled back)"
        table.add_row(label, entry.name, entry.sha256[:16], entry.who, entry.when[:16].replace("T", " "))
    return table


def promote(
    model: Annotated[str | None, typer.Argument(help="Model file (.pt, .onnx, .engine) or shipped model name.")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="Run MODEL in shadow beside the active model.")] = False,
    fraction: Annotated[float, typer.Option("--fraction", help="With --shadow: share of captures (0 < f ≤ 1).")] = 0.2,
    shadow_off: Annotated[bool, typer.Option("--shadow-off", help="End the shadow run.")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="Make the previous model active again.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Show the active, shadow and recent models.")] = False,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="JSON file of the model's figures, stored with the entry.")
    ] = None,
    who: Annotated[str | None, typer.Option("--who", help="Who promotes (default $USER).")] = None,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Do not load MODEL here first (the workers still verify it).")
    ] = False,
    history: Annotated[int, typer.Option("--history", min=0, help="With --status: history entries shown.")] = 5,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Promote, shadow or roll back the model the inspection workers serve (see `inspector promote --help`)."""
    actions = [
        name for name, on in (("--rollback", rollback), ("--shadow-off", shadow_off), ("--status", status)) if on
    ]
    if len(actions) > 1 or (actions and model is not None):
        fail(f"{' and '.join(actions + (['MODEL'] if model else []))} do not go together: pick one action")
    if shadow and model is None:
        fail("--shadow needs a MODEL: inspector promote --shadow MODEL --fraction 0.2")
    if not actions and model is None:
        fail("give a MODEL to promote, or one of --rollback, --shadow-off, --status")
    if shadow and not 0.0 < fraction <= 1.0:
        fail(f"--fraction {fraction} must be in (0, 1]: e.g. 0.2 runs the shadow on 1 capture in 5")
    settings = settings_or_exit(config)
    name = who or os.environ.get("USER") or getpass.getuser()
    path = model_file(model) if model is not None else None
    if path is not None and not path.is_file():
        fail(f"model file {path} does not exist: give a .pt, .onnx or .engine file, or a shipped model name")
    figures = read_metrics(metrics)
    model_name = None if path is None or no_check else check_loads(path, settings)
    entry: RegistryEntry | None = None
    try:
        registry = ModelRegistry(redis_client(settings.redis), settings.redis.key_prefix, settings.registry.models_dir)
        if status:
            show_status(registry, history, as_json)
            return
        if rollback:
            entry = registry.rollback(who=name)
        elif shadow_off:
            entry = registry.clear_shadow(who=name)
        elif path is not None and shadow:
            entry = registry.shadow(path, fraction=fraction, who=name, metrics=figures)
        elif path is not None:
            entry = registry.promote(path, who=name, metrics=figures, name=model_name)
    except WorkerError as exc:
        fail(exc, code=1)
    except Exception as exc:  # Redis unreachable or refusing: say where
        fail(f"the registry at {settings.redis.url} refused ({type(exc).__name__}: {exc})", code=1)
    report(entry, rollback=rollback, shadow_off=shadow_off, shadow=shadow, as_json=as_json)


def show_status(registry: ModelRegistry, history: int, as_json: bool) -> None:
    """Print the registry as a table, or as JSON (``active``, ``shadow``, ``history``)."""
    active, shadow, past = registry.active(), registry.shadow_entry(), registry.history(history) if history else []
    if as_json:
        console.print_json(data=json.loads(json.dumps({
            "active": _plain(active), "shadow": _plain(shadow), "history": [_plain(e) for e in past],
        })))  # fmt: skip
        return
    console.print(status_table(active, shadow, past, registry.models_dir))


def report(entry: RegistryEntry | None, *, rollback: bool, shadow_off: bool, shadow: bool, as_json: bool) -> None:
    """Say what changed."""
    if as_json:
        console.print_json(data=_plain(entry))
    elif entry is None:
        console.print("no shadow model was running")
    elif shadow_off:
        console.print(f"shadow run of {entry.name} ({entry.sha256[:16]}) ended")
    elif shadow:
        console.print(
            f"{entry.name} ({entry.sha256[:16]}) runs in shadow on {100 * (entry.fraction or 0):.0f}% of captures"
        )
    else:
        verb = "rolled back to" if rollback else "promoted"
        console.print(f"{verb} {entry.name} ({entry.sha256[:16]}), {entry.path}; workers swap within registry.poll_s")


def _plain(entry: RegistryEntry | None) -> dict[str, Any] | None:
    return None if entry is None else json.loads(entry.to_json())


def register(app: typer.Typer) -> None:
    """Add ``inspector promote``."""
    app.command("promote", help=HELP)(promote)
