"""The inspection worker following the registry on in-memory stand-ins: hot swap, a failed load, the shadow model.

The same on the real stack, with `inspector worker` and `inspector promote` as processes, is
``tests/integration/test_hot_swap.py``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspector.model import create_model
from tests.workers.fakes import FakeKafkaConsumer, FakeModelRegistry, FakeProducer, FakeResultStore, LabelledModel
from tests.workers.test_inspection import IR, VIS, capture, settings
from workers.inspection import InspectionWorker
from workers.metrics import WorkerMetrics
from workers.model_watch import ModelWatcher
from workers.registry import RegistryEntry

OLD_SHA = "0" * 64


class NeverSteps:
    """A width family that is asked to decide and never changes width."""

    def decide(self, load: float) -> tuple[int, bool]:
        return 0, False


class Setup:
    """A worker on fake Kafka and Redis serving ``old``, with a watcher over a fake registry (synchronous loads)."""

    def __init__(self, tmp_path: Path, seqs: range, batch_pairs: int = 2) -> None:
        self.tmp_path, self.baseline = tmp_path, create_model("baseline")
        self.registry, self.store, self.metrics_registry = FakeModelRegistry(), FakeResultStore(), CollectorRegistry()
        self.metrics = WorkerMetrics(self.metrics_registry)
        self.watcher = ModelWatcher(self.registry, self.load, 0.0, metrics=self.metrics, start=lambda work: work())
        records = [r for seq in seqs for r in capture("rig-a", seq)]
        self.raw = FakeKafkaConsumer({VIS: 2, IR: 2}, records)
        self.worker = InspectionWorker(
            settings(batch_pairs=batch_pairs), LabelledModel("old", OLD_SHA, self.baseline),
            self.store, metrics=self.metrics, consumer=self.raw, producer=FakeProducer(),  # type: ignore[arg-type]
            model_info={"name": "old", "version": "1", "width": 1.0, "backend": "fake", "sha256": OLD_SHA},
            watcher=self.watcher,
        )  # fmt: skip
        self.worker.drain_s = 0.5

    def send(self, seqs: range) -> None:
        """More captures arrive on the topics."""
        for record in (r for seq in seqs for r in capture("rig-a", seq)):
            self.raw.append(record)

    def load(self, path: Path) -> LabelledModel:
        content = path.read_bytes()
        if content.startswith(b"broken"):
            raise RuntimeError("not a model file")
        like = None if content.startswith(b"blind") else self.baseline
        return LabelledModel(path.stem, hashlib.sha256(content).hexdigest(), like, width=0.65)

    def entry(self, name: str, content: bytes, fraction: float | None = None) -> RegistryEntry:
        path = self.tmp_path / f"{name}.pt"
        path.write_bytes(content)
        sha = hashlib.sha256(content).hexdigest()
        return RegistryEntry(str(path), sha, name, "ana", "2026-12-01T12:00:00+00:00", fraction=fraction)

    def run_until(self, stored: int) -> None:
        for _ in range(200):
            if len(self.store.results) >= stored:
                return
            self.worker.step()
        raise AssertionError(f"only {len(self.store.results)} results stored")

    def shas(self) -> list[str]:
        """The model SHA of each result, in the order they were stored."""
        return [self.store.results[key]["model"]["sha256"] for key in self.store.entries]

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics_registry.get_sample_value(name, labels or {})


def test_a_promoted_model_is_swapped_in_between_batches_and_every_result_names_its_sha(tmp_path: Path) -> None:
    setup = Setup(tmp_path, range(1, 5))
    family = NeverSteps()
    setup.worker.widths = family  # type: ignore[assignment]  # a width family that must stop stepping
    setup.run_until(4)
    new = setup.entry("new", b"weights v2")
    setup.registry.entry = new
    setup.send(range(5, 13))
    report = setup.worker.run(timeout=20, count=12)

    assert report.stored == 12 and sorted(setup.store.results) == [("rig-a", s) for s in range(1, 13)]
    assert len(setup.store.entries) == 12  # one stream entry per capture: none lost, none twice
    shas = setup.shas()
    switch = shas.index(new.sha256)
    assert switch >= 4 and shas == [OLD_SHA] * switch + [new.sha256] * (12 - switch)  # switched once, never back
    assert setup.worker.core.model.name == "new" and setup.worker.core.model_width == 0.65
    assert setup.worker.widths is None
    assert setup.value("inspector_worker_model_swaps_total") == 1
    assert setup.value("inspector_model_info", {"name": "new", "version": "1", "width": "0.65", "backend": "fake",
                                                "sha256": new.sha256}) == 1  # fmt: skip
    assert {d["model"]["width"] for d in setup.store.results.values() if d["model"]["sha256"] == new.sha256} == {0.65}


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, range(1, 3))
    setup.run_until(2)
    broken = setup.entry("broken", b"broken weights")
    setup.registry.entry = broken
    setup.send(range(3, 9))
    with caplog.at_level(logging.ERROR, logger="workers.model_watch"):
        report = setup.worker.run(timeout=20, count=8)
    assert report.stored == 8 and set(setup.shas()) == {OLD_SHA}
    assert setup.value("inspector_worker_model_load_failures_total", {"role": "active"}) == 1
    assert setup.value("inspector_worker_model_swaps_total") == 0
    assert any(broken.sha256 in r.getMessage() and "not a model file" in r.getMessage() for r in caplog.records)


def test_shadow_disagreements_are_counted_and_queued_for_review_never_stored(tmp_path: Path) -> None:
    setup = Setup(tmp_path, range(1, 10))
    shadow = setup.entry("candidate", b"blind weights", fraction=1.0)
    setup.registry.shadow = shadow
    report = setup.worker.run(timeout=20, count=9)

    assert report.stored == 9 and set(setup.shas()) == {OLD_SHA}
    ng = sorted(seq for (_, seq), d in setup.store.results.items() if d["verdict"] == "NG")
    assert ng == [3, 6, 9]  # the serving model's verdicts; the blind candidate said OK to all
    prefix = setup.worker.settings.redis.key_prefix
    assert setup.registry.reviews == [
        {"key": f"{prefix}:result:rig-a:{seq}", "verdict": "NG", "shadow_verdict": "OK", "shadow_sha": shadow.sha256}
        for seq in ng
    ]
    assert setup.value("inspector_worker_shadow_comparisons_total", {"agree": "false"}) == 3
    assert setup.value("inspector_worker_shadow_comparisons_total", {"agree": "true"}) == 6

    setup2 = Setup(tmp_path, range(1, 4))
    setup2.registry.shadow = shadow
    setup2.registry.refuse_reviews = True  # Redis refuses the review entry: the result stands
    assert setup2.worker.run(timeout=20, count=3).stored == 3


def test_a_shadow_that_ends_stops_being_run(tmp_path: Path) -> None:
    setup = Setup(tmp_path, range(1, 3))
    setup.registry.shadow = setup.entry("candidate", b"blind weights", fraction=1.0)
    setup.run_until(2)
    assert setup.worker.core.shadow is not None and setup.worker.core.shadow.fraction == 1.0
    compared = setup.value("inspector_worker_shadow_comparisons_total", {"agree": "true"}) or 0
    setup.registry.shadow = None
    setup.worker.step()
    assert setup.worker.core.shadow is None
    setup.send(range(3, 9))
    setup.worker.run(timeout=20, count=8)
    after = sum(setup.value("inspector_worker_shadow_comparisons_total", {"agree": a}) or 0 for a in ("true", "false"))
    assert compared == after == 2  # the captures inspected after the end were not compared
