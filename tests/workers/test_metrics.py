from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from inspector.measure import CrackMeasurement
from inspector.pipeline import InspectionResult
from inspector.results import result_document
from workers.metrics import GatewayMetrics, WorkerMetrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> WorkerMetrics:
    return WorkerMetrics(registry)


def crack(max_width_mm: float) -> CrackMeasurement:
    return CrackMeasurement(
        length_mm=5.0,
        max_width_mm=max_width_mm,
        mean_width_mm=max_width_mm / 2,
        bbox=(0, 0, 9, 9),
        score=1.0,
        area_px=40,
    )


def document(
    verdict: str, widths: tuple[float, ...], *, end_to_end_ms: float, weights: dict[str, float] | None
) -> dict[str, Any]:
    cracks = tuple(crack(w) for w in widths)
    result = InspectionResult(
        sample_id="s",
        verdict=verdict,  # type: ignore[arg-type]
        defects=cracks,
        cracks=cracks,
        mm_per_px=0.05,
        model={"name": "mla-hffn", "version": "1"},
        modal_weights=weights,
        timings_ms={"model": 12.5, "measure": 1.0},
    )
    capture_ns = 1_000_000_000
    return result_document(
        result, camera_id="rig-1", seq=1, capture_ts_ns=capture_ns, stored_ns=capture_ns + int(end_to_end_ms * 1e6)
    )


def bucket(registry: CollectorRegistry, name: str, le: str) -> float | None:
    return registry.get_sample_value(f"{name}_bucket", {"le": le})


