"""Redis round trip on the real server."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_pipeline_round_trip_with_ttl_and_stream(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    results = {
        f"{prefix}:result:cam-01:{seq}": {"seq": seq, "verdict": "NG" if seq % 3 == 0 else "OK"} for seq in range(50)
    }
    try:
        pipe = client.pipeline(transaction=True)
        for key, value in results.items():
            pipe.set(key, json.dumps(value), ex=60)
            pipe.xadd(f"{prefix}:stream", {"key": key}, maxlen=1000, approximate=True)
        replies = pipe.execute()
        assert len(replies) == 2 * len(results)

        pipe = client.pipeline(transaction=False)
        for key in results:
            pipe.get(key)
            pipe.ttl(key)
        fetched = pipe.execute()
        values, ttls = fetched[0::2], fetched[1::2]
        assert [json.loads(v) for v in values] == list(results.values())
        assert all(0 < t <= 60 for t in ttls)
        entries = client.xrange(f"{prefix}:stream")
        assert [e[1]["key"] for e in entries] == list(results)
    finally:
        client.delete(*results, f"{prefix}:stream")
        client.close()
