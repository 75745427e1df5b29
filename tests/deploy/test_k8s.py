"""deploy/k8s, rendered and validated offline.

Each kustomization (``base``, ``overlays/gpu``) is rendered with ``kustomize build`` or ``kubectl kustomize``
when either is on the PATH, else with :func:`render`, a small Python renderer of exactly the Kustomize features
these manifests use (it refuses any other). When a binary is present the two renderings are also compared, so
the fallback stays honest. Then:

* every built-in kind is validated with ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: unknown
  fields are errors) for the oldest and the newest Kubernetes version it knows;
* KEDA's ScaledObject / TriggerAuthentication and the Prometheus Operator's PodMonitor are validated with the
  pydantic models ``cloudcoil-models-keda`` / ``-prometheus-operator`` generate from those projects' CRDs,
  plus a check that no field was dropped as unknown (the models ignore extra fields);
* the facts the line relies on: KEDA never scales past the partitions, probes hit /healthz and /readyz on the
  port that serves them, credentials only come from Secrets, every environment variable is a real setting, every
  command line parses with the real CLI, the GPU overlay puts the inspection workers (only) on GPUs, and the
  review-and-retrain loop's folders (evidence, promoted models) are ReadWriteMany claims mounted at the one path
  the settings name in the workers and the review station, which keeps its own files on its own claim.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer.main
import yaml

from inspector.config import EvidenceSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/gpu"]
DEFAULTS = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
CRD_API_VERSIONS = {"keda.sh/v1alpha1", "monitoring.coreos.com/v1"}
SECRET_WORDS = re.compile(r"PASSWORD|USERNAME|SECRET|TOKEN|CREDENTIAL|API_?KEY", re.IGNORECASE)
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# -- a Kustomize subset in Python ----------------------------------------------------------------------------

_SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "patches"}
_MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes"}  # strategic-merge lists keyed by name


def configmap_hash(name: str, data: Mapping[str, str]) -> str:
    """Kustomize's name suffix of a generated ConfigMap (sigs.k8s.io/kustomize/api/hasher)."""
    encoded = json.dumps({"data": dict(data), "kind": "ConfigMap", "name": name}, separators=(",", ":"), sort_keys=True)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):  # as Go's json.Marshal
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """A strategic-merge patch for what the overlays patch: maps merge, named lists merge by name, others replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for field, value in patch.items():
            if value is None:
                merged.pop(field, None)
            else:
                merged[field] = strategic_merge(base[field], value, field) if field in base else copy.deepcopy(value)
        return merged
    if key in _MERGE_BY_NAME and isinstance(base, list) and isinstance(patch, list):
        merged_list = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                merged_list[index[item["name"]]] = strategic_merge(merged_list[index[item["name"]]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _selected(resource: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    if set(target) - {"kind", "name", "labelSelector"}:
        raise NotImplementedError(f"patch target fields {sorted(target)}: extend the Python renderer")
    labels = resource["metadata"].get("labels", {})
    wanted = dict(term.split("=", 1) for term in target.get("labelSelector", "").split(",") if term)
    return (
        target.get("kind", resource["kind"]) == resource["kind"]
        and target.get("name", resource["metadata"]["name"]) == resource["metadata"]["name"]
        and all(labels.get(k) == v for k, v in wanted.items())
    )


def _pod_spec_configmap_refs(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The dicts in a pod spec whose ``name`` names a ConfigMap."""
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            yield volume["configMap"]
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield source["configMapRef"]
        for variable in container.get("env", []):
            if "configMapKeyRef" in variable.get("valueFrom", {}):
                yield variable["valueFrom"]["configMapKeyRef"]


