"""Fixtures of the medical tests: pydicom's shipped files, a written phantom study, a tiny report model."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom.data
import pytest

import mla
from inspector.medical.phantom import Study, make_study, write_dicom
from inspector.medical.report import model_config, save_report_model
from inspector.medical.training import build_tokenizer, report_corpus
from inspector.medical.vocab import ReportTokenizer
from mla.seed import seed_everything

TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """pydicom's shipped test files (read locally; never downloaded)."""
    return TEST_FILES


@pytest.fixture(scope="session")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Study, Path]:
    """A phantom study with findings, written as DICOM."""
    study = next(s for s in (make_study(seed) for seed in range(20)) if len(s.lesions) >= 2)
    folder = tmp_path_factory.mktemp("phantom") / "study"
    write_dicom(study, folder)
    return study, folder


@pytest.fixture(scope="session")
def tokenizer() -> ReportTokenizer:
    return build_tokenizer(report_corpus(300))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: ReportTokenizer) -> Path:
    """An untrained, small report model file (the pipeline, not the quality, is under test)."""
    seed_everything(0)
    model = mla.MLAModel(model_config(tokenizer.vocab_size, width=16, image_width=8, decoder_depth=1))
    path = tmp_path_factory.mktemp("model") / "tiny-report.pt"
    save_report_model(model.eval(), tokenizer, path, {"synthetic_data": True})
    return path
