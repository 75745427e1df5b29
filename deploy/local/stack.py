#!/usr/bin/env python3
"""The real local stack: Apache Kafka (KRaft), Redis and Prometheus on loopback, and optionally Orthanc.

Standard library only, so it runs before the project's virtual environment exists.

    deploy/local/stack up        # fetch Kafka jars once, start what is not running, wait until it answers
    deploy/local/stack down      # stop only the processes this stack started (recorded PIDs), Orthanc too
    deploy/local/stack status    # what runs, where, and whether it answers
    deploy/local/stack stop kafka      # stop some services (Redis saves its data first: a start reloads it)
    deploy/local/stack start kafka     # the same as `up kafka`
    deploy/local/stack restart kafka   # stop, then start and wait until it answers (fault-injection tests)
    deploy/local/stack up orthanc      # the optional Orthanc PACS (Debian's `orthanc`): only when named
    deploy/local/stack fetch     # only fetch the Kafka broker jars into the cache

The default services are kafka, redis and prometheus: ``up`` with no names starts them, and ``status``
exits 3 unless all of them run. ``orthanc`` is optional: it starts only when named, ``down`` stops it if
this stack started it, and ``status`` lists it (state ``off`` when it does not run) without counting it.

Everything is configured by environment variables (defaults in brackets):

    INSPECTOR_STACK_DIR            state: data, logs, PIDs         [<repo>/.stack]
    INSPECTOR_KAFKA_CACHE          Kafka jar cache                 [~/.cache/inspector/kafka]
    INSPECTOR_KAFKA_VERSION        Apache Kafka version            [4.1.1]
    INSPECTOR_KAFKA_PORT           Kafka client listener           [9092]
    INSPECTOR_KAFKA_CONTROLLER_PORT  KRaft controller listener     [9093]
    INSPECTOR_KAFKA_HEAP           broker JVM heap                 [512m]
    INSPECTOR_REDIS_PORT           Redis                           [6379]
    INSPECTOR_PROMETHEUS_PORT      Prometheus web/API              [9090]
    INSPECTOR_PROMETHEUS_SCRAPE_INTERVAL  scrape interval          [2s]
    INSPECTOR_ORTHANC_DICOM_PORT   Orthanc DICOM (C-STORE SCP)     [4242]
    INSPECTOR_ORTHANC_HTTP_PORT    Orthanc REST API and DICOMweb   [8042]
    INSPECTOR_ORTHANC_AET          Orthanc's AE title              [ORTHANC]
    INSPECTOR_MEDICAL_GATEWAY_AET  our DICOM gateway's AE title    [INSPECTOR]
    INSPECTOR_MEDICAL_GATEWAY_PORT our DICOM gateway's port        [11112]
    INSPECTOR_STACK_TIMEOUT        seconds to wait per service     [90]

Prometheus discovers scrape targets from ``$INSPECTOR_STACK_DIR/prometheus/targets/*.json``
(file-based service discovery): a worker writes a file there and is scraped within seconds. It loads
the alert and recording rules of ``deploy/prometheus/rules/`` (alerts at /alerts; no Alertmanager): a
rule file that does not parse stops it from starting (``promtool check rules`` first).

Orthanc runs as ``Orthanc $INSPECTOR_STACK_DIR/orthanc/config.json`` (written at each start) and keeps
its studies in ``orthanc/db``, so a stop and a start find the same studies; its log is
``orthanc/orthanc.log``. It accepts C-STORE from any caller (``DicomAlwaysAllowStore``) and knows our
gateway as the modality ``inspector`` (127.0.0.1, ``INSPECTOR_MEDICAL_GATEWAY_AET``/``_PORT``), so
``POST /modalities/inspector/store`` sends studies to it. REST at ``http://127.0.0.1:<http port>/``;
DICOMweb at ``/dicom-web/`` when Debian's ``orthanc-dicomweb`` plugin is installed. Orthanc 1.10 has
no bind-address option: both its ports listen on all interfaces, and ``RemoteAccessAllowed: false``
refuses REST requests that do not come from loopback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
RULES = REPO / "deploy" / "prometheus" / "rules"
HOST = "127.0.0.1"
# The default services: `up` with no names starts these, and `status` exits 3 unless all of them run.
SERVICES = ("kafka", "redis", "prometheus")
# Optional services: started only when named; `down` stops them too; `status` lists but does not count them.
OPTIONAL_SERVICES = ("orthanc",)
# Every service, in start order (stop goes in reverse).
ALL_SERVICES = SERVICES + OPTIONAL_SERVICES
# Debian's orthanc-dicomweb puts the plugin here; Orthanc loads it when the file exists.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"

INSTALL_HINTS = {
    "java": "apt-get install -y --no-install-recommends openjdk-17-jre-headless",
    "mvn": "apt-get install -y --no-install-recommends maven",
    "redis-server": "apt-get install -y --no-install-recommends redis-server",
    "prometheus": "apt-get install -y --no-install-recommends prometheus",
    "Orthanc": "apt-get install -y --no-install-recommends orthanc orthanc-dicomweb dcmtk",
}
NEEDS = {
    "kafka": ("java", "mvn"),
    "redis": ("redis-server",),
    "prometheus": ("prometheus",),
    "orthanc": ("Orthanc",),
}


class StackError(RuntimeError):
    """A service could not be fetched, started, reached or stopped."""


@dataclass(frozen=True)
class Settings:
    """Where the stack keeps its state and which loopback ports it uses."""

    state: Path
    cache: Path
    kafka_version: str
    kafka_port: int
    controller_port: int
    kafka_heap: str
    redis_port: int
    prometheus_port: int
    scrape_interval: str
    timeout: float
    orthanc_dicom_port: int
    orthanc_http_port: int
    orthanc_aet: str
    gateway_aet: str
    gateway_port: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)

        def port(name: str, default: int) -> int:
            raw = env.get(name, str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"{name}={raw!r} is not a TCP port: use a number from 1 to 65535")
            return int(raw)

        def aet(name: str, default: str) -> str:
            # DICOM PS3.5 AE value representation: 1-16 characters, printable ASCII, no backslash,
            # not only spaces (leading and trailing spaces are not significant, so refused here too)
            raw = env.get(name, default)
            if not (
                0 < len(raw) <= 16 and raw.isascii() and raw.isprintable() and "\\" not in raw and raw == raw.strip()
            ):
                raise StackError(
                    f"{name}={raw!r} is not a DICOM AE title: use 1 to 16 printable ASCII characters, "
                    "without backslash or leading/trailing spaces"
                )
            return raw

        version = env.get("INSPECTOR_KAFKA_VERSION", "4.1.1")
        cache_root = Path(env.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "inspector" / "kafka"
        return cls(
            state=Path(env.get("INSPECTOR_STACK_DIR", str(REPO / ".stack"))).resolve(),
            cache=Path(env.get("INSPECTOR_KAFKA_CACHE", str(cache_root))).resolve() / version,
            kafka_version=version,
            kafka_port=port("INSPECTOR_KAFKA_PORT", 9092),
            controller_port=port("INSPECTOR_KAFKA_CONTROLLER_PORT", 9093),
            kafka_heap=env.get("INSPECTOR_KAFKA_HEAP", "512m"),
            redis_port=port("INSPECTOR_REDIS_PORT", 6379),
            prometheus_port=port("INSPECTOR_PROMETHEUS_PORT", 9090),
            scrape_interval=env.get("INSPECTOR_PROMETHEUS_SCRAPE_INTERVAL", "2s"),
            timeout=float(env.get("INSPECTOR_STACK_TIMEOUT", "90")),
            orthanc_dicom_port=port("INSPECTOR_ORTHANC_DICOM_PORT", 4242),
            orthanc_http_port=port("INSPECTOR_ORTHANC_HTTP_PORT", 8042),
            orthanc_aet=aet("INSPECTOR_ORTHANC_AET", "ORTHANC"),
            gateway_aet=aet("INSPECTOR_MEDICAL_GATEWAY_AET", "INSPECTOR"),
            gateway_port=port("INSPECTOR_MEDICAL_GATEWAY_PORT", 11112),
        )

    def address(self, service: str) -> str:
        return {
            "kafka": f"{HOST}:{self.kafka_port}",
            "redis": f"redis://{HOST}:{self.redis_port}/0",
            "prometheus": f"http://{HOST}:{self.prometheus_port}",
            "orthanc": f"http://{HOST}:{self.orthanc_http_port}",
        }[service]

    def port(self, service: str) -> int:
        """The service's main port: the one its address names (Orthanc: HTTP)."""
        return {
            "kafka": self.kafka_port,
            "redis": self.redis_port,
            "prometheus": self.prometheus_port,
            "orthanc": self.orthanc_http_port,
        }[service]

    def listen_ports(self, service: str) -> dict[str, int]:
        """The ports a start of the service needs free, by the environment variable that sets each."""
        return {
            "kafka": {"INSPECTOR_KAFKA_PORT": self.kafka_port},
            "redis": {"INSPECTOR_REDIS_PORT": self.redis_port},
            "prometheus": {"INSPECTOR_PROMETHEUS_PORT": self.prometheus_port},
            "orthanc": {
                "INSPECTOR_ORTHANC_HTTP_PORT": self.orthanc_http_port,
                "INSPECTOR_ORTHANC_DICOM_PORT": self.orthanc_dicom_port,
            },
        }[service]