def render(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build folder`` for the features deploy/k8s uses; anything else raises NotImplementedError."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    if unknown := set(kustomization) - _SUPPORTED:
        raise NotImplementedError(f"{folder}: Kustomize fields {sorted(unknown)}: extend the Python renderer")
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        resources += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    renamed: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        if unknown := set(generator) - {"name", "files", "literals"}:
            raise NotImplementedError(f"configMapGenerator fields {sorted(unknown)}: extend the Python renderer")
        data: dict[str, str] = {}
        for item in generator.get("files", []):
            key, _, source = item.rpartition("=")
            data[key or Path(source).name] = (folder / source).read_text()
        for item in generator.get("literals", []):
            key, _, value = item.partition("=")
            data[key] = value
        name = renamed[generator["name"]] = f"{generator['name']}-{configmap_hash(generator['name'], data)}"
        resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    for resource in resources:
        if resource["kind"] == "Deployment":
            for ref in _pod_spec_configmap_refs(resource["spec"]["template"]["spec"]):
                ref["name"] = renamed.get(ref["name"], ref["name"])
    for patch in kustomization.get("patches", []):
        if unknown := set(patch) - {"path", "target"}:
            raise NotImplementedError(f"patch fields {sorted(unknown)}: extend the Python renderer")
        body = yaml.safe_load((folder / patch["path"]).read_text())
        target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
        body = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}
        for i, resource in enumerate(resources):
            if _selected(resource, target):
                resources[i] = strategic_merge(resource, body)
    if namespace := kustomization.get("namespace"):
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    return resources


def kustomize_binary() -> list[str] | None:
    if path := shutil.which("kustomize"):
        return [path, "build", "--load-restrictor=LoadRestrictionsNone"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize", "--load-restrictor=LoadRestrictionsNone"]
    return None


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    """The manifests of a kustomization, rendered by the real tool when there is one."""
    binary = kustomize_binary()
    if binary is None:
        return tuple(render(K8S / name))
    result = subprocess.run([*binary, str(K8S / name)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(binary)} {name} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


# -- helpers over rendered manifests -------------------------------------------------------------------------


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def configmap(docs: tuple[dict[str, Any], ...], prefix: str) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == "ConfigMap" and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    assert len(found) == 1, f"one generated ConfigMap {prefix}-<hash> expected"
    return found[0]


def containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, list)
    return found


def effective_env(docs: tuple[dict[str, Any], ...], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps, then env (a secretKeyRef becomes a placeholder)."""
    maps = of_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = f"secret-{ref['name']}-{ref['key']}"
    return env


@cache
def cli_commands() -> dict[str, Any]:
    from workers.cli import app

    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _normalised(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Documents keyed by kind and name, generated-name hashes masked, named lists sorted (for comparison)."""

    def tidy(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: tidy(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [tidy(v) for v in value]
            if items and all(isinstance(v, dict) and "name" in v for v in items):
                items.sort(key=lambda v: str(v["name"]))
            return items
        if isinstance(value, str):
            return re.sub(r"^(inspector-(?:config|env))-[a-z0-9]{10}$", r"\1-HASH", value)
        return value

    return {(d["kind"], tidy(d["metadata"]["name"])): tidy(d) for d in docs}


# -- rendering ------------------------------------------------------------------------------------------------


def test_configmap_hash_matches_kustomize_documentation() -> None:
    # The example of the Kustomize configMapGenerator docs: my-java-server-env-vars-44k658k8gk
    data = {"JAVA_HOME": "/opt/java/jdk", "JAVA_TOOL_OPTIONS": "-agentlib:hprof"}
    assert configmap_hash("my-java-server-env-vars", data) == "44k658k8gk"


def test_strategic_merge_of_named_lists() -> None:
    base = {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}], "tolerations": [{"key": "k"}]}
    patch = {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}], "tolerations": [{"key": "g"}]}
    merged = strategic_merge(base, patch)
    assert merged["containers"][0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert merged["tolerations"] == [{"key": "g"}]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_python_renderer_agrees_with_kustomize(name: str) -> None:
    if kustomize_binary() is None:
        pytest.skip("no kustomize or kubectl on the PATH: the manifests were rendered by the Python renderer only")
    assert _normalised(render(K8S / name)) == _normalised(rendered(name))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders_one_deployment_per_worker_kind_the_gateway_and_the_review_station(name: str) -> None:
    docs = rendered(name)
    assert set(of_kind(docs, "Deployment")) == {
        "gateway", "inspection-worker", "medical-worker", "vqa-worker", "review"
    }  # fmt: skip
    assert {d["kind"] for d in docs} >= {
        "Namespace", "ConfigMap", "PodDisruptionBudget", "ScaledObject", "PodMonitor", "Service",
        "PersistentVolumeClaim",
    }  # fmt: skip
    assert set(of_kind(docs, "PersistentVolumeClaim")) == {"evidence", "models", "review"}
    assert all(d["metadata"].get("namespace") == "inspector" for d in docs if d["kind"] != "Namespace")


# -- schemas --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_builtin_kinds_validate_against_the_kubernetes_schemas(name: str, version: str) -> None:
    checked = 0
    for doc in rendered(name):
        if doc["apiVersion"] in CRD_API_VERSIONS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message} at {exc.path}")
        checked += 1
    assert checked >= 7


