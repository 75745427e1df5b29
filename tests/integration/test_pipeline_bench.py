"""`inspector bench pipeline` end to end on a tiny load: every phase runs and the ratios come from its own figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import Stack
from workers.cli import app
from workers.pipeline_bench import balanced_cameras

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cameras_are_spread_evenly_over_partitions() -> None:
    from kafka.partitioner.default import murmur2

    cameras = balanced_cameras(4, 2)
    slots = [(murmur2(c.encode()) & 0x7FFFFFFF) % 4 for c in cameras]
    assert sorted(slots) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_bench_pipeline_runs_every_phase(stack: Stack, tmp_path: Path) -> None:
    args = [
        "bench", "pipeline", "--model", "baseline", "--size", "128", "--captures", "24", "--load-seconds", "3",
        "--out", str(tmp_path), "--kafka", stack.kafka_bootstrap, "--redis", stack.redis_url,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["one_worker"]["results"] == 24 and figures["two_workers"]["results"] == 24
    bare, one, two = figures["bare_loop"], figures["one_worker"], figures["two_workers"]
    assert figures["pipeline_over_bare"] == pytest.approx(one["captures_per_s"] / bare["captures_per_s"])
    assert figures["two_over_one"] == pytest.approx(two["captures_per_s"] / one["captures_per_s"])
    assert len(one["peak_rss_mib"]) == 1 and 20 < one["peak_rss_mib"][0] < 4096  # read from the worker's /proc
    for load in figures["latency"]:
        assert load["results"] >= 9 and 0 < load["end_to_end_ms_p50"] <= load["end_to_end_ms_p99"]
    assert "pipeline / bare" in result.output
