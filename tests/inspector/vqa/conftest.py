"""A tiny VQA model, trained for a few steps once per session (fast, not accurate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.vqa.model import VQAModel
from inspector.vqa.tokenizer import WordTokenizer
from inspector.vqa.training import fit_tokenizer
from tests.inspector.vqa.tiny import train_tiny


@pytest.fixture(scope="session")
def tokenizer() -> WordTokenizer:
    return fit_tokenizer(seed=0, scenes=300)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, tokenizer: WordTokenizer) -> Path:
    return train_tiny(tmp_path_factory.mktemp("vqa"), tokenizer)


@pytest.fixture
def tiny_model(tiny_model_path: Path) -> VQAModel:
    return VQAModel.load(tiny_model_path)
