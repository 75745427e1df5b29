"""The SASL login check against crafted brokers: iteration counts and reply sizes are bounded, fuzzed 10,000 times.

A fake socket plays the broker: it reads each request the check sends and answers with bytes built
from it (so a valid SCRAM challenge can extend the client's nonce), or with whatever a test wants.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from inspector.config import KafkaSettings
from workers import kafka_login
from workers.kafka_login import (
    MAX_ITERATIONS,
    MAX_REPLY_BYTES,
    MIN_ITERATIONS,
    KafkaLoginError,
    _Broker,
    _login,
    _Scram,
    check_login,
)

SETTINGS = KafkaSettings(
    bootstrap="127.0.0.1:9092", security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
    sasl_username="svc", sasl_password="pw",
)  # fmt: skip
HANDLED = (KafkaLoginError, OSError, struct.error, ValueError, UnicodeDecodeError)  # what check_login catches
Respond = Callable[[int, bytes], bytes]  # (api key, request body) -> the raw bytes the broker sends back


def string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def handshake_ok(mechanisms: tuple[str, ...] = ("SCRAM-SHA-512",)) -> bytes:
    return struct.pack(">hi", 0, len(mechanisms)) + b"".join(string(m) for m in mechanisms)


def authenticate(token: bytes, error: int = 0, message: str | None = None) -> bytes:
    return struct.pack(">h", error) + string(message) + struct.pack(">i", len(token)) + token + struct.pack(">q", 0)


def nonce_of(body: bytes) -> str:
    """The client nonce in a SaslAuthenticate request body (``n,,n=user,r=NONCE``)."""
    (length,) = struct.unpack_from(">i", body)
    return body[4 : 4 + length].decode().rsplit("r=", 1)[1]


def server_first(nonce: str, iterations: int | str, salt: bytes = b"0123456789abcdef") -> bytes:
    return f"r={nonce}srv,s={base64.b64encode(salt).decode()},i={iterations}".encode()


@dataclass
class FakeSocket:
    """Answers each request with ``respond(api_key, body)``; records the sizes asked of ``recv``."""

    respond: Respond
    pending: bytearray = field(default_factory=bytearray)
    asked: list[int] = field(default_factory=list)

    def sendall(self, data: bytes) -> None:
        api_key, _, correlation, id_length = struct.unpack_from(">hhih", data, 4)
        body = data[4 + 10 + id_length :]
        self.pending += self.respond(api_key, body).replace(b"<corr>", struct.pack(">i", correlation))

    def recv(self, n: int) -> bytes:
        self.asked.append(n)
        chunk = bytes(self.pending[: min(n, 65536)])
        del self.pending[: len(chunk)]
        return chunk


def login(respond: Respond) -> FakeSocket:
    sock = FakeSocket(respond)
    _login(_Broker(sock, "inspector"), SETTINGS, "127.0.0.1:9092")  # type: ignore[arg-type]
    return sock


def reply(payload: bytes) -> bytes:
    """A framed reply whose correlation id the fake socket fills in."""
    return struct.pack(">i", 4 + len(payload)) + b"<corr>" + payload


def challenge(iterations: int | str) -> Respond:
    """A broker that offers SCRAM-SHA-512 and answers the client-first message with ``i=iterations``."""

    def respond(api_key: int, body: bytes) -> bytes:
        if api_key == 17:
            return reply(handshake_ok())
        return reply(authenticate(server_first(nonce_of(body), iterations)))

    return respond


@pytest.fixture
def no_pbkdf2(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """PBKDF2 replaced by a stub that records its iteration count and refuses one out of bounds."""
    counts: list[int] = []

    def pbkdf2(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        assert MIN_ITERATIONS <= iterations <= MAX_ITERATIONS, f"PBKDF2 asked for {iterations} iterations"
        counts.append(iterations)
        return bytes(64)

    monkeypatch.setattr(kafka_login.hashlib, "pbkdf2_hmac", pbkdf2)
    return counts


@pytest.mark.parametrize("iterations", [10**9, 2**31, MAX_ITERATIONS + 1, MIN_ITERATIONS - 1, 1, 0])
def test_an_iteration_count_out_of_bounds_is_refused_before_hashing(iterations: int, no_pbkdf2: list[int]) -> None:
    with pytest.raises(KafkaLoginError, match=f"asks for {iterations} iterations; this client accepts 4096 to 1000000"):
        login(challenge(iterations))
    assert no_pbkdf2 == []


@pytest.mark.parametrize("iterations", ["", "-4096", "4096.0", "0x1000", "١٢٣٤٥", "9" * 40])
def test_an_iteration_count_that_is_not_a_number_is_malformed(iterations: str, no_pbkdf2: list[int]) -> None:
    with pytest.raises(ConnectionError, match="malformed"):
        login(challenge(iterations))
    assert no_pbkdf2 == []


@pytest.mark.parametrize("iterations", [MIN_ITERATIONS, 16384, MAX_ITERATIONS])
def test_iteration_counts_within_bounds_are_hashed(iterations: int, no_pbkdf2: list[int]) -> None:
    scram = _Scram("SCRAM-SHA-512", "svc", "pw")
    assert scram.final(server_first(scram.nonce, iterations)).startswith(b"c=biws,r=")
    assert no_pbkdf2 == [iterations]


@pytest.mark.parametrize("size", [MAX_REPLY_BYTES + 1, 2**31 - 1, -1, 3])
def test_a_reply_announcing_an_impossible_size_is_not_read(size: int) -> None:
    sock = FakeSocket(lambda api_key, body: struct.pack(">i", size) + bytes(64))
    with pytest.raises(ConnectionError, match=f"announces {size} bytes where a SASL reply holds 4 to 1048576"):
        _login(_Broker(sock, "inspector"), SETTINGS, "127.0.0.1:9092")  # type: ignore[arg-type]
    assert sock.asked == [4]  # the size, and nothing after it


def test_a_reply_at_the_size_limit_is_read() -> None:
    payload = handshake_ok() + bytes(MAX_REPLY_BYTES - 4 - len(handshake_ok()))
    with pytest.raises(KafkaLoginError):  # read in full; the stub broker then refuses the login
        login(lambda api_key, body: reply(payload if api_key == 17 else authenticate(b"", 58, "no")))


@pytest.fixture
def tcp_broker() -> Iterator[tuple[int, list[bytes]]]:
    """A real listening socket that answers every connection with the bytes queued in the list."""
    server = socket.create_server(("127.0.0.1", 0))
    answers: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the client may hang up at any point
                conn.recv(65536)
                conn.sendall(answers[0] if answers else b"")
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], answers
    server.close()


def test_check_login_treats_an_oversized_reply_as_inconclusive(
    tcp_broker: tuple[int, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    port, answers = tcp_broker
    answers.append(b"\x15\x03\x03\x00\x02\x02\x46")  # a TLS alert: what a plaintext client gets from a TLS port
    settings = SETTINGS.model_copy(update={"bootstrap": f"127.0.0.1:{port}"})
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="workers.kafka_login"):
        check_login(settings, timeout_s=5)  # returns: the 0x15030300 = 352 MB announced were never awaited
    assert time.monotonic() - started < 2
    assert f"SASL login check at 127.0.0.1:{port} inconclusive (ConnectionError)" in caplog.text


# -- fuzzing --------------------------------------------------------------------------------------------------

ITERATIONS = [0, 1, 4095, 4096, 16384, 1_000_000, 1_000_001, 10**9, 2**63, "", "x", "-1", "1e9", " 4096"]
FUZZ_CASES = 10_000


def fuzzed(rng: np.random.Generator) -> Respond:
    """A broker whose handshake and SCRAM replies are valid, mutated or junk, chosen by ``rng``."""

    def mutate(data: bytes) -> bytes:
        kind = rng.integers(0, 6)
        if kind == 0 or not data:
            return data
        if kind == 1:
            return data[: rng.integers(0, len(data))]
        if kind == 2:
            at = int(rng.integers(0, len(data)))
            return data[:at] + bytes([int(rng.integers(0, 256))]) + data[at + 1 :]
        if kind == 3:
            return rng.bytes(int(rng.integers(0, 64)))
        if kind == 4:
            return data + rng.bytes(int(rng.integers(1, 16)))
        return data.replace(b",", b",,", 1)

    def frame(payload: bytes) -> bytes:
        choice = rng.integers(0, 10)
        size = 4 + len(payload)
        if choice == 0:
            size = int(rng.choice([MAX_REPLY_BYTES + 1, 2**31 - 1, -(2**31), 0, 3, size + 100]))
        return struct.pack(">i", size) + b"<corr>" + payload

    def respond(api_key: int, body: bytes) -> bytes:
        if api_key == 17:
            mechanisms = ("SCRAM-SHA-512",) if rng.random() < 0.8 else ("PLAIN", "GSSAPI")
            error = 0 if rng.random() < 0.9 else int(rng.choice([33, 34, 58, -1, 32767]))
            payload = struct.pack(">hi", error, len(mechanisms)) + b"".join(string(m) for m in mechanisms)
            return frame(mutate(payload) if rng.random() < 0.2 else payload)
        try:
            nonce = nonce_of(body)
        except (UnicodeDecodeError, IndexError, struct.error):
            nonce = "c=biws"  # the client-final message: answer with a server-final one
        iterations = ITERATIONS[int(rng.integers(0, len(ITERATIONS)))]
        salt = rng.bytes(int(rng.integers(0, 24)))
        token = server_first(nonce if rng.random() < 0.9 else "other", iterations, salt)
        if nonce == "c=biws":
            token = b"v=" + base64.b64encode(rng.bytes(64))
        error = 0 if rng.random() < 0.9 else 58
        return frame(mutate(authenticate(mutate(token), error, None if rng.random() < 0.5 else "bad")))

    return respond


def test_fuzzed_brokers_never_crash_the_check_or_run_an_unbounded_hash(no_pbkdf2: list[int]) -> None:
    rng = np.random.default_rng(20_261_207)
    outcomes: dict[str, int] = {}
    for case in range(FUZZ_CASES):
        sock = FakeSocket(fuzzed(rng))
        try:
            _login(_Broker(sock, "inspector"), SETTINGS, "127.0.0.1:9092")  # type: ignore[arg-type]
            outcome = "accepted"
        except HANDLED as exc:
            outcome = type(exc).__name__
        except Exception as exc:
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} would escape check_login")
        assert max(sock.asked, default=0) <= MAX_REPLY_BYTES, f"case {case} read {max(sock.asked)} bytes"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) == FUZZ_CASES
    assert outcomes.get("KafkaLoginError", 0) > 100 and outcomes.get("ConnectionError", 0) > 100, outcomes
    assert no_pbkdf2 and all(MIN_ITERATIONS <= i <= MAX_ITERATIONS for i in no_pbkdf2)
