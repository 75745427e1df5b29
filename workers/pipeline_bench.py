"""``inspector bench pipeline``: the pipeline through real Kafka and Redis beside the same model in a bare loop.

One run, side by side, on the same synthetic captures:

1. **bare loop**: the worker step (:class:`inspector.stream.StreamCore`: decode, pair, register,
   model, measure) on the captures' records in this process, with the one worker's threads and
   lanes, no transport — the ceiling a worker can reach; timed before and after the one-worker
   drain, so that the ratio does not hang on which of them met a slow spell of a shared machine;
2. **1 worker / 2 workers**: captures pre-published to fresh co-partitioned topics, then
   ``inspector worker`` processes (one inference thread each) drain them into Redis; throughput is
   counted between the results' store times, after a warm-up, so start-up is not in it;
3. **latency at 50% and 90% of the 1-worker maximum**: the gateway paces captures at that rate for
   a while; end-to-end latency (capture → stored) percentiles from the stored documents.

Camera ids are picked so that the default partitioner spreads them evenly over the partitions
(otherwise two workers could get unequal shares by hashing luck).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from kafka.partitioner.default import murmur2

from inspector.config import (
    InferenceSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    TopicSettings,
    WorkerSettings,
)
from inspector.model import create_model
from inspector.sources import Capture, SyntheticSource, capture_to_records
from workers.clients import redis_client
from workers.errors import WorkerError
from workers.gateway import Gateway, prepare_topics

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PipelineBench:
    """What to run: the model, the frames, the loads."""

    model: str = "crack-concat"
    size: int = 512
    partitions: int = 4
    cameras_per_partition: int = 2
    captures: int = 120
    warmup: int = 8
    load_seconds: float = 30.0
    bare_repeats: int = 3
    threads: int | None = None  # CPU threads of the one worker (and of the bare loop); default: every core
    lanes: int = 2  # inference.lanes of the workers and the bare loop
    kafka: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"


def balanced_cameras(partitions: int, per_partition: int) -> list[str]:
    """Camera ids that Kafka's default partitioner (murmur2) spreads evenly over ``partitions``."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < per_partition for v in chosen.values()):
        name = f"rig-{i:03d}"
        slot = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(chosen[slot]) < per_partition:
            chosen[slot].append(name)
        i += 1
    return [name for p in range(partitions) for name in chosen[p]]


def _settings(bench: PipelineBench) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka=KafkaSettings(bootstrap=bench.kafka),
        redis=RedisSettings(url=bench.redis_url, key_prefix=f"bench-{tag}"),
        topics=TopicSettings(
            visible=f"bench-vis-{tag}", infrared=f"bench-ir-{tag}", dlq=f"bench-dlq-{tag}", partitions=bench.partitions
        ),
        worker=WorkerSettings(group_id=f"bench-{tag}", model=bench.model, batch_pairs=4, batch_wait_ms=20),
        inference=InferenceSettings(threads=bench.threads or os.cpu_count() or 1, lanes=bench.lanes),
    )


