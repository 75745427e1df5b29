"""``inspector bench step``: the whole worker step, side by side per model, backend and lane count.

The worker step is what one inspection worker does per capture once its records arrive: PNG decode of
both frames, pairing, IR registration, the tiled model, crack measurement, the verdict and the NG
overlay — :class:`inspector.stream.StreamCore`, the very code the Kafka worker and ``inspector run``
run, fed here from memory so that no transport is in the figure. Captures are synthetic
(``default`` preset), 1024² visible + 256² IR by default, encoded once as the gateway encodes them.

Every configuration is loaded first and then timed in interleaved rounds (one pass of each per
round), so that all of them share the slow spells of a shared machine. For each configuration:
captures and visible megapixels per second (median over the rounds), the
median stage times, the model alone on one capture, and its share of this machine's dense-conv
throughput (a 64→64 3×3 convolution measured in the same run). The first configuration is the
baseline every speed-up is measured against.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.bench import bench_app, emit, machine
from inspector.commands.bench_model import conv_throughput_gflops
from inspector.commands.common import console, err_console, fail
from inspector.commands.evaluate import json_safe
from inspector.errors import InspectorError
from inspector.model import CrackModel, ModelInput, create_model, lane_threads
from inspector.sources import Capture, SyntheticSource, capture_to_records
from inspector.stream import InspectedJob, Record, StreamCore, StreamPolicy
from inspector.synth.presets import get_preset

BATCH_PAIRS = 4  # pairs per inspect_batch, as configs/default.yaml's worker.batch_pairs


def encoded_captures(
    count: int, size: int, seed: int, *, clean_fraction: float | None = None, pool: int | None = None
) -> tuple[list[Capture], list[Record]]:
    """``count`` synthetic captures and their frame records (PNG, as the gateway sends them), visible first.

    ``clean_fraction`` sets the share of parts without a crack (default: the ``default`` preset's, 0.3);
    ``pool`` the parts rendered and cycled over (default: ``min(count, 8)``).
    """
    preset = get_preset("default", clean_fraction=clean_fraction) if clean_fraction is not None else "default"
    source = SyntheticSource(["bench-rig"], preset, seed, size, pool=pool or min(count, 8), start_seq=1)
    captures: list[Capture] = []
    records: list[Record] = []
    for capture in source:
        if not isinstance(capture, Capture):
            continue
        captures.append(capture)
        for frame, data in capture_to_records(capture, "png"):
            records.append(Record(frame.modality, frame.camera_id.encode(), data, frame.to_headers(), len(records)))
        if len(captures) == count:
            break
    return captures, records


def one_pass(
    core: StreamCore, records: list[Record], keep: Callable[[InspectedJob], object] | None = None
) -> tuple[float, list[dict[str, Any]]]:
    """Feed every record a poll at a time and inspect every pair: (seconds, documents). Closes ``core``.

    ``keep`` is called with each inspected job in the timed loop, where a worker's sink writes it
    (e.g. its evidence, ``inspector bench evidence``).
    """
    documents: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        for first in range(0, len(records), 2 * BATCH_PAIRS):
            core.feed(records[first : first + 2 * BATCH_PAIRS], now_ns=time.monotonic_ns(), wall_ns=time.time_ns())
            while core.queued_pairs:
                jobs, rejected = core.inspect_batch(wall_ns=time.time_ns)
                if rejected:
                    raise InspectorError(f"the bench's own captures were rejected: {rejected[0].detail}")
                for job in jobs:
                    if keep is not None:
                        keep(job)
                    documents.append(job.document)
        return time.perf_counter() - start, documents
    finally:
        core.close()


def model_alone_ms(model: CrackModel, capture: Capture, repeats: int) -> float:
    """Median ms of ``model.predict`` on one registered capture (tiles, runtime, blending; no decode, no measure)."""
    from inspector.pipeline import nominal_homography, to_grey
    from inspector.registration import warp_to_visible

    grey = to_grey(capture.visible)  # type: ignore[arg-type]
    ir = capture.infrared
    homography = registered = None
    if ir is not None:
        homography = nominal_homography(ir.shape, grey.shape)
        registered = warp_to_visible(ir, homography, grey.shape)
    inputs = ModelInput(grey, registered, 0.05, infrared_raw=ir, ir_to_visible=homography)
    model.predict(inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def load(
    name: str, backend: str, lanes: int, threads: int | None, cache_dir: Path | None, device: str = "cpu",
    tile: int | None = None,
) -> tuple[CrackModel, StreamPolicy]:  # fmt: skip
    """One configuration's model, as a worker loads it, and its streaming policy."""
    inference: dict[str, Any] = {"backend": backend, "threads": threads, "lanes": lanes, "device": device}
    if tile is not None:
        inference["tile"] = tile
    if cache_dir is not None:
        inference["cache_dir"] = cache_dir
    policy = StreamPolicy(batch_pairs=BATCH_PAIRS, batch_wait_ns=0, lanes=lanes, default_mm_per_px=0.05)
    return create_model(name, inference=inference), policy


def measure(
    configurations: list[tuple[str, str, int]], threads: int | None, captures: list[Capture], records: list[Record],
    repeats: int, cache_dir: Path | None, device: str = "cpu", tile: int | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every configuration loaded and warmed up, then timed in ``repeats`` interleaved rounds of one pass each.

    Interleaving gives every configuration its share of this shared machine's slow spells, so the
    ratios between them hold even when the absolute figures drift.
    """
    loaded = []
    for name, backend, lanes in track(configurations, description="loading", console=err_console):
        model, policy = load(name, backend, lanes, threads, cache_dir, device, tile)
        one_pass(StreamCore(model, policy), records[: 4 * BATCH_PAIRS])  # warm-up: allocators, caches, first calls
        loaded.append((model, policy))
    seconds: list[list[float]] = [[] for _ in loaded]
    documents: list[list[dict[str, Any]]] = [[] for _ in loaded]
    for _ in track(range(repeats), description="rounds", console=err_console):
        for index, (model, policy) in enumerate(loaded):
            took, documents[index] = one_pass(StreamCore(model, policy), records)
            seconds[index].append(took)
    size = captures[0].visible.shape[0] * captures[0].visible.shape[1] / 1e6  # type: ignore[union-attr]
    rows = []
    for (name, _, lanes), (model, _), passes, done in zip(configurations, loaded, seconds, documents, strict=True):
        median = statistics.median(passes)
        stages = {k: statistics.median(d["timings_ms"][k] for d in done) for k in ("register", "model", "measure")}
        metadata = dict(getattr(model, "metadata", {}) or {})
        rows.append({
            "model": name,
            "backend": str(metadata.get("backend", "python")),
            "sha256": metadata.get("sha256"),
            "parity_max_abs_diff": metadata.get("parity_max_abs_diff"),
            "lanes": lanes,
            "threads_per_lane": lane_threads(threads, lanes),
            "tile": getattr(model, "tile", None),
            "captures": len(captures),
            "seconds_per_pass": passes,
            "captures_per_s": len(captures) / median,
            "megapixels_per_s": len(captures) * size / median,
            "stage_ms_p50": stages,
            "model_alone_ms": model_alone_ms(model, captures[0], 5),
            "macs_per_512_tile": metadata.get("macs_per_512_tile"),
            "ng": sum(d["verdict"] == "NG" for d in done),
        })  # fmt: skip
    return rows


@bench_app.command("step")
def bench_step(
    models: Annotated[
        str, typer.Option(help="Comma-separated model names or .pt files; the first is the baseline.")
    ] = "crack-concat",
    backends: Annotated[str, typer.Option(help="Comma-separated: torch, onnxruntime.")] = "torch,onnxruntime",
    lanes: Annotated[str, typer.Option(help="Comma-separated lane counts (pairs in flight at once).")] = "1,2",
    size: Annotated[int, typer.Option(min=256, help="Visible side in pixels (IR is a quarter of it).")] = 1024,
    captures: Annotated[int, typer.Option(min=4, help="Captures per timed pass.")] = 24,
    repeats: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds: one timed pass of every configuration each (median).")
    ] = 3,
    threads: Annotated[int | None, typer.Option(help="CPU threads in all (default: every core).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic captures.")] = 5,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    tile: Annotated[int | None, typer.Option(help="Longest model tile side in visible pixels (default: 576).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="ONNX cache (default: ~/.cache/inspector/onnx).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON document here too.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON document.")] = False,
) -> None:
    """The whole worker step (decode, pair, register, tiled model, measure, verdict) in MP/s, side by side."""
    configurations = [
        (m.strip(), b.strip(), int(n))
        for m in models.split(",") if m.strip()
        for b in backends.split(",") if b.strip()
        for n in lanes.split(",") if n.strip()
    ]  # fmt: skip
    if not configurations:
        fail("nothing to run: give --models, --backends and --lanes")
    frames, records = encoded_captures(captures, size, seed)
    reference = conv_throughput_gflops()
    try:
        rows = measure(configurations, threads, frames, records, repeats, cache_dir, device, tile)
    except InspectorError as exc:
        fail(exc)
    base = rows[0]
    for row in rows:
        row["speedup_vs_baseline"] = row["megapixels_per_s"] / base["megapixels_per_s"]
        macs = (row["macs_per_512_tile"] or 0) * (size / 512) ** 2
        row["model_gflops"] = 2 * macs / (row["model_alone_ms"] / 1e3) / 1e9 if macs else None
        row["model_share_of_conv_peak"] = row["model_gflops"] / reference if row["model_gflops"] else None
    document = {
        "benchmark": "worker-step",
        "data": f"synthetic default preset, seed {seed}, {size}x{size} visible + {size // 4}x{size // 4} IR, PNG",
        "baseline": f"{base['model']} on {base['backend']}, {base['lanes']} lane(s)",
        "conv_reference_gflops": reference,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
        "machine": machine(),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_safe(document), indent=1) + "\n")
    table = Table("model", "backend", "lanes", "MP/s", "captures/s", "x baseline", "register", "model", "measure",
                  "model alone ms", "conv share", title=f"worker step, {size}² synthetic pairs")  # fmt: skip
    for row in rows:
        stages = row["stage_ms_p50"]
        share = row["model_share_of_conv_peak"]
        table.add_row(
            row["model"], row["backend"], str(row["lanes"]), f"{row['megapixels_per_s']:.2f}",
            f"{row['captures_per_s']:.2f}", f"{row['speedup_vs_baseline']:.2f}x", f"{stages['register']:.1f}",
            f"{stages['model']:.1f}", f"{stages['measure']:.1f}", f"{row['model_alone_ms']:.1f}",
            f"{share:.3f}" if share is not None else "-",
        )  # fmt: skip
    emit(document, table, as_json)
    if not as_json:
        console.print(f"conv reference {reference:.1f} GFLOP/s; medians over {repeats} passes of {captures} captures")
