"""``inspector bench evidence``: the worker step with evidence off and on, side by side, same model.

Evidence (docs/REVIEW.md, section 1) must not slow the inspection worker's step by more than 5%. The
step is :func:`inspector.commands.bench_step.one_pass` — decode, pair, register, tiled model, measure,
verdict, overlay — on synthetic captures from memory; "evidence on" adds what the worker adds: the
bundle built in the lanes (:class:`inspector.stream.StreamCore` with ``policy.evidence``) and written
by the worker's own :class:`workers.evidence.EvidenceKeeper` through the real
:class:`workers.evidence.EvidenceStore` into a fresh folder per pass. The two configurations share
one loaded model and run in interleaved rounds (the order alternating), so that both see the same
slow spells of a shared machine; the overhead is the median over rounds of (on / off) - 1, both for the
wall time of a pass and for this process's CPU time (``time.process_time``, every thread). On a
machine shared with other work the wall ratio swings by ±30% between rounds; the CPU ratio is the
cost itself, and what the throughput of a dedicated, CPU-bound worker loses. Third, the attributed
share: the thread CPU time spent making evidence in the lanes and writing it in the sink, over the
CPU time of the pass without evidence — the cost alone, free of the A/B noise.

It lives in ``workers`` (registered on ``inspector bench``) because the store does: imports go one way.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.bench import emit, machine
from inspector.commands.bench_step import encoded_captures, load, one_pass
from inspector.commands.common import err_console, fail
from inspector.errors import InspectorError
from inspector.evidence import EvidenceBundle, build_evidence
from inspector.model import CrackModel
from inspector.pipeline import inspect_pair
from inspector.sources import Capture
from inspector.stream import InspectedJob, Record, StreamCore, StreamPolicy
from workers.evidence import EvidenceKeeper, EvidenceStore

BUDGET = 0.05  # evidence may slow the step by at most 5% (issue 23)


def evidence_alone_ms(
    model: CrackModel, capture: Capture, root: Path, quality: int, repeats: int = 5
) -> dict[str, float]:
    """Median CPU ms to build one capture's bundle (as NG, IR encoded) and to write it, and its size; one thread."""
    assert capture.visible is not None
    result, probability = inspect_pair(capture.visible, capture.infrared, None, capture.mm_per_px or 0.05, model)
    build, write, size = [], [], 0
    for index in range(repeats):
        t0 = time.process_time()
        bundle = build_evidence(
            result, probability, capture.visible, capture.infrared, ir_to_visible=None, camera_id=capture.camera_id,
            seq=index, capture_ts_ns=capture.capture_ts_ns, kept="ng", jpeg_quality=quality,
        )  # fmt: skip
        t1 = time.process_time()
        EvidenceStore(root, 365, 2**40).write(bundle)
        t2 = time.process_time()
        build.append((t1 - t0) * 1e3)
        write.append((t2 - t1) * 1e3)
        size = bundle.nbytes
    return {"build_ms": statistics.median(build), "write_ms": statistics.median(write), "bytes": size}