def test_kubernetes_validation_is_strict() -> None:
    deployment = copy.deepcopy(of_kind(rendered("base"), "Deployment")["inspection-worker"])
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")  # misspelt: the probe would silently not exist
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


@cache
def crd_models() -> dict[tuple[str, str], Any]:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import PodMonitor

    return {
        ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): TriggerAuthentication,
        ("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor,
    }


def crd_problems(doc: Mapping[str, Any]) -> str | None:
    """Why a custom resource does not fit its CRD's schema (via the generated model), or None."""
    from pydantic import ValidationError

    model = crd_models()[(doc["apiVersion"], doc["kind"])]
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        return str(exc)
    kept = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if kept != doc:  # the models ignore unknown fields: a dropped field is a misspelt or misplaced one
        return f"fields not in the CRD schema: {json.dumps(doc, sort_keys=True)} != {json.dumps(kept, sort_keys=True)}"
    return None


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_custom_resources_validate_against_their_crds(name: str) -> None:
    custom = [d for d in rendered(name) if d["apiVersion"] in CRD_API_VERSIONS]
    assert {(d["apiVersion"], d["kind"]) for d in custom} == set(crd_models())
    for doc in custom:
        problem = crd_problems(doc)
        assert problem is None, f"{doc['kind']}/{doc['metadata']['name']}: {problem}"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "maxReplicaCnt"), 4),  # misspelt
        (("spec", "maxReplicaCount"), "four"),  # wrong type
        (("spec", "scaleTargetRef"), None),  # required field removed
    ],
    ids=["misspelt", "wrong-type", "missing-required"],
)
def test_crd_check_catches_mistakes(path: tuple[str, ...], value: Any) -> None:
    doc = copy.deepcopy(of_kind(rendered("base"), "ScaledObject")["inspection-worker"])
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert crd_problems(doc) is not None


