"""Fixtures of the mla tests: tiny configurations and inputs (see ``tiny.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.mla.tiny import MakeInputs, TinyConfig, inputs_for, tiny


@pytest.fixture
def tiny_config() -> TinyConfig:
    return tiny


@pytest.fixture
def make_inputs() -> MakeInputs:
    return inputs_for


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from more threads, and lose a lot when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
