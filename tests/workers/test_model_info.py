"""Which model file serves is on record: its SHA-256 is logged when it loads and published in ``*_model_info``."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inspector.config import Settings
from inspector.model import create_model, shipped_model_path
from workers.commands.worker import model_info
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker
from workers.metrics import WorkerMetrics


class _Idle:
    """A consumer/producer that is never used (the worker is only constructed)."""

    def subscribe(self, topics: list[str], listener: Any = None) -> None: ...

    def close(self, **_: Any) -> None: ...


def test_crack_model_digest_is_logged_and_published(caplog: pytest.LogCaptureFixture) -> None:
    digest = hashlib.sha256(shipped_model_path("crack-concat").read_bytes()).hexdigest()
    with caplog.at_level(logging.INFO, logger="inspector.mla_model"):
        model = create_model("crack-concat")
    assert f"(sha256 {digest})" in caplog.text
    info = model_info(model, Settings())
    assert info["sha256"] == digest
    registry = CollectorRegistry()
    WorkerMetrics(registry).set_model(info["name"], info["version"], info["width"], info["backend"], info["sha256"])
    labels = {"name": info["name"], "version": info["version"], "width": "1", "backend": info["backend"]}
    assert registry.get_sample_value("inspector_model_info", {**labels, "sha256": digest}) == 1.0


def test_medical_worker_publishes_and_logs_its_report_model(caplog: pytest.LogCaptureFixture) -> None:
    registry, digest = CollectorRegistry(), "ab" * 32
    info = {"name": "medical-report", "version": "3", "sha256": digest}
    with caplog.at_level(logging.INFO, logger="workers.medical"):
        MedicalWorker(
            Settings(), MedicalConfig(), None, None, {}, metrics=MedicalMetrics(registry), info=info,  # type: ignore[arg-type]
            consumer=_Idle(), producer=_Idle(),
        )  # fmt: skip
    assert registry.get_sample_value("inspector_medical_model_info", info) == 1.0
    assert f"serving report model medical-report version 3 (sha256 {digest})" in caplog.text
