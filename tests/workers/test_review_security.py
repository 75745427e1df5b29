"""The review station refuses what it must: no session, a viewer deciding, no CSRF token, paths out of the evidence.

Unit tests on FastAPI's TestClient with an in-memory Redis (``PlainRedis``); the decision flow on the
real Redis is in tests/integration/test_review_station.py.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from inspector.config import Settings
from tests.workers.fakes import PlainRedis
from tests.workers.review_support import Seeded, add_users, csrf_of, make_client, review_settings, seed_part, sign_in
from workers.evidence import EvidenceStore

DECISION = "/part/rig-1/3/decision"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = review_settings(tmp_path)
    add_users(settings)
    return settings


@pytest.fixture
def redis() -> PlainRedis:
    return PlainRedis()


@pytest.fixture
def seeded(settings: Settings, redis: PlainRedis) -> Seeded:
    return seed_part(redis, settings, EvidenceStore.from_settings(settings.evidence), "rig-1", 3)


@pytest.fixture
def client(settings: Settings, redis: PlainRedis, seeded: Seeded) -> TestClient:
    return make_client(settings, redis)


def nothing_written(settings: Settings, redis: PlainRedis) -> bool:
    """No audit line, no decision key, no label: a refused write changed nothing."""
    decisions = [k for k in redis.strings if ":decision:" in k]
    return not settings.review.audit_log.exists() and not decisions and not settings.review.labels.exists()


def post_routes(client: TestClient) -> list[str]:
    return sorted(r.path for r in client.app.routes if isinstance(r, APIRoute) and "POST" in r.methods)  # type: ignore[attr-defined]


def test_the_write_endpoints_are_the_ones_these_tests_cover(client: TestClient) -> None:
    assert post_routes(client) == ["/part/{camera_id}/{seq}/decision", "/signin", "/signout"]


@pytest.mark.parametrize("path", [DECISION, "/signout"])
def test_writes_without_a_session_are_refused(
    client: TestClient, settings: Settings, redis: PlainRedis, path: str
) -> None:
    token = csrf_of(client.get("/signin").text)  # an anonymous session with a valid token is still no sign-in
    answer = client.post(path, data={"kind": "false_call", "csrf_token": token})
    assert answer.status_code == 401
    assert nothing_written(settings, redis)


def test_a_decision_by_a_viewer_is_refused(client: TestClient, settings: Settings, redis: PlainRedis) -> None:
    token = sign_in(client, "vic")
    for kind in ("confirm", "false_call", "relabel"):
        answer = client.post(DECISION, data={"kind": kind, "csrf_token": token})
        assert answer.status_code == 403 and "only reviewers" in answer.json()["detail"]
    assert "False call" not in client.get("/part/rig-1/3").text  # no decision forms for a viewer
    assert nothing_written(settings, redis)


@pytest.mark.parametrize("token", [None, "", "forged-token-value"])
def test_a_decision_without_the_sessions_csrf_token_is_refused(
    client: TestClient, settings: Settings, redis: PlainRedis, token: str | None
) -> None:
    sign_in(client, "rita")
    data = {"kind": "false_call"} | ({"csrf_token": token} if token is not None else {})
    answer = client.post(DECISION, data=data)
    assert answer.status_code == 403 and "CSRF" in answer.json()["detail"]
    assert nothing_written(settings, redis)


def test_another_sessions_token_is_refused(settings: Settings, redis: PlainRedis, seeded: Seeded) -> None:
    alice, mallory = make_client(settings, redis), make_client(settings, redis)
    sign_in(alice, "rita")
    stolen = sign_in(mallory, "rita")
    assert alice.post(DECISION, data={"kind": "false_call", "csrf_token": stolen}).status_code == 403
    assert nothing_written(settings, redis)


def test_the_csrf_header_is_accepted_like_the_form_field(client: TestClient, redis: PlainRedis) -> None:
    token = sign_in(client, "rita")
    answer = client.post(DECISION, data={"kind": "false_call"}, headers={"X-CSRF-Token": token,
                                                                          "Accept": "application/json"})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["verdict"] == "OK"
    assert "rv:decision:rig-1:3" in redis.strings


def test_sign_in_and_sign_out_need_the_csrf_token(client: TestClient) -> None:
    client.get("/signin")
    refused = client.post("/signin", data={"username": "rita", "password": "rita-reviews-parts"})
    assert refused.status_code == 403 and "inspector_review" not in refused.headers.get("set-cookie", "")
    token = sign_in(client, "rita")
    assert client.post("/signout", data={}).status_code == 403
    assert client.get("/api/queue").status_code == 200  # still signed in
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    assert client.get("/api/queue").status_code == 401


def test_a_copied_cookie_is_refused_after_sign_out(settings: Settings, redis: PlainRedis) -> None:
    now = [1000.0]
    browser, thief = make_client(settings, redis, clock=lambda: now[0]), make_client(settings, redis)
    token = sign_in(browser, "rita")
    thief.cookies.update(browser.cookies)
    assert thief.get("/api/queue").status_code == 200
    now[0] += 1
    assert browser.post("/signout", data={"csrf_token": token}).status_code == 303
    assert thief.get("/api/queue").status_code == 401
    now[0] += 1
    sign_in(browser, "rita")  # a new session after the sign-out works
    assert browser.get("/api/queue").status_code == 200


def test_wrong_passwords_are_refused_then_throttled(settings: Settings, redis: PlainRedis) -> None:
    now = [1000.0]
    client = make_client(settings, redis, clock=lambda: now[0])
    token = csrf_of(client.get("/signin").text)
    for _ in range(5):
        wrong = client.post("/signin", data={"username": "rita", "password": "guess-guess", "csrf_token": token})
        assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    right = {"username": "rita", "password": "rita-reviews-parts", "csrf_token": token}
    assert client.post("/signin", data=right).status_code == 429  # locked even with the right password
    now[0] += 61
    assert client.post("/signin", data=right).status_code == 303


@pytest.mark.parametrize("path", ["/", "/part/rig-1/3"])
def test_pages_without_a_session_redirect_to_sign_in(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 303 and answer.headers["location"] == f"/signin?next={path}"


@pytest.mark.parametrize("path", ["/api/queue", "/evidence/2025-12-06/rig-1/3/visible.jpg"])
def test_data_without_a_session_is_refused(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401


def test_probes_need_no_session(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example"])
def test_sign_in_never_redirects_off_site(client: TestClient, target: str) -> None:
    page = client.get("/signin", params={"next": target}).text
    data = {"username": "rita", "password": "rita-reviews-parts", "csrf_token": csrf_of(page), "next": target}
    answer = client.post("/signin", data=data)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_sign_in_returns_to_the_page_asked_for(client: TestClient) -> None:
    answer = client.get("/part/rig-1/3")
    page = client.get(answer.headers["location"]).text
    assert 'name="next" value="/part/rig-1/3"' in page
    data = {"username": "rita", "password": "rita-reviews-parts", "csrf_token": csrf_of(page), "next": "/part/rig-1/3"}
    assert client.post("/signin", data=data).headers["location"] == "/part/rig-1/3"


def test_a_removed_users_session_ends(client: TestClient, settings: Settings) -> None:
    from workers.review.users import UserStore

    sign_in(client, "vic")
    assert client.get("/api/queue").status_code == 200
    UserStore(settings.review.users_file).remove("vic")
    assert client.get("/api/queue").status_code == 401


def test_session_cookie_flags(settings: Settings, redis: PlainRedis) -> None:
    client = make_client(settings, redis)
    cookie = client.get("/signin").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    secure = settings.model_copy(update={"review": settings.review.model_copy(update={"secure_cookies": True})})
    https = make_client(secure, redis)
    assert "; secure" in https.get("/signin").headers["set-cookie"].lower()


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    answer = client.get("/signin")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"


# -- evidence paths ----------------------------------------------------------------------------------


def test_an_evidence_image_is_served_to_a_viewer(client: TestClient, seeded: Seeded) -> None:
    sign_in(client, "vic")
    answer = client.get(f"/evidence/{seeded.path}/visible.jpg")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert answer.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "url",
    [
        "/evidence/2025-12-06/rig-1/3/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret/visible.jpg",
        "/evidence/2025-12-06/rig-1/3/..%2f..%2f..%2f..%2fsecret/visible.jpg",
        "/evidence/2025-12-06/%2e%2e/%2e%2e/secret/visible.jpg",
        "/evidence/..%2F..%2Fsecret/visible.jpg",
        "/evidence/%2e%2e/secret/visible.jpg",
        "/evidence/%2e%2e%5csecret/visible.jpg",
        "/evidence/{secret}/visible.jpg",  # an absolute path: /evidence//tmp/.../secret/visible.jpg
        "/evidence/{secret_encoded}/visible.jpg",
        "/evidence/2025-12-06/rig-1/3/evidence.json",  # not an image the station serves
        "/evidence/2025-12-06/rig-1/3/%00visible.jpg",
        "/evidence/2025-12-06%00/rig-1/3/visible.jpg",
        "/evidence/visible.jpg",
    ],
)
def test_evidence_paths_that_leave_the_root_are_refused(client: TestClient, settings: Settings, url: str) -> None:
    secret = settings.evidence.root.parent / "secret"
    secret.mkdir(exist_ok=True)
    (secret / "visible.jpg").write_bytes(b"\xff\xd8 outside the evidence root")
    sign_in(client, "rita")
    answer = client.get(url.format(secret=secret, secret_encoded=quote(str(secret), safe="")))
    assert answer.status_code in (400, 404), answer.status_code
    assert b"outside the evidence root" not in answer.content


def raw_get(client: TestClient, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (httpx and browsers would remove ``..`` segments first), with the session."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    sent: list[dict] = []
    requested: list[bool] = []

    async def receive() -> dict:
        if not requested:
            requested.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize(
    "path", ["/evidence/2025-12-06/../../visible.jpg", "/evidence/2025-12-06/rig-1/3/../../../../secret/visible.jpg"]
)
def test_a_literal_dot_dot_in_the_url_is_refused(settings: Settings, client: TestClient, path: str) -> None:
    (settings.evidence.root.parent / "visible.jpg").write_bytes(b"\xff\xd8 outside the evidence root")
    (settings.evidence.root.parent / "secret").mkdir()
    (settings.evidence.root.parent / "secret" / "visible.jpg").write_bytes(b"\xff\xd8 outside the evidence root")
    sign_in(client, "rita")
    assert raw_get(client, "/evidence/2025-12-06/rig-1/3/visible.jpg")[0] == 200  # the raw request works
    status, body = raw_get(client, path)
    assert status in (400, 404) and b"outside the evidence root" not in body


def test_a_symlink_out_of_the_root_is_refused(settings: Settings, client: TestClient, redis: PlainRedis) -> None:
    outside = settings.evidence.root.parent / "elsewhere"
    outside.mkdir()
    (outside / "visible.jpg").write_bytes(b"\xff\xd8 outside the evidence root")
    day = settings.evidence.root / "2025-12-06" / "rig-9"
    day.mkdir(parents=True)
    os.symlink(outside, day / "1")
    sign_in(client, "rita")
    answer = client.get("/evidence/2025-12-06/rig-9/1/visible.jpg")
    assert answer.status_code == 404 and b"outside the evidence root" not in answer.content