# --------------------------------------------------------------------------- probes


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def kafka_brokers(port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Ask the broker for cluster metadata (Metadata v4) and return its (node_id, host, port) list."""
    client_id = b"inspector-stack"
    # request header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    body = struct.pack(">i?", 0, False)  # no topics, do not auto-create
    payload = header + body
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        data = _recv_exact(sock, size)
    correlation_id, _throttle, count = struct.unpack_from(">iii", data, 0)
    if correlation_id != 7:
        raise ConnectionError("unexpected correlation id")
    pos, brokers = 12, []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, pos)
        pos += 6
        host = data[pos : pos + host_len].decode()
        pos += host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", data, pos)
        pos += 6 + max(rack_len, 0)
        brokers.append((node_id, host, broker_port))
    return brokers


def kafka_answers(s: Settings) -> bool:
    try:
        return len(kafka_brokers(s.kafka_port)) > 0
    except (OSError, struct.error, ConnectionError, UnicodeDecodeError):
        return False


def redis_answers(s: Settings) -> bool:
    try:
        with socket.create_connection((HOST, s.redis_port), timeout=2.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def prometheus_answers(s: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{s.prometheus_port}/-/ready", timeout=2.0) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def orthanc_answers(s: Settings) -> bool:
    """Orthanc's REST API answers ``GET /system`` with 200 and a JSON object (it serves DICOM by then)."""
    # loopback never goes through an HTTP proxy, whatever http_proxy says
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{HOST}:{s.orthanc_http_port}/system", timeout=2.0) as r:
            return r.status == 200 and isinstance(json.load(r), dict)
    except (OSError, urllib.error.URLError, ValueError):
        return False


# The default services' probes only: tests/conftest.py's `stack` fixture checks exactly these.
PROBES: dict[str, Callable[[Settings], bool]] = {
    "kafka": kafka_answers,
    "redis": redis_answers,
    "prometheus": prometheus_answers,
}
# Every service's probe, the optional ones included.
ALL_PROBES: dict[str, Callable[[Settings], bool]] = {**PROBES, "orthanc": orthanc_answers}


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


# --------------------------------------------------------------------------- PIDs


def pid_file(s: Settings, service: str) -> Path:
    return s.state / "pids" / f"{service}.pid"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a live, non-zombie process (clock ticks since boot), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def recorded_pid(s: Settings, service: str) -> int | None:
    """The PID this stack recorded for a service, if that very process still runs.

    The PID file holds the PID and the process's start time, so a recycled PID is never taken for ours.
    """
    try:
        pid_text, started = pid_file(s, service).read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == started else None


def require(tools: tuple[str, ...]) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        cmds = "\n  ".join(INSTALL_HINTS[t] for t in missing)
        raise StackError(f"missing system dependency: {', '.join(missing)}. Install with:\n  apt-get update\n  {cmds}")


def spawn(s: Settings, service: str, argv: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=s.state
        )
    pid_file(s, service).parent.mkdir(parents=True, exist_ok=True)
    pid_file(s, service).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc.pid


def wait_until(s: Settings, service: str, pid: int, log: Path) -> float:
    """Wait until the service answers; return the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < s.timeout:
        if ALL_PROBES[service](s):
            return time.monotonic() - t0
        if recorded_pid(s, service) != pid:
            tail = _tail(log)
            raise StackError(f"{service} exited during start-up; last lines of {log}:\n{tail}")
        time.sleep(0.25)
    raise StackError(
        f"{service} did not answer on {s.address(service)} within {s.timeout:.0f} s "
        f"(raise INSPECTOR_STACK_TIMEOUT or read {log}):\n{_tail(log)}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- Kafka


def fetch_kafka(s: Settings) -> Path:
    """Fetch the broker jars with Maven into the cache, once; return the lib folder."""
    lib = s.cache / "lib"
    marker = s.cache / ".complete"
    if marker.exists():
        return lib
    require(("java", "mvn"))
    print(f"fetching Apache Kafka {s.kafka_version} jars into {lib} (once) ...", flush=True)
    tmp = s.cache / "lib.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), f"-Dkafka.version={s.kafka_version}",
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(
            f"Maven could not fetch Kafka {s.kafka_version}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    marker.write_text(s.kafka_version + "\n")
    return lib


def kafka_config(s: Settings) -> Path:
    home = s.state / "kafka"
    (home / "logs").mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(
        f"""# written by deploy/local/stack: single combined KRaft node on loopback
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{s.controller_port}
listeners=PLAINTEXT://{HOST}:{s.kafka_port},CONTROLLER://{HOST}:{s.controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{s.kafka_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs={home / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
"""
    )
    (home / "log4j2.properties").write_text(
        f"""status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {home / "logs" / "server.log"}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""
    )
    return props


