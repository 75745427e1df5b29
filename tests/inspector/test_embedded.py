"""The embedded line: source → in-process queue → streaming core → JSONL, through the same code as the workers."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from inspector.cli import app
from inspector.embedded import EmbeddedLine
from inspector.model import create_model
from inspector.results import JsonlResultStore
from inspector.sources import SyntheticSource
from inspector.stream import StreamCore, StreamPolicy


def test_every_capture_becomes_one_stored_result(tmp_path: Path) -> None:
    source = SyntheticSource(["rig-1", "rig-2"], "default", seed=3, size=128, pool=3)
    store = JsonlResultStore(tmp_path / "results.jsonl")
    line = EmbeddedLine(source, StreamCore(create_model("baseline"), StreamPolicy(batch_pairs=2)), store)
    report = line.run(count=6)
    assert report.captures == 6 and len(report.results) == 6 and not report.unpaired and not report.rejected
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((d["camera_id"], d["seq"]) for d in lines) == [(c, s) for c in ("rig-1", "rig-2") for s in (1, 2, 3)]
    assert all(d["model"]["name"] == "baseline" and d["timings_ms"]["end_to_end"] > 0 for d in lines)

    # The same captures again (a replay): the idempotent store keeps one result each.
    again = SyntheticSource(["rig-1", "rig-2"], "default", seed=3, size=128, pool=3)
    replay = EmbeddedLine(again, StreamCore(create_model("baseline")), JsonlResultStore(tmp_path / "results.jsonl"))
    assert replay.run(count=6).results == []
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 6


def test_inspector_run_prints_figures_and_continues_the_count(tmp_path: Path) -> None:
    args = [
        "run",
        "--model",
        "baseline",
        "--size",
        "128",
        "--count",
        "4",
        "--fps",
        "0",
        "--out",
        str(tmp_path),
        "--json",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    figures = json.loads(first.output[first.output.index("{") :])
    assert figures["results"] == 4 and sum(figures["verdicts"].values()) == 4 and figures["end_to_end_ms_p50"] > 0
    second = CliRunner().invoke(app, args)
    assert json.loads(second.output[second.output.index("{") :])["results"] == 4  # new seqs, not a replay
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 8