def worker_env(settings: Settings, workers: int = 1) -> dict[str, str]:
    """The environment of one of ``workers`` ``inspector worker`` processes: the CPU threads shared between them."""
    threads = max(1, (settings.inference.threads or os.cpu_count() or 1) // workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR__") and k != "INSPECTOR_CONFIG"}
    env.update(
        {
            "INSPECTOR__KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
            "INSPECTOR__REDIS__URL": settings.redis.url,
            "INSPECTOR__REDIS__KEY_PREFIX": settings.redis.key_prefix,
            "INSPECTOR__TOPICS__VISIBLE": settings.topics.visible,
            "INSPECTOR__TOPICS__INFRARED": settings.topics.infrared,
            "INSPECTOR__TOPICS__DLQ": settings.topics.dlq,
            "INSPECTOR__WORKER__GROUP_ID": settings.worker.group_id,
            "INSPECTOR__WORKER__MODEL": settings.worker.model,
            "INSPECTOR__INFERENCE__THREADS": str(threads),
            "INSPECTOR__INFERENCE__LANES": str(settings.inference.lanes),
            "INSPECTOR__METRICS__PORT": "0",
            "OMP_NUM_THREADS": str(threads),
            "OPENCV_FOR_THREADS_NUM": str(threads),
        }
    )
    return env


def _documents(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    keys = list(client.scan_iter(f"{prefix}:result:*", count=1000))
    return [json.loads(v) for v in client.mget(keys) if v is not None] if keys else []


def _stored_ns(document: dict[str, Any]) -> float:
    return float(document["capture_ts_ns"]) + float(document["timings_ms"]["end_to_end"]) * 1e6


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WorkerError(f"benchmark timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


class _Workers:
    """``inspector worker`` processes for one benchmark phase."""

    def __init__(self, settings: Settings, n: int, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.processes = []
        for i in range(n):
            with (logs / f"worker-{i}.log").open("w") as err:
                command = [sys.executable, "-m", "workers.cli", "worker"]
                self.processes.append(
                    subprocess.Popen(command, env=worker_env(settings, n), stdout=subprocess.DEVNULL, stderr=err)
                )

    def peak_rss_mib(self) -> list[float]:
        """Each running worker's peak resident memory so far (VmHWM), in MiB."""
        peaks = []
        for process in self.processes:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
        return peaks

    def stop(self) -> None:
        terminate(self.processes, grace_s=60)


def terminate(processes: list[subprocess.Popen[Any]], grace_s: float) -> None:
    """SIGTERM every process still running, wait up to ``grace_s`` for each, then SIGKILL the ones left."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()


def bare_loop(bench: PipelineBench, captures: list[Capture]) -> dict[str, Any]:
    """Captures per second of the worker step alone, in this process, with the one worker's threads and lanes.

    The same :class:`~inspector.stream.StreamCore` step a worker runs (decode, pair, register, model,
    measure, verdict, overlay) on the captures' PNG records, with no transport: the ceiling a worker
    can reach. Median of ``bare_repeats`` passes.
    """
    from inspector.commands.bench_step import one_pass
    from inspector.stream import Record, StreamCore, StreamPolicy

    settings = _settings(bench)
    model = create_model(bench.model, inference=settings.inference.model_dump())
    records: list[Record] = []
    for capture in captures:
        for frame, data in capture_to_records(capture, "png"):
            records.append(Record(frame.modality, frame.camera_id.encode(), data, frame.to_headers(), len(records)))
    policy = StreamPolicy(batch_pairs=4, batch_wait_ns=0, lanes=bench.lanes, default_mm_per_px=0.05)
    one_pass(StreamCore(model, policy), records)  # warm-up
    rates: list[float] = []
    model_ms: list[float] = []
    for _ in range(bench.bare_repeats):
        seconds, documents = one_pass(StreamCore(model, policy), records)
        rates.append(len(documents) / seconds)
        model_ms.extend(d["timings_ms"]["model"] for d in documents)
    return {"captures_per_s": statistics.median(rates), "model_ms_p50": float(np.median(model_ms)), "passes": rates}


def _publish(settings: Settings, bench: PipelineBench, cameras: list[str], count: int, fps: float | None) -> None:
    source = SyntheticSource(cameras, "default", seed=5, size=bench.size, pool=8, start_seq=1)
    Gateway(settings, source, fps=fps).run(count=count)


def throughput(
    bench: PipelineBench, workers: int, cameras: list[str], logs: Path, progress: Progress
) -> dict[str, Any]:
    """Pre-publish ``captures``, start ``workers`` processes, time the drain between stored results."""
    settings = _settings(bench)
    progress(f"{workers} worker(s): publishing {bench.captures} captures")
    _publish(settings, bench, cameras, bench.captures, None)
    client = redis_client(settings.redis)
    group = _Workers(settings, workers, logs / f"workers-{workers}")
    try:
        progress(f"{workers} worker(s): draining")
        _wait(lambda: client.xlen(f"{settings.redis.key_prefix}:results") >= bench.captures, 1800, "the drain")
        peaks = group.peak_rss_mib()
    finally:
        group.stop()
    documents = _documents(client, settings.redis.key_prefix)
    times = sorted(_stored_ns(d) for d in documents)[bench.warmup :]
    rate = (len(times) - 1) / ((times[-1] - times[0]) / 1e9)
    return {"workers": workers, "results": len(documents), "captures_per_s": rate, "peak_rss_mib": peaks}


def latency(bench: PipelineBench, rate: float, cameras: list[str], logs: Path, progress: Progress) -> dict[str, Any]:
    """One worker at a paced load: end-to-end and model latency percentiles."""
    settings = _settings(bench)
    prepare_topics(settings)
    client = redis_client(settings.redis)
    group = _Workers(settings, 1, logs / f"latency-{rate:.2f}")
    try:
        progress(f"latency at {rate:.2f} captures/s: warming up")
        _publish(settings, bench, cameras, bench.warmup, None)
        _wait(lambda: client.xlen(f"{settings.redis.key_prefix}:results") >= bench.warmup, 600, "the warm-up")
        count = max(10, int(rate * bench.load_seconds))
        progress(f"latency at {rate:.2f} captures/s: {count} paced captures")
        source = SyntheticSource(cameras, "default", seed=6, size=bench.size, pool=8, start_seq=1000)
        Gateway(settings, source, fps=rate).run(count=count)
        _wait(lambda: client.xlen(f"{settings.redis.key_prefix}:results") >= bench.warmup + count, 600, "the results")
    finally:
        group.stop()
    paced = [d for d in _documents(client, settings.redis.key_prefix) if d["seq"] >= 1000]
    e2e = np.array([d["timings_ms"]["end_to_end"] for d in paced])
    model = np.array([d["timings_ms"]["model"] for d in paced])
    return {
        "rate_captures_per_s": rate,
        "results": len(paced),
        "end_to_end_ms_p50": float(np.percentile(e2e, 50)),
        "end_to_end_ms_p99": float(np.percentile(e2e, 99)),
        "model_ms_p50": float(np.median(model)),
    }


def run_pipeline_bench(bench: PipelineBench, logs: Path, progress: Progress = logger.info) -> dict[str, Any]:
    """All phases; returns the figures (ratios measured in this one run)."""
    cameras = balanced_cameras(bench.partitions, bench.cameras_per_partition)
    pool = SyntheticSource(cameras, "default", seed=5, size=bench.size, pool=8)
    captures = [next(pool) for _ in range(16)]
    progress("bare loop")
    before = bare_loop(bench, captures)
    one = throughput(bench, 1, cameras, logs, progress)
    progress("bare loop again")  # before and after the one worker's drain: both see the machine's spells
    after = bare_loop(bench, captures)
    passes = before["passes"] + after["passes"]
    bare = {
        "captures_per_s": statistics.median(passes),
        "model_ms_p50": statistics.median([float(before["model_ms_p50"]), float(after["model_ms_p50"])]),
        "passes": passes,
    }
    two = throughput(bench, 2, cameras, logs, progress)
    loads = [latency(bench, share * one["captures_per_s"], cameras, logs, progress) for share in (0.5, 0.9)]
    return {
        "bench": "pipeline",
        "model": bench.model,
        "frame": f"{bench.size}x{bench.size} visible + {bench.size // 4}x{bench.size // 4} IR (synthetic)",
        "partitions": bench.partitions,
        "cameras": len(cameras),
        "bare_loop": bare,
        "one_worker": one,
        "two_workers": two,
        "pipeline_over_bare": one["captures_per_s"] / bare["captures_per_s"],
        "two_over_one": two["captures_per_s"] / one["captures_per_s"],
        "latency": loads,
        "p99_over_model_at_50": loads[0]["end_to_end_ms_p99"] / loads[0]["model_ms_p50"],
    }