def start_kafka(s: Settings) -> int:
    lib = fetch_kafka(s)
    props = kafka_config(s)
    home = s.state / "kafka"
    java = [
        "java", f"-Xms{s.kafka_heap}", f"-Xmx{s.kafka_heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={home / 'logs'}", "-cp", f"{lib}/*",
    ]  # fmt: skip
    if not (home / "data" / "meta.properties").exists():
        # Kafka's Uuid text form; it may start with "-", hence --cluster-id=... below
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={props}"],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage in {home / 'data'} failed:\n{fmt.stdout}{fmt.stderr}")
    return spawn(s, "kafka", [*java, "kafka.Kafka", str(props)], home / "logs" / "kafka.out")


# --------------------------------------------------------------------------- Redis and Prometheus


def start_redis(s: Settings) -> int:
    require(("redis-server",))
    home = s.state / "redis"
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        "redis-server", "--bind", HOST, "--port", str(s.redis_port), "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--dir", str(home), "--logfile", str(home / "redis.log"),
        "--pidfile", str(home / "redis.pid"),
    ]  # fmt: skip
    return spawn(s, "redis", argv, home / "redis.out")


def prometheus_config(s: Settings) -> Path:
    home = s.state / "prometheus"
    (home / "targets").mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(
        f"""# written by deploy/local/stack
global:
  scrape_interval: {s.scrape_interval}
  evaluation_interval: {s.scrape_interval}
rule_files: ["{RULES}/*.rules.yml"]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{HOST}:{s.prometheus_port}"]
  # workers (and tests) add targets by writing JSON files here (file-based service discovery):
  #   [{{"targets": ["127.0.0.1:9400"], "labels": {{"job": "inspector-worker"}}}}]
  - job_name: inspector
    file_sd_configs:
      - files: ["{home / "targets"}/*.json"]
        refresh_interval: 1s
"""
    )
    return config


