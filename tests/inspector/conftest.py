from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees no INSPECTOR__* overrides from the caller's environment."""
    for key in list(os.environ):
        if key.upper().startswith("INSPECTOR__") or key == "INSPECTOR_CONFIG":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def small_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic line (8 parts, 384x384 visible at 0.05 mm/px), built once per session."""
    from inspector.synth import generate_set

    out = tmp_path_factory.mktemp("line")
    generate_set(out, 8, seed=123, preset="default", size=384)
    return out
