"""The review station on the real Redis: the queue, and what a decision writes (audit, Redis, label, metrics)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from inspector.config import Settings
from inspector.crack_data import CrackTileSet
from inspector.dataset import list_ids, read_sample
from tests.conftest import Stack
from tests.workers.review_support import Seeded, add_users, make_client, review_settings, seed_part, sign_in
from workers.evidence import EvidenceStore
from workers.review.decisions import read_audit

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
JSON = {"Accept": "application/json"}


@pytest.fixture
def settings(stack: Stack, tmp_path: Path) -> Settings:
    settings = review_settings(tmp_path, stack.redis_url, prefix=f"test-review-{uuid.uuid4().hex[:8]}")
    add_users(settings)
    return settings


@pytest.fixture
def client_redis(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis.url)
    yield client
    keys = list(client.scan_iter(f"{settings.redis.key_prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def store(settings: Settings) -> EvidenceStore:
    return EvidenceStore.from_settings(settings.evidence)


def outline_mask(part: Seeded, index: int) -> np.ndarray:
    assert part.evidence is not None
    shape = tuple(part.evidence["visible_shape"])
    canvas = np.zeros(shape, np.uint8)
    polygon = np.asarray(part.evidence["cracks"][index]["outline"], np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [polygon], 255)
    return canvas > 0


def decide(client: TestClient, token: str, part: Seeded, **form: str) -> dict:
    answer = client.post(f"/part/{part.camera_id}/{part.seq}/decision", data=form | {"csrf_token": token}, headers=JSON)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_queue_lists_ng_parts_newest_first_and_undecided_first(
    settings: Settings, client_redis: redis.Redis, store: EvidenceStore
) -> None:
    old = seed_part(client_redis, settings, store, "rig-1", 3, capture_ts_ns=1_765_000_000_000_000_000)
    seed_part(client_redis, settings, store, "rig-1", 4, crack=False)  # OK: not in the queue
    new = seed_part(client_redis, settings, store, "rig-2", 6, capture_ts_ns=1_765_000_100_000_000_000)
    registry = CollectorRegistry()
    client = make_client(settings, client_redis, registry)
    token = sign_in(client, "rita")
    queue = client.get("/api/queue").json()
    assert [(e["camera_id"], e["seq"]) for e in queue["entries"]] == [("rig-2", 6), ("rig-1", 3)]
    assert queue["backlog"] == 2 and registry.get_sample_value("inspector_review_backlog") == 2

    decide(client, token, new, kind="confirm")
    queue = client.get("/api/queue").json()
    assert [(e["seq"], e["decision"]) for e in queue["entries"]] == [(old.seq, None), (new.seq, "confirm")]
    client.get("/metrics")
    assert registry.get_sample_value("inspector_review_backlog") == 1

    client_redis.xadd(f"{settings.redis.key_prefix}:review:shadow",
                      {"key": f"{settings.redis.key_prefix}:result:rig-1:4", "verdict": "OK", "shadow_verdict": "NG",
                       "shadow_sha": "b" * 64})  # fmt: skip
    entries = client.get("/api/queue").json()["entries"]
    shadow = [e for e in entries if e["source"] == "shadow"]
    assert [(e["seq"], e["verdict"], e["shadow_verdict"]) for e in shadow] == [(4, "OK", "NG")]


def test_a_false_call_writes_audit_redis_an_empty_label_and_metrics(
    settings: Settings, client_redis: redis.Redis, store: EvidenceStore
) -> None:
    part = seed_part(client_redis, settings, store, "rig-1", 3)
    registry = CollectorRegistry()
    client = make_client(settings, client_redis, registry, clock=lambda: NOW)
    token = sign_in(client, "rita")
    assert decide(client, token, part, kind="false_call") == {"verdict": "OK", "label": "rig-1-3", "label_error": None}

    (line,) = read_audit(settings.review.audit_log)
    assert line["who"] == "rita" and line["when"] == "2027-01-15T08:00:00.000Z"
    assert line["capture"] == {"camera_id": "rig-1", "seq": 3, "part_id": "rig-1-P3"}
    assert line["before"]["source"] == "model" and line["before"]["verdict"] == "NG"
    assert line["after"]["kind"] == "false_call" and line["after"]["verdict"] == "OK"

    stored = json.loads(client_redis.get(f"{settings.redis.key_prefix}:decision:rig-1:3"))
    assert stored["kind"] == "false_call" and stored["who"] == "rita" and stored["model_sha256"] == "a" * 64
    assert 0 < client_redis.ttl(f"{settings.redis.key_prefix}:decision:rig-1:3") <= settings.redis.result_ttl_s

    sample = read_sample(settings.review.labels, "rig-1-3")
    assert sample.mask is not None and not sample.mask.any() and sample.meta.preset == "review"
    assert sample.infrared.dtype == np.uint16 and sample.visible.shape == (96, 128)
    assert json.loads((settings.review.labels / "rig-1-3.review.json").read_text())["decision"] == "false_call"
    assert list_ids(settings.review.labels) == ["rig-1-3"]
    assert len(CrackTileSet.load(settings.review.labels)) == 1

    value = registry.get_sample_value
    assert value("inspector_review_decisions_total", {"kind": "false_call"}) == 1
    assert value("inspector_review_decisions_total", {"kind": "confirm"}) == 0
    assert value("inspector_review_decided_total", {"model_sha": "a" * 64}) == 1
    assert value("inspector_review_false_calls_total", {"model_sha": "a" * 64}) == 1
    assert "inspector_review_false_calls_total" in client.get("/metrics").text


def test_confirm_fills_the_outlines_and_a_later_relabel_overwrites_it(
    settings: Settings, client_redis: redis.Redis, store: EvidenceStore
) -> None:
    part = seed_part(client_redis, settings, store, "rig-1", 3)
    assert part.evidence is not None and len(part.evidence["cracks"]) >= 2
    client = make_client(settings, client_redis)
    token = sign_in(client, "rita")
    decide(client, token, part, kind="confirm")
    confirmed = read_sample(settings.review.labels, "rig-1-3").mask
    assert confirmed is not None
    assert np.array_equal(confirmed, np.logical_or.reduce([outline_mask(part, i) for i in
                                                            range(len(part.evidence["cracks"]))]))  # fmt: skip

    marks = {f"crack.{i}": "not_crack" for i in range(1, len(part.evidence["cracks"]))}
    stroke = [{"points": [[10, 90], [40, 90]], "width_px": 3}]
    assert decide(client, token, part, kind="relabel", strokes=json.dumps(stroke), **marks)["verdict"] == "NG"
    relabelled = read_sample(settings.review.labels, "rig-1-3")
    assert relabelled.mask is not None
    assert np.array_equal(relabelled.mask[:85], outline_mask(part, 0)[:85])  # only crack 0 above the stroke
    assert relabelled.mask[89:92, 10:41].all()
    assert len(relabelled.meta.cracks) == 2  # crack 0 and the stroke

    _first, second = read_audit(settings.review.audit_log)
    assert second["before"]["kind"] == "confirm" and second["before"]["who"] == "rita"
    assert second["after"]["kind"] == "relabel" and second["after"]["strokes"] == stroke
    page = client.get("/part/rig-1/3").text
    assert "relabel → NG" in page and f"{part.evidence['cracks'][0]['length_mm']:.2f}" in page


def test_a_part_without_evidence_is_decided_without_a_label(
    settings: Settings, client_redis: redis.Redis, store: EvidenceStore
) -> None:
    part = seed_part(client_redis, settings, store, "rig-1", 3, evidence=False)
    registry = CollectorRegistry()
    client = make_client(settings, client_redis, registry)
    token = sign_in(client, "rita")
    answer = decide(client, token, part, kind="confirm")
    assert answer["label"] is None and "no evidence" in answer["label_error"]
    assert len(read_audit(settings.review.audit_log)) == 1
    assert registry.get_sample_value("inspector_review_label_failures_total") == 1
    assert not settings.review.labels.exists()


def test_bad_decisions_change_nothing(settings: Settings, client_redis: redis.Redis, store: EvidenceStore) -> None:
    part = seed_part(client_redis, settings, store, "rig-1", 3)
    client = make_client(settings, client_redis)
    token = sign_in(client, "rita")
    url = "/part/rig-1/3/decision"
    bad = [
        {"kind": "relabel", "crack.99": "real"},
        {"kind": "relabel", "strokes": "not json"},
        {"kind": "relabel", "strokes": json.dumps([{"points": [], "width_px": 3}])},
        {"kind": "perhaps"},
    ]
    for form in bad:
        assert client.post(url, data=form | {"csrf_token": token}, headers=JSON).status_code == 400, form
    assert client.post("/part/rig-1/999/decision", data={"kind": "confirm", "csrf_token": token}).status_code == 404
    assert client.post("/part/rig-1/x/decision", data={"kind": "confirm", "csrf_token": token}).status_code == 404
    assert not settings.review.audit_log.exists() and not settings.review.labels.exists()
    assert client_redis.get(f"{settings.redis.key_prefix}:decision:{part.camera_id}:{part.seq}") is None


def test_the_part_view_shows_layers_cracks_model_and_weights(
    settings: Settings, client_redis: redis.Redis, store: EvidenceStore
) -> None:
    part = seed_part(client_redis, settings, store, "rig-1", 3)
    client = make_client(settings, client_redis)
    sign_in(client, "vic")
    page = client.get("/part/rig-1/3").text
    for layer in ("visible.jpg", "registered.jpg", "probability.png"):
        assert f"/evidence/{part.path}/{layer}" in page
        assert client.get(f"/evidence/{part.path}/{layer}").status_code == 200
    assert "a" * 64 in page and "baseline" in page
    assert part.evidence is not None
    crack = part.evidence["cracks"][0]
    assert f"{crack['max_width_mm']:.3f}" in page and 'class="crack-outline" data-index="0"' in page
    assert "<kbd>v</kbd>" in page and "<kbd>i</kbd>" in page and "<kbd>c</kbd>" in page and "<kbd>o</kbd>" in page
    assert "deciding needs the reviewer role" in page
