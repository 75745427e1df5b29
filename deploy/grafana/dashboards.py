#!/usr/bin/env python3
"""The Grafana dashboards of the inspection line, as code (grafana-foundation-sdk, Grafana 11 schema).

    python deploy/grafana/dashboards.py              # regenerate deploy/grafana/dashboards/*.json
    python deploy/grafana/dashboards.py --out DIR    # write them somewhere else
    python deploy/grafana/dashboards.py --check      # exit 1 when the committed JSON is stale

Every query uses the metric names documented in ``workers/metrics.py`` (inspection workers, gateways),
``workers/medical.py``, ``workers/vqa.py`` and ``workers/review/metrics.py`` (the review station). What a
label can tell:

* ``job`` (``inspector-worker``, ``inspector-gateway``, ``inspector-medical-worker``,
  ``inspector-vqa-worker``, ``inspector-review``), ``instance`` (one process) and ``line`` (one
  production line: one pair of frame topics and one consumer group) are *target* labels, set where
  Prometheus discovers the processes (``deploy/prometheus/prometheus.yml``, file-based discovery).
* No worker metric carries a camera label: ``inspector_parts_total`` has only ``verdict``. A worker owns
  whole partitions and each partition carries a fixed set of cameras (key = camera id), so a panel "by
  worker" is "by the group of cameras this worker holds now" — it moves on a rebalance. Per-line
  panels are exact; per-camera verdict rates need a ``camera_id`` label the workers do not export.
* A gateway serves the cameras given by ``--cameras``; deploy one gateway per camera rig (optionally
  with a ``camera`` target label) to read its publish rate as that camera's frame rate.

* The "Worker" selector (``$instance``) lists inspection workers; the medical and VQA rows follow only
  ``$line`` and show every worker of their kind, and the review station's panels every station of the line.

``tests/integration/test_dashboard_proof.py`` evaluates every panel query against real workers of all
four kinds and a real review station on the local stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SDK = "grafana-foundation-sdk==1769699379!11.6.0"  # the Grafana 11.6 build, as pinned in pyproject.toml [dev]
try:
    from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
    from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable, Row, TimePicker
    from grafana_foundation_sdk.builders.heatmap import YAxisConfig
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
    from grafana_foundation_sdk.models.dashboard import (
        DashboardCursorSync,
        DataSourceRef,
        VariableOption,
        VariableRefresh,
        VariableSort,
    )
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat
except ImportError as exc:  # a [dev] tool: say how to get it
    msg = f"deploy/grafana/dashboards.py needs {SDK}: pip install '{SDK}' (or pip install -e '.[dev]')"
    raise ImportError(msg) from exc

__all__ = ["OUT_DIR", "build_all", "inspection", "main", "panel_queries", "render", "stale", "write"]

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioning/datasources/prometheus.yaml
RATE = "$__rate_interval"
WORKER = 'job="inspector-worker", line=~"$line", instance=~"$instance"'
GATEWAY = 'job="inspector-gateway", line=~"$line"'
MEDICAL = 'job="inspector-medical-worker", line=~"$line"'
VQA = 'job="inspector-vqa-worker", line=~"$line"'
REVIEW = 'job="inspector-review", line=~"$line"'
LOAD_WINDOW = "15m"  # model swaps and load failures: the window of the InspectorWorkerModelLoadFailing alert


Panel = timeseries.Panel | stat.Panel | heatmap.Panel | table.Panel | bargauge.Panel


def query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    """A range query on the provisioned Prometheus."""
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE).range()


def quantiles(metric: str, selector: str) -> list[prometheus.Dataquery]:
    """p50, p95 and p99 of a histogram over all selected series."""
    return [
        query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[{RATE}])))", f"p{p}", ref)
        for q, p, ref in ((0.5, 50, "A"), (0.95, 95, "B"), (0.99, 99, "C"))
    ]


def graph(
    title: str, description: str, unit: str, targets: list[prometheus.Dataquery], width: int = 12
) -> timeseries.Panel:
    """A time-series panel, legend as a table with last and max."""
    legend = (
        VizLegendOptions()
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .legend(legend)
        .targets(list(targets))
    )


def single(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    """A stat panel showing the last value of one query."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(6)
        .height(4)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query(expr))
    )


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    """``sum(rate(numerator)) / sum(rate(denominator))``, optionally grouped."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({numerator}[{RATE}])) / sum{group} (rate({denominator}[{RATE}]))"


def line_rows() -> Iterator[Row | Panel]:
    """Parts and defects, crack widths, throughput, latency."""
    ng, parts = f'inspector_parts_total{{{WORKER}, verdict="NG"}}', f"inspector_parts_total{{{WORKER}}}"
    yield Row("Line: parts and defects")
    yield single("Workers up", "Worker targets Prometheus scrapes successfully.", "none",
                 'count(up{job="inspector-worker", line=~"$line"} == 1)')  # fmt: skip
    yield single("Workers ready", "Workers reporting ready (model loaded, partitions held, polling).", "none",
                 f"sum(inspector_ready{{{WORKER}}})")  # fmt: skip
    yield single("NG parts per minute", "All selected lines.", "short", f"sum(rate({ng}[{RATE}])) * 60")
    yield single("Defect rate", "NG share of inspected parts.", "percentunit", ratio(ng, parts))
    yield graph("NG parts per minute by line", "Exact per line (target label `line`).", "short",
                [query(f"sum by (line) (rate({ng}[{RATE}])) * 60", "{{line}}")])  # fmt: skip
    yield graph("Defect rate by line", "NG share of inspected parts, per line.", "percentunit",
                [query(ratio(ng, parts, "line"), "{{line}}")])  # fmt: skip
    yield graph(
        "NG parts per minute by worker",
        "Per worker = per group of cameras the worker holds now (no camera label on verdicts); moves on a rebalance.",
        "short",
        [query(f"sum by (line, instance) (rate({ng}[{RATE}])) * 60", "{{line}} {{instance}}")],
    )
    yield graph("Parts per minute by verdict", "Inspected captures, OK and NG.", "short",
                [query(f"sum by (verdict) (rate({parts}[{RATE}])) * 60", "{{verdict}}")])  # fmt: skip

    yield Row("Cracks")
    widths = query(f"sum by (le) (increase(inspector_crack_width_mm_bucket{{{WORKER}}}[{RATE}]))", "{{le}}")
    yield (
        heatmap.Panel()
        .title("Crack width distribution")
        .description("Maximum width of each crack found, in mm; the buckets bracket the 0.2 mm decision finely.")
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .calculate(False)
        .y_axis(YAxisConfig().unit("lengthmm"))
        .with_target(widths.format(PromQueryFormat.HEATMAP))
    )
    yield graph("Defects per minute by class", "Defects found, by class.", "short",
                [query(f"sum by (defect_class) (rate(inspector_defects_total{{{WORKER}}}[{RATE}])) * 60",
                       "{{defect_class}}")])  # fmt: skip

    yield Row("Throughput and latency")
    yield graph("Frames consumed per second by worker", "Frames read from Kafka, by modality.", "short",
                [query(f"sum by (instance, modality) (rate(inspector_frames_consumed_total{{{WORKER}}}[{RATE}]))",
                       "{{instance}} {{modality}}")], width=8)  # fmt: skip
    yield graph("Pairs inspected per second by worker", "Visible/infrared pairs sent to the model.", "short",
                [query(f"sum by (instance) (rate(inspector_pairs_total{{{WORKER}}}[{RATE}]))", "{{instance}}")],
                width=8)  # fmt: skip
    yield graph("Pairs per model batch (p50, p95)", "Batch size of model calls.", "short",
                quantiles("inspector_batch_pairs", WORKER)[:2], width=8)  # fmt: skip
    yield graph("Inference latency (p50, p95, p99)", "One model call per batch.", "s",
                quantiles("inspector_inference_seconds", WORKER), width=8)  # fmt: skip
    yield graph("End-to-end latency (p50, p95, p99)", "Capture time to result stored in Redis.", "s",
                quantiles("inspector_end_to_end_seconds", WORKER), width=8)  # fmt: skip
    yield graph(
        "Captures stored within 2.5 s",
        "Objective 99 % (InspectorLatencyBudgetBurn* alerts); 2.5 s is the bucket bound nearest the 2 s budget.",
        "percentunit",
        [query(ratio(f'inspector_end_to_end_seconds_bucket{{{WORKER}, le="2.5"}}',
                     f"inspector_end_to_end_seconds_count{{{WORKER}}}"), "within 2.5 s")],
        width=8,
    )  # fmt: skip


def operations_rows() -> Iterator[Row | Panel]:
    """Kafka, model, workers, gateway."""
    yield Row("Kafka: lag, dead letters, unpaired frames")
    yield graph("Consumer lag per partition", "Records behind the partition end (whoever holds it now).", "short",
                [query(f"max by (topic, partition) (inspector_consumer_lag_records{{{WORKER}}})",
                       "{{topic}}[{{partition}}]")], width=8)  # fmt: skip
    yield graph("Dead letters per second by reason", "Records sent to the dead-letter topic.", "short",
                [query(f"sum by (reason) (rate(inspector_dlq_total{{{WORKER}}}[{RATE}]))", "{{reason}}")],
                width=8)  # fmt: skip
    yield graph("Unpaired frames per second by reason", "Frames given up on without a partner.", "short",
                [query(f"sum by (reason) (rate(inspector_unpaired_total{{{WORKER}}}[{RATE}]))", "{{reason}}")],
                width=8)  # fmt: skip
    yield graph("Partitions held per worker", "Topic-partitions assigned (both frame topics).", "short",
                [query(f"max by (instance) (inspector_assigned_partitions{{{WORKER}}})", "{{instance}}")],
                width=8)  # fmt: skip
    yield graph("Seconds since last Kafka poll", "A worker that stops polling leaves its group.", "s",
                [query(f"time() - max by (instance) (inspector_last_poll_timestamp_seconds{{{WORKER}}})",
                       "{{instance}}")], width=8)  # fmt: skip
    yield graph("Result-store write failures per second", "Redis/Kafka writes refused (retried).", "short",
                [query(f"sum by (instance) (rate(inspector_store_errors_total{{{WORKER}}}[{RATE}]))",
                       "{{instance}}")], width=8)  # fmt: skip

    yield Row("Model and workers")
    yield graph("Modal weights", "How much the fused model relied on each camera (last result).", "percentunit",
                [query(f"avg by (instance, modality) (inspector_modal_weight{{{WORKER}}})",
                       "{{instance}} {{modality}}")], width=8)  # fmt: skip
    yield graph("Active model width", "Share of channels the loaded model keeps (1 = unpruned).", "percentunit",
                [query(f"max by (instance) (inspector_model_width_ratio{{{WORKER}}})", "{{instance}}")],
                width=8)  # fmt: skip
    yield graph("Worker readiness", "1 = ready, 0 = not ready; absent = not scraped.", "none",
                [query(f"max by (instance) (inspector_ready{{{WORKER}}})", "{{instance}}")], width=8)  # fmt: skip
    model = query(
        f"max by (instance, name, version, width, backend, sha256) (inspector_model_info{{{WORKER}}})", "{{instance}}"
    )
    yield (
        table.Panel()
        .title("Model served by each worker")
        .description("Name, version, width, backend and SHA-256 of each worker's model.")
        .datasource(DATASOURCE)
        .span(24)
        .height(6)
        .with_target(model.instant().format(PromQueryFormat.TABLE))
    )

    yield Row("Gateway")
    yield graph("Frames published per second by gateway", "Frames acknowledged by the broker.", "short",
                [query(f"sum by (instance, modality) (rate(inspector_gateway_frames_published_total{{{GATEWAY}}}"
                       f"[{RATE}]))", "{{instance}} {{modality}}")], width=8)  # fmt: skip
    yield graph("Frames dropped per second by reason", "Frames lost before the broker acknowledged them.", "short",
                [query(f"sum by (reason) (rate(inspector_gateway_frames_dropped_total{{{GATEWAY}}}[{RATE}]))",
                       "{{reason}}")], width=8)  # fmt: skip
    yield graph("Publish latency (p50, p95, p99)", "Send to broker acknowledgement.", "s",
                quantiles("inspector_gateway_publish_seconds", GATEWAY), width=8)  # fmt: skip


def review_rows() -> Iterator[Row | Panel]:
    """The review-and-retrain loop (docs/REVIEW.md): review decisions, the model registry, evidence."""
    yield Row("Review and models")
    false_calls = f"sum by (model_sha) (increase(inspector_review_false_calls_total{{{REVIEW}}}[$__range]))"
    decided = f"sum by (model_sha) (increase(inspector_review_decided_total{{{REVIEW}}}[$__range]))"
    yield (
        bargauge.Panel()
        .title("False-call rate by model version")
        .description(
            "Share of the reviewed NG calls that operators overruled (decision: false call), by the SHA-256 of the "
            "model that made the call, over the dashboard's time range. Compare a promoted model with the one before "
            "it; a model with few decisions in the range says little (see Review decisions per minute by kind)."
        )
        .datasource(DATASOURCE)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(8)
        .height(8)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query(f"{false_calls} / {decided}", "{{model_sha}}").instant())
    )
    yield graph("Review decisions per minute by kind", "Decisions saved at the review station: confirm (NG stands), "
                "false_call (overruled to OK), relabel (cracks corrected).", "short",
                [query(f"sum by (kind) (rate(inspector_review_decisions_total{{{REVIEW}}}[{RATE}])) * 60", "{{kind}}")],
                width=8)  # fmt: skip
    yield graph("Review backlog", "Undecided parts in the review queue: NG calls among the newest review.queue_size "
                "results, and shadow disagreements (alert InspectorReviewBacklogHigh above 50 for 30 min).", "short",
                [query(f"max by (line) (inspector_review_backlog{{{REVIEW}}})", "{{line}}")], width=8)  # fmt: skip
    shadow = f"inspector_worker_shadow_comparisons_total{{{WORKER}"
    yield graph("Shadow agreement rate", "Share of the captures a shadow model also inspected where its verdict agreed "
                "with the served model's (inspector promote --shadow); disagreements go to the review queue.",
                "percentunit", [query(ratio(f'{shadow}, agree="true"}}', f"{shadow}}}", "line"), "{{line}}")],
                width=8)  # fmt: skip
    yield graph(f"Model swaps and load failures ({LOAD_WINDOW})",
                f"Registry models swapped in without a restart, and those that failed to verify or load (the old one "
                f"kept serving; alert InspectorWorkerModelLoadFailing), per worker, over the last {LOAD_WINDOW}.",
                "short",
                [query(f"sum by (instance) (increase(inspector_worker_model_swaps_total{{{WORKER}}}[{LOAD_WINDOW}]))",
                       "{{instance}} swaps"),
                 query(f"sum by (instance, role) (increase(inspector_worker_model_load_failures_total{{{WORKER}}}"
                       f"[{LOAD_WINDOW}]))", "{{instance}} {{role}} load failures", "B")], width=8)  # fmt: skip
    yield graph("Evidence written per minute", "Evidence folders written by the workers: every NG part (ng), a "
                "sample of OK parts (ok-sample), OK parts a shadow model disputed (shadow).", "short",
                [query(f"sum by (kept) (rate(inspector_worker_evidence_written_total{{{WORKER}}}[{RATE}])) * 60",
                       "{{kept}}")], width=8)  # fmt: skip
    yield graph("Evidence failures and deletions per minute", "Evidence not written (the result was stored without "
                "it; alert InspectorEvidenceFailing), and capture folders deleted by retention, by reason.", "short",
                [query(f"sum by (instance) (rate(inspector_worker_evidence_failures_total{{{WORKER}}}[{RATE}])) * 60",
                       "{{instance}} not written"),
                 query(f"sum by (reason) (rate(inspector_worker_evidence_pruned_total{{{WORKER}}}[{RATE}])) * 60",
                       "deleted: {{reason}}", "B")], width=12)  # fmt: skip
    yield graph("Evidence folder size", "Bytes in evidence.root after the last prune. Every worker measures the whole "
                "shared folder, hence the maximum, not the sum; the workers keep it under evidence.max_bytes.", "bytes",
                [query(f"max by (line) (inspector_worker_evidence_bytes{{{WORKER}}})", "{{line}}")],
                width=12)  # fmt: skip


def model_table(title: str, description: str, expr: str) -> table.Panel:
    """A full-width table of one instant query (which model each worker serves)."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(24)
        .height(5)
        .with_target(query(expr, "{{instance}}").instant().format(PromQueryFormat.TABLE))
    )