def start_prometheus(s: Settings) -> int:
    require(("prometheus",))
    config = prometheus_config(s)
    home = s.state / "prometheus"
    argv = [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address={HOST}:{s.prometheus_port}", "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d", "--log.level=warn",
    ]  # fmt: skip
    return spawn(s, "prometheus", argv, home / "prometheus.log")


# --------------------------------------------------------------------------- Orthanc (optional)


ROUTE_CT = Path(__file__).resolve().parent / "orthanc" / "route-ct.lua"


def orthanc_config(s: Settings) -> Path:
    """Write ``orthanc/config.json`` for this stack's settings and return its path.

    Storage and index live in ``orthanc/db``, which is never removed here: a restart finds the same
    studies. The DICOMweb plugin is configured only when its file exists.
    """
    home = s.state / "orthanc"
    (home / "db").mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "Name": "inspector-local",
        "StorageDirectory": str(home / "db"),
        "IndexDirectory": str(home / "db"),
        "HttpServerEnabled": True,
        "HttpPort": s.orthanc_http_port,
        "DicomServerEnabled": True,
        "DicomPort": s.orthanc_dicom_port,
        "DicomAet": s.orthanc_aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "StableAge": 5,
        # our DICOM gateway, the target of POST /modalities/inspector/store
        "DicomModalities": {"inspector": [s.gateway_aet, HOST, s.gateway_port]},
        # every stable study with a CT series is sent there (docs/MEDICAL.md, "Connecting to a PACS")
        "LuaScripts": [str(ROUTE_CT)],
    }
    if DICOMWEB_PLUGIN.exists():
        config["Plugins"] = [str(DICOMWEB_PLUGIN)]
        config["DicomWeb"] = {"Enable": True, "Root": DICOMWEB_ROOT}
    path = home / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def start_orthanc(s: Settings) -> int:
    require(NEEDS["orthanc"])
    config = orthanc_config(s)
    # Orthanc logs to stderr, which spawn sends to orthanc.log
    return spawn(s, "orthanc", ["Orthanc", str(config)], s.state / "orthanc" / "orthanc.log")


