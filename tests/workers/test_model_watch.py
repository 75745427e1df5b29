"""The registry watcher alone: background loads, verified files, failures that keep the old model, no retry storm."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.workers.fakes import FakeModelRegistry, LabelledModel
from workers.metrics import WorkerMetrics
from workers.model_watch import RETRY_AFTER_S, ModelWatcher
from workers.registry import RegistryEntry


def model_file(folder: Path, name: str, content: bytes) -> tuple[Path, str]:
    path = folder / f"{name}.pt"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def entry(path: Path, sha: str, fraction: float | None = None) -> RegistryEntry:
    return RegistryEntry(path=str(path), sha256=sha, name=path.stem, who="ana", when="2026-12-01T00:00:00+00:00",
                         fraction=fraction)  # fmt: skip


class Loader:
    """Loads fake models from files; a file starting with ``broken`` does not load."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def __call__(self, path: Path) -> LabelledModel:
        self.loaded.append(path)
        content = path.read_bytes()
        if content.startswith(b"broken"):
            raise RuntimeError("not a model file")
        return LabelledModel(path.stem, hashlib.sha256(content).hexdigest())


class Later:
    """A background that runs its work only when told (``run()``), as a slow load thread would."""

    def __init__(self) -> None:
        self.work: list[Callable[[], None]] = []

    def __call__(self, work: Callable[[], None]) -> None:
        self.work.append(work)

    def run(self) -> None:
        work, self.work = self.work, []
        for item in work:
            item()


def watcher(
    registry: FakeModelRegistry,
    metrics: WorkerMetrics | None = None,
    start: Callable[[Callable[[], None]], None] | None = None,
    poll_s: float = 0,
) -> tuple[ModelWatcher, Loader]:
    loader = Loader()
    return ModelWatcher(registry, loader, poll_s, metrics=metrics, start=start or (lambda work: work())), loader


def test_a_new_model_loads_in_the_background_and_is_handed_over_on_a_later_poll(tmp_path: Path) -> None:
    path, sha = model_file(tmp_path, "new", b"weights v2")
    registry, later = FakeModelRegistry(entry(path, sha)), Later()
    watch, loader = watcher(registry, start=later)
    assert not watch.poll(now=0.0)  # the load started, nothing to swap yet: the loop keeps inspecting
    assert not watch.poll(now=1.0) and loader.loaded == []
    later.run()
    change = watch.poll(now=2.0)
    assert change.active is not None and change.active.entry.sha256 == sha and change.active.model.name == "new"
    assert watch.serving["active"] == entry(path, sha)
    assert not watch.poll(now=3.0) and len(loader.loaded) == 1  # serving it: not loaded again


def test_the_registry_is_read_at_most_every_poll_s(tmp_path: Path) -> None:
    registry = FakeModelRegistry()
    watch, _ = watcher(registry, poll_s=2.0)
    for now in (0.0, 0.5, 1.9, 2.0, 3.0, 4.1):
        watch.poll(now=now)
    assert registry.reads == 3  # at 0.0, 2.0 and 4.1


def test_a_file_whose_sha_differs_from_the_entry_is_refused_and_the_old_model_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, sha = model_file(tmp_path, "new", b"weights v2")
    path.write_bytes(b"weights v2, tampered")
    metrics = WorkerMetrics(CollectorRegistry())
    watch, loader = watcher(FakeModelRegistry(entry(path, sha)), metrics)
    with caplog.at_level(logging.ERROR, logger="workers.model_watch"):
        change = watch.poll(now=0.0)
    assert not change and loader.loaded == [] and watch.serving["active"] is None
    assert metrics.model_load_failures.labels(role="active")._value.get() == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(path) in line and sha in line and "not the registry's" in line


