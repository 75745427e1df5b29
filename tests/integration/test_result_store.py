"""The Redis result store on the real server: one result and one stream entry per capture, however often stored."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from inspector.results import RedisLayout, RedisResultStore, StoreError
from tests.conftest import Stack
from tests.inspector.test_results import inspection

pytestmark = pytest.mark.integration


def test_put_is_idempotent_and_writes_every_key(stack: Stack) -> None:
    from inspector.results import result_document

    client = redis.Redis.from_url(stack.redis_url)
    layout = RedisLayout(prefix=f"test-{uuid.uuid4().hex[:8]}", ttl_s=60, overlay_ttl_s=30)
    store = RedisResultStore(client, layout)
    try:
        docs = [result_document(inspection(), camera_id="rig-1", seq=s, capture_ts_ns=0, stored_ns=1) for s in range(5)]
        assert [store.put(d, overlay_jpeg=b"png") for d in docs] == [True] * 5
        assert [store.put(d, overlay_jpeg=b"png") for d in docs] == [False] * 5  # re-delivered: nothing changes
        assert client.xlen(layout.stream) == 5
        stored = json.loads(client.get(layout.result_key("rig-1", 3)))
        assert stored["seq"] == 3 and stored["verdict"] == "NG"
        assert 0 < client.ttl(layout.result_key("rig-1", 3)) <= 60
        assert 0 < client.ttl(layout.overlay_key("rig-1", 3)) <= 30
        assert client.get(layout.overlay_key("rig-1", 3)) == b"png"
        assert json.loads(client.get(layout.part_key("P-7")))["seq"] == 4  # the latest capture of the part
    finally:
        keys = list(client.scan_iter(f"{layout.prefix}:*"))
        if keys:
            client.delete(*keys)


def test_unreachable_redis_is_a_store_error() -> None:
    from inspector.results import result_document

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(StoreError, match="redis refused"):
        RedisResultStore(client).put(result_document(inspection(), camera_id="c", seq=1, capture_ts_ns=0, stored_ns=1))
