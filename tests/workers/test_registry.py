"""The model registry on the real Redis of the local stack: promote, history, rollback, shadow, the shared folder."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack
from workers.registry import ModelRegistry, RegistryEntry, RegistryError

pytestmark = pytest.mark.integration

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


@pytest.fixture
def registry(client: redis.Redis, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(client, f"test-{uuid.uuid4().hex[:8]}", tmp_path / "models", clock=lambda: NOON)


def model(folder: Path, name: str, content: bytes, card: str | None = None) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    path.write_bytes(content)
    if card is not None:
        path.with_suffix(".md").write_text(card)
    return path, hashlib.sha256(content).hexdigest()


def test_promote_copies_the_file_and_its_card_and_writes_the_active_key(
    registry: ModelRegistry, client: redis.Redis, tmp_path: Path
) -> None:
    path, sha = model(tmp_path / "runs", "crack", b"weights v1", card="# Model card: crack")
    entry = registry.promote(path, who="ana", metrics={"f1": 0.88})
    copy = tmp_path / "models" / sha[:16] / "crack.pt"
    assert Path(entry.path) == copy.resolve() and copy.read_bytes() == b"weights v1"
    assert copy.with_suffix(".md").read_text() == "# Model card: crack"
    stored = json.loads(client.get(registry.active_key) or b"null")
    assert stored == {
        "path": str(copy.resolve()), "sha256": sha, "name": "crack", "metrics": {"f1": 0.88}, "who": "ana",
        "when": "2026-12-01T12:00:00+00:00", "fraction": None, "action": "promote",
    }  # fmt: skip
    assert registry.active() == entry and registry.history() == []
    assert not list((tmp_path / "models").glob(".tmp-*"))  # the temporary copy was renamed into place


def test_each_promotion_pushes_the_previous_model_and_rollback_restores_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    shas = []
    for version in range(3):
        path, sha = model(tmp_path / "runs", f"crack-v{version}", f"weights {version}".encode())
        registry.promote(path, who="ana")
        shas.append(sha)
    assert [e.sha256 for e in registry.history()] == [shas[1], shas[0]]  # newest first
    back = registry.rollback(who="ben")
    assert (back.sha256, back.who, back.action) == (shas[1], "ben", "rollback")
    assert registry.active() == back and [e.sha256 for e in registry.history()] == [shas[0]]
    assert registry.rollback(who="ben").sha256 == shas[0]
    with pytest.raises(RegistryError, match=r"nothing to roll back to.*inspector promote MODEL"):
        registry.rollback(who="ben")
    assert registry.active() is not None and registry.active().sha256 == shas[0]  # type: ignore[union-attr]


def test_promoting_the_active_model_again_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    path, _ = model(tmp_path / "runs", "crack", b"weights v1")
    registry.promote(path, who="ana")
    with pytest.raises(RegistryError, match="is the active model already"):
        registry.promote(path, who="ben")
    assert registry.history() == []


def test_concurrent_promotions_lose_no_previous_model(registry: ModelRegistry, tmp_path: Path) -> None:
    files = [model(tmp_path / "runs", f"m{i}", f"weights {i}".encode()) for i in range(8)]
    threads = [threading.Thread(target=registry.promote, args=(path,), kwargs={"who": "ci"}) for path, _ in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    active, history = registry.active(), registry.history(20)
    assert active is not None and len(history) == 7
    assert sorted([active.sha256, *(e.sha256 for e in history)]) == sorted(sha for _, sha in files)


def test_a_damaged_copy_in_the_shared_folder_is_replaced(registry: ModelRegistry, tmp_path: Path) -> None:
    path, sha = model(tmp_path / "runs", "crack", b"weights v1")
    target = tmp_path / "models" / sha[:16] / "crack.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a file")
    registry.promote(path, who="ana")
    assert target.read_bytes() == b"weights v1"


def test_shadow_entries_carry_their_fraction_and_end_when_cleared_or_promoted(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    current, _ = model(tmp_path / "runs", "current", b"weights v1")
    candidate, sha = model(tmp_path / "runs", "candidate", b"weights v2")
    registry.promote(current, who="ana")
    with pytest.raises(RegistryError, match=r"must be in \(0, 1\]"):
        registry.shadow(candidate, fraction=0.0, who="ana")
    shadow = registry.shadow(candidate, fraction=0.2, who="ana")
    assert registry.shadow_entry() == shadow and (shadow.fraction, shadow.sha256, shadow.action) == (0.2, sha, "shadow")
    assert registry.clear_shadow(who="ana") == shadow and registry.shadow_entry() is None
    assert registry.clear_shadow(who="ana") is None
    registry.shadow(candidate, fraction=0.2, who="ana")
    registry.promote(candidate, who="ana")  # the candidate wins: comparing it with itself would be pointless
    assert registry.shadow_entry() is None and registry.active().sha256 == sha  # type: ignore[union-attr]


def test_a_missing_file_and_a_damaged_key_are_errors_that_say_what_to_do(
    registry: ModelRegistry, client: redis.Redis, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        registry.promote(tmp_path / "nope.pt", who="ana")
    client.set(registry.active_key, b"{not json")
    with pytest.raises(RegistryError, match=r"model:active is not a registry entry.*inspector promote"):
        registry.active()


def test_disagreements_go_to_the_review_stream(registry: ModelRegistry, client: redis.Redis) -> None:
    registry.review_disagreement("p:result:rig-1:7", "OK", "NG", "ab" * 32)
    [(_, fields)] = client.xrange(registry.review_key)  # type: ignore[misc]
    assert {k.decode(): v.decode() for k, v in fields.items()} == {  # type: ignore[union-attr]
        "key": "p:result:rig-1:7", "verdict": "OK", "shadow_verdict": "NG", "shadow_sha": "ab" * 32,
    }  # fmt: skip


def test_entries_round_trip_through_json() -> None:
    entry = RegistryEntry("/m/a.pt", "0" * 64, "a", "ana", "2026-12-01T12:00:00+00:00", {"f1": 0.9}, 0.25, "shadow")
    assert RegistryEntry.from_json(entry.to_json()) == entry
