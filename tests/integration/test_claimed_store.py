"""The claimed store on the real server: one document and one stream entry per Kafka record, however often written."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.conftest import Stack
from workers.stores import Claim, ClaimedStore

pytestmark = pytest.mark.integration


def test_a_record_is_written_once_and_a_new_record_for_the_same_id_overwrites(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    store = ClaimedStore(client, f"test-{uuid.uuid4().hex[:8]}", ttl_s=60)
    try:
        first = [Claim(f"requests/0/{i}", f"{store.prefix}:doc:r{i}", f"r{i}", f'{{"n": {i}}}') for i in range(3)]
        assert store.put_many(first) == [True, True, True]
        assert store.put_many(first) == [False, False, False]  # re-delivered: nothing changes
        assert client.xlen(store.stream) == 3
        again = Claim("requests/1/7", f"{store.prefix}:doc:r1", "r1", '{"n": "new"}')  # the same id sent again
        assert store.put_many([again]) == [True]
        assert client.get(f"{store.prefix}:doc:r1") == b'{"n": "new"}'
        assert [e[b"id"] for _, e in client.xrange(store.stream)] == [b"r0", b"r1", b"r2", b"r1"]
        assert 0 < client.ttl(f"{store.prefix}:doc:r0") <= 60 and 0 < client.ttl(store.claim_key("requests/0/0")) <= 60
        assert store.put_many([]) == []
    finally:
        keys = list(client.scan_iter(f"{store.prefix}:*"))
        if keys:
            client.delete(*keys)
