"""The evidence folder: atomic writes, re-deliveries, paths that would leave the root, retention; and the worker's use.

The worker runs on the in-memory Kafka and Redis stand-ins (as in ``test_inspection.py``) with a real
evidence folder under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspector.config import EvidenceSettings, Settings, TopicSettings, WorkerSettings
from inspector.evidence import EvidenceBundle
from inspector.model import create_model
from tests.workers.fakes import FakeKafkaConsumer, FakeProducer, FakeResultStore, FullDiskEvidenceStore
from tests.workers.test_inspection import DLQ, IR, VIS, capture
from workers.evidence import STALE_TEMP_S, EvidenceError, EvidenceKeeper, EvidenceStore
from workers.inspection import InspectionWorker
from workers.metrics import WorkerMetrics

DAY = 86400.0
NOW = datetime(2025, 12, 20, 12, tzinfo=UTC).timestamp()


def bundle(path: str = "2025-12-06/rig-1/42", payload: bytes = b"v1", size: int = 0) -> EvidenceBundle:
    files = {"visible.jpg": payload + b"\0" * size, "evidence.json": b'{"schema": "inspector.evidence/1"}'}
    return EvidenceBundle(path, files, "ng")


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    return EvidenceStore(tmp_path / "evidence", max_age_days=7, max_bytes=10**9)


# -- writing ---------------------------------------------------------------------------------------


def test_a_bundle_is_written_whole_and_no_temporary_folder_is_left(store: EvidenceStore) -> None:
    assert store.write(bundle()) is True
    folder = store.root / "2025-12-06" / "rig-1" / "42"
    assert sorted(p.name for p in folder.iterdir()) == ["evidence.json", "visible.jpg"]
    assert (folder / "visible.jpg").read_bytes() == b"v1"
    assert [p.name for p in store.root.iterdir()] == ["2025-12-06"]  # no .tmp-* left


def test_a_write_that_fails_half_way_leaves_nothing(store: EvidenceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_bytes

    def fail_on_json(self: Path, data: bytes) -> int:
        if self.name == "evidence.json":
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_json)
    with pytest.raises(OSError, match="No space"):
        store.write(bundle())
    assert list(store.root.iterdir()) == []  # neither the folder nor half of it, nor the temporary copy


def test_a_re_delivered_capture_keeps_its_first_folder(store: EvidenceStore) -> None:
    assert store.write(bundle(payload=b"first")) is True
    assert store.write(bundle(payload=b"second")) is False
    folder = store.root / "2025-12-06" / "rig-1" / "42"
    assert (folder / "visible.jpg").read_bytes() == b"first"
    assert [p.name for p in store.root.iterdir()] == ["2025-12-06"]


def test_a_folder_written_by_another_worker_meanwhile_wins(
    store: EvidenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.rename

    def other_worker_first(src: str | Path, dst: str | Path) -> None:
        Path(dst).mkdir(parents=True)
        (Path(dst) / "visible.jpg").write_bytes(b"theirs")
        real(src, dst)

    monkeypatch.setattr(os, "rename", other_worker_first)
    assert store.write(bundle(payload=b"mine")) is False
    assert (store.root / "2025-12-06" / "rig-1" / "42" / "visible.jpg").read_bytes() == b"theirs"
    assert [p.name for p in store.root.iterdir()] == ["2025-12-06"]  # our temporary copy is gone


# -- the one way in --------------------------------------------------------------------------------


def test_resolve_gives_paths_inside_the_root(store: EvidenceStore) -> None:
    assert store.resolve("2025-12-06/rig-1/42", "visible.jpg") == store.root / "2025-12-06/rig-1/42/visible.jpg"
    assert store.resolve("2025-12-06/./rig-1/42") == store.root / "2025-12-06/rig-1/42"


@pytest.mark.parametrize(
    ("relative", "name", "why"),
    [
        ("../x", None, "'..'"),
        ("2025-12-06/../../x", None, "'..'"),
        ("/etc/passwd", None, "absolute"),
        ("\\etc", None, "absolute"),
        ("", None, "empty"),
        (".", None, "the root itself"),
        ("2025-12-06/rig\x00-1/1", None, "NUL"),
        ("2025-12-06/rig-1/1", "../../x", "plain file name"),
        ("2025-12-06/rig-1/1", "a/b", "plain file name"),
        ("2025-12-06/rig-1/1", "..", "plain file name"),
    ],
)
def test_resolve_refuses_paths_that_leave_the_root(
    store: EvidenceStore, relative: str, name: str | None, why: str
) -> None:
    with pytest.raises(EvidenceError, match="refused") as refused:
        store.resolve(relative, name)
    assert why in str(refused.value)


def test_a_symlink_out_of_the_root_is_refused_for_reading_and_writing(store: EvidenceStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "42").mkdir(parents=True)
    (outside / "42" / "visible.jpg").write_bytes(b"secret")
    (store.root / "2025-12-06").mkdir()
    (store.root / "2025-12-06" / "rig-1").symlink_to(outside)
    with pytest.raises(EvidenceError, match="outside"):
        store.resolve("2025-12-06/rig-1/42", "visible.jpg")
    with pytest.raises(EvidenceError, match="outside"):
        store.write(bundle("2025-12-06/rig-1/43"))
    assert sorted(p.name for p in outside.iterdir()) == ["42"]  # nothing written through the link


def test_a_bundle_with_a_bad_file_name_is_refused(store: EvidenceStore) -> None:
    with pytest.raises(EvidenceError, match="plain file name"):
        store.write(EvidenceBundle("2025-12-06/rig-1/1", {"../../evil": b"x"}))
    assert list(store.root.iterdir()) == []


# -- retention -------------------------------------------------------------------------------------


def put(store: EvidenceStore, path: str, mtime: float, size: int = 1000) -> Path:
    store.write(bundle(path, size=size))
    folder = store.root / path
    os.utime(folder, (mtime, mtime))
    return folder


def test_prune_deletes_by_capture_day_then_by_mtime(store: EvidenceStore) -> None:
    old_day = put(store, "2025-12-01/rig-1/1", NOW)  # an old day, however fresh the folder: a replay of old captures
    cutoff_day_old = put(store, "2025-12-13/rig-1/2", NOW - 7.5 * DAY)  # the cutoff's day: by mtime, older
    cutoff_day_new = put(store, "2025-12-13/rig-1/3", NOW - 6.9 * DAY)  # the cutoff's day: by mtime, younger
    recent = put(store, "2025-12-19/rig-2/4", NOW - DAY)
    report = store.prune(NOW)
    assert not old_day.exists() and not cutoff_day_old.exists()
    assert cutoff_day_new.exists() and recent.exists()
    assert (report.expired, report.evicted, report.captures) == (2, 0, 2)
    assert report.freed_bytes == 2 * (1002 + 34) and report.total_bytes == 2 * (1002 + 34)
    assert not (store.root / "2025-12-01").exists()  # the empty day folder went too


def test_prune_deletes_the_oldest_until_the_folder_fits(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence", max_age_days=30, max_bytes=2500)
    newest_day_old_mtime = put(store, "2025-12-19/rig-1/1", NOW - 3 * DAY)
    oldest = put(store, "2025-12-18/rig-1/2", NOW - 1 * DAY)  # older day, younger mtime: the day decides first
    middle = put(store, "2025-12-19/rig-1/3", NOW - 2 * DAY)
    newest = put(store, "2025-12-19/rig-2/4", NOW - 1 * DAY)
    report = store.prune(NOW)
    assert not oldest.exists() and not newest_day_old_mtime.exists()
    assert middle.exists() and newest.exists()
    assert (report.expired, report.evicted, report.captures) == (0, 2, 2) and report.total_bytes <= 2500
    assert store.size_bytes() == report.total_bytes
    assert not (store.root / "2025-12-18").exists()


def test_prune_removes_stale_temporary_folders_only(store: EvidenceStore) -> None:
    stale, fresh = store.root / ".tmp-dead", store.root / ".tmp-writing"
    for folder, age in ((stale, STALE_TEMP_S + 60), (fresh, 5)):
        folder.mkdir()
        (folder / "visible.jpg").write_bytes(b"x")
        os.utime(folder, (NOW - age, NOW - age))
    assert store.prune(NOW).stale_temps == 1
    assert not stale.exists() and fresh.exists()


def test_prune_tolerates_folders_deleted_by_another_worker(
    store: EvidenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = put(store, "2025-12-01/rig-1/1", NOW - 30 * DAY)
    kept = put(store, "2025-12-02/rig-1/2", NOW - 30 * DAY)
    scan = store._scan

    def scan_then_race() -> list:  # type: ignore[type-arg]
        found = scan()
        shutil.rmtree(gone)  # another worker's prune got there first
        (kept / "visible.jpg").unlink()  # and is half-way through this one
        return found

    monkeypatch.setattr(store, "_scan", scan_then_race)
    report = store.prune(NOW)
    assert report.expired == 2 and report.freed_bytes == 1002 + 34  # only what this prune deleted
    assert list(store.root.iterdir()) == []


def test_prune_never_follows_a_symlink_out_of_the_root(store: EvidenceStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    (outside / "1" / "visible.jpg").write_bytes(b"precious")
    (store.root / "2025-01-01").mkdir()
    (store.root / "2025-01-01" / "rig-1").symlink_to(outside)
    (store.root / "not-a-day").mkdir()
    store.prune(NOW)
    assert (outside / "1" / "visible.jpg").read_bytes() == b"precious" and (store.root / "not-a-day").exists()


# -- the worker ------------------------------------------------------------------------------------


def worker_with(
    evidence: object, ok_fraction: float = 0.0, prune_every_s: float = 60.0
) -> tuple[InspectionWorker, FakeResultStore, CollectorRegistry]:
    settings = Settings(
        topics=TopicSettings(visible=VIS, infrared=IR, dlq=DLQ, partitions=2),
        worker=WorkerSettings(model="baseline", store_retry_s=0.01),
        evidence=EvidenceSettings(ok_fraction=ok_fraction, prune_every_s=prune_every_s),
    )
    records = [r for seq in range(1, 7) for r in capture("rig-a", seq)]  # seqs 3 and 6 are NG
    raw, store, registry = FakeKafkaConsumer({VIS: 2, IR: 2}, records), FakeResultStore(), CollectorRegistry()
    worker = InspectionWorker(
        settings, create_model("baseline"), store, metrics=WorkerMetrics(registry), consumer=raw,  # type: ignore[arg-type]
        producer=FakeProducer(), evidence=evidence,  # type: ignore[arg-type]
    )  # fmt: skip
    worker.drain_s = 0.5
    return worker, store, registry


def test_the_worker_keeps_evidence_of_ng_parts_and_points_the_result_at_it(tmp_path: Path) -> None:
    evidence = EvidenceStore(tmp_path / "evidence", max_age_days=7, max_bytes=10**9)
    worker, store, registry = worker_with(evidence)
    report = worker.run(timeout=20, count=6)
    assert report.stored == 6
    ng = {key: doc for key, doc in store.results.items() if doc["verdict"] == "NG"}
    assert sorted(ng) == [("rig-a", 3), ("rig-a", 6)]
    for (camera, seq), doc in store.results.items():
        if (camera, seq) not in ng:
            assert "evidence" not in doc
            continue
        folder = evidence.resolve(doc["evidence"])
        assert doc["evidence"].endswith(f"/rig-a/{seq}") and folder.is_dir()
        meta = json.loads((folder / "evidence.json").read_text())
        assert (meta["camera_id"], meta["seq"], meta["verdict"], meta["kept"]) == ("rig-a", seq, "NG", "ng")
        assert {p.name for p in folder.iterdir()} >= {"visible.png", "infrared.png", "registered.jpg"}  # PNG frames
    assert registry.get_sample_value("inspector_worker_evidence_written_total", {"kept": "ng"}) == 2
    assert registry.get_sample_value("inspector_worker_evidence_written_total", {"kept": "ok-sample"}) == 0
    assert (registry.get_sample_value("inspector_worker_evidence_written_bytes_total") or 0) > 1000
    assert registry.get_sample_value("inspector_worker_evidence_failures_total") == 0


def test_a_result_is_stored_without_evidence_when_the_write_fails(tmp_path: Path) -> None:
    full = FullDiskEvidenceStore(EvidenceStore(tmp_path / "evidence", max_age_days=7, max_bytes=10**9))
    worker, store, registry = worker_with(full)
    report = worker.run(timeout=20, count=6)
    assert report.stored == 6 and full.refused == 2  # both NG parts tried, none lost
    assert all("evidence" not in doc for doc in store.results.values())
    assert [doc["verdict"] for doc in store.results.values()].count("NG") == 2
    assert registry.get_sample_value("inspector_worker_evidence_failures_total") == 2
    assert registry.get_sample_value("inspector_worker_evidence_written_total", {"kept": "ng"}) == 0


def test_the_worker_prunes_on_its_period_off_the_loop(tmp_path: Path) -> None:
    evidence = EvidenceStore(tmp_path / "evidence", max_age_days=7, max_bytes=10**9)
    old = put(evidence, "2020-01-01/rig-a/1", time.time() - 400 * DAY)
    worker, _, registry = worker_with(evidence, prune_every_s=3600)
    worker.step()
    assert worker.evidence is not None and worker.evidence.pruning is not None
    worker.evidence.pruning.join(10)
    assert (
        not old.exists() and registry.get_sample_value("inspector_worker_evidence_pruned_total", {"reason": "age"}) == 1
    )
    first = worker.evidence.pruning
    worker.step()
    assert worker.evidence.pruning is first  # not due again for an hour


def test_the_keeper_points_a_retried_result_at_evidence_written_later(tmp_path: Path) -> None:
    full = FullDiskEvidenceStore(EvidenceStore(tmp_path / "evidence", max_age_days=7, max_bytes=10**9), failures=1)
    keeper = EvidenceKeeper(full)  # type: ignore[arg-type]
    document = {"camera_id": "rig-1", "seq": 42, "evidence": "2025-12-06/rig-1/42"}
    assert keeper.keep(document, bundle()) is False and "evidence" not in document
    assert keeper.keep(document, bundle()) is True and document["evidence"] == "2025-12-06/rig-1/42"  # the retry