def test_a_model_that_fails_to_load_keeps_the_old_one_and_is_retried_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, good_sha = model_file(tmp_path, "good", b"weights v1")
    bad, bad_sha = model_file(tmp_path, "bad", b"broken weights")
    registry, metrics = FakeModelRegistry(entry(good, good_sha)), WorkerMetrics(CollectorRegistry())
    watch, loader = watcher(registry, metrics)
    assert watch.poll(now=0.0).active is not None
    registry.entry = entry(bad, bad_sha)
    with caplog.at_level(logging.ERROR, logger="workers.model_watch"):
        for now in range(1, 60):  # a poll a second for a minute
            assert not watch.poll(now=float(now))
    assert watch.serving["active"] == entry(good, good_sha)  # the old model still serves
    assert loader.loaded.count(bad) == 1 and metrics.model_load_failures.labels(role="active")._value.get() == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and bad_sha in errors[0] and "not a model file" in errors[0] and good_sha in errors[0]
    watch.poll(now=1.0 + RETRY_AFTER_S)
    assert loader.loaded.count(bad) == 2  # tried again after a minute, not before


def test_a_registry_that_cannot_be_read_changes_nothing(tmp_path: Path) -> None:
    path, sha = model_file(tmp_path, "new", b"weights v2")
    registry = FakeModelRegistry(entry(path, sha), fail_reads=1)
    watch, loader = watcher(registry)
    assert not watch.poll(now=0.0) and loader.loaded == []
    assert watch.poll(now=1.0).active is not None


def test_a_model_replaced_while_it_loads_is_not_served(tmp_path: Path) -> None:
    first, first_sha = model_file(tmp_path, "first", b"weights v2")
    second, second_sha = model_file(tmp_path, "second", b"weights v3")
    registry, later = FakeModelRegistry(entry(first, first_sha)), Later()
    watch, _ = watcher(registry, start=later)
    watch.poll(now=0.0)
    registry.entry = entry(second, second_sha)  # promoted again before the first load finished
    watch.poll(now=1.0)
    later.run()
    assert not watch.poll(now=2.0)  # the first is dropped; the second starts loading now
    later.run()
    change = watch.poll(now=3.0)
    assert change.active is not None and change.active.entry.sha256 == second_sha


def test_a_shadow_is_loaded_its_fraction_follows_without_a_reload_and_it_can_be_cleared(tmp_path: Path) -> None:
    path, sha = model_file(tmp_path, "candidate", b"weights v9")
    registry = FakeModelRegistry(shadow=entry(path, sha, fraction=0.2))
    watch, loader = watcher(registry)
    change = watch.poll(now=0.0)
    assert change.shadow is not None and change.shadow.entry.fraction == 0.2 and change.active is None
    registry.shadow = entry(path, sha, fraction=0.5)
    change = watch.poll(now=1.0)
    assert change.shadow is not None and change.shadow.entry.fraction == 0.5 and len(loader.loaded) == 1
    registry.shadow = None
    change = watch.poll(now=2.0)
    assert change.shadow_cleared and change.shadow is None and watch.serving["shadow"] is None
    assert not watch.poll(now=3.0)


def test_at_start_the_active_entry_loads_synchronously_and_a_broken_one_falls_back(tmp_path: Path) -> None:
    good, good_sha = model_file(tmp_path, "good", b"weights v1")
    watch, _ = watcher(FakeModelRegistry(entry(good, good_sha)))
    loaded = watch.load_active_now(now=0.0)
    assert loaded is not None and loaded.info()["sha256"] == good_sha and loaded.width == 1.0
    assert not watch.poll(now=1.0)  # already serving it

    bad, bad_sha = model_file(tmp_path, "bad", b"broken weights")
    metrics = WorkerMetrics(CollectorRegistry())
    broken, loader = watcher(FakeModelRegistry(entry(bad, bad_sha)), metrics)
    assert broken.load_active_now(now=0.0) is None
    assert metrics.model_load_failures.labels(role="active")._value.get() == 1
    assert not broken.poll(now=1.0) and loader.loaded == [bad]  # not retried within the minute
    assert watcher(FakeModelRegistry())[0].load_active_now(now=0.0) is None  # nothing promoted