def medical_rows() -> Iterator[Row | Panel]:
    """The medical report worker (``inspector medical-worker``, metrics in ``workers/medical.py``)."""
    yield Row("Medical report worker")
    yield graph("Medical studies reported per minute",
                "Reports stored in Redis, per worker; and those of studies outside the model's validated domain "
                "(another modality, anatomy, geometry or HU histogram: measured, flagged in the report).", "short",
                [query(f"sum by (instance) (rate(inspector_medical_studies_total{{{MEDICAL}}}[{RATE}])) * 60",
                       "{{instance}}"),
                 query(f"sum(rate(inspector_medical_out_of_domain_total{{{MEDICAL}}}[{RATE}])) * 60",
                       "outside the validated domain", "B")], width=8)  # fmt: skip
    yield graph("Medical report latency (p50, p95, p99)", "Study record received to report stored.", "s",
                quantiles("inspector_medical_latency_seconds", MEDICAL), width=8)  # fmt: skip
    yield graph(
        "Medical rejected studies per second by reason",
        "Records sent to medical.dlq (not_dicom, no_pixel_data, ...); `store` counts Redis writes refused (retried).",
        "short",
        [query(f"sum by (reason) (rate(inspector_medical_dlq_total{{{MEDICAL}}}[{RATE}]))", "{{reason}}")],
        width=8,
    )
    yield graph("Medical findings per minute by type", "Findings in the stored reports, by lesion type.", "short",
                [query(f"sum by (type) (rate(inspector_medical_findings_total{{{MEDICAL}}}[{RATE}])) * 60",
                       "{{type}}")], width=8)  # fmt: skip
    yield graph("Medical workers up and ready", "Scraped (up) and ready (polling with partitions), per worker.",
                "none",
                [query(f'max by (instance) (up{{{MEDICAL}}})', "{{instance}} up"),
                 query(f"max by (instance) (inspector_medical_ready{{{MEDICAL}}})", "{{instance}} ready", "B")],
                width=16)  # fmt: skip
    yield model_table(
        "Report model served by each medical worker",
        "Name, version and SHA-256 of the report model.",
        f"max by (instance, name, version, sha256) (inspector_medical_model_info{{{MEDICAL}}})",
    )


