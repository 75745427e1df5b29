"""``inspector bench model``: crack models (unpruned and pruned widths) x backends, side by side in one run.

For every model file and backend: median and p95 latency per 512x512 visible + 128x128 IR pair at
batch 1 and batch 8 (every model loaded first, then timed in interleaved rounds, so that they share
this shared machine's slow spells), megapixels per second, parameters, MACs, the GFLOP/s the model achieves against
this machine's measured convolution throughput (the physical reference: a dense 3x3 convolution in
torch), and pixel F1 and recall of cracks >= 0.2 mm on held-out data through that very backend.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from inspector.commands.bench import bench_app, emit, machine
from inspector.commands.common import console, fail
from inspector.commands.evaluate import json_safe, score_model
from inspector.errors import InspectorError
from inspector.mla_model import DEFAULT_TILE, MLACrackModel, load_crack_model

PAIR_MEGAPIXELS = 512 * 512 / 1e6  # visible pixels per 512x512 pair


def conv_throughput_gflops(seconds: float = 2.0) -> float:
    """Dense convolution throughput of this machine in torch (GFLOP/s): 64->64 3x3 on 1x64x256x256, median."""
    import torch

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.rand(1, 64, 256, 256)
    flops = 2 * 64 * 64 * 9 * 256 * 256
    times: list[float] = []
    with torch.inference_mode():
        conv(x)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


ROUNDS = 4  # timing rounds: every model is timed in each, so a slow spell of this shared machine hits all alike
SETTLE_S = 0.05  # pause before each model's turn: the previous runtime's idle threads stop spinning


def random_pairs(model: MLACrackModel, batch: int) -> dict[str, np.ndarray | None]:
    """``batch`` random 512x512 visible (+ 128x128 IR) inputs (the cost does not depend on the values)."""
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray | None] = {}
    for name in model.modalities:
        side = 512 // (model.scale if name == "infrared" else 1)
        inputs[name] = rng.standard_normal((batch, 1, side, side), dtype=np.float32)
    return inputs


def interleaved_latency(models: list[MLACrackModel], batch: int, repeats: int) -> list[dict[str, float]]:
    """Median and p95 ms of each model's backend on ``batch`` pairs, timed in interleaved rounds.

    Each of :data:`ROUNDS` rounds times every model in turn, ``repeats / ROUNDS`` calls each, after
    a short pause and one untimed call (the previous model's idle runtime threads spin for a while
    and would be timed with this one): the models share the machine's good and bad spells instead
    of each getting its own.
    """
    feeds = [random_pairs(model, batch) for model in models]
    per_round = max(-(-repeats // ROUNDS), 1)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(ROUNDS):
        for model, feed, timed in zip(models, feeds, times, strict=True):
            time.sleep(SETTLE_S)
            model.backend.run(feed)
            for _ in range(per_round):
                t0 = time.perf_counter()
                model.backend.run(feed)
                timed.append((time.perf_counter() - t0) * 1e3)
    summaries = []
    for timed in times:
        ordered = sorted(timed)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        summaries.append({"median_ms": statistics.median(timed), "p95_ms": p95})
    return summaries


def quality(model: MLACrackModel, data: Path, work: Path, limit: int | None) -> dict[str, float]:
    """Pixel F1, recall of cracks >= 0.2 mm and false rejects of this model and backend on held-out data."""
    return score_model(model, data, work / "predictions", limit)


def add_ratios(rows: list[dict[str, Any]], unpruned: str) -> None:
    """Speed-up at batch 1 and F1 share of each row against the unpruned model on the same backend."""
    base = {r["backend"].split()[0]: r for r in rows if r["model"] == unpruned}
    for row in rows:
        first = base.get(row["backend"].split()[0])
        if first is None:
            continue
        if "batch1" in row and "batch1" in first:
            row["speedup_vs_unpruned_batch1"] = first["batch1"]["median_ms"] / row["batch1"]["median_ms"]
        if "pixel_f1" in row and first.get("pixel_f1"):
            row["f1_share_of_unpruned"] = row["pixel_f1"] / first["pixel_f1"]


@bench_app.command("model")
def bench_model(
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated .pt files (the unpruned model first, then its pruned widths) or .onnx graphs."
        ),
    ],
    data: Annotated[Path | None, typer.Option("--data", help="Held-out folder for F1 and recall.")] = None,
    backends: Annotated[
        str, typer.Option(help="Comma-separated: torch, onnxruntime, tensorrt (CUDA: onnxruntime's TensorRT provider).")
    ] = "torch,onnxruntime",
    batches: Annotated[str, typer.Option(help="Batch sizes to time.")] = "1,8",
    repeats: Annotated[
        int, typer.Option(min=4, help="Timed calls per figure, spread over 4 interleaved rounds of every model.")
    ] = 20,
    limit: Annotated[int | None, typer.Option(help="Only the first N held-out parts.")] = 50,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    amp: Annotated[
        bool, typer.Option(help="Half precision: torch autocast (bf16 CPU, fp16 CUDA), TensorRT fp16 kernels.")
    ] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch and onnxruntime.")] = None,
    tile: Annotated[
        int, typer.Option(min=64, help="Longest tile side for the held-out parts (timings are on 512² pairs).")
    ] = DEFAULT_TILE,
    out: Annotated[Path | None, typer.Option(help="Where to keep predictions and bench.json.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON document.")] = False,
) -> None:
    """Unpruned and pruned crack models on each backend: latency, throughput, GFLOP/s, F1, side by side."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    files = [Path(m.strip()) for m in models.split(",") if m.strip()]
    for path in files:
        if path.suffix not in (".pt", ".onnx") or not path.is_file():
            fail(f"--models: {path} is not a trained .pt file or an exported .onnx graph (e.g. an INT8 one)")
    sizes = [int(b) for b in batches.split(",") if b.strip()]
    work = out or Path(tempfile.mkdtemp(prefix="inspector-bench-model-"))
    reference = conv_throughput_gflops()
    try:
        pairs = [
            (path, backend)
            for path in files
            for backend in [b.strip() for b in backends.split(",") if b.strip()]
            if path.suffix != ".onnx" or backend == "onnxruntime"  # an exported graph runs on onnxruntime only
        ]
        loaded = [
            load_crack_model(path, backend=backend, device=device, threads=threads, amp=amp, tile=tile)
            for path, backend in pairs
        ]
        rows: list[dict[str, Any]] = [
            {
                "model": path.stem,
                "backend": model.backend.description,
                "parameters": model.metadata.get("parameters"),
                "macs_per_512_pair": model.metadata.get("macs_per_512_tile") or 0,
                "parity_max_abs_diff": model.metadata.get("parity_max_abs_diff"),
            }
            for (path, _), model in zip(pairs, loaded, strict=True)
        ]
        for size in sizes:
            for row, timed in zip(rows, interleaved_latency(loaded, size, repeats), strict=True):
                seconds, macs = timed["median_ms"] / 1e3, row["macs_per_512_pair"]
                row[f"batch{size}"] = timed | {
                    "megapixels_per_s": size * PAIR_MEGAPIXELS / seconds,
                    "gflops": 2 * macs * size / seconds / 1e9,
                    "share_of_conv_peak": 2 * macs * size / seconds / 1e9 / reference,
                }
        if data is not None:
            for row, model in zip(rows, loaded, strict=True):
                row.update(quality(model, data, work / row["model"] / row["backend"].split()[0], limit))
    except InspectorError as exc:
        fail(exc)
    add_ratios(rows, files[0].stem)
    document = {
        "benchmark": "model",
        "data": str(data) if data else None,
        "held_out_parts": limit,
        "tile": tile,
        "conv_reference_gflops": reference,
        "rows": rows,
        "machine": machine() | {"torch_threads": torch.get_num_threads()},
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench.json").write_text(json.dumps(json_safe(document), indent=1) + "\n")
    table = Table("model", "backend", "params", "GMAC", *(f"b{s} ms (p95)" for s in sizes), "MP/s", "GFLOP/s",
                  "speed-up", "F1", "rec>=0.2")  # fmt: skip
    for row in rows:
        last = row.get(f"batch{sizes[-1]}", {})
        table.add_row(
            row["model"], row["backend"], f"{row['parameters'] or 0:,}", f"{(row['macs_per_512_pair'] or 0) / 1e9:.2f}",
            *(f"{row[f'batch{s}']['median_ms']:.1f} ({row[f'batch{s}']['p95_ms']:.1f})" for s in sizes),
            f"{last.get('megapixels_per_s', 0):.2f}", f"{last.get('gflops', 0):.1f}",
            f"{row.get('speedup_vs_unpruned_batch1') or 0:.2f}x",
            f"{row.get('pixel_f1', float('nan')):.3f}", f"{row.get('defect_crack_recall', float('nan')):.3f}",
        )  # fmt: skip
    emit(document, table, as_json)
    if not as_json:
        console.print(f"conv reference on this machine: {reference:.1f} GFLOP/s; files in {work}")