STARTERS: dict[str, Callable[[Settings], int]] = {
    "kafka": start_kafka,
    "redis": start_redis,
    "prometheus": start_prometheus,
    "orthanc": start_orthanc,
}
LOGS = {
    "kafka": Path("kafka/logs/kafka.out"),
    "redis": Path("redis/redis.log"),
    "prometheus": Path("prometheus/prometheus.log"),
    "orthanc": Path("orthanc/orthanc.log"),
}


# --------------------------------------------------------------------------- commands


def up(s: Settings, services: tuple[str, ...] = SERVICES) -> dict[str, float]:
    """Start each service that is not running; return start-up seconds for those started."""
    require(tuple(dict.fromkeys(tool for service in services for tool in NEEDS[service])))
    s.state.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for service in services:
        pid = recorded_pid(s, service)
        if pid is not None:
            if not ALL_PROBES[service](s):
                wait_until(s, service, pid, s.state / LOGS[service])
            print(f"{service:<11} already running  pid {pid:<7} {s.address(service)}")
            continue
        for env, number in s.listen_ports(service).items():
            if port_in_use(number):
                raise StackError(
                    f"port {number} for {service} is taken by a process this stack did not start: "
                    f"stop it, or choose another port with {env}=..."
                )
        t0 = time.monotonic()
        pid = STARTERS[service](s)
        wait_until(s, service, pid, s.state / LOGS[service])
        if service == "redis":
            (s.state / "redis" / "dump.rdb").unlink(missing_ok=True)  # loaded (by `stop`); keep no stale copy
        timings[service] = time.monotonic() - t0
        print(f"{service:<11} started in {timings[service]:5.1f} s  pid {pid:<7} {s.address(service)}", flush=True)
    return timings


def down(s: Settings, grace: float = 30.0) -> None:
    """Stop the processes this stack recorded, the optional ones included; leave anything else alone."""
    stop(s, ALL_SERVICES, grace=grace, keep_data=False)


def stop(s: Settings, services: tuple[str, ...], grace: float = 30.0, keep_data: bool = True) -> dict[str, float]:
    """Stop the named services this stack started (by recorded PID); return the seconds each took.

    With ``keep_data``, Redis is asked to ``SHUTDOWN SAVE`` first: it writes its data set to
    ``redis/dump.rdb``, which the next start loads (the local Redis keeps no data otherwise), so a
    stop and a start look like the outage of a Redis with persistence. Kafka keeps its log and Orthanc
    its storage (``orthanc/db``) anyway.
    """
    timings: dict[str, float] = {}
    for service in reversed(ALL_SERVICES):
        if service not in services:
            continue
        pid = recorded_pid(s, service)
        if pid is None:
            pid_file(s, service).unlink(missing_ok=True)
            print(f"{service:<11} not running")
            continue
        t0 = time.monotonic()
        if service == "redis" and keep_data:
            _redis_shutdown_save(s)
        else:
            _signal_group(pid, signal.SIGTERM)
        while recorded_pid(s, service) is not None and time.monotonic() - t0 < grace:
            time.sleep(0.1)
        if recorded_pid(s, service) is not None:
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
        pid_file(s, service).unlink(missing_ok=True)
        timings[service] = time.monotonic() - t0
        print(f"{service:<11} stopped (pid {pid}, {timings[service]:.1f} s)", flush=True)
    return timings