def vqa_rows() -> Iterator[Row | Panel]:
    """The VQA worker (``inspector vqa-worker``, metrics in ``workers/vqa.py``)."""
    yield Row("VQA worker")
    yield graph("VQA requests and answers per minute", "Request records read and answers stored.", "short",
                [query(f"sum(rate(inspector_vqa_requests_total{{{VQA}}}[{RATE}])) * 60", "requests"),
                 query(f"sum(rate(inspector_vqa_answers_total{{{VQA}}}[{RATE}])) * 60", "answers", "B")],
                width=8)  # fmt: skip
    yield graph("VQA latency (p50, p95, p99)", "Request record timestamp to answer stored.", "s",
                quantiles("inspector_vqa_latency_seconds", VQA), width=8)  # fmt: skip
    yield graph("VQA refused requests per second by reason", "Requests sent to vqa.dlq, by reason.", "short",
                [query(f"sum by (reason) (rate(inspector_vqa_dlq_total{{{VQA}}}[{RATE}]))", "{{reason}}")],
                width=8)  # fmt: skip
    yield graph("VQA inference latency (p50, p95, p99)", "One batched model call.", "s",
                quantiles("inspector_vqa_inference_seconds", VQA), width=8)  # fmt: skip
    yield graph("VQA requests per model batch (p50, p95)", "Requests answered by one model call.", "short",
                quantiles("inspector_vqa_batch_requests", VQA)[:2], width=8)  # fmt: skip
    yield graph("VQA answer-store write failures per second", "Redis/Kafka writes refused (retried).", "short",
                [query(f"sum by (instance) (rate(inspector_vqa_store_errors_total{{{VQA}}}[{RATE}]))",
                       "{{instance}}")], width=8)  # fmt: skip
    yield graph("VQA workers up and ready", "Scraped (up) and ready (polling with partitions), per worker.", "none",
                [query(f"max by (instance) (up{{{VQA}}})", "{{instance}} up"),
                 query(f"max by (instance) (inspector_vqa_ready{{{VQA}}})", "{{instance}} ready", "B")],
                width=24)  # fmt: skip
    yield model_table(
        "VQA model served by each worker",
        "Fusion and SHA-256 (first 16 hex digits) of the VQA model.",
        f"max by (instance, fusion, sha256) (inspector_vqa_model_info{{{VQA}}})",
    )


