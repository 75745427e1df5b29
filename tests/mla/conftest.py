"""Fixtures of the mla tests: tiny configurations and inputs (see ``tiny.py``)."""

from __future__ import annotations

import pytest

from tests.mla.tiny import MakeInputs, TinyConfig, inputs_for, tiny


@pytest.fixture
def tiny_config() -> TinyConfig:
    return tiny


@pytest.fixture
def make_inputs() -> MakeInputs:
    return inputs_for
