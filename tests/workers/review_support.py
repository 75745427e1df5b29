"""What the review station's tests share: settings in a temporary folder, seeded parts, signed-in clients."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from inspector.config import RedisSettings, ReviewSettings, Settings
from inspector.evidence import build_evidence
from inspector.model import create_model
from inspector.pipeline import inspect_pair
from inspector.results import RedisLayout, RedisResultStore, result_document
from workers.evidence import EvidenceStore
from workers.review import UserStore, create_app

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # tests only: production keeps the defaults
PASSWORDS = {"rita": "rita-reviews-parts", "vic": "vic-only-looks-here"}
CAPTURE_TS_NS = 1_765_000_000_000_000_000  # 2025-12-06 UTC
VISIBLE_SHAPE, IR_SHAPE = (96, 128), (24, 32)


def part_images(seq: int, crack: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A visible and an IR image (as ``tests.integration.frames.part``): a dark 4-px crack when ``crack``."""
    rng = np.random.default_rng(seq)
    visible = rng.normal(150, 4, VISIBLE_SHAPE).clip(0, 255).astype(np.uint8)
    infrared = rng.normal(3000, 5, IR_SHAPE).clip(0, 65535).astype(np.uint16)
    if crack:
        visible[10:86, 60:64] = 40
        infrared[3:21, 15] = 3300
    return visible, infrared


def review_settings(tmp: Path, redis_url: str = "redis://127.0.0.1:6379/0", prefix: str = "rv") -> Settings:
    """Settings whose review and evidence files all live under ``tmp``."""
    return Settings(
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        evidence={"root": tmp / "evidence"},  # type: ignore[arg-type]
        review=ReviewSettings(
            users_file=tmp / "review" / "users.yaml",
            labels=tmp / "review" / "labels",
            audit_log=tmp / "review" / "audit.jsonl",
            queue_size=50,
        ),
    )


def add_users(settings: Settings) -> UserStore:
    """``rita`` (reviewer) and ``vic`` (viewer), hashed with cheap argon2 parameters (verifying is fast too)."""
    users = UserStore(settings.review.users_file, FAST_HASHER)
    users.add("rita", "reviewer", PASSWORDS["rita"])
    users.add("vic", "viewer", PASSWORDS["vic"])
    return users


@dataclass
class Seeded:
    """A part stored as the inspection worker stores it."""

    camera_id: str
    seq: int
    document: dict[str, Any]
    evidence: dict[str, Any] | None  # evidence.json
    path: str | None  # relative evidence folder


def seed_part(
    client: Any,
    settings: Settings,
    store: EvidenceStore,
    camera_id: str,
    seq: int,
    *,
    crack: bool = True,
    evidence: bool = True,
    capture_ts_ns: int = CAPTURE_TS_NS,
    sha256: str = "a" * 64,
) -> Seeded:
    """Inspect a synthetic part with the baseline model; store its result (and evidence) like a worker."""
    visible, infrared = part_images(seq, crack)
    model = create_model("baseline")
    result, probability = inspect_pair(visible, infrared, None, 0.05, model, part_id=f"{camera_id}-P{seq}")
    result = dataclasses.replace(result, model={**result.model, "sha256": sha256})
    document = result_document(result, camera_id=camera_id, seq=seq, capture_ts_ns=capture_ts_ns,
                               stored_ns=capture_ts_ns + 10**6)  # fmt: skip
    meta, path = None, None
    if evidence:
        bundle = build_evidence(result, probability, visible, infrared, ir_to_visible=None, camera_id=camera_id,
                                seq=seq, capture_ts_ns=capture_ts_ns, kept="ng")  # fmt: skip
        store.write(bundle)
        path, meta = bundle.path, json.loads(bundle.files["evidence.json"])
        document["evidence"] = path
    layout = RedisLayout(prefix=settings.redis.key_prefix)
    if hasattr(client, "register_script"):  # a real Redis: the worker's own store
        RedisResultStore(client, layout).put(document)
    else:
        client.set(layout.result_key(camera_id, seq), json.dumps(document))
        client.xadd(layout.stream, {"key": layout.result_key(camera_id, seq), "verdict": document["verdict"]})
    return Seeded(camera_id, seq, document, meta, path)


def make_client(settings: Settings, redis: Any, registry: CollectorRegistry | None = None, **kwargs: Any) -> TestClient:
    """A TestClient on a fresh app (evidence store from settings, fixed session secret)."""
    kwargs.setdefault("users", UserStore(settings.review.users_file, FAST_HASHER))
    app = create_app(
        settings, redis=redis, evidence=EvidenceStore.from_settings(settings.evidence),
        registry=registry or CollectorRegistry(), clock=kwargs.pop("clock", time.time), secret="test-secret",
        **kwargs,
    )  # fmt: skip
    return TestClient(app, follow_redirects=False)


def csrf_of(html: str) -> str:
    """The CSRF token in a rendered page."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, name: str) -> str:
    """Sign ``name`` in; returns the session's CSRF token."""
    token = csrf_of(client.get("/signin").text)
    answer = client.post("/signin", data={"username": name, "password": PASSWORDS[name], "csrf_token": token})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)
