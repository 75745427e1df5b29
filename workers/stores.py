"""Redis documents written once per Kafka record: the sink of the medical and VQA workers.

A record read twice (a worker killed before its commit, a rebalance) must not store its document a
second time nor announce it twice. Each write therefore first claims the record's identity
(``topic/partition/offset``) with ``SET NX``; only the first claim writes the document and appends
one entry to the store's stream, which downstream readers follow (``XREAD``)::

    store = ClaimedStore(client, prefix="vqa:answer", ttl_s=86_400)
    store.put_many([Claim("vqa.requests/0/41", "vqa:answer:r-17", "r-17", json_text)])   # [True]
    store.put_many([Claim("vqa.requests/0/41", "vqa:answer:r-17", "r-17", json_text)])   # [False]

Redis layout under ``prefix``:

    {prefix}:stream                          one entry per first write: ``id`` (request or study), ``key``
    {prefix}:claim:{topic}/{partition}/{offset}  "1", kept as long as the document
    the document's own key                   the JSON text, with a TTL

A new record for the same id (a study sent again) is a new claim and overwrites the document: the
claim is per delivery, not per id. All three writes run in one Lua script, so a refused write
leaves nothing half-done; the script is given every key it touches (Redis ACLs on ``~{prefix}:*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Claim", "ClaimedStore"]

STREAM_MAXLEN = 100_000

# KEYS: claim, document, stream.  ARGV: document text, ttl seconds, stream maxlen, id.
_CLAIM_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[4], 'key', KEYS[2])
return 1
"""


@dataclass(frozen=True)
class Claim:
    """One document to write for one Kafka record.

    Attributes:
        record: The record's identity, ``topic/partition/offset``.
        key: The document's Redis key.
        id: The request or study the document answers (the stream entry's ``id``).
        text: The document (JSON text).

    """

    record: str
    key: str
    id: str
    text: str


class ClaimedStore:
    """Documents in Redis, each written once per Kafka record (see the module docs).

    Args:
        client: A ``redis.Redis``.
        prefix: Prefix of the stream and claim keys.
        ttl_s: Seconds a document (and its claim) is kept.

    """

    def __init__(self, client: Any, prefix: str, ttl_s: int) -> None:
        self.client, self.prefix, self.ttl_s = client, prefix, ttl_s
        self._claim = client.register_script(_CLAIM_SCRIPT)

    @property
    def stream(self) -> str:
        """``{prefix}:stream``."""
        return f"{self.prefix}:stream"

    def claim_key(self, record: str) -> str:
        """``{prefix}:claim:{record}``."""
        return f"{self.prefix}:claim:{record}"

    def write(self, claims: Sequence[Claim]) -> list[bool]:
        """The sink of :class:`~workers.kafka.checkpoint.Checkpoint`: :meth:`put_many`."""
        return self.put_many(claims)

    def put_many(self, claims: Sequence[Claim]) -> list[bool]:
        """Write documents in one round trip; per claim, whether it was written now (False: written before).

        Raises:
            redis.RedisError: Redis refused or is unreachable; the caller retries the same claims.

        """
        if not claims:
            return []
        pipe = self.client.pipeline(transaction=False)
        for c in claims:
            keys = [self.claim_key(c.record), c.key, self.stream]
            self._claim(keys=keys, args=[c.text, self.ttl_s, STREAM_MAXLEN, c.id], client=pipe)
        return [bool(done) for done in pipe.execute()]
