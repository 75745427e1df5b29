"""deploy/compose/compose.yaml and the Dockerfiles, checked without a Docker engine.

The compose file is validated against the Compose Specification JSON schema (vendored in
``tests/deploy/schemas/``, see its README) after variable interpolation, as ``docker compose`` does, and then
for the facts the line depends on: workers never outnumber the partitions, the frame topics are created
co-partitioned, every image is pinned or built from a Dockerfile that exists, ports are published only where a
person needs them, and every ``inspector`` command line parses with the real CLI. The Dockerfiles are parsed with
the ``dockerfile`` package (Docker's own parser) and checked for a non-root user, the health check and the
entry point. Nothing here builds an image or starts a container: this machine has no Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile  # type: ignore[import-not-found]
import jsonschema  # type: ignore[import-untyped]
import pytest
import typer.core
import typer.main
import yaml

from inspector.config import TopicSettings, WorkerSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SCHEMA_FILE = Path(__file__).with_name("schemas") / "compose-spec.json"
DOCKERFILES = {
    "cpu": REPO / "deploy" / "docker" / "Dockerfile.cpu",
    "cuda": REPO / "deploy" / "docker" / "Dockerfile.cuda",
    "jetson": REPO / "deploy" / "jetson" / "Dockerfile",
}
RECORD_OVERHEAD = 64 * 1024  # workers.gateway: room for key, headers and batch framing above the pixel bytes
PUBLISHED = {"kafka": 9094, "prometheus": 9090, "grafana": 3000, "review": 8800}  # what a person on the host needs
LOOP = Path("/var/lib/inspector")  # where the Dockerfiles make the shared volumes' mount points (uid 10001)

_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match[1]:
            return "$"
        name = match[2] or match[5]
        operator, argument = match[3], match[4] or ""
        present = name in env and (env[name] != "" or not (operator or "").startswith(":"))
        if operator in (":-", "-"):
            return env[name] if present else argument
        if operator in (":?", "?") and not present:
            raise ValueError(f"variable {name} is required: {argument}")
        return env.get(name, "")

    return _VARIABLE.sub(replace, value)


@cache
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # YAML merge keys (<<) resolved by the loader
    assert isinstance(data, dict)
    return data


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose model with variables interpolated (defaults only, unless ``env`` is given)."""
    result = interpolate(raw_compose(), env or {})
    assert isinstance(result, dict)
    return result


def services(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    found = compose(env)["services"]
    assert isinstance(found, dict)
    return found


def command(service: Mapping[str, Any]) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {key: str(item) for key, item in value.items()}


def inspector_services(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Services running an ``inspector`` command (the project's image with its own entry point)."""
    return {
        name: s
        for name, s in services(env).items()
        if str(s.get("image", "")).startswith("inspector:") and "entrypoint" not in s
    }


def replicas(service: Mapping[str, Any]) -> int:
    return int(service.get("deploy", {}).get("replicas", service.get("scale", 1)))


@cache
def cli() -> typer.core.TyperGroup:
    from workers.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group


def parse_cli(args: list[str]) -> Any:
    """Parse an ``inspector`` command line with the real CLI, without running it."""
    name, *rest = args
    sub = cli().commands[name]
    return sub.make_context(name, list(rest))


@cache
def schema() -> dict[str, Any]:
    data = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(data, dict)
    return data


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


# -- the schema ------------------------------------------------------------------------------------------


def test_vendored_schema_is_the_compose_specification() -> None:
    jsonschema.Draft7Validator.check_schema(schema())
    assert schema()["title"] == "Compose Specification"
    assert "services" in schema()["properties"]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "INSPECTOR_WORKERS": "3",
            "INSPECTOR_PARTITIONS": "8",
            "GRAFANA_ADMIN_PASSWORD": "s3cret",
            "INSPECTOR_REVIEW_ADDRESS": "192.168.10.5",
        },
    ],
    ids=["defaults", "overridden"],
)
def test_compose_file_matches_the_compose_specification(env: dict[str, str]) -> None:
    errors = schema_errors(compose(env))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "inspection-worker", "deploy", "replica"), 2),  # misspelt key
        (("services", "redis", "restart_policy"), "always"),  # a deploy key at the service level
        (("services", "gateway", "depends_on", "kafka-init", "condition"), "service_finished"),
        (("services", "kafka", "healthcheck", "interval"), ["10s"]),
    ],
    ids=["misspelt-key", "misplaced-key", "bad-condition", "bad-type"],
)
def test_schema_catches_mistakes(path: tuple[str, ...], value: Any) -> None:
    document = json.loads(json.dumps(compose()))
    node = document
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    assert schema_errors(document), f"the schema accepted {'.'.join(path)} = {value!r}"


