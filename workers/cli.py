"""The ``inspector`` entry point: :mod:`inspector.cli` plus the service commands that live in ``workers``.

Imports go one way (``workers`` → ``inspector`` → ``mla``), so the commands that run Kafka
producers and consumers are registered here, on the same Typer app, rather than in ``inspector``.
"""

from __future__ import annotations

import importlib

from inspector.cli import app

SERVICE_COMMANDS: tuple[str, ...] = (
    "gateway",
    "worker",
    "bench_pipeline",
    "bench_soak",
    "vqa_worker",
    "medical_worker",
    "medical_gateway",
    "cameras",
    "bench_cameras",
    "bench_evidence",
    "promote",
    "review",
)

for _name in SERVICE_COMMANDS:
    importlib.import_module(f"workers.commands.{_name}").register(app)

__all__ = ["app"]

if __name__ == "__main__":
    app()