def test_known_label_values_start_at_zero(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    for modality in ("visible", "infrared"):
        assert registry.get_sample_value("inspector_frames_consumed_total", {"modality": modality}) == 0.0
    for verdict in ("OK", "NG"):
        assert registry.get_sample_value("inspector_parts_total", {"verdict": verdict}) == 0.0
    for reason in ("no_partner", "late", "ambiguous", "duplicate", "stale"):
        assert registry.get_sample_value("inspector_unpaired_total", {"reason": reason}) == 0.0
    assert registry.get_sample_value("inspector_defects_total", {"defect_class": "crack"}) == 0.0
    assert registry.get_sample_value("inspector_pairs_total") == 0.0
    assert registry.get_sample_value("inspector_store_errors_total") == 0.0
    assert registry.get_sample_value("inspector_crack_width_mm_count") == 0.0
    # no per-partition series until a lag is set
    assert "inspector_consumer_lag_records{" not in generate_latest(registry).decode()


def test_ok_document_counts_a_part_and_no_defects(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.observe_document(document("OK", (), end_to_end_ms=80.0, weights=None))

    assert registry.get_sample_value("inspector_parts_total", {"verdict": "OK"}) == 1.0
    assert registry.get_sample_value("inspector_parts_total", {"verdict": "NG"}) == 0.0
    assert registry.get_sample_value("inspector_defects_total", {"defect_class": "crack"}) == 0.0
    assert registry.get_sample_value("inspector_crack_width_mm_count") == 0.0
    assert registry.get_sample_value("inspector_end_to_end_seconds_count") == 1.0
    assert registry.get_sample_value("inspector_end_to_end_seconds_sum") == pytest.approx(0.08)
    assert bucket(registry, "inspector_end_to_end_seconds", "0.05") == 0.0
    assert bucket(registry, "inspector_end_to_end_seconds", "0.1") == 1.0
    # no modal weights in the document: no modal-weight series
    assert registry.get_sample_value("inspector_modal_weight", {"modality": "visible"}) is None


def test_ng_document_counts_defects_widths_and_weights(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    weights = {"visible": 0.7, "infrared": 0.3}
    metrics.observe_document(document("NG", (0.18, 0.21, 1.2), end_to_end_ms=2500.0, weights=weights))

    assert registry.get_sample_value("inspector_parts_total", {"verdict": "NG"}) == 1.0
    assert registry.get_sample_value("inspector_parts_total", {"verdict": "OK"}) == 0.0
    assert registry.get_sample_value("inspector_defects_total", {"defect_class": "crack"}) == 3.0
    # 0.18 and 0.21 fall on either side of the 0.2 mm decision
    assert bucket(registry, "inspector_crack_width_mm", "0.15") == 0.0
    assert bucket(registry, "inspector_crack_width_mm", "0.2") == 1.0
    assert bucket(registry, "inspector_crack_width_mm", "0.25") == 2.0
    assert bucket(registry, "inspector_crack_width_mm", "1.0") == 2.0
    assert bucket(registry, "inspector_crack_width_mm", "1.5") == 3.0
    assert registry.get_sample_value("inspector_crack_width_mm_sum") == pytest.approx(0.18 + 0.21 + 1.2)
    assert registry.get_sample_value("inspector_end_to_end_seconds_sum") == pytest.approx(2.5)
    assert bucket(registry, "inspector_end_to_end_seconds", "1.0") == 0.0
    assert bucket(registry, "inspector_end_to_end_seconds", "2.5") == 1.0
    assert registry.get_sample_value("inspector_modal_weight", {"modality": "visible"}) == pytest.approx(0.7)
    assert registry.get_sample_value("inspector_modal_weight", {"modality": "infrared"}) == pytest.approx(0.3)
    # model time is the batch's business, not the document's
    assert registry.get_sample_value("inspector_inference_seconds_count") == 0.0


def test_documents_accumulate(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.observe_document(document("OK", (), end_to_end_ms=20.0, weights={"visible": 0.5, "infrared": 0.5}))
    metrics.observe_document(document("NG", (0.4,), end_to_end_ms=30.0, weights={"visible": 0.9, "infrared": 0.1}))
    metrics.observe_document(document("NG", (0.6,), end_to_end_ms=40.0, weights=None))

    assert registry.get_sample_value("inspector_parts_total", {"verdict": "OK"}) == 1.0
    assert registry.get_sample_value("inspector_parts_total", {"verdict": "NG"}) == 2.0
    assert registry.get_sample_value("inspector_defects_total", {"defect_class": "crack"}) == 2.0
    assert registry.get_sample_value("inspector_end_to_end_seconds_count") == 3.0
    # the last document with weights wins; one without leaves them as they were
    assert registry.get_sample_value("inspector_modal_weight", {"modality": "visible"}) == pytest.approx(0.9)


def test_set_lag_removes_revoked_partitions(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    def lag(topic: str, partition: int) -> float | None:
        return registry.get_sample_value(
            "inspector_consumer_lag_records", {"topic": topic, "partition": str(partition)}
        )

    metrics.set_lag({("frames.visible", 0): 5, ("frames.visible", 1): 7, ("frames.infrared", 0): 3})
    assert lag("frames.visible", 0) == 5.0
    assert lag("frames.visible", 1) == 7.0
    assert lag("frames.infrared", 0) == 3.0

    metrics.set_lag({("frames.visible", 1): 2, ("frames.infrared", 1): 9})
    assert lag("frames.visible", 0) is None
    assert lag("frames.infrared", 0) is None
    assert lag("frames.visible", 1) == 2.0
    assert lag("frames.infrared", 1) == 9.0

    metrics.set_lag({})
    assert "inspector_consumer_lag_records{" not in generate_latest(registry).decode()


def test_set_model_publishes_info_labels_and_width(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.set_model("mla-hffn", "3", 0.5, "onnxruntime", "ab" * 32)

    labels = {"name": "mla-hffn", "version": "3", "width": "0.5", "backend": "onnxruntime", "sha256": "ab" * 32}
    assert registry.get_sample_value("inspector_model_info", labels) == 1.0
    assert registry.get_sample_value("inspector_model_width_ratio") == 0.5

    metrics.set_model("mla-hffn", "4", 1.0, "torch", "cd" * 32)
    assert registry.get_sample_value("inspector_model_info", labels) is None
    assert (
        registry.get_sample_value(
            "inspector_model_info", {**labels, "version": "4", "width": "1", "backend": "torch", "sha256": "cd" * 32}
        )
        == 1.0
    )
    assert registry.get_sample_value("inspector_model_width_ratio") == 1.0


def test_plain_metrics_are_usable_directly(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.frames.labels("visible").inc(3)
    metrics.batch_size.observe(5)
    metrics.inference.observe(0.03)
    metrics.delivery.ready.set(1)

    assert registry.get_sample_value("inspector_frames_consumed_total", {"modality": "visible"}) == 3.0
    assert bucket(registry, "inspector_batch_pairs", "4.0") == 0.0
    assert bucket(registry, "inspector_batch_pairs", "6.0") == 1.0
    assert bucket(registry, "inspector_inference_seconds", "0.025") == 0.0
    assert bucket(registry, "inspector_inference_seconds", "0.05") == 1.0
    assert registry.get_sample_value("inspector_ready") == 1.0


def test_gateway_metrics(registry: CollectorRegistry) -> None:
    gateway = GatewayMetrics(registry)
    for modality in ("visible", "infrared"):
        assert registry.get_sample_value("inspector_gateway_frames_published_total", {"modality": modality}) == 0.0
    for reason in ("source_error", "encode_error", "publish_error", "overflow"):
        assert registry.get_sample_value("inspector_gateway_frames_dropped_total", {"reason": reason}) == 0.0

    gateway.published.labels("infrared").inc()
    gateway.dropped.labels("overflow").inc(2)
    gateway.publish.observe(0.004)
    gateway.source_reconnects.inc()

    assert registry.get_sample_value("inspector_gateway_frames_published_total", {"modality": "infrared"}) == 1.0
    assert registry.get_sample_value("inspector_gateway_frames_dropped_total", {"reason": "overflow"}) == 2.0
    assert bucket(registry, "inspector_gateway_publish_seconds", "0.0025") == 0.0
    assert bucket(registry, "inspector_gateway_publish_seconds", "0.005") == 1.0
    assert registry.get_sample_value("inspector_gateway_source_reconnects_total") == 1.0


def test_worker_and_gateway_share_a_registry_without_clashes(registry: CollectorRegistry) -> None:
    WorkerMetrics(registry)
    GatewayMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics(registry)