class _AttributedCore(StreamCore):
    """The streaming core, counting the CPU seconds its lanes spend making evidence (``_evidence``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evidence_cpu_s = 0.0
        self._lock = threading.Lock()

    def _evidence(self, *args: Any, **kwargs: Any) -> EvidenceBundle | None:
        start = time.thread_time()
        try:
            return super()._evidence(*args, **kwargs)
        finally:
            with self._lock:
                self.evidence_cpu_s += time.thread_time() - start


def measure(
    model: CrackModel, policy: StreamPolicy, records: list[Record], rounds: int, workdir: Path, quality: int,
    ok_fraction: float,
) -> dict[str, Any]:  # fmt: skip
    """Interleaved rounds of one pass with evidence off and one with it on; the seconds and what was kept."""
    on = dataclasses.replace(policy, evidence=True, evidence_ok_fraction=ok_fraction, evidence_jpeg_quality=quality)
    kept: list[InspectedJob] = []

    def timed(evidence: bool, folder: Path) -> tuple[float, float, float, list[dict[str, Any]]]:
        """(wall seconds, CPU seconds of this process, CPU seconds spent on evidence, documents) of one pass."""
        cpu = time.process_time()
        if not evidence:
            took, done = one_pass(StreamCore(model, policy), records)
            return took, time.process_time() - cpu, 0.0, done
        keeper = EvidenceKeeper(EvidenceStore(folder, 365, 2**40))
        kept.clear()
        writing = [0.0]

        def keep(job: InspectedJob) -> None:
            start = time.thread_time()
            keeper.keep(job.document, job.evidence)
            writing[0] += time.thread_time() - start
            if job.evidence is not None:
                kept.append(job)

        core = _AttributedCore(model, on)
        try:
            took, done = one_pass(core, records, keep)
            return took, time.process_time() - cpu, core.evidence_cpu_s + writing[0], done
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # outside the timed pass

    timed(False, workdir / "warm-off")
    timed(True, workdir / "warm-on")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    spent: list[float] = []
    documents: list[dict[str, Any]] = []
    for index in track(range(rounds), description="rounds", console=err_console):
        for evidence in (False, True) if index % 2 == 0 else (True, False):
            took, used, on_evidence, done = timed(evidence, workdir / f"round-{index}")
            seconds[evidence].append(took)
            cpu[evidence].append(used)
            if evidence:
                documents = done
                spent.append(on_evidence)
    ratios = [with_ / without for with_, without in zip(seconds[True], seconds[False], strict=True)]
    cpu_ratios = [with_ / without for with_, without in zip(cpu[True], cpu[False], strict=True)]
    sizes = [job.evidence.nbytes for job in kept if job.evidence is not None]
    return {
        "seconds_off": seconds[False],
        "seconds_on": seconds[True],
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_of_medians": statistics.median(seconds[True]) / statistics.median(seconds[False]),
        "cpu_seconds_off": cpu[False],
        "cpu_seconds_on": cpu[True],
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "evidence_cpu_seconds": spent,
        "evidence_cpu_share_median": statistics.median(e / off for e, off in zip(spent, cpu[False], strict=True)),
        "captures_per_s_off": len(records) / 2 / statistics.median(seconds[False]),
        "captures_per_s_on": len(records) / 2 / statistics.median(seconds[True]),
        "ng": sum(d["verdict"] == "NG" for d in documents),
        "kept_ng": sum(job.evidence is not None and job.evidence.kept == "ng" for job in kept),
        "kept_ok_sample": sum(job.evidence is not None and job.evidence.kept == "ok-sample" for job in kept),
        "with_evidence_key": sum("evidence" in d for d in documents),
        "bundle_bytes_mean": statistics.mean(sizes) if sizes else 0,
    }


def bench_evidence(
    model: Annotated[str, typer.Option("--model", "-m", help="Crack model (name or file).")] = "crack-concat",
    backend: Annotated[str, typer.Option(help="torch or onnxruntime (the worker default).")] = "onnxruntime",
    lanes: Annotated[int, typer.Option(min=1, help="Pairs in flight at once (inference.lanes).")] = 2,
    threads: Annotated[int | None, typer.Option(help="CPU threads in all (default: every core).")] = None,
    size: Annotated[int, typer.Option(min=256, help="Visible side in pixels (IR is a quarter of it).")] = 1024,
    captures: Annotated[int, typer.Option(min=4, help="Captures per timed pass.")] = 16,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds: one pass off and one on each.")] = 5,
    clean_fraction: Annotated[
        float | None, typer.Option(min=0, max=1, help="Share of parts without a crack (default: the preset's 0.3).")
    ] = None,
    ok_fraction: Annotated[float, typer.Option(min=0, max=1, help="evidence.ok_fraction.")] = 0.02,
    jpeg_quality: Annotated[int, typer.Option(min=50, max=100, help="evidence.jpeg_quality.")] = 90,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic captures.")] = 5,
    workdir: Annotated[
        Path | None, typer.Option(help="Where the evidence is written (default: a temporary folder; deleted).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON document here too.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON document.")] = False,
) -> None:
    """The worker step with evidence off and on (same model, interleaved rounds): the overhead, against 5%."""
    frames, records = encoded_captures(captures, size, seed, clean_fraction=clean_fraction, pool=captures)
    folder = Path(tempfile.mkdtemp(prefix="bench-evidence-", dir=workdir))
    try:
        loaded, policy = load(model, backend, lanes, threads, None)
        figures = measure(loaded, policy, records, rounds, folder, jpeg_quality, ok_fraction)
        alone = evidence_alone_ms(loaded, frames[0], folder / "alone", jpeg_quality)
    except InspectorError as exc:
        fail(exc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    overhead, cpu_overhead = figures["ratio_median"] - 1.0, figures["cpu_ratio_median"] - 1.0
    attributed = figures["evidence_cpu_share_median"]
    document = {
        "benchmark": "worker-step-evidence",
        "data": f"synthetic default preset, seed {seed}, clean_fraction "
        f"{clean_fraction if clean_fraction is not None else 0.3}, {size}x{size} visible + {size // 4}² IR, PNG",
        "model": model, "backend": backend, "lanes": lanes, "captures": captures, "rounds": rounds,
        "ok_fraction": ok_fraction, "jpeg_quality": jpeg_quality,
        **figures,
        "ng_share": figures["ng"] / captures,
        "kept_share": (figures["kept_ng"] + figures["kept_ok_sample"]) / captures,
        "overhead": overhead,
        "cpu_overhead": cpu_overhead,
        "budget": BUDGET,
        "within_budget": overhead <= BUDGET,
        "cpu_within_budget": cpu_overhead <= BUDGET,
        "attributed_overhead": attributed,
        "attributed_within_budget": attributed <= BUDGET,
        "evidence_alone": alone,
        "machine": machine(),
    }  # fmt: skip
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=1) + "\n")
    table = Table(
        "evidence", "captures/s", "s per pass (median)", title=f"worker step, {model} ({backend}, {lanes} lanes)"
    )
    table.add_row("off", f"{figures['captures_per_s_off']:.2f}", f"{statistics.median(figures['seconds_off']):.2f}")
    table.add_row("on", f"{figures['captures_per_s_on']:.2f}", f"{statistics.median(figures['seconds_on']):.2f}")
    table.caption = (
        f"overhead {overhead:+.1%} wall, {cpu_overhead:+.1%} CPU, {attributed:.1%} CPU spent on evidence "
        f"(medians of {rounds} rounds; budget {BUDGET:.0%}); "
        f"NG {figures['ng']}/{captures}, "
        f"kept {figures['kept_ng']} NG + {figures['kept_ok_sample']} OK samples, "
        f"{figures['bundle_bytes_mean'] / 1e3:.0f} kB each; one bundle: build {alone['build_ms']:.1f} ms, "
        f"write {alone['write_ms']:.1f} ms"
    )
    emit(document, table, as_json)


def register(app: typer.Typer) -> None:
    """Add ``inspector bench evidence`` to the bench group."""
    from inspector.commands.bench import bench_app

    bench_app.command("evidence")(bench_evidence)