def variable(name: str, label: str, source: str) -> QueryVariable:
    """A multi-value label variable whose "All" is the regex ``.*``."""
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({source}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def inspection() -> Dashboard:
    """The inspection-line dashboard: defects, cracks, throughput, latency, Kafka, model, gateway, review."""
    board = (
        Dashboard("Inspector: inspection line")
        .uid("inspector-inspection")
        .description("Crack inspection workers and camera gateways; every panel is proven against real workers.")
        .tags(["inspector"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timepicker(TimePicker().refresh_intervals(["10s", "30s", "1m", "5m"]))
        .with_variable(variable("line", "Line", 'up{job=~"inspector-.*"}'))
        .with_variable(variable("instance", "Worker", 'up{job="inspector-worker", line=~"$line"}'))
    )
    for item in (*line_rows(), *operations_rows(), *review_rows(), *medical_rows(), *vqa_rows()):
        board = board.with_row(item) if isinstance(item, Row) else board.with_panel(item)
    return board


def _number(panels: list[Any], start: int = 1) -> int:
    """Give every panel (rows and panels inside collapsed rows too) a stable id in dashboard order."""
    for panel in panels:
        panel.id_val = start
        start += 1
        start = _number(getattr(panel, "panels", None) or [], start)
    return start


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard as its JSON model, by file name."""
    model = inspection().build()
    _number(model.panels or [])
    return {"inspection.json": json.loads(json.dumps(model, cls=JSONEncoder))}


def panel_queries(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(panel title, expr)`` of every query of a dashboard JSON model, panels in collapsed rows included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets") or ():
                if target.get("expr"):
                    yield panel["title"], target["expr"]
            yield from walk(panel.get("panels") or [])

    return walk(model.get("panels") or [])


def render(model: dict[str, Any]) -> str:
    """The JSON text written for one dashboard (sorted keys, two-space indent, final newline)."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every dashboard into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in build_all().items():
        path = out_dir / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def stale(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of the dashboards whose file in ``out_dir`` differs from what the code builds now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {path.name: path.read_text(encoding="utf-8") for path in write(Path(tmp))}
    return [name for name, text in fresh.items() if not (out_dir / name).is_file() or
            (out_dir / name).read_text(encoding="utf-8") != text]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Regenerate the dashboards, or check that the committed ones are current (exit 1 if not)."""
    parser = argparse.ArgumentParser(prog="deploy/grafana/dashboards.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.out)
        for name in outdated:
            print(f"{args.out / name} is stale: run python deploy/grafana/dashboards.py", file=sys.stderr)
        return 1 if outdated else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
