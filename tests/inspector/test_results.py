"""The stored result document and the embedded JSONL store (idempotent per capture)."""

from __future__ import annotations

import json
from pathlib import Path

from inspector.measure import CrackMeasurement
from inspector.pipeline import InspectionResult
from inspector.results import JsonlResultStore, RedisLayout, result_document


def inspection(verdict: str = "NG") -> InspectionResult:
    crack = CrackMeasurement(length_mm=4.2, max_width_mm=0.31, mean_width_mm=0.2, bbox=(1, 2, 30, 40), score=0.9,
                             area_px=120)  # fmt: skip
    return InspectionResult(
        sample_id="rig-1-42", verdict="NG" if verdict == "NG" else "OK", defects=(crack,) if verdict == "NG" else (),
        cracks=(crack,), mm_per_px=0.05, model={"name": "crack-hffn", "version": "1+sha256:abc"},
        modal_weights={"visible": 0.4, "infrared": 0.6}, timings_ms={"model": 80.0, "total": 95.0}, part_id="P-7",
    )  # fmt: skip


def test_document_carries_identity_verdict_defects_and_end_to_end_time() -> None:
    doc = result_document(inspection(), camera_id="rig-1", seq=42, capture_ts_ns=1_000_000_000,
                          stored_ns=1_250_000_000, model_width=0.6)  # fmt: skip
    assert doc["camera_id"] == "rig-1" and doc["seq"] == 42 and doc["part_id"] == "P-7" and doc["verdict"] == "NG"
    assert doc["defects"][0]["max_width_mm"] == 0.31 and doc["defects"][0]["class"] == "crack"
    assert doc["timings_ms"]["end_to_end"] == 250.0 and doc["timings_ms"]["model"] == 80.0
    assert doc["model"] == {"name": "crack-hffn", "version": "1+sha256:abc", "width": 0.6}
    assert doc["modal_weights"] == {"visible": 0.4, "infrared": 0.6}
    json.dumps(doc)  # JSON-ready


def test_layout_key_names() -> None:
    layout = RedisLayout(prefix="line2")
    assert layout.result_key("rig-1", 42) == "line2:result:rig-1:42"
    assert layout.part_key("P-7") == "line2:part:P-7" and layout.stream == "line2:results"
    assert layout.overlay_key("rig-1", 42) == "line2:overlay:rig-1:42"


def test_jsonl_store_is_idempotent_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    doc = result_document(inspection(), camera_id="rig-1", seq=42, capture_ts_ns=0, stored_ns=1)
    store = JsonlResultStore(path)
    assert store.put(doc, overlay_jpeg=b"\xff\xd8jpeg") is True
    assert store.put(doc) is False  # a re-delivered frame
    again = JsonlResultStore(path)  # a restarted process
    assert again.put(doc) is False
    assert again.put(doc | {"seq": 43}) is True
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [42, 43]
    assert (tmp_path / "overlay-rig-1-42.jpg").read_bytes() == b"\xff\xd8jpeg"
