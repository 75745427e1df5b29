"""The ``inspector`` command line: one entry point, sub-commands, ``--json`` for machines.

Exit codes: 0 success, 1 the work failed, 2 bad input or configuration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inspector import __version__
from inspector.commands.common import console, fail
from inspector.config import Settings, load_settings
from inspector.errors import InspectorError

app = typer.Typer(
    name="inspector",
    help="Find, measure and report cracks on parts seen by a visible and an infrared camera.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Show or check the effective configuration (YAML file + INSPECTOR__* variables).")
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file; default $INSPECTOR_CONFIG, else built-in defaults."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def settings_or_exit(path: Path | None) -> Settings:
    """Load settings, turning a configuration error into exit code 2 with its message."""
    try:
        return load_settings(path)
    except InspectorError as exc:
        fail(exc)


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows += _flatten(f"{prefix}.{key}" if prefix else key, inner)
        return rows
    return [(prefix, "" if value is None else str(value))]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
) -> None:
    """Find, measure and report cracks on parts seen by a visible and an infrared camera."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


@config_app.command("show")
def config_show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective settings; secrets are shown as '**********'."""
    settings = settings_or_exit(config)
    data = json.loads(settings.model_dump_json())
    if as_json:
        console.print_json(data=data)
        return
    table = Table("setting", "value", title="effective settings")
    for key, value in _flatten("", data):
        table.add_row(key, value)
    console.print(table)


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the settings and exit 0, or print every problem and exit 2."""
    settings_or_exit(config)
    console.print(f"configuration OK ({config or 'defaults'} + environment)")


def _register_commands() -> None:
    """Add the sub-commands that live in ``inspector.commands`` (one module each)."""
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"inspector.commands.{name}").register(app)


COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "demo",
    "predict",
    "evaluate",
    "bench",
    "calibrate",
    "synth",
    "train",
    "export",
    "prune",
    "threshold",
    "vqa",
    "medical",
)
_register_commands()

if __name__ == "__main__":
    app()
