"""A SASL login check against one Kafka broker, so wrong credentials fail at start with a clear message.

kafka-python treats a refused SASL login like an unreachable broker: it retries until its bootstrap
timeout and then reports ``Unable to bootstrap``. Before a worker builds its clients,
:func:`check_login` opens one plain socket (TLS for ``SASL_SSL``) to a bootstrap server and performs
the SASL exchange (``SaslHandshake`` v1, ``SaslAuthenticate`` v1; mechanisms ``PLAIN``,
``SCRAM-SHA-256``, ``SCRAM-SHA-512``) itself::

    check_login(settings.kafka)   # raises KafkaLoginError naming the setting to fix; silent when it works

A broker that cannot be reached is not an error here: the clients wait for it as they always do.
Secrets never appear in the messages or the logs. What the broker sends is bounded before it is
used: a reply announcing more than :data:`MAX_REPLY_BYTES` is not read, and a SCRAM challenge must
ask for :data:`MIN_ITERATIONS` to :data:`MAX_ITERATIONS` PBKDF2 iterations (a billion would hold the
worker's start for minutes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import socket
import ssl
import struct

from inspector.config import KafkaSettings
from workers.errors import ClientError

__all__ = ["MAX_ITERATIONS", "MAX_REPLY_BYTES", "MIN_ITERATIONS", "KafkaLoginError", "check_login"]

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 1 << 20  # a SASL handshake or authenticate reply is a few hundred bytes
MIN_ITERATIONS = 4096  # RFC 7677: at least 4096; Kafka refuses to store SCRAM credentials with fewer
MAX_ITERATIONS = 1_000_000  # Kafka stores at most 16384; a million PBKDF2 rounds take about a second

_DECIMAL = re.compile(r"[0-9]{1,19}")
_SASL_HANDSHAKE, _SASL_AUTHENTICATE = 17, 36
_ERRORS = {
    33: "UNSUPPORTED_SASL_MECHANISM",
    34: "ILLEGAL_SASL_STATE",
    58: "SASL_AUTHENTICATION_FAILED",
}
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
_CREDENTIALS = (
    "check INSPECTOR__KAFKA__SASL_USERNAME and INSPECTOR__KAFKA__SASL_PASSWORD "
    "(kafka.sasl_username / kafka.sasl_password)"
)


class KafkaLoginError(ClientError):
    """The broker refused the SASL login, or does not offer the configured mechanism."""


class _Broker:
    """Request/response framing on one blocking socket (request header v1, response header v0)."""

    def __init__(self, sock: socket.socket, client_id: str) -> None:
        self.sock, self.client_id, self.correlation = sock, client_id.encode(), 0

    def call(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        header = struct.pack(">hhih", api_key, version, self.correlation, len(self.client_id)) + self.client_id
        self.sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        (size,) = struct.unpack(">i", self._read(4))
        if not 4 <= size <= MAX_REPLY_BYTES:
            msg = (
                f"the broker's reply announces {size} bytes where a SASL reply holds 4 to {MAX_REPLY_BYTES}: "
                "is kafka.bootstrap a Kafka listener of this security_protocol?"
            )
            raise ConnectionError(msg)
        data = self._read(size)
        (correlation,) = struct.unpack_from(">i", data)
        if correlation != self.correlation:
            raise ConnectionError("unexpected correlation id in the broker's answer")
        return data[4:]

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return buf


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _read_string(data: bytes, pos: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", data, pos)
    pos += 2
    if length < 0:
        return None, pos
    return data[pos : pos + length].decode(errors="replace"), pos + length


class _Scram:
    """The client side of SCRAM (RFC 5802) without channel binding, as Kafka uses it."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.hash = _HASHES[mechanism]
        self.username = username.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode()
        self.nonce = secrets.token_urlsafe(24)
        self.first_bare = f"n={self.username},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
        iterations = fields.get("i", "")
        if not fields.get("r", "").startswith(self.nonce) or "s" not in fields or not _DECIMAL.fullmatch(iterations):
            raise ConnectionError("the broker's SCRAM challenge is malformed")
        if not MIN_ITERATIONS <= int(iterations) <= MAX_ITERATIONS:
            msg = (
                f"the broker's SCRAM challenge asks for {int(iterations)} iterations; this client accepts "
                f"{MIN_ITERATIONS} to {MAX_ITERATIONS} (RFC 7677 asks for at least 4096): is kafka.bootstrap "
                "the broker you meant? Recreate the SCRAM credentials with an iteration count in that range"
            )
            raise KafkaLoginError(msg)
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, base64.b64decode(fields["s"]), int(iterations))
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(hashlib.new(self.hash, client_key).digest(), message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, message, self.hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        fields = dict(part.split("=", 1) for part in server_final.decode().split(",") if "=" in part)
        return hmac.compare_digest(base64.b64decode(fields.get("v", "")), self.server_signature)


def _authenticate(broker: _Broker, token: bytes) -> tuple[int, str | None, bytes]:
    data = broker.call(_SASL_AUTHENTICATE, 1, struct.pack(">i", len(token)) + token)
    (error,) = struct.unpack_from(">h", data)
    message, pos = _read_string(data, 2)
    (length,) = struct.unpack_from(">i", data, pos)
    return error, message, data[pos + 4 : pos + 4 + max(length, 0)]


def _login(broker: _Broker, settings: KafkaSettings, server: str) -> None:
    mechanism = str(settings.sasl_mechanism)
    data = broker.call(_SASL_HANDSHAKE, 1, _string(mechanism))
    (error, count) = struct.unpack_from(">hi", data)
    offered, pos = [], 6
    for _ in range(max(count, 0)):
        name, pos = _read_string(data, pos)
        offered.append(name or "")
    if error == 33:
        msg = (
            f"Kafka at {server} does not offer the SASL mechanism {mechanism} (it offers: {', '.join(offered)}): "
            "set INSPECTOR__KAFKA__SASL_MECHANISM (kafka.sasl_mechanism) to one of them"
        )
        raise KafkaLoginError(msg)
    if error:
        msg = (
            f"Kafka at {server} refused the SASL handshake ({_ERRORS.get(error, error)}): is the listener at "
            "kafka.bootstrap a SASL listener? Check INSPECTOR__KAFKA__SECURITY_PROTOCOL and INSPECTOR__KAFKA__BOOTSTRAP"
        )
        raise KafkaLoginError(msg)
    assert settings.sasl_username is not None and settings.sasl_password is not None  # checked by the settings
    username, password = settings.sasl_username.get_secret_value(), settings.sasl_password.get_secret_value()
    if mechanism == "PLAIN":
        error, message, _ = _authenticate(broker, f"\0{username}\0{password}".encode())
    else:
        scram = _Scram(mechanism, username, password)
        error, message, challenge = _authenticate(broker, scram.first())
        if not error:
            error, message, server_final = _authenticate(broker, scram.final(challenge))
            if not error and not scram.verify(server_final):
                msg = f"Kafka at {server} answered the {mechanism} login with a wrong server signature"
                raise KafkaLoginError(msg + ": is kafka.bootstrap the broker you meant?")
    if error:
        reason = message or _ERRORS.get(error, f"error {error}")
        raise KafkaLoginError(f"Kafka at {server} refused the {mechanism} login ({reason}): {_CREDENTIALS}")


def _connect(settings: KafkaSettings, host: str, port: int, timeout_s: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout_s)
    if not settings.security_protocol.endswith("SSL"):
        return sock
    context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.ssl_certfile is not None:
        password = settings.ssl_password.get_secret_value() if settings.ssl_password else None
        keyfile = str(settings.ssl_keyfile) if settings.ssl_keyfile else None
        context.load_cert_chain(str(settings.ssl_certfile), keyfile, password)
    return context.wrap_socket(sock, server_hostname=host)


def check_login(settings: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Log in to the first bootstrap server that answers; raise when it refuses the credentials.

    Does nothing unless ``security_protocol`` is ``SASL_PLAINTEXT`` or ``SASL_SSL``.

    Args:
        settings: The Kafka settings the clients will use.
        timeout_s: Socket timeout per server.

    Raises:
        KafkaLoginError: The broker refused the login or the mechanism, or the listener speaks no SASL.

    """
    if not settings.security_protocol.startswith("SASL"):
        return
    for server in settings.servers:
        host, port = server.rsplit(":", 1)
        host = host.strip("[]")
        try:
            with _connect(settings, host, int(port), timeout_s) as sock:
                _login(_Broker(sock, settings.client_id), settings, server)
        except (OSError, ConnectionError, struct.error, ValueError, UnicodeDecodeError) as exc:
            logger.debug("SASL login check at %s inconclusive (%s): trying the next server", server, type(exc).__name__)
            continue
        logger.debug("SASL %s login to %s accepted", settings.sasl_mechanism, server)
        return
    logger.debug("SASL login check: no bootstrap server answered; the clients will keep trying")
