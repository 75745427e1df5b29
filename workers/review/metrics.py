"""Prometheus metrics of the review station, on a registry the caller passes in.

* ``inspector_review_decisions_total{kind}``: decisions saved, by kind (``confirm``, ``false_call``,
  ``relabel``); every kind starts at 0.
* ``inspector_review_decided_total{model_sha}``: decisions on parts called by that model file.
* ``inspector_review_false_calls_total{model_sha}``: of those, false calls. Their ratio is the
  false-call rate by model version; a part decided twice counts twice in both.
* ``inspector_review_backlog``: NG parts in the queue window without a decision (updated whenever
  the queue is read, and at every scrape).
* ``inspector_review_label_failures_total``: decisions whose training sample could not be written
  (no evidence, unreadable images, labels folder not writable).
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from inspector.labels import DecisionKind


class ReviewMetrics:
    """The review station's series (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "inspector_review_decisions_total", "Review decisions saved, by kind", ["kind"], registry=registry
        )
        for kind in get_args(DecisionKind):
            self.decisions.labels(kind=kind)
        self.decided = Counter(
            "inspector_review_decided_total", "Review decisions by the SHA-256 of the model that called the part",
            ["model_sha"], registry=registry,
        )  # fmt: skip
        self.false_calls = Counter(
            "inspector_review_false_calls_total", "False calls found in review, by the model's SHA-256",
            ["model_sha"], registry=registry,
        )  # fmt: skip
        self.backlog = Gauge(
            "inspector_review_backlog", "NG parts in the review queue window without a decision", registry=registry
        )
        self.label_failures = Counter(
            "inspector_review_label_failures_total", "Decisions whose training sample could not be written",
            registry=registry,
        )  # fmt: skip

    def decided_one(self, kind: str, model_sha: str) -> None:
        """Count one saved decision."""
        sha = model_sha or "unknown"
        self.decisions.labels(kind=kind).inc()
        self.decided.labels(model_sha=sha).inc()
        if kind == "false_call":
            self.false_calls.labels(model_sha=sha).inc()
        else:
            self.false_calls.labels(model_sha=sha)  # the series exists (at 0) for every model decided on
