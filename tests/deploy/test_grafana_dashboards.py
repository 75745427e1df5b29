"""deploy/grafana without services: the committed JSON is current, queries name real metrics, provisioning fits."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import REPO
from workers.medical import MedicalMetrics
from workers.metrics import GatewayMetrics, WorkerMetrics
from workers.review.metrics import ReviewMetrics
from workers.vqa import VQAMetrics

GRAFANA = REPO / "deploy" / "grafana"
METRIC = re.compile(r"\b(inspector_[a-z0-9_]+|up)\b")
JOB = re.compile(r'\bjob="([a-z-]+)"')
# Each worker kind's metric prefix and the Prometheus job its targets carry (prometheus.yml, podmonitor.yaml).
KINDS = {
    "inspector_review_": "inspector-review",
    "inspector_medical_": "inspector-medical-worker",
    "inspector_vqa_": "inspector-vqa-worker",
    "inspector_gateway_": "inspector-gateway",
    "inspector_": "inspector-worker",
}


def load_dashboards() -> ModuleType:
    """Import deploy/grafana/dashboards.py (a script, not a package) as a module."""
    spec = importlib.util.spec_from_file_location("grafana_dashboards", GRAFANA / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grafana_dashboards"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboards() -> ModuleType:
    return load_dashboards()


def committed() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def exported_names() -> set[str]:
    """Every sample name the worker, gateway, medical, VQA and review metrics export once each series exists."""
    registry = CollectorRegistry()
    worker = WorkerMetrics(registry)
    GatewayMetrics(registry)
    MedicalMetrics(registry)
    VQAMetrics(registry)
    ReviewMetrics(registry).decided_one("false_call", "a" * 64)
    worker.set_model("m", "1", 1.0, "torch", "-")
    worker.set_lag({("frames.visible", 0): 0})
    worker.modal_weight.labels("visible").set(0.5)
    worker.delivery.dlq.labels("bad_headers").inc()
    return {sample.name for family in registry.collect() for sample in family.samples} | {"up"}


def test_committed_json_is_what_the_code_builds(dashboards: ModuleType, tmp_path: Path) -> None:
    written = {path.name: path.read_text() for path in dashboards.write(tmp_path)}
    on_disk = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert sorted(on_disk) == sorted(written), "dashboard files differ from the generated set"
    stale = [name for name in written if on_disk[name] != written[name]]
    assert not stale, f"{stale} are stale: run `python deploy/grafana/dashboards.py` and commit the result"


def test_every_query_names_a_metric_the_workers_export(dashboards: ModuleType) -> None:
    names = exported_names()
    for model in committed().values():
        for title, expr in dashboards.panel_queries(model):
            used = set(METRIC.findall(expr))
            assert used, f"{title}: no metric in {expr}"
            assert used <= names, f"{title}: {sorted(used - names)} are not exported (see workers/*.py)"


def test_every_query_selects_the_job_of_its_metrics(dashboards: ModuleType) -> None:
    """A medical metric is read from job inspector-medical-worker, and so on: no query mixes kinds."""
    for title, expr in dashboards.panel_queries(committed()["inspection.json"]):
        jobs = set(JOB.findall(expr))
        assert len(jobs) == 1, f"{title}: one job per query, found {sorted(jobs)} in {expr}"
        for metric in set(METRIC.findall(expr)) - {"up"}:
            kind = next(job for prefix, job in KINDS.items() if metric.startswith(prefix))
            assert jobs == {kind}, f"{title}: {metric} comes from job {kind}, not {jobs}"


def test_rows_are_open_and_titles_unique(dashboards: ModuleType) -> None:
    model = committed()["inspection.json"]
    rows = [p for p in model["panels"] if p["type"] == "row"]
    assert [row["title"] for row in rows if row["collapsed"] or row.get("panels")] == [], "no collapsed rows"
    assert {"Medical report worker", "VQA worker", "Review and models"} <= {row["title"] for row in rows}
    panels = [p for p in model["panels"] if p["type"] != "row"]
    titles = [p["title"] for p in panels]
    assert len(set(titles)) == len(titles), "duplicate panel titles"
    assert {title for title, _ in dashboards.panel_queries(model)} == set(titles), "a panel without a query"
    assert not hasattr(dashboards, "PENDING_PANELS"), "every row is built on real metrics now"


def test_issue_panels_are_there(dashboards: ModuleType) -> None:
    exprs = "\n".join(expr for _, expr in dashboards.panel_queries(committed()["inspection.json"]))
    for needle in (
        'verdict="NG"', "inspector_crack_width_mm_bucket", "inspector_frames_consumed_total",
        "histogram_quantile(0.99, sum by (le) (rate(inspector_inference_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(inspector_end_to_end_seconds_bucket",
        "inspector_consumer_lag_records", "inspector_dlq_total", "inspector_unpaired_total",
        "inspector_modal_weight", "inspector_model_width_ratio", 'count(up{job="inspector-worker"',
        "inspector_ready", "inspector_gateway_frames_published_total", "inspector_gateway_frames_dropped_total",
        "inspector_gateway_publish_seconds_bucket",
        "inspector_medical_studies_total", "inspector_medical_latency_seconds_bucket",
        "inspector_medical_dlq_total", "inspector_medical_findings_total", "inspector_medical_ready",
        "inspector_medical_model_info", 'up{job="inspector-medical-worker"',
        "inspector_vqa_requests_total", "inspector_vqa_answers_total", "inspector_vqa_latency_seconds_bucket",
        "inspector_vqa_inference_seconds_bucket", "inspector_vqa_batch_requests_bucket", "inspector_vqa_dlq_total",
        "inspector_vqa_store_errors_total", "inspector_vqa_ready", "inspector_vqa_model_info",
        'up{job="inspector-vqa-worker"',
        "sum by (model_sha) (increase(inspector_review_false_calls_total{",
        ") / sum by (model_sha) (increase(inspector_review_decided_total{",
        "inspector_review_decisions_total", "inspector_review_backlog",
        'inspector_worker_shadow_comparisons_total{job="inspector-worker", line=~"$line", instance=~"$instance", '
        'agree="true"}',
        "inspector_worker_model_swaps_total", "inspector_worker_model_load_failures_total",
        "inspector_worker_evidence_written_total", "inspector_worker_evidence_bytes",
        "inspector_worker_evidence_failures_total",
    ):  # fmt: skip
        assert needle in exprs, needle


def test_review_queries_read_the_review_job_and_its_panels_form_one_row(dashboards: ModuleType) -> None:
    """The review station's metrics come from job inspector-review (scraped on review.port), selected by line."""
    assert dashboards.REVIEW == 'job="inspector-review", line=~"$line"'
    model = committed()["inspection.json"]
    rows = [i for i, p in enumerate(model["panels"]) if p["type"] == "row"]
    start = next(i for i in rows if model["panels"][i]["title"] == "Review and models")
    end = next((i for i in rows if i > start), len(model["panels"]))
    titles = {p["title"]: p for p in model["panels"][start + 1 : end]}
    assert {"False-call rate by model version", "Review decisions per minute by kind", "Review backlog",
            "Shadow agreement rate", "Evidence written per minute", "Evidence folder size"} <= set(titles)  # fmt: skip
    rate = titles["False-call rate by model version"]
    assert "operators overruled" in rate["description"] and rate["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert "[$__range]" in rate["targets"][0]["expr"] and rate["targets"][0]["instant"] is True
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "inspector-review" in {job["job_name"] for job in prometheus["scrape_configs"]}


def test_panels_use_the_provisioned_datasource(dashboards: ModuleType) -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["url"] == "${INSPECTOR_PROMETHEUS_URL}"

    def refs(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for panel in panels:
            out += [panel.get("datasource") or {}] if panel["type"] != "row" else []
            out += [t["datasource"] for t in panel.get("targets") or ()]
            out += refs(panel.get("panels") or [])
        return out

    model = committed()["inspection.json"]
    found = refs(model["panels"]) + [v["datasource"] for v in model["templating"]["list"]]
    assert found and all(ref == {"type": "prometheus", "uid": source["uid"]} for ref in found)


def test_dashboard_provider_loads_a_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "inspector.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")
    assert entry["allowUiUpdates"] is False


def test_check_flag_reports_a_stale_file(dashboards: ModuleType, tmp_path: Path, capsys: Any) -> None:
    dashboards.write(tmp_path)
    assert dashboards.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "inspection.json").write_text("{}\n")
    assert dashboards.main(["--check", "--out", str(tmp_path)]) == 1
    assert "inspection.json is stale" in capsys.readouterr().err


def test_the_installed_sdk_is_the_pinned_one(dashboards: ModuleType) -> None:
    assert f'"{dashboards.SDK}"' in (REPO / "pyproject.toml").read_text()
    pinned = dashboards.SDK.split("==", 1)[1]
    assert importlib.metadata.version("grafana-foundation-sdk") == pinned, f"pip install '{dashboards.SDK}'"