# -- structure -------------------------------------------------------------------------------------------


def test_every_service_has_a_pinned_image_or_a_build_that_exists() -> None:
    for name, service in services().items():
        image, build = service.get("image"), service.get("build")
        assert image or build, f"service {name} has neither image nor build"
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context.is_dir(), f"service {name}: build context {context} does not exist"
            assert (context / build["dockerfile"]).is_file(), f"service {name}: {build['dockerfile']} not in {context}"
        else:
            _, _, tag = str(image).rpartition(":")
            assert "/" not in tag and tag not in ("", "latest"), f"service {name}: pin the image tag, got {image}"


def test_inspector_services_build_the_image_they_run() -> None:
    for name, service in services().items():
        if not str(service.get("image", "")).startswith("inspector:"):
            continue
        assert "build" in service, f"service {name} runs {service['image']} but does not say how to build it"
        variant = str(service["image"]).rsplit("-", 1)[-1]  # inspector:0.1.0-cpu / -cuda
        assert service["build"]["dockerfile"].endswith(f"Dockerfile.{variant}"), name


def test_bind_mounts_exist() -> None:
    """Every host path mounted into a container exists (deploy/prometheus and deploy/grafana come with issue 8)."""
    missing = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                path = (COMPOSE_DIR / source).resolve()
                if not path.exists():
                    missing.append(f"{name}: {path.relative_to(REPO)}")
    assert not missing, "mounted paths missing:\n" + "\n".join(missing)


def test_depends_on_names_services_that_can_satisfy_the_condition() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {other: {"condition": "service_started"} for other in depends}
        for other, rule in depends.items():
            assert other in all_services, f"{name} depends on unknown service {other}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in all_services[other], f"{name} waits for {other} to be healthy: it has no check"
            if rule["condition"] == "service_completed_successfully":
                assert all_services[other].get("restart", "no") == "no", f"{other} is one-shot: restart must be no"


def test_ports_are_published_only_where_a_person_needs_them() -> None:
    for name, service in services().items():
        ports = service.get("ports", [])
        if name not in PUBLISHED:
            assert not ports, f"{name} publishes {ports}: containers reach each other on the compose network"
            continue
        assert ports, f"{name} should publish {PUBLISHED[name]}"
        for port in ports:
            host_ip, host_port, container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", f"{name}: publish on loopback only, got {port}"
            assert int(host_port) == int(container_port) == PUBLISHED[name], f"{name}: {port}"


def test_workers_do_not_outnumber_the_partitions() -> None:
    """Every worker of the consumer group owns whole partitions: more workers than partitions would idle."""
    for env in ({}, {"INSPECTOR_PARTITIONS": "8", "INSPECTOR_WORKERS": "6", "INSPECTOR_GPU_WORKERS": "2"}):
        found = services(env)
        partitions = int(environment(found["kafka-init"])["PARTITIONS"])
        workers = {name: replicas(s) for name, s in inspector_services(env).items() if command(s)[:1] == ["worker"]}
        assert {"inspection-worker", "inspection-worker-gpu"} <= set(workers)
        assert sum(workers.values()) <= partitions, f"{workers} (all profiles) > {partitions} partitions"
        for name in workers:
            assert int(environment(found[name])["INSPECTOR__TOPICS__PARTITIONS"]) == partitions, name
    assert int(environment(services()["kafka-init"])["PARTITIONS"]) == TopicSettings().partitions


