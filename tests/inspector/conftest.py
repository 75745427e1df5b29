from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees no INSPECTOR__* overrides from the caller's environment."""
    for key in list(os.environ):
        if key.upper().startswith("INSPECTOR__") or key == "INSPECTOR_CONFIG":
            monkeypatch.delenv(key)
