"""The chaos harness's recovery figure and the report renderer, without services.

The counting checks themselves (duplicates, commits ahead of store) are in tests/workers/test_audit.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.harness import recovery_lag_s
from tests.chaos.report import END, START, render, update
from workers.audit import LagSample

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
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "1-x.json").write_text(json.dumps(figures))
    doc = tmp_path / "R.md"
    doc.write_text(f"# R\n\nprose\n\n{START}\nold\n{END}\n\nmore prose\n")
    text = update(doc, runs)
    assert text.startswith("# R\n\nprose\n\n") and text.endswith("\n\nmore prose\n") and "old" not in text
    assert "| 1-x: SIGKILL | 160 frames/s (80 captures/s) | 70 s | 10,000 (5,000) | 5,000 | **0** | **0** |" in text
    assert "11.2 s / never" in text
    assert render([]).startswith(START)
