"""Private, secured services for the security tests: a SCRAM Kafka broker and an ACL Redis, on free ports.

Each runs in its own temporary folder, on its own free loopback ports (never the local stack's 9092,
9093 or 6379), and is stopped (by its own PID) and removed when the ``with`` block ends::

    with scram_kafka(stack_module, {"inspector": "s3cret"}) as broker:
        broker.bootstrap                  # "127.0.0.1:PORT", a SASL_PLAINTEXT listener, SCRAM-SHA-512
    with acl_redis(["user inspector on >pw ~inspector:* +set"]) as url:
        url                               # "redis://127.0.0.1:PORT/0"; the default user is disabled

The broker reuses the jars of ``deploy/local/stack fetch``. Users are created when the storage is
formatted (``kafka-storage format --add-scram``), so the very first client can log in.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HOST = "127.0.0.1"
MECHANISM = "SCRAM-SHA-512"
ADMIN = ("admin", "admin-" + uuid.uuid4().hex)  # the broker's own inter-broker login


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate one process we started, then kill it if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@dataclass(frozen=True)
class ScramBroker:
    """A running single-node KRaft broker whose only client listener is SASL_PLAINTEXT with SCRAM-SHA-512."""

    bootstrap: str
    home: Path
    log: Path


def scram_properties(home: Path, port: int, controller_port: int) -> str:
    """``server.properties`` of a combined KRaft node with a SASL_PLAINTEXT (SCRAM-SHA-512) client listener."""
    jaas = (
        f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN[0]}" password="{ADMIN[1]}";'
    )
    return f"""# security tests: a private broker with SCRAM logins
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller_port}
listeners=SASL_PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=SASL_PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}
log.dirs={home / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


@contextmanager
def scram_kafka(stack_module: ModuleType, users: Mapping[str, str], timeout: float = 60.0) -> Iterator[ScramBroker]:
    """Run a private SCRAM-SHA-512 broker for the ``with`` block; stop it and remove its folder afterwards.

    Args:
        stack_module: ``deploy/local/stack.py`` as a module (for the jar cache and ``fetch_kafka``).
        users: SCRAM users to create at format time, name to password.
        timeout: Seconds to wait for the listener.

    """
    settings = stack_module.Settings.from_env()
    lib = stack_module.fetch_kafka(settings)
    home = Path(tempfile.mkdtemp(prefix="inspector-scram-kafka-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port, controller_port = free_port(), free_port()
        props = home / "server.properties"
        props.write_text(scram_properties(home, port, controller_port))
        (home / "log4j2.properties").write_text(
            f"status = warn\nappender.file.type = File\nappender.file.name = FILE\n"
            f"appender.file.fileName = {home / 'server.log'}\nappender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
        )
        java = [
            "java", "-Xms256m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={home}", "-cp", f"{lib}/*",
        ]  # fmt: skip
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        scram = [f"--add-scram={MECHANISM}=[name={n},password={p}]" for n, p in {**dict([ADMIN]), **users}.items()]
        fmt = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={props}", *scram],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"formatting the SCRAM broker's storage failed:\n{fmt.stdout}{fmt.stderr}")
        log = home / "kafka.out"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*java, "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while not (_answers(port) and "Kafka Server started" in (home / "server.log").read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = "exited" if proc.poll() is not None else f"did not start within {timeout:.0f} s"
                raise RuntimeError(f"the SCRAM broker {state}:\n{_tail(log)}\n{_tail(home / 'server.log')}")
            time.sleep(0.2)
        yield ScramBroker(bootstrap=f"{HOST}:{port}", home=home, log=home / "server.log")
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def acl_redis(acl: Sequence[str], timeout: float = 15.0) -> Iterator[str]:
    """Run a private ``redis-server`` whose users are exactly ``acl`` (ACL file lines); yield its URL.

    The ``default`` user is disabled unless ``acl`` defines it, so every client must log in.
    """
    home = Path(tempfile.mkdtemp(prefix="inspector-acl-redis-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        lines = list(acl)
        if not any(line.split()[:2] == ["user", "default"] for line in lines):
            lines.append("user default off")
        (home / "users.acl").write_text("\n".join(lines) + "\n")
        port = free_port()
        argv = [
            "redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(home), "--aclfile", str(home / "users.acl"),
            "--logfile", str(home / "redis.log"),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ACL redis-server did not start:\n{_tail(home / 'redis.log')}")
            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(home, ignore_errors=True)