def test_topics_are_created_co_partitioned_with_room_for_large_frames() -> None:
    init = services()["kafka-init"]
    script = "\n".join(command(init))
    topics, worker = TopicSettings(), WorkerSettings()
    created = re.findall(r"for topic in ([^;]+); do\s+\$topics --create [^\n]*--partitions \"\$PARTITIONS\"", script)
    assert created, script
    names = created[0].split()
    assert {topics.visible, topics.infrared, topics.dlq} <= set(names)
    assert f"max.message.bytes={worker.max_record_bytes + RECORD_OVERHEAD}" in script
    assert "--if-not-exists" in script
    for topic in (topics.visible, topics.infrared):
        assert f"--describe --topic {topic}" in script, "the init job must check the frame topics' counts match"
    assert "KAFKA_AUTO_CREATE_TOPICS_ENABLE" in environment(services()["kafka"])
    assert environment(services()["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_inspector_services_reach_kafka_redis_and_serve_metrics() -> None:
    kafka = environment(services()["kafka"])
    advertised = dict(item.split("://", 1) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for name, service in inspector_services().items():
        env = environment(service)
        assert env["INSPECTOR__KAFKA__BOOTSTRAP"] == advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]], name
        assert env["INSPECTOR__REDIS__URL"].startswith("redis://redis:"), name
        assert env["INSPECTOR__METRICS__BIND_ADDRESS"] == "0.0.0.0", f"{name}: Prometheus could not scrape it"
        assert env["INSPECTOR_CONFIG"] == "/etc/inspector/config.yaml"
        assert any(str(v).endswith(":/etc/inspector/config.yaml:ro") for v in service["volumes"]), name


def secret_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Where each compose secret of a service appears in the container -> the secret's name."""
    found = {}
    for entry in service.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        found[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return found


def test_inspector_settings_load_from_each_service_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each environment loads; compose secrets are laid out as compose mounts them, and read from there."""
    from inspector.config import load_settings

    for name, service in inspector_services().items():
        env = environment(service)
        root = tmp_path / name
        for path, secret in secret_mounts(service).items():  # a placeholder where compose mounts each secret
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_text(f"value of {secret}\n")
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("INSPECTOR_")]:
                patch.delenv(key)
            for key, value in env.items():
                if key == "INSPECTOR_SECRETS_DIR":
                    patch.setenv(key, str(root / value.lstrip("/")))
                elif key != "INSPECTOR_CONFIG":
                    patch.setenv(key, value)
            settings = load_settings(REPO / "configs" / "default.yaml")
        assert settings.kafka.bootstrap == "kafka:9092", name
        assert settings.metrics.bind_address == "0.0.0.0", name
        if command(service)[:1] == ["review"]:
            session = settings.review.session_secret
            assert session is not None and session.get_secret_value() == "value of review-session-secret", name
        assert settings.metrics.port == 9400, name


def test_inspector_commands_parse() -> None:
    """Each command line parses with the real CLI; the medical and VQA workers start with a plain ``up``."""
    for name, service in inspector_services().items():
        args = command(service)
        assert args[0] in cli().commands, f"{name} runs `inspector {args[0]}`, which does not exist"
        context = parse_cli(args)
        if args[0] == "gateway":
            assert context.params["metrics_port"] == 9400, "without --metrics-port the gateway has no /healthz"
    for name in ("medical-worker", "vqa-worker"):
        service = inspector_services()[name]
        assert command(service)[0] == name and not service.get("profiles") and replicas(service) == 1, name


def test_medical_and_vqa_topics_exist_before_their_workers_start() -> None:
    """Auto-creation is off: the init job creates each worker's request and dead-letter topics (default options)."""
    script = "\n".join(command(services()["kafka-init"]))
    created = re.findall(r"for topic in ([^;]+); do", script)[0].split()
    for name in ("medical-worker", "vqa-worker"):
        params = parse_cli(command(services()[name])).params
        assert {params["topic"], params["dlq"]} <= set(created), name
        assert services()[name]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_gateway_publishes_synthetic_frames_from_two_rigs() -> None:
    context = parse_cli(command(services()["gateway"]))
    assert context.params["source"].value == "synthetic"
    assert context.params["cameras"] == "rig-1,rig-2"
    assert context.params["fps"] == 5


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> host path or volume name."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def grafana_dashboard_folder() -> str:
    """Where deploy/grafana's dashboard provider reads dashboards from, inside the container."""
    folder = REPO / "deploy" / "grafana" / "provisioning" / "dashboards"
    paths = {
        provider["options"]["path"]
        for file in sorted(folder.glob("*.y*ml"))
        for provider in yaml.safe_load(file.read_text()).get("providers", [])
    }
    assert len(paths) == 1, paths
    return str(paths.pop())


def test_grafana_is_pinned_to_11_and_provisioned_from_the_repository() -> None:
    grafana = services()["grafana"]
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", grafana["image"])
    assert mounts(grafana)["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert mounts(grafana)[grafana_dashboard_folder()] == "../grafana/dashboards"
    assert environment(grafana)["INSPECTOR_PROMETHEUS_URL"] == "http://prometheus:9090"  # the data source's URL


def test_prometheus_runs_the_repository_configuration() -> None:
    prometheus = services()["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == "../prometheus/prometheus.yml"
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for pattern in config.get("rule_files", []):
        folder = pattern.split("/")[0]
        assert mounts(prometheus)[f"/etc/prometheus/{folder}"] == f"../prometheus/{folder}", pattern


def prometheus_file_sd_folders() -> dict[str, set[str]]:
    """Job name -> the folders (relative to /etc/prometheus) its file_sd_configs read."""
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    return {
        job["job_name"]: {str(Path(f).parent) for sd in job.get("file_sd_configs", []) for f in sd["files"]}
        for job in config["scrape_configs"]
    }


def targets_script() -> str:
    return "\n".join(command(services()["prometheus-targets"]))


def targets_namespace() -> dict[str, Any]:
    """The targets writer's definitions (``JOBS``, ``targets``), without its loop."""
    namespace: dict[str, Any] = {}
    exec(targets_script().split("\nwhile True:")[0], namespace)
    return namespace


def test_prometheus_targets_are_written_where_prometheus_reads_them() -> None:
    writer, prometheus = services()["prometheus-targets"], services()["prometheus"]
    volume = mounts(prometheus)["/etc/prometheus/targets"]
    assert mounts(writer)["/targets"] == volume and volume in compose()["volumes"]
    jobs = targets_namespace()["JOBS"]
    folders = prometheus_file_sd_folders()
    assert folders["inspector-worker"] == {"targets/workers"} and set(jobs["workers"][0]) == {
        name for name, s in inspector_services().items() if command(s)[:1] == ["worker"]
    }
    assert folders["inspector-gateway"] == {"targets/gateways"} and jobs["gateways"][0] == ["gateway"]
    assert folders["inspector-medical-worker"] == {"targets/medical"} and jobs["medical"][0] == ["medical-worker"]
    assert folders["inspector-vqa-worker"] == {"targets/vqa"} and jobs["vqa"][0] == ["vqa-worker"]
    assert folders["inspector-review"] == {"targets/review"} and jobs["review"][0] == ["review"]
    for folder, (names, port) in jobs.items():  # each listed service serves /metrics on the port written
        for name in names:
            env = environment(services()[name])
            review = command(services()[name])[:1] == ["review"]
            served = env["INSPECTOR__REVIEW__PORT" if review else "INSPECTOR__METRICS__PORT"]
            assert int(served) == port, f"{folder}: {name} serves /metrics on {served}, the target says {port}"
    assert {f"targets/{job}" for job in jobs} == set().union(*folders.values()), "every target folder is written"
    script = targets_script()
    assert '"labels": {"line": "compose"}' in script, "dashboards and alerts group by the target label line"
    assert 'f"{folder}/compose.json.tmp"' in script and "os.replace(" in script, "write atomically"


def test_prometheus_targets_lists_each_replica_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    namespace = targets_namespace()
    replicas_of = {"inspection-worker": ["10.0.0.2", "10.0.0.3"], "gateway": ["10.0.0.9"], "review": ["10.0.0.7"]}
    names = {"10.0.0.2": "inspector-inspection-worker-1.inspector_default", "10.0.0.3": "inspector-inspection-worker-2",
             "10.0.0.7": "inspector-review-1"}  # fmt: skip

    def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if host not in replicas_of:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in replicas_of[host] * 2]

    def gethostbyaddr(ip: str) -> tuple[str, list[str], list[str]]:
        if ip not in names:
            raise socket.herror(1, "unknown host")
        return names[ip], [], [ip]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyaddr", gethostbyaddr)
    workers = namespace["targets"](["inspection-worker", "inspection-worker-gpu"], 9400)
    assert workers == ["inspector-inspection-worker-1:9400", "inspector-inspection-worker-2:9400"]
    assert namespace["targets"](["gateway"], 9400) == ["10.0.0.9:9400"]
    assert namespace["targets"](*namespace["JOBS"]["review"]) == ["inspector-review-1:8800"]


# -- the review-and-retrain loop: evidence, models, the review station ---------------------------------------

# Setting -> the named volume its path must lie on, in every container that sets it (docs/REVIEW.md).
LOOP_SETTINGS = {
    "INSPECTOR__EVIDENCE__ROOT": "evidence",
    "INSPECTOR__REGISTRY__MODELS_DIR": "models",
    "INSPECTOR__INFERENCE__CACHE_DIR": "models",
}
LOOP_VOLUMES = {"evidence", "models", "review"}


def volume_entries(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """``(source, container path, read-only)`` of each short-syntax volume of a service."""
    found = []
    for entry in service.get("volumes", []):
        source, target, *options = str(entry).split(":")
        found.append((source, target, bool(options) and "ro" in options[0].split(",")))
    return found


def holding_mount(service: Mapping[str, Any], path: str) -> tuple[str, str, bool] | None:
    """The mount that holds ``path`` inside the container (the deepest one), or None."""
    holding = [m for m in volume_entries(service) if Path(path) == Path(m[1]) or Path(m[1]) in Path(path).parents]
    return max(holding, key=lambda m: len(Path(m[1]).parts), default=None)


def test_loop_paths_lie_on_the_shared_volumes_at_one_path_everywhere() -> None:
    """Evidence, promoted models and their ONNX exports live on named volumes, mounted at the same path in every
    container that names them (a model file's path is stored in Redis and opened by every worker)."""
    declared = compose()["volumes"]
    users = {name: s for name, s in inspector_services().items() if set(LOOP_SETTINGS) & set(environment(s))}
    inspection = {name for name, s in inspector_services().items() if command(s)[:1] == ["worker"]}
    assert set(users) == inspection | {"review"}, "the inspection workers of every profile, and the review station"
    for variable, volume in LOOP_SETTINGS.items():
        paths = {environment(s).get(variable) for s in users.values()}
        assert len(paths) == 1, f"{variable} differs between services: {paths}"
        for name, service in users.items():
            mount = holding_mount(service, environment(service)[variable])
            assert mount is not None and mount[0] == volume, f"{name}: {variable} is not on volume {volume}"
            assert volume in declared, f"volume {volume} is not declared"
    for name in inspection:  # workers write evidence and ONNX exports, and read promoted models
        for variable in LOOP_SETTINGS:
            mount = holding_mount(users[name], environment(users[name])[variable])
            assert mount is not None and not mount[2], f"{name}: {variable} is read-only"
    review = users["review"]
    evidence = holding_mount(review, environment(review)["INSPECTOR__EVIDENCE__ROOT"])
    models = holding_mount(review, environment(review)["INSPECTOR__REGISTRY__MODELS_DIR"])
    assert evidence is not None and evidence[2], "the review station only reads evidence: mount it read-only"
    assert models is not None and not models[2], "`inspector promote` runs in the review container and writes there"
    for name, service in services().items():
        if name not in users:
            assert not {m[0] for m in volume_entries(service)} & LOOP_VOLUMES, f"{name} mounts a loop volume"


def test_review_station_is_published_probed_and_keeps_its_files_on_its_volume() -> None:
    review = services()["review"]
    env = environment(review)
    port = int(env["INSPECTOR__REVIEW__PORT"])
    assert parse_cli(command(review)).info_name == "review" and command(review) == ["review"]
    assert env["INSPECTOR__REVIEW__BIND_ADDRESS"] == "0.0.0.0", "published and scraped from outside the container"
    assert [int(str(p).rsplit(":", 1)[1]) for p in review["ports"]] == [port]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(review["healthcheck"]["test"]), (
        "the image's HEALTHCHECK probes the workers' port 9400: the station needs its own"
    )
    for variable in ("INSPECTOR__REVIEW__USERS_FILE", "INSPECTOR__REVIEW__LABELS", "INSPECTOR__REVIEW__AUDIT_LOG"):
        mount = holding_mount(review, env[variable])
        assert mount is not None and mount[0] == "review" and not mount[2], f"{variable} must be on volume review"
    assert review["depends_on"] == {"redis": {"condition": "service_healthy"}}, "it needs Redis, not Kafka"
    assert replicas(review) == 1 and not review.get("profiles"), "one writer of the audit log, started by `up`"


def test_review_session_secret_is_a_compose_secret_that_is_never_committed() -> None:
    from inspector.config import ENV_PREFIX

    variable = f"{ENV_PREFIX}REVIEW__SESSION_SECRET"
    review = services()["review"]
    env = environment(review)
    assert variable not in env, "the secret must not be written into the compose file"
    assert secret_mounts(review) == {f"{env['INSPECTOR_SECRETS_DIR']}/{variable}": "review-session-secret"}, (
        "inspector.config reads a secret from the file named like its variable in $INSPECTOR_SECRETS_DIR"
    )
    source = (COMPOSE_DIR / compose()["secrets"]["review-session-secret"]["file"]).resolve()
    assert source.parent == COMPOSE_DIR / "secrets" and (source.parent / "README.md").is_file()
    check = subprocess.run(["git", "check-ignore", "-q", str(source)], cwd=REPO, timeout=30, check=False)
    assert check.returncode == 0, f"{source.relative_to(REPO)} is not git-ignored: it would be committed"
    listed = subprocess.run(["git", "ls-files", "--", str(source.parent)], cwd=REPO, capture_output=True, text=True,
                            timeout=30, check=True).stdout.split()  # fmt: skip
    assert set(listed) <= {"deploy/compose/secrets/README.md", "deploy/compose/secrets/.gitignore"}, listed
    assert [name for name, s in services().items() if s.get("secrets")] == ["review"]


# -- Dockerfiles -----------------------------------------------------------------------------------------


def instructions(path: Path) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(path)))


def final_stage(commands: list[dockerfile.Command]) -> list[dockerfile.Command]:
    starts = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    return commands[starts[-1] :]


def ignored_by_dockerignore(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    first = path.strip("/").split("/")[0]
    return any(p.strip("/") == first for p in patterns if not p.startswith("!") and "*" not in p)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_worker_dockerfile(variant: str) -> None:
    commands = instructions(DOCKERFILES[variant])
    last = final_stage(commands)
    users = [c.value[0] for c in last if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must run as a non-root user"
    health = [c for c in last if c.cmd == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1].original, "HEALTHCHECK on /healthz"
    assert [c.value for c in last if c.cmd == "ENTRYPOINT"][-1] == ("inspector",)
    env = " ".join(c.original for c in last if c.cmd == "ENV")
    assert "INSPECTOR__METRICS__BIND_ADDRESS=0.0.0.0" in env, "metrics must listen beyond the container's loopback"
    assert "INSPECTOR_CONFIG=/etc/inspector/config.yaml" in env
    text = DOCKERFILES[variant].read_text()
    if variant == "cpu":
        assert "python:3.11-slim" in text
        assert "--index-url https://download.pytorch.org/whl/cpu" in text
    else:
        assert re.search(r"nvidia/cuda:[\d.]+-runtime-ubuntu", text), "an NVIDIA CUDA runtime base image"
        assert "INSPECTOR__INFERENCE__DEVICE=cuda" in env


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_volume_mount_points_belong_to_the_image_user(variant: str) -> None:
    """A fresh named volume takes the owner of the folder it is mounted on: the image makes each one for its user."""
    last = final_stage(instructions(DOCKERFILES[variant]))
    user = [c.value[0] for c in last if c.cmd == "USER"][-1].split(":")[0]
    runs = " ".join(" ".join(c.value) for c in last if c.cmd == "RUN")
    made = {Path(p) for args in re.findall(r"mkdir -p ((?:/[\w./-]+\s*)+)", runs) for p in args.split()}
    assert f"chown -R {user}:{user} {LOOP}" in runs, f"{variant}: the mount points must belong to uid {user}"
    checked = 0
    for name, service in inspector_services().items():
        if not str(service["image"]).endswith(f"-{variant}") or "user" in service:
            continue
        for source, target, _ in volume_entries(service):
            if source in compose()["volumes"]:
                assert Path(target) in made and LOOP in Path(target).parents, f"{name}: {target} not made for {user}"
                checked += 1
    assert checked >= 2, f"{variant}: no named volume mounted by a service of this image"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_copies_what_the_context_holds(variant: str) -> None:
    for c in instructions(DOCKERFILES[variant]):
        if c.cmd != "COPY" or any(flag.startswith("--from") for flag in c.flags):
            continue
        for source in c.value[:-1]:
            if "$" in source:  # a build argument; its default is checked where it is used
                continue
            assert (REPO / source).exists(), f"{DOCKERFILES[variant].name}: COPY {source}: not in the repository"
            assert not ignored_by_dockerignore(source), f"{DOCKERFILES[variant].name}: COPY {source} is .dockerignored"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_base_images_are_pinned(variant: str) -> None:
    text = DOCKERFILES[variant].read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    for c in instructions(DOCKERFILES[variant]):
        if c.cmd != "FROM":
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), c.value[0])
        stages = {x.value[2] for x in instructions(DOCKERFILES[variant]) if x.cmd == "FROM" and len(x.value) > 2}
        if image in stages:
            continue
        _, _, tag = image.rpartition(":")
        assert tag and "/" not in tag and tag != "latest", f"{variant}: pin the base image, got {image}"
