"""The chaos harness's recovery figure, the service runs' counting, and the report renderer.

All but one need no services; the counting checks of the inspection runs (duplicates, commits ahead
of store) are in tests/workers/test_audit.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis

from tests.chaos.harness import PrivateStack, recovery_lag_s
from tests.chaos.report import END, START, render, update
from tests.chaos.services import VQA, read_stream, stored_ids, stream_duplicates
from workers.audit import LagSample
from workers.stores import Claim, ClaimedStore

pytestmark = pytest.mark.chaos

VIS = ("vis", 0)


def test_lag_recovery_is_the_end_of_the_last_excursion() -> None:
    def sample(t: float, lag: int) -> LagSample:
        return LagSample(t, {VIS: 1000}, {VIS: 1000 - lag})

    samples = [sample(0, 5), sample(1, 20), sample(2, 10), sample(3, 300), sample(4, 40), sample(5, 25), sample(6, 3)]
    seconds, ceiling, worst = recovery_lag_s(samples, fault_t=2.5, settle_t=0.5)
    assert (seconds, ceiling, worst) == (3.5, 20, 300)  # back at or below 20 from t=6 on
    assert recovery_lag_s(samples[:5], fault_t=2.5, settle_t=0.5)[0] is None  # never came back down
    gap = [sample(0, 5), sample(1, 20), sample(12, 3), sample(13, 2)]  # no reading while the broker was down
    assert recovery_lag_s(gap, fault_t=2.5, settle_t=0.5)[0] == 9.5  # back as soon as it could be seen


def test_the_report_renders_between_the_markers(tmp_path: Path) -> None:
    figures = {
        "scenario": "1-x", "fault": "SIGKILL", "date": "d", "machine": "m", "model": "baseline", "frame": "64",
        "cameras": 8, "partitions": 4, "workers": 2, "offered_captures_per_s": 80.0, "offered_frames_per_s": 160.0,
        "duration_s": 70.0, "frames_sent": 10000, "captures_sent": 5000, "results_stored": 5000, "lost": 0,
        "duplicated": 0, "duplicate_frames_in_kafka": 0, "commits_ahead_of_store": 0, "store_errors": 0,
        "redelivered_already_stored": 3, "worker_reports": 1, "fault_at_s": 30.0, "fault_lasted_s": 0.1,
        "recovery_first_result_s": 11.2, "recovery_lag_s": None, "lag_worst_after_fault": 600,
    }  # fmt: skip
    service = {
        "scenario": "1-x", "fault": "SIGKILL", "worker_kind": "vqa", "first_attempt": True, "date": "d",
        "machine": "m", "model": "vqa", "unit": "requests", "partitions": 4, "workers": 2,
        "offered_requests_per_s": 40.0, "duration_s": 71.0, "requests_sent": 2800, "results_stored": 2800, "lost": 0,
        "duplicated": 0, "duplicate_requests_in_kafka": 0, "commits_ahead_of_store": 0, "store_errors": 0,
        "worker_reports": 1, "fault_at_s": 30.0, "fault_lasted_s": 0.1, "recovery_first_result_s": 10.0,
        "recovery_lag_s": 12.0, "lag_worst_after_fault": 90,
    }  # fmt: skip
    failed = {"scenario": "1-x", "fault": "SIGKILL", "worker_kind": "medical", "date": "d", "machine": "m",
              "failed": "AssertionError: timed out", "first_attempt": True}  # fmt: skip
    runs = tmp_path / "runs"
    runs.mkdir()
    for name, value in (("1-x", figures), ("vqa-1-x", service), ("medical-1-x", failed)):
        (runs / f"{name}.json").write_text(json.dumps(value))
    doc = tmp_path / "R.md"
    doc.write_text(f"# R\n\nprose\n\n{START}\nold\n{END}\n\nmore prose\n")
    text = update(doc, runs)
    assert text.startswith("# R\n\nprose\n\n") and text.endswith("\n\nmore prose\n") and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "1-x: SIGKILL" in line]
    assert rows == [
        "| inspection | 1-x: SIGKILL | 160 frames/s (80 captures/s) | 70 s | 5,000 captures (10,000 frames) | 5,000 "
        "| **0** | **0** | not recorded | 11.2 s / never |",
        "| medical | 1-x: SIGKILL | — | — | — | — | **FAILED** | **FAILED** | yes | AssertionError: timed out |",
        "| vqa | 1-x: SIGKILL | 40 requests/s | 71 s | 2,800 requests | 2,800 | **0** | **0** | yes "
        "| 10.0 s / 12.0 s |",
    ]
    assert render([]).startswith(START)


def test_the_stream_duplicate_count_sees_a_second_entry_and_a_stranger() -> None:
    entries = [("r-1", "p:r-1", 1.0), ("r-2", "p:r-2", 1.1)]
    assert stream_duplicates(entries, {"r-1", "r-2"}) == 0
    assert stream_duplicates([*entries, ("r-1", "p:r-1", 5.0)], {"r-1", "r-2"}) == 1  # stored twice
    assert stream_duplicates([*entries, ("r-9", "p:r-9", 5.0)], {"r-1", "r-2"}) == 1  # never sent


@pytest.mark.integration
def test_the_service_counts_read_a_real_stream(chaos_stack: PrivateStack) -> None:
    """The workers' store on the chaos Redis: a re-delivered record adds no entry, a second record does."""
    client = redis.Redis.from_url(chaos_stack.redis_url)
    prefix = f"check-{uuid.uuid4().hex[:8]}"
    store = ClaimedStore(client, prefix, ttl_s=60)
    answer, error = json.dumps({"request_id": "r-1", "answer": "red"}), json.dumps({"request_id": "r-2", "error": "x"})
    first = [Claim("t/0/1", f"{prefix}:r-1", "r-1", answer), Claim("t/0/2", f"{prefix}:r-2", "r-2", error)]
    assert store.put_many(first) == [True, True]
    assert store.put_many(first[:1]) == [False]  # the same record re-delivered: nothing new
    entries = read_stream(client, f"{prefix}:stream")
    assert [(rid, key) for rid, key, _ in entries] == [("r-1", f"{prefix}:r-1"), ("r-2", f"{prefix}:r-2")]
    assert stream_duplicates(entries, {"r-1", "r-2"}) == 0
    assert stored_ids(client, VQA, prefix, ["r-1", "r-2", "r-3"]) == {"r-1"}  # an error document is no result
    store.put_many([Claim("t/1/7", f"{prefix}:r-1", "r-1", answer)])  # the same request in a second record
    assert stream_duplicates(read_stream(client, f"{prefix}:stream"), {"r-1", "r-2"}) == 1
