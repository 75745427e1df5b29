"""``inspector export``: a trained crack model as an ONNX graph, checked against torch on held-out parts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.common import console, fail
from inspector.dataset import DataError, list_ids, read_sample
from inspector.errors import InspectorError
from inspector.mla_model import MLACrackModel, file_sha256, load_crack_model, sidecar_path
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
        "parts": len(ids),
        "max_abs_probability_diff": worst,
        "same_verdict": same,
        "different_verdict": mismatched,
    }


def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained crack model (.pt).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="ONNX file (default: beside the model).")] = None,
    check: Annotated[
        Path | None, typer.Option(help="Held-out data folder: compare torch and onnxruntime verdicts on it.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Parts of --check to compare.")] = 20,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset.")] = 18,
) -> None:
    """Export a crack model to ONNX (dynamic batch, height, width; IR may be missing) and check its parity."""
    import mla
    from mla.export import export_onnx

    if model.suffix != ".pt" or not model.is_file():
        fail(f"--model {model}: give a trained .pt file (from `inspector train` or inspector/models/)")
    target = out or model.with_suffix(".onnx")
    try:
        net = mla.load_model(model, map_location="cpu")
        metadata = mla.load_metadata(model)
        export_onnx(net, target, opset=opset)
    except mla.MLAError as exc:
        fail(exc)
    scales = {m: int(net.encoder(m).scale) for m in net.modalities}
    sidecar: dict[str, Any] = {
        "name": metadata.get("name", model.stem),
        "version": metadata.get("version", "0"),
        "variant": metadata.get("variant"),
        "modalities": list(net.modalities),
        "scales": scales,
        "opset": opset,
        "source": {"file": model.name, "sha256": file_sha256(model)},
        "parameters": mla.count_parameters(net),
        "macs_per_512_tile": metadata.get("macs_per_512_tile"),
        "pruning": metadata.get("pruning"),
        "threshold": metadata.get("threshold", 0.5),
    }
    sidecar_path(target).write_text(json.dumps(sidecar, indent=1) + "\n")
    table = Table("export", "value")
    table.add_row("graph", f"{target} ({target.stat().st_size / 1e6:.2f} MB)")
    if check is not None:
        try:
            parity = verdict_parity(load_crack_model(model), load_crack_model(target), check, limit)
        except (DataError, InspectorError) as exc:
            fail(exc)
        sidecar["parity"] = parity
        sidecar_path(target).write_text(json.dumps(sidecar, indent=1) + "\n")
        table.add_row("max |p_torch - p_onnx|", f"{parity['max_abs_probability_diff']:.2e}")
        table.add_row("same verdict", f"{parity['same_verdict']} / {parity['parts']}")
    console.print(table)
    if check is not None and sidecar["parity"]["different_verdict"]:
        fail(f"verdicts differ on {sidecar['parity']['different_verdict']}", code=1)


def register(app: typer.Typer) -> None:
    """Add ``export`` to the CLI."""
    app.command("export")(export)
