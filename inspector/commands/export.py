"""``inspector export``: a trained crack model as an ONNX graph, checked against torch on held-out parts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.common import console, fail
from inspector.dataset import DataError, list_ids, read_sample
from inspector.errors import InspectorError
from inspector.export_cache import export_model, sidecar_path
from inspector.mla_model import MLACrackModel, load_crack_model
from inspector.pipeline import inspect_pair


def verdict_parity(reference: MLACrackModel, exported: MLACrackModel, data: Path, limit: int) -> dict[str, Any]:
    """Both models on the same held-out parts: largest probability difference and verdict agreement."""
    ids = list_ids(data)[:limit]
    worst, same, mismatched = 0.0, 0, []
    for sample_id in track(ids, description="parity", console=console, transient=True):
        sample = read_sample(data, sample_id, with_mask=False)
        homography, scale = sample.meta.homography, sample.meta.mm_per_px
        a, prob_a = inspect_pair(sample.visible, sample.infrared, homography, scale, reference)
        b, prob_b = inspect_pair(sample.visible, sample.infrared, homography, scale, exported)
        worst = max(worst, float(np.abs(prob_a - prob_b).max()))
        if a.verdict == b.verdict:
            same += 1
        else:
            mismatched.append(sample_id)
    return {
        "data": str(data),
        "reference": reference.backend.description,
        "exported": exported.backend.description,
        "parts": len(ids),
        "max_abs_probability_diff": worst,
        "same_verdict": same,
        "different_verdict": mismatched,
    }


def calibration_feeds(data: Path, sidecar: dict[str, Any], count: int = 32, tile: int = 256) -> list[dict[str, Any]]:
    """INT8 calibration feeds: random training tiles (half on cracks), as the graph's inputs."""
    from inspector.crack_data import CrackTileSet

    tiles = CrackTileSet.load(data, limit=64)
    rng = np.random.default_rng(0)
    feeds = []
    modalities = sidecar["modalities"]
    for _ in range(count):
        batch = tiles.batch(rng, 1, tile, crack_fraction=0.5, augment=False, distractor_fraction=0.25)
        feed = {m: batch[m].astype(np.float32) for m in modalities}
        feed["presence"] = np.ones((1, len(modalities)), dtype=np.float32)
        feeds.append(feed)
    return feeds


def int8_variant(
    model: Path, target: Path, sidecar: dict[str, Any], calibration: Path, check: Path, limit: int
) -> dict[str, Any]:
    """Quantise ``target`` to INT8 and keep it only if held-out pixel F1 drops by at most one point."""
    from inspector.commands.evaluate import score_model
    from mla.export import quantize_int8

    quantised = target.with_name(target.stem + ".int8.onnx")
    quantize_int8(target, quantised, calibration_feeds(calibration, sidecar))
    sidecar_path(quantised).write_text(json.dumps(sidecar | {"quantisation": "int8 qdq per-channel"}, indent=1) + "\n")
    with tempfile.TemporaryDirectory(prefix="inspector-int8-") as work:
        float_f1 = score_model(load_crack_model(target), check, Path(work) / "float", limit)["pixel_f1"]
        int8_f1 = score_model(load_crack_model(quantised), check, Path(work) / "int8", limit)["pixel_f1"]
    verdict = {"float_f1": float_f1, "int8_f1": int8_f1, "drop_points": 100 * (float_f1 - int8_f1), "parts": limit}
    verdict["accepted"] = verdict["drop_points"] <= 1.0
    if not verdict["accepted"]:
        quantised.unlink(missing_ok=True)
        sidecar_path(quantised).unlink(missing_ok=True)
    else:
        sidecar_path(quantised).write_text(json.dumps(sidecar | {"int8_check": verdict}, indent=1) + "\n")
    return verdict | {"file": str(quantised)}


def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained crack model (.pt).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="ONNX file (default: beside the model).")] = None,
    check: Annotated[
        Path | None, typer.Option(help="Held-out data folder: compare torch and onnxruntime verdicts on it.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Parts of --check to compare.")] = 20,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset.")] = 18,
    int8: Annotated[
        bool,
        typer.Option(help="Also write <out>.int8.onnx (onnxruntime static QDQ), kept only if F1 drops <= 1 point."),
    ] = False,
    calibration: Annotated[
        Path | None, typer.Option(help="Training data folder for the INT8 activation ranges (never held-out data).")
    ] = None,
) -> None:
    """Export a crack model to ONNX (dynamic batch, height, width; IR may be missing) and check its parity."""
    target = out or model.with_suffix(".onnx")
    if int8 and (calibration is None or check is None):
        fail("--int8 needs --calibration (training data) and --check (held-out data to measure the F1 drop)")
    try:
        sidecar = export_model(model, target, opset)
    except InspectorError as exc:
        fail(exc)
    table = Table("export", "value")
    table.add_row("graph", f"{target} ({target.stat().st_size / 1e6:.2f} MB)")
    if check is not None:
        try:
            # the reference is eager torch: the default backend would run the same graph twice
            parity = verdict_parity(load_crack_model(model, backend="torch"), load_crack_model(target), check, limit)
        except (DataError, InspectorError) as exc:
            fail(exc)
        sidecar["parity"] = parity
        sidecar_path(target).write_text(json.dumps(sidecar, indent=1) + "\n")
        table.add_row("max |p_torch - p_onnx|", f"{parity['max_abs_probability_diff']:.2e}")
        table.add_row("same verdict", f"{parity['same_verdict']} / {parity['parts']}")
    if int8 and calibration is not None and check is not None:
        verdict = int8_variant(model, target, sidecar, calibration, check, limit)
        table.add_row("INT8 pixel F1 (float)", f"{verdict['int8_f1']:.3f} ({verdict['float_f1']:.3f})")
        kept = f"kept: {verdict['file']}" if verdict["accepted"] else "rejected (drop > 1 point), not written"
        table.add_row("INT8", f"drop {verdict['drop_points']:.2f} points: {kept}")
    console.print(table)
    if check is not None and sidecar["parity"]["different_verdict"]:
        fail(f"verdicts differ on {sidecar['parity']['different_verdict']}", code=1)


def register(app: typer.Typer) -> None:
    """Add ``export`` to the CLI."""
    app.command("export")(export)