def _redis_shutdown_save(s: Settings) -> None:
    """``SHUTDOWN SAVE``: Redis writes dump.rdb into its folder and exits (the reply never comes)."""
    try:
        with socket.create_connection((HOST, s.redis_port), timeout=10.0) as sock:
            sock.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n")
            sock.recv(256)  # empty when Redis closed the connection on exit; an error line otherwise
    except OSError:
        pass  # closed while exiting, or already gone: the PID wait decides


def restart(s: Settings, services: tuple[str, ...]) -> dict[str, float]:
    """Stop the named services (keeping Redis's data), start them again, wait until they answer.

    Returns the seconds from the stop until each service answered again.
    """
    t0 = time.monotonic()
    stop(s, services)
    up(s, services)
    return {service: time.monotonic() - t0 for service in services}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: the PID is the group id
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def status(s: Settings) -> dict[str, dict[str, object]]:
    """Each service's state, recorded PID, address and whether it answers.

    States: ``running`` (ours, answers), ``starting`` (ours, does not answer yet), ``foreign`` (answers,
    not started by this stack), ``stopped`` (a default service that does not run) and ``off`` (an
    optional service that does not run).
    """
    report: dict[str, dict[str, object]] = {}
    for service in ALL_SERVICES:
        pid = recorded_pid(s, service)
        answers = ALL_PROBES[service](s)
        down_state = "off" if service in OPTIONAL_SERVICES else "stopped"
        state = "running" if pid and answers else "starting" if pid else "foreign" if answers else down_state
        report[service] = {"state": state, "pid": pid, "address": s.address(service), "answers": answers}
    return report


def status_code(report: dict[str, dict[str, object]]) -> int:
    """``stack status``'s exit code: 0 when every default service runs, else 3; optional ones never count."""
    return 0 if all(report[name]["state"] == "running" for name in SERVICES) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/local/stack",
        description="Start, stop and inspect the local Kafka (KRaft), Redis and Prometheus on loopback, "
        "and the optional Orthanc PACS.",
        epilog="Ports and folders come from INSPECTOR_* environment variables; see the top of deploy/local/stack.py.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start what is not running and wait until it answers")
    p_up.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"any of {', '.join(ALL_SERVICES)} (default: {', '.join(SERVICES)})",
    )
    sub.add_parser("down", help="stop the processes this stack started, optional ones included")
    for name, text in (
        ("start", "start the named services (like up)"),
        ("stop", "stop the named services; Redis saves its data first so that a start reloads it"),
        ("restart", "stop the named services, start them again and wait until they answer"),
    ):
        p_some = sub.add_parser(name, help=text)
        p_some.add_argument("services", nargs="+", metavar="SERVICE", help=f"any of {', '.join(ALL_SERVICES)}")
    p_status = sub.add_parser("status", help="what runs and where")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("fetch", help="fetch the Kafka broker jars into the cache")
    args = parser.parse_args(argv)
    try:
        s = Settings.from_env()
        if args.command in ("up", "start", "stop", "restart"):
            unknown = sorted(set(args.services) - set(ALL_SERVICES))
            if unknown:
                raise StackError(f"unknown service {', '.join(unknown)}: choose from {', '.join(ALL_SERVICES)}")
            chosen = tuple(name for name in ALL_SERVICES if name in args.services) or SERVICES
            if args.command == "stop":
                stop(s, chosen)
            elif args.command == "restart":
                restart(s, chosen)
            else:
                up(s, chosen)
        elif args.command == "down":
            down(s)
        elif args.command == "fetch":
            lib = fetch_kafka(s)
            size = sum(f.stat().st_size for f in lib.glob("*.jar"))
            print(f"Kafka {s.kafka_version}: {len(list(lib.glob('*.jar')))} jars, {size / 2**20:.1f} MiB in {lib}")
        else:
            report = status(s)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                for name, row in report.items():
                    pid = row["pid"] or "-"
                    print(f"{name:<11} {row['state']:<8} pid {pid!s:<7} {row['address']}")
            return status_code(report)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
