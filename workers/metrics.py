"""Prometheus metrics of the inspection worker and the camera gateway.

Both sets are built on a registry the caller passes in (``WorkerMetrics(registry)``,
``GatewayMetrics(registry)``), so tests and several workers in one process never share series.
Units are base units (seconds) or millimetres where the name says ``_mm``; no label carries a
per-frame value. Label values known in advance start at 0 so dashboards see every series at once.

Worker (``WorkerMetrics``):

* ``inspector_frames_consumed_total{modality}``: frames read from Kafka (``visible``, ``infrared``).
* ``inspector_pairs_total``: visible/infrared pairs formed and sent to the model.
* ``inspector_unpaired_total{reason}``: frames given up on unpaired (``no_partner``, ``late``,
  ``ambiguous``, ``duplicate``, ``stale``; see ``inspector.sync``).
* ``inspector_parts_total{verdict}``: inspected captures by verdict (``OK``, ``NG``).
* ``inspector_defects_total{defect_class}``: defects found, by class (``crack``).
* ``inspector_crack_width_mm``: histogram of each crack's maximum width; the buckets bracket the
  0.2 mm accept/reject decision finely.
* ``inspector_inference_seconds``: histogram of model calls (one per batch), 5 ms to 10 s.
* ``inspector_end_to_end_seconds``: histogram of capture → result stored, 10 ms to 60 s.
* ``inspector_batch_pairs``: histogram of pairs per model batch.
* ``inspector_modal_weight{modality}``: mean modal-importance weight of the last result (how much
  the fused model relied on each camera; absent until the first result of a model that has them).
* ``inspector_model_width_ratio``: share of channels the loaded model keeps (1.0 unpruned).
* ``inspector_assigned_partitions``: Kafka partitions this worker holds now.
* ``inspector_consumer_lag_records{topic,partition}``: records behind the partition end; revoked
  partitions drop out.
* ``inspector_model_info{name,version,width,backend,sha256}``: always 1; which model serves.
* ``inspector_worker_model_swaps_total``: promoted (or rolled back) models swapped in without a restart.
* ``inspector_worker_model_load_failures_total{role}``: registry models (``active``, ``shadow``) that
  failed to verify or to load; the old model kept serving (:mod:`workers.model_watch`).
* ``inspector_worker_shadow_comparisons_total{agree}``: captures the shadow model also inspected, by
  whether its verdict agreed (``true``, ``false``); the agreement rate is ``true`` over both.
* ``inspector_worker_evidence_written_total{kept}``: evidence folders written (``ng``, ``ok-sample``;
  docs/REVIEW.md), and ``inspector_worker_evidence_written_bytes_total`` their bytes.
* ``inspector_worker_evidence_failures_total``: evidence that could not be written (the result was
  stored without it).
* ``inspector_worker_evidence_pruned_total{reason}``: capture folders deleted by retention (``age``,
  ``size``); ``inspector_worker_evidence_bytes``: the folder's size after the last prune.
* the delivery metrics (:mod:`workers.kafka.metrics`) under ``inspector``: ``inspector_dlq_total{reason}``
  (:class:`inspector.stream.RejectReason` and ``write_failed``), ``inspector_store_errors_total``,
  ``inspector_holding``, ``inspector_ready``, ``inspector_last_poll_timestamp_seconds``,
  ``inspector_consumer_rebuilds_total``, ``inspector_orphaned_joins_total``.

Gateway (``GatewayMetrics``):

* ``inspector_gateway_frames_published_total{modality}``: frames acknowledged by the broker.
* ``inspector_gateway_frames_dropped_total{reason}``: frames lost (``source_error``,
  ``encode_error``, ``publish_error``, ``overflow``; from GenICam cameras ``incomplete``, a buffer
  that lost packets, ``missed_trigger``, a camera that missed a trigger, ``unpaired``, a good frame
  whose partner was incomplete or missed its trigger, and ``skewed``, a pair too far apart in time
  to be sure it is one trigger's).
* ``inspector_gateway_publish_seconds``: histogram of send → broker ack, 1 ms to 10 s.
* ``inspector_gateway_source_reconnects_total``: camera source reconnections.
* ``inspector_gateway_rig_ready{rig}``: 1 while both cameras of a GenICam rig stream, 0 while one is
  lost and being reopened (one series per configured rig; alert ``InspectorGatewayRigDown``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from inspector.stream import RejectReason
from workers.kafka.metrics import DeliveryMetrics

__all__ = [
    "BATCH_BUCKETS",
    "CRACK_WIDTH_BUCKETS_MM",
    "DEFECT_CLASSES",
    "DROP_REASONS",
    "END_TO_END_BUCKETS_S",
    "INFERENCE_BUCKETS_S",
    "MODALITIES",
    "PUBLISH_BUCKETS_S",
    "UNPAIRED_REASONS",
    "VERDICTS",
    "GatewayMetrics",
    "WorkerMetrics",
]

MODALITIES = ("visible", "infrared")
VERDICTS = ("OK", "NG")
DEFECT_CLASSES = ("crack",)
UNPAIRED_REASONS = ("no_partner", "late", "ambiguous", "duplicate", "stale")
DROP_REASONS = (
    "source_error", "encode_error", "publish_error", "overflow", "incomplete", "missed_trigger", "unpaired", "skewed"
)  # fmt: skip
DLQ_REASONS = tuple(str(reason) for reason in RejectReason)
EVIDENCE_KEPT = ("ng", "ok-sample")

CRACK_WIDTH_BUCKETS_MM = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)
INFERENCE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
END_TO_END_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
PUBLISH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _zero(metric: Counter, values: tuple[str, ...]) -> None:
    """Create the series of each label value so it is exported as 0 before the first event."""
    for value in values:
        metric.labels(value)


class WorkerMetrics:
    """Metrics of one inspection worker, registered on ``registry``.

    Attributes are the ``prometheus_client`` metrics themselves; the worker increments them directly
    except where a helper below keeps related series consistent.

    Args:
        registry: Registry to register on (a fresh ``CollectorRegistry()`` in tests, usually
            ``prometheus_client.REGISTRY`` in the service).

    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.frames = Counter("inspector_frames_consumed_total", "Frames read from Kafka.", ["modality"], registry=r)
        self.pairs = Counter("inspector_pairs_total", "Visible/infrared pairs formed.", registry=r)
        self.unpaired = Counter("inspector_unpaired_total", "Frames given up on unpaired.", ["reason"], registry=r)
        self.parts = Counter("inspector_parts_total", "Inspected captures by verdict.", ["verdict"], registry=r)
        self.defects = Counter("inspector_defects_total", "Defects found by class.", ["defect_class"], registry=r)
        self.crack_width = Histogram(
            "inspector_crack_width_mm", "Maximum width of each crack in mm.", buckets=CRACK_WIDTH_BUCKETS_MM, registry=r
        )
        self.inference = Histogram(
            "inspector_inference_seconds", "Duration of one model call.", buckets=INFERENCE_BUCKETS_S, registry=r
        )
        self.end_to_end = Histogram(
            "inspector_end_to_end_seconds", "Capture to result stored.", buckets=END_TO_END_BUCKETS_S, registry=r
        )
        self.batch_size = Histogram(
            "inspector_batch_pairs", "Pairs per model batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.modal_weight = Gauge(
            "inspector_modal_weight", "Mean modal-importance weight of the last result.", ["modality"], registry=r
        )
        self.model_width = Gauge("inspector_model_width_ratio", "Share of channels the model keeps.", registry=r)
        self.assigned_partitions = Gauge("inspector_assigned_partitions", "Kafka partitions held.", registry=r)
        self.lag = Gauge(
            "inspector_consumer_lag_records", "Records behind the partition end.", ["topic", "partition"], registry=r
        )
        self.model_info = Info("inspector_model", "The model this worker serves.", registry=r)
        self.model_swaps = Counter(
            "inspector_worker_model_swaps_total", "Registry models swapped in without a restart.", registry=r
        )
        self.model_load_failures = Counter(
            "inspector_worker_model_load_failures_total", "Registry models that failed to verify or load.", ["role"],
            registry=r,
        )  # fmt: skip
        self.shadow_comparisons = Counter(
            "inspector_worker_shadow_comparisons_total", "Shadow model runs, by verdict agreement.", ["agree"],
            registry=r,
        )  # fmt: skip
        self.evidence_written = Counter(
            "inspector_worker_evidence_written_total", "Evidence folders written.", ["kept"], registry=r
        )
        self.evidence_bytes_written = Counter(
            "inspector_worker_evidence_written_bytes_total", "Bytes of the evidence folders written.", registry=r
        )
        self.evidence_failures = Counter(
            "inspector_worker_evidence_failures_total", "Evidence not written (result stored without).", registry=r
        )
        self.evidence_pruned = Counter(
            "inspector_worker_evidence_pruned_total", "Evidence folders deleted by retention.", ["reason"], registry=r
        )
        self.evidence_bytes = Gauge(
            "inspector_worker_evidence_bytes", "Size of the evidence folder after the last prune.", registry=r
        )
        self.delivery = DeliveryMetrics(r, "inspector", DLQ_REASONS)
        self._lag_keys: set[tuple[str, str]] = set()

        _zero(self.frames, MODALITIES)
        _zero(self.unpaired, UNPAIRED_REASONS)
        _zero(self.parts, VERDICTS)
        _zero(self.defects, DEFECT_CLASSES)
        _zero(self.evidence_written, EVIDENCE_KEPT)
        _zero(self.evidence_pruned, ("age", "size"))
        _zero(self.model_load_failures, ("active", "shadow"))
        _zero(self.shadow_comparisons, ("true", "false"))

    def observe_document(self, document: Mapping[str, Any]) -> None:
        """Count one stored result document (see ``inspector.results.result_document``).

        Increments ``parts{verdict}`` and ``defects{class}``, observes each defect's
        ``max_width_mm`` and ``timings_ms.end_to_end`` (converted to seconds), and sets the modal
        weights when the document has them. Model time is not observed here: the worker observes
        ``inference`` once per batched model call.

        Args:
            document: The result document as stored.

        """
        self.parts.labels(str(document["verdict"])).inc()
        for defect in document.get("defects") or ():
            self.defects.labels(str(defect.get("class", "unknown"))).inc()
            width = defect.get("max_width_mm")
            if width is not None:
                self.crack_width.observe(float(width))
        end_to_end_ms = (document.get("timings_ms") or {}).get("end_to_end")
        if end_to_end_ms is not None:
            self.end_to_end.observe(float(end_to_end_ms) / 1e3)
        for modality, weight in (document.get("modal_weights") or {}).items():
            self.modal_weight.labels(str(modality)).set(float(weight))

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set the lag of every held partition and drop the series of partitions no longer held.

        Args:
            lags: Records behind the end, by ``(topic, partition)``; exactly the partitions held now.

        """
        keys = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
        for key in self._lag_keys - keys.keys():
            self.lag.remove(*key)
        for key, lag in keys.items():
            self.lag.labels(*key).set(lag)
        self._lag_keys = set(keys)

    def set_model(self, name: str, version: str, width: float, backend: str, sha256: str) -> None:
        """Publish which model serves: ``inspector_model_info`` labels and the width ratio.

        Args:
            name: Model name (e.g. ``mla-hffn``).
            version: Model version.
            width: Share of channels kept by pruning (1.0 unpruned).
            backend: ``torch``, ``onnxruntime`` or ``tensorrt``.
            sha256: Digest of the model file.

        """
        self.model_info.info(
            {"name": name, "version": version, "width": f"{width:g}", "backend": backend, "sha256": sha256}
        )
        self.model_width.set(width)


class GatewayMetrics:
    """Metrics of one camera gateway, registered on ``registry``.

    Args:
        registry: Registry to register on.

    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.published = Counter(
            "inspector_gateway_frames_published_total", "Frames acknowledged by the broker.", ["modality"], registry=r
        )
        self.dropped = Counter(
            "inspector_gateway_frames_dropped_total", "Frames lost before the broker acked.", ["reason"], registry=r
        )
        self.publish = Histogram(
            "inspector_gateway_publish_seconds", "Send to broker ack.", buckets=PUBLISH_BUCKETS_S, registry=r
        )
        self.source_reconnects = Counter(
            "inspector_gateway_source_reconnects_total", "Camera source reconnections.", registry=r
        )
        self.rig_ready = Gauge(
            "inspector_gateway_rig_ready",
            "1 while both cameras of a GenICam rig are open and streaming, 0 while one is lost.",
            ["rig"],
            registry=r,
        )
        _zero(self.published, MODALITIES)
        _zero(self.dropped, DROP_REASONS)
