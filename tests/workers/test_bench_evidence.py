"""``inspector bench evidence``: the worker step with evidence off and on, and what the "on" passes kept."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from workers.cli import app


def test_bench_evidence_times_both_configurations_and_keeps_every_ng_part(tmp_path: Path) -> None:
    out = tmp_path / "evidence.json"
    args = ["bench", "evidence", "--model", "baseline", "--size", "256", "--captures", "6", "--rounds", "2",
            "--ok-fraction", "1", "--workdir", str(tmp_path), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert len(document["seconds_off"]) == len(document["seconds_on"]) == len(document["ratio_per_round"]) == 2
    assert document["ratio_median"] > 0 and document["cpu_ratio_median"] > 0
    assert document["kept_ng"] == document["ng"] and document["kept_ok_sample"] == 6 - document["ng"]  # ok_fraction 1
    assert document["with_evidence_key"] == 6 and document["kept_share"] == 1.0 and document["bundle_bytes_mean"] > 0
    assert all(spent > 0 for spent in document["evidence_cpu_seconds"]) and document["evidence_alone"]["bytes"] > 0
    assert document["within_budget"] == (document["overhead"] <= 0.05)
    assert list(tmp_path.iterdir()) == [out]  # the evidence written by the passes is gone
