"""In-memory stand-ins for Kafka and Redis clients, shared by every worker's unit tests.

They keep only what the workers use and record what happened, so a test can assert on it. The
real clients are exercised against real servers in ``tests/integration`` and ``tests/chaos``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeRedis"]


class _ClaimScript:
    """The one Lua script the claimed store registers (``workers.stores``), run in memory."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    def __call__(self, keys: list[str], args: list[Any], client: FakeRedis | None = None) -> Any:
        op = ("claim", keys, args)
        return self.redis._apply(op) if client is None else client._queue(op)


@dataclass
class FakeRedis:
    """A Redis client that refuses ``failures`` round trips first, then keeps data in ``data``.

    Attributes:
        data: Key → (value bytes, ttl seconds or None).
        streams: Stream key → list of entries (field dicts).
        failures: Round trips (``execute``) still to refuse with a ``ConnectionError``.
        round_trips: Round trips attempted.

    """

    failures: int = 0
    data: dict[str, tuple[bytes, int | None]] = field(default_factory=dict)
    streams: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    round_trips: int = 0
    _pending: list[tuple[str, list[str], list[Any]]] = field(default_factory=list)

    def register_script(self, script: str) -> _ClaimScript:
        assert "SET', KEYS[1], '1', 'NX'" in script, "FakeRedis runs only the claimed store's script"
        return _ClaimScript(self)

    def pipeline(self, transaction: bool = False) -> FakeRedis:
        self._pending = []
        return self

    def _queue(self, op: tuple[str, list[str], list[Any]]) -> FakeRedis:
        self._pending.append(op)
        return self

    def set(self, key: str, value: str | bytes, ex: int | None = None) -> FakeRedis:
        return self._queue(("set", [key], [value, ex]))

    def execute(self) -> list[Any]:
        self.round_trips += 1
        pending, self._pending = self._pending, []
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down (injected)")
        return [self._apply(op) for op in pending]

    def _apply(self, op: tuple[str, list[str], list[Any]]) -> Any:
        kind, keys, args = op
        if kind == "set":
            value = args[0].encode() if isinstance(args[0], str) else args[0]
            self.data[keys[0]] = (value, args[1])
            return True
        claim, document, stream = keys
        if claim in self.data:
            return 0
        self.data[claim] = (b"1", int(args[1]))
        self.data[document] = (str(args[0]).encode(), int(args[1]))
        self.streams.setdefault(stream, []).append({"id": str(args[3]), "key": document})
        return 1

    def get(self, key: str) -> bytes | None:
        return self.data[key][0] if key in self.data else None