# -- scaling --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_keda_scales_the_inspection_workers_on_consumer_lag_within_the_partitions(name: str) -> None:
    docs = rendered(name)
    scaled = of_kind(docs, "ScaledObject")["inspection-worker"]["spec"]
    target = of_kind(docs, "Deployment")[scaled["scaleTargetRef"]["name"]]
    assert target["metadata"]["name"] == "inspection-worker"
    assert "replicas" not in target["spec"], "replicas belong to KEDA's HPA; a fixed value fights it on every apply"
    partitions = DEFAULTS["topics"]["partitions"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    assert {t["metadata"]["topic"] for t in triggers} == {DEFAULTS["topics"]["visible"], DEFAULTS["topics"]["infrared"]}
    env = effective_env(docs, containers(target)[0])
    authentications = of_kind(docs, "TriggerAuthentication")
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == DEFAULTS["worker"]["group_id"] == "inspector-workers"
        assert int(meta["lagThreshold"]) > 0
        assert meta["allowIdleConsumers"] == "false"
        assert meta["offsetResetPolicy"] == "earliest"
        assert meta["bootstrapServersFromEnv"] in env, "KEDA resolves it from the target container's environment"
        assert trigger["authenticationRef"]["name"] in authentications


def test_keda_authenticates_with_the_workers_kafka_secret() -> None:
    docs = rendered("base")
    refs = of_kind(docs, "TriggerAuthentication")["inspector-kafka"]["spec"]["secretTargetRef"]
    assert {r["parameter"] for r in refs} == {"sasl", "username", "password", "tls"}
    worker = containers(of_kind(docs, "Deployment")["inspection-worker"])[0]
    worker_secrets = {v["valueFrom"]["secretKeyRef"]["name"] for v in worker["env"] if "valueFrom" in v}
    assert {r["name"] for r in refs} <= worker_secrets


def test_rolling_updates_and_disruptions_take_one_worker_at_a_time() -> None:
    docs = rendered("base")
    worker = of_kind(docs, "Deployment")["inspection-worker"]
    rolling = worker["spec"]["strategy"]["rollingUpdate"]
    # A surge pod could not become ready while the others hold every partition (/readyz needs partitions).
    assert rolling == {"maxSurge": 0, "maxUnavailable": 1}
    pdb = of_kind(docs, "PodDisruptionBudget")["inspection-worker"]["spec"]
    assert pdb["maxUnavailable"] == 1
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert of_kind(docs, "ScaledObject")["inspection-worker"]["spec"]["minReplicaCount"] >= 2, (
        "with one replica a rollout or drain stops the line"
    )
    assert of_kind(docs, "Deployment")["gateway"]["spec"]["strategy"]["type"] == "Recreate"


# -- containers -----------------------------------------------------------------------------------------------


def served_port(env: Mapping[str, str], container: Mapping[str, Any]) -> tuple[str, int, str | None]:
    """The container port that serves /healthz, /readyz and /metrics: its name, number and bind address.

    Workers and the gateway serve them on ``metrics.port`` (port ``metrics``); the review station serves
    them with its pages on ``review.port`` (port ``http``).
    """
    if container["args"][0] == "review":
        port = int(env.get("INSPECTOR__REVIEW__PORT", DEFAULTS["review"]["port"]))
        return "http", port, env.get("INSPECTOR__REVIEW__BIND_ADDRESS")
    port = int(env.get("INSPECTOR__METRICS__PORT", DEFAULTS["metrics"]["port"]))
    return "metrics", port, env.get("INSPECTOR__METRICS__BIND_ADDRESS")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_hit_healthz_and_readyz_on_the_port_that_serves_them(name: str) -> None:
    docs = rendered(name)
    for deployment in of_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]
        for container in pod["spec"]["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            env = effective_env(docs, container)
            port_name, port, bind = served_port(env, container)
            assert bind == "0.0.0.0", f"{where}: probes could not connect"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports[port_name] == port, where
            for probe, path in (
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ):
                http = container[probe]["httpGet"]
                assert (http["path"], http["port"]) == (path, port_name), f"{where}: {probe}"
            annotations = pod["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert int(annotations["prometheus.io/port"]) == port
            assert annotations["prometheus.io/path"] == "/metrics"
            if container["args"][0] == "gateway":
                assert f"--metrics-port={port}" in container["args"], (
                    "without --metrics-port the gateway has no /healthz"
                )


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_variable_is_a_setting_and_the_settings_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container environment over configs/default.yaml loads: no misspelt INSPECTOR__ variable, SASL complete."""
    from inspector.config import load_settings

    docs = rendered(name)
    config = configmap(docs, "inspector-config")
    assert config["data"]["config.yaml"] == (REPO / "configs" / "default.yaml").read_text()
    for deployment in of_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            env = effective_env(docs, container)
            mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
            volume = next(v for v in pod["volumes"] if v["name"] == "config")
            assert volume["configMap"]["name"] == config["metadata"]["name"]
            assert env["INSPECTOR_CONFIG"] == f"{mount['mountPath']}/config.yaml"
            with monkeypatch.context() as patch:
                for key in [k for k in os.environ if k.startswith("INSPECTOR_")]:
                    patch.delenv(key)
                for key, value in env.items():
                    if key.startswith("INSPECTOR__"):
                        patch.setenv(key, value)
                settings = load_settings(REPO / "configs" / "default.yaml")
            assert settings.kafka.security_protocol == "SASL_SSL"
            assert settings.metrics.bind_address == "0.0.0.0"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_command_lines_parse(name: str) -> None:
    deployments = of_kind(rendered(name), "Deployment")
    for deployment in deployments.values():
        for container in containers(deployment):
            command, *args = container["args"]
            assert command in cli_commands(), f"`inspector {command}` does not exist"
            cli_commands()[command].make_context(command, list(args))
    for kind in ("medical-worker", "vqa-worker"):  # no autoscaler: a fixed replica
        assert deployments[kind]["spec"]["replicas"] == 1, kind
        assert containers(deployments[kind])[0]["args"][0] == kind


def torch_threads(docs: tuple[dict[str, Any], ...], container: Mapping[str, Any]) -> int:
    """The torch threads a worker container asks for, by the means its command honours."""
    env = effective_env(docs, container)
    command, *args = container["args"]
    if command == "worker":
        return int(env["INSPECTOR__INFERENCE__THREADS"])
    if command == "vqa-worker":
        return int(cli_commands()[command].make_context(command, list(args)).params["threads"])
    return int(env["OMP_NUM_THREADS"])  # the medical worker has no option: torch reads OMP_NUM_THREADS


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_worker_threads_match_the_cpu_request(name: str) -> None:
    """torch would otherwise start one thread per core of the node, however few the pod may use."""
    docs = rendered(name)
    for deployment in of_kind(docs, "Deployment").values():
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] != "worker":
            continue
        (container,) = containers(deployment)
        cpus = float(container["resources"]["requests"]["cpu"])
        assert torch_threads(docs, container) == cpus, deployment["metadata"]["name"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_no_plain_text_secrets(name: str) -> None:
    docs = rendered(name)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created in the cluster, never committed"
    for deployment in of_kind(docs, "Deployment").values():
        for container in containers(deployment):
            for variable in container.get("env", []):
                if SECRET_WORDS.search(variable["name"]):
                    assert "value" not in variable and "secretKeyRef" in variable["valueFrom"], variable["name"]
    for cm in of_kind(docs, "ConfigMap").values():
        for key, value in cm["data"].items():
            assert not SECRET_WORDS.search(key), f"{cm['metadata']['name']}: {key} belongs in a Secret"
            if key.endswith((".yaml", ".yml")):
                _assert_no_secret_values(yaml.safe_load(value), f"{cm['metadata']['name']}/{key}")
    for auth in of_kind(docs, "TriggerAuthentication").values():
        assert set(auth["spec"]) == {"secretTargetRef"}, "KEDA reads credentials from Secrets only"


def _assert_no_secret_values(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if SECRET_WORDS.search(str(key)):
                assert value in (None, ""), f"{where}: {key} has a value"
            _assert_no_secret_values(value, f"{where}.{key}")


def test_secret_check_catches_a_password_in_the_config() -> None:
    with pytest.raises(AssertionError, match="has a value"):
        _assert_no_secret_values({"redis": {"password": "hunter2"}}, "config.yaml")


# -- the review-and-retrain loop: evidence, models, the review station ---------------------------------------

# Setting -> the claim its path must lie on, in every container that sets it (docs/REVIEW.md).
LOOP_SETTINGS = {
    "INSPECTOR__EVIDENCE__ROOT": "evidence",
    "INSPECTOR__REGISTRY__MODELS_DIR": "models",
    "INSPECTOR__INFERENCE__CACHE_DIR": "models",
}
_BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(text: str) -> int:
    """A Kubernetes storage quantity in binary units (``25Gi``) as bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", text)
    assert match, f"use a binary storage unit (Ki, Mi, Gi, Ti), got {text}"
    return int(match[1]) * _BINARY_UNITS[match[2]]


def holding_mount(pod: Mapping[str, Any], container: Mapping[str, Any], path: str) -> tuple[dict[str, Any], bool]:
    """The pod volume whose mount holds ``path`` in the container (the deepest mount), and whether it is read-only."""
    holding = [m for m in container.get("volumeMounts", [])
               if Path(path) == Path(m["mountPath"]) or Path(m["mountPath"]) in Path(path).parents]  # fmt: skip
    assert holding, f"{container['name']}: nothing is mounted at {path}"
    mount = max(holding, key=lambda m: len(Path(m["mountPath"]).parts))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume, bool(mount.get("readOnly"))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_loop_paths_lie_on_read_write_many_claims_at_one_path_everywhere(name: str) -> None:
    """Evidence and promoted models are shared by every worker pod (and the review station), at the same path:
    a promoted file's path is stored in Redis and opened by every worker."""
    docs = rendered(name)
    claims = of_kind(docs, "PersistentVolumeClaim")
    users: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, str]]] = {}
    for deployment_name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            env = effective_env(docs, container)
            if set(LOOP_SETTINGS) & set(env):
                users[deployment_name] = (pod, container, env)
    assert set(users) == {"inspection-worker", "review"}
    for variable, claim in LOOP_SETTINGS.items():
        assert len({env[variable] for _, _, env in users.values()}) == 1, f"{variable} differs between pods"
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], f"{claim}: every worker pod mounts it"
        for deployment_name, (pod, container, env) in users.items():
            volume, read_only = holding_mount(pod, container, env[variable])
            assert volume.get("persistentVolumeClaim", {}).get("claimName") == claim, f"{deployment_name}: {variable}"
            if deployment_name == "inspection-worker":
                assert not read_only, f"the workers write {variable}"
    pod, container, env = users["review"]
    assert holding_mount(pod, container, env["INSPECTOR__EVIDENCE__ROOT"])[1], "the station only reads evidence"
    models_read_only = holding_mount(pod, container, env["INSPECTOR__REGISTRY__MODELS_DIR"])[1]
    assert not models_read_only, "`inspector promote` runs in the review pod and writes there"
    evidence = quantity_bytes(claims["evidence"]["spec"]["resources"]["requests"]["storage"])
    max_bytes = EvidenceSettings(**DEFAULTS["evidence"]).max_bytes  # configs/default.yaml over the built-in default
    assert evidence > max_bytes, "the workers prune to evidence.max_bytes: a smaller claim would fill up first"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_review_station_keeps_its_files_on_its_claim_and_its_secrets_in_a_secret(name: str) -> None:
    docs = rendered(name)
    deployment = of_kind(docs, "Deployment")["review"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = effective_env(docs, container)
    assert container["args"] == ["review"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}, (
        "one writer of the audit log, on a ReadWriteOnce claim"
    )
    for variable in ("INSPECTOR__REVIEW__LABELS", "INSPECTOR__REVIEW__AUDIT_LOG"):
        volume, read_only = holding_mount(pod, container, env[variable])
        assert volume.get("persistentVolumeClaim", {}).get("claimName") == "review" and not read_only, variable
    users_file = Path(env["INSPECTOR__REVIEW__USERS_FILE"])
    volume, _ = holding_mount(pod, container, str(users_file))
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert volume["secret"]["secretName"] == "inspector-review", "the users file holds password hashes"
    assert {"key": "users.yaml", "path": str(users_file.relative_to(mount["mountPath"]))} in volume["secret"]["items"]
    assert "subPath" not in mount, "a subPath mount never sees an updated Secret"
    assert volume["secret"]["defaultMode"] & 0o040 and pod["securityContext"]["fsGroup"] == 10001, (
        "the station (uid 10001, group fsGroup) must read the users file"
    )
    secret = next(v for v in container["env"] if v["name"] == "INSPECTOR__REVIEW__SESSION_SECRET")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "inspector-review", "key": "session-secret"}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_review_service_reaches_the_station(name: str) -> None:
    docs = rendered(name)
    service = of_kind(docs, "Service")["review"]["spec"]
    deployment = of_kind(docs, "Deployment")["review"]
    (container,) = containers(deployment)
    port_name, port, _ = served_port(effective_env(docs, container), container)
    assert service["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["selector"].items() <= deployment["spec"]["selector"]["matchLabels"].items()
    (exposed,) = service["ports"]
    assert exposed["targetPort"] == port_name and exposed["port"] == port == DEFAULTS["review"]["port"]
    assert service.get("type", "ClusterIP") == "ClusterIP", "expose it through an Ingress with TLS, not a node port"


# -- monitoring -----------------------------------------------------------------------------------------------


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """Prometheus' ``replace`` relabeling, enough for podmonitor.yaml."""
    result = dict(labels)
    for rule in rules:
        assert rule.get("action", "replace") == "replace"
        value = ";".join(result.get(s, "") for s in rule["sourceLabels"])
        if match := re.fullmatch(rule.get("regex", "(.*)"), value):
            result[rule["targetLabel"]] = match.expand(re.sub(r"\$(\d+)", r"\\g<\1>", rule["replacement"]))
    return result


def test_podmonitor_scrapes_every_pod_once_under_the_job_names_of_the_dashboards() -> None:
    """Each pod has the port of exactly one endpoint (the operator drops a pod without it), which names its job."""
    docs = rendered("base")
    monitor = of_kind(docs, "PodMonitor")["inspector"]["spec"]
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    expected = {
        "inspection-worker": "inspector-worker",
        "gateway": "inspector-gateway",
        "medical-worker": "inspector-medical-worker",
        "vqa-worker": "inspector-vqa-worker",
        "review": "inspector-review",
    }
    for name, deployment in of_kind(docs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert monitor["selector"]["matchLabels"].items() <= labels.items(), name
        (container,) = containers(deployment)
        ports = {p["name"] for p in container["ports"]}
        (endpoint,) = [e for e in monitor["podMetricsEndpoints"] if e["port"] in ports]
        assert endpoint["port"] == served_port(effective_env(docs, container), container)[0], f"{name}: not /metrics"
        assert endpoint["path"] == "/metrics", name
        assert all(label in labels for label in monitor["podTargetLabels"]), f"{name}: dashboards group by line"
        meta = {"__meta_kubernetes_pod_label_app_kubernetes_io_name": labels["app.kubernetes.io/name"]}
        job = relabel(endpoint["relabelings"], {**meta, "job": "inspector/inspector"})["job"]
        assert job == expected[name], name
    assert set(expected.values()) <= jobs, "deploy/prometheus/prometheus.yml names the same jobs"
    assert monitor["podTargetLabels"] == ["line"]


# -- GPU overlay ----------------------------------------------------------------------------------------------


def test_gpu_overlay_puts_the_inspection_workers_and_only_them_on_gpus() -> None:
    """The medical and VQA commands load their models on the CPU (no device option): a GPU would sit idle."""
    for command in ("medical-worker", "vqa-worker"):
        assert not {"device", "inference_device"} & set(cli_commands()[command].make_context(command, []).params), (
            f"`inspector {command}` can use a GPU now: give it the GPU overlay too"
        )
    docs = rendered("overlays/gpu")
    base = of_kind(rendered("base"), "Deployment")
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        if container["args"][0] != "worker":
            assert deployment == base[name], f"{name} must not change in the GPU overlay"
            continue
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1, name
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"], name
        assert container["image"].endswith("-cuda"), name
        assert effective_env(docs, container)["INSPECTOR__INFERENCE__DEVICE"] == "cuda", name
        assert container["resources"]["limits"]["memory"], "the memory limit survives the patch"
        base_env = {v["name"] for v in containers(base[name])[0]["env"]}
        assert base_env <= {v["name"] for v in container["env"]}, f"{name}: the patch must not drop variables"
        base_pod = base[name]["spec"]["template"]["spec"]
        assert pod["volumes"] == base_pod["volumes"], f"{name}: the patch must keep the evidence and models claims"
        assert container["volumeMounts"] == containers(base[name])[0]["volumeMounts"], name
    assert "nvidia.com/gpu" not in json.dumps(of_kind(rendered("base"), "Deployment")), "the base asks for no GPU"
