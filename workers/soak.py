"""``inspector bench soak``: the pipeline at a steady share of its measured maximum for minutes on end.

One run:

1. **maximum** (unless a rate is given): the soak's own set-up — fresh topics, the worker
   processes and the gateway thread on the same cores — with the gateway held back whenever more
   than ``max_in_flight`` captures wait for their result (:func:`gated`). The gateway then offers
   exactly what the workers store, so the stored rate after ``max_warmup_s`` (the least-squares slope
   of the result count, :func:`stored_rate`) is the highest rate this machine sustains *with the
   gateway's own encoding cost included*; the soak's share of it is then below the limit by
   construction;
2. **soak**: fresh topics, the same number of ``inspector worker`` processes, and a gateway (in this
   process, a thread) pacing synthetic captures at ``load`` × the maximum for ``minutes``. Every
   ``sample_s`` the resident memory (RSS) of each worker is read from ``/proc``; a
   :class:`~workers.audit.LagMonitor` samples the group's lag every second;
3. **audit**: after the gateway stops and the backlog drains, Redis is compared with what Kafka
   acknowledged (lost, duplicated, commits ahead of store: :mod:`workers.audit`).

Memory growth compares the median RSS of the first minute after the warm-up with that of the last
minute, per worker (target < 5%). The lag trend is the least-squares slope of the group's lag over
the same window; "the lag does not grow" when that trend adds up to less than one second of offered
records over the window.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from inspector.config import KafkaSettings, RedisSettings, Settings, TopicSettings, WorkerSettings
from inspector.sources import SyntheticSource
from workers.audit import (
    KafkaContents,
    LagMonitor,
    commits_ahead_of_store,
    count_duplicates,
    read_frame_topics,
    read_results,
)
from workers.clients import kafka_admin, redis_client
from workers.errors import WorkerError
from workers.gateway import Gateway, GatewayReport, prepare_topics
from workers.pipeline_bench import balanced_cameras, terminate, worker_env

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
RSS_TARGET_PCT = 5.0


@dataclass(frozen=True)
class SoakPlan:
    """What to run: length, load, model, frames, workers, where the services are."""

    minutes: float = 10.0
    warmup_minutes: float = 2.0
    load: float = 0.8
    rate: float | None = None
    model: str = "baseline"
    size: int = 128
    workers: int = 2
    partitions: int = 4
    cameras_per_partition: int = 2
    max_seconds: float = 90.0
    max_warmup_s: float = 30.0
    max_in_flight: int = 128
    sample_s: float = 5.0
    keep: bool = False
    name: str = "6-soak"
    kafka: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"


def _settings(plan: SoakPlan) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka=KafkaSettings(bootstrap=plan.kafka),
        redis=RedisSettings(url=plan.redis_url, key_prefix=f"soak-{tag}"),
        topics=TopicSettings(
            visible=f"soak-vis-{tag}", infrared=f"soak-ir-{tag}", dlq=f"soak-dlq-{tag}", partitions=plan.partitions
        ),
        worker=WorkerSettings(group_id=f"soak-{tag}", model=plan.model),
    )


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (``VmRSS``), or ``None`` when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _WorkerGroup:
    """``inspector worker --json`` processes whose reports are kept."""

    def __init__(self, settings: Settings, n: int, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.outs = [logs / f"worker-{i}.json" for i in range(n)]
        self.logs = [logs / f"worker-{i}.log" for i in range(n)]
        self.processes = []
        for i in range(n):
            with self.logs[i].open("w") as err, self.outs[i].open("w") as out:
                command = [sys.executable, "-m", "workers.cli", "worker", "--json"]
                self.processes.append(subprocess.Popen(command, env=worker_env(settings, n), stdout=out, stderr=err))

    def alive(self) -> bool:
        """Every worker process still runs."""
        return all(p.poll() is None for p in self.processes)

    def wait_assigned(self, timeout_s: float = 120.0) -> None:
        """Wait until every worker logged a partition assignment of its own (the group has settled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            latest: list[set[Any]] = []
            for log in self.logs:
                lines = [line for line in log.read_text().splitlines() if "partitions assigned: [(" in line]
                listed = lines[-1].split("partitions assigned:", 1)[1].split(" (gone:", 1)[0] if lines else "[]"
                latest.append(set(ast.literal_eval(listed.strip())))
            if all(latest) and sum(len(s) for s in latest) == len(set().union(*latest)):
                return  # every worker holds partitions, none held twice
            if not self.alive():
                break
            time.sleep(0.5)
        raise WorkerError(f"the soak's workers did not all get partitions within {timeout_s:.0f} s; see {self.logs}")

    def wait_stable(self, settings: Settings, hold_s: float = 5.0, timeout_s: float = 180.0) -> None:
        """Wait until the broker has held the group ``Stable`` with every worker in it for ``hold_s``.

        Fresh topics often cost a second rebalance just after the first assignment (a join kafka-python
        stops driving is restarted at once, one that still stalls is replaced after
        ``worker.rejoin_after_s``): a measurement started before the group settles can run on fewer
        workers than it says.
        """
        admin = kafka_admin(settings.kafka)
        group = settings.worker.group_id
        deadline, since = time.monotonic() + timeout_s, None
        last: dict[str, Any] = {}
        try:
            while time.monotonic() < deadline:
                last = admin.describe_groups([group]).get(group, {})
                stable = last.get("group_state") == "Stable" and len(last.get("members", [])) == len(self.processes)
                since = (since or time.monotonic()) if stable else None
                if since is not None and time.monotonic() - since >= hold_s:
                    return
                if not self.alive():
                    break
                time.sleep(0.5)
        finally:
            admin.close()
        state, members = last.get("group_state"), len(last.get("members", []))
        raise WorkerError(
            f"the group {group} did not hold Stable with {len(self.processes)} members within {timeout_s:.0f} s "
            f"(last: {state}, {members} members); see {self.logs}"
        )

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, wait, and the reports the workers printed."""
        terminate(self.processes, grace_s=90)
        reports = []
        for out in self.outs:
            text = out.read_text()
            start = text.find("\n{")
            if start >= 0:
                try:
                    reports.append(json.loads(text[start:]))
                except json.JSONDecodeError:
                    logger.warning("unreadable worker report in %s", out)
        return reports


def _window_median(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    values = [v for t, v in samples if start <= t < end]
    return float(np.median(values)) if values else None


def memory_growth(rss: dict[int, list[tuple[float, float]]], warm: float, end: float) -> dict[str, Any]:
    """Per worker: median RSS of the first minute after ``warm`` and of the last minute before ``end``."""
    workers = []
    for index, samples in sorted(rss.items()):
        first = _window_median(samples, warm, warm + 60)
        last = _window_median(samples, end - 60, end)
        growth = None if first is None or last is None else 100 * (last - first) / first
        workers.append({"worker": index, "rss_first_mib": first, "rss_last_mib": last, "growth_pct": growth})
    growths = [w["growth_pct"] for w in workers if w["growth_pct"] is not None]
    return {"per_worker": workers, "max_growth_pct": max(growths) if growths else None}


def lag_trend(points: list[tuple[float, int]], warm: float, end: float, records_per_s: float) -> dict[str, Any]:
    """Least-squares slope of the lag (records/min) between ``warm`` and ``end``, and whether it grows."""
    window = [(t, lag) for t, lag in points if warm <= t <= end]
    if len(window) < 3:
        return {"slope_per_min": None, "grows": None, "samples": len(window)}
    t = np.array([p[0] for p in window]) / 60
    lag = np.array([p[1] for p in window], dtype=float)
    slope = float(np.polyfit(t, lag, 1)[0])
    span_min = float(t[-1] - t[0])
    first = [v for s, v in window if s < warm + 60]
    last = [v for s, v in window if s >= end - 60]
    return {
        "slope_per_min": slope,
        "trend_over_window": slope * span_min,
        "grows": slope * span_min > records_per_s,  # more than one second of offered records
        "mean_first_min": float(np.mean(first)) if first else None,
        "mean_last_min": float(np.mean(last)) if last else None,
        "max": int(lag.max()),
        "samples": len(window),
    }


def _cleanup(settings: Settings) -> None:
    """Delete the run's topics and Redis keys (a 10-minute soak leaves hundreds of MB otherwise)."""
    try:
        admin = kafka_admin(settings.kafka)
        try:
            admin.delete_topics([settings.topics.visible, settings.topics.infrared, settings.topics.dlq])
        finally:
            admin.close()
        client = redis_client(settings.redis)
        batch: list[bytes] = []
        for key in client.scan_iter(f"{settings.redis.key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except Exception as exc:  # clean-up is best effort; the figures are already taken
        logger.warning("could not clean up the soak's topics or keys: %s", exc)


T = TypeVar("T")


def gated(
    source: Iterable[T],
    backlog: Callable[[int], int],
    limit: int,
    wait: Callable[[float], object] = time.sleep,
    poll_s: float = 0.002,
) -> Iterator[T]:
    """Yield the items of ``source``, each only once ``backlog(taken)`` is at most ``limit``.

    ``backlog`` is given how many items were taken so far and says how many of them still wait
    (taken − stored): the producer runs exactly as fast as the consumers finish, with ``limit``
    items in flight to keep every consumer busy. ``wait(poll_s)`` pauses between checks; when it
    returns true (a set ``threading.Event``'s ``wait``) the feed ends.
    """
    for taken, item in enumerate(source):
        while backlog(taken) > limit:
            if wait(poll_s):
                return
        yield item


def stored_rate(points: list[tuple[float, int]], start: float, end: float) -> float | None:
    """Least-squares slope (items/s) of a running count sampled as ``(t, count)`` between ``start`` and ``end``."""
    window = [(t, n) for t, n in points if start <= t <= end]
    if len(window) < 3:
        return None
    return float(np.polyfit([t for t, _ in window], [n for _, n in window], 1)[0])


def _maximum(plan: SoakPlan, cameras: list[str], logs: Path, progress: Progress) -> dict[str, Any]:
    """Captures/s the workers store while a gated gateway (same process, same cores) feeds them."""
    settings = _settings(plan)
    prepare_topics(settings)
    client = redis_client(settings.redis)
    key = f"{settings.redis.key_prefix}:results"
    source = SyntheticSource(cameras, "default", seed=5, size=plan.size, pool=8)
    halt = threading.Event()
    stored = [0]  # last count read; results only grow, so taken - stored[0] never underestimates the backlog

    def backlog(taken: int) -> int:
        if taken - stored[0] > plan.max_in_flight:  # ask Redis only when the gate might have to wait
            stored[0] = int(client.xlen(key))
        return taken - stored[0]

    feed = gated(source, backlog, plan.max_in_flight, wait=halt.wait)
    group = _WorkerGroup(settings, plan.workers, logs / "maximum")
    gateway = Gateway(settings, feed, fps=None, check_topics=False)
    length = plan.max_warmup_s + plan.max_seconds
    runner = threading.Thread(target=lambda: gateway.run(timeout=length), name="maximum-gateway")
    counts: list[tuple[float, int]] = []
    try:
        group.wait_assigned()
        group.wait_stable(settings)
        progress(f"maximum: gated gateway and {plan.workers} workers for {length:.0f} s")
        start = time.monotonic()
        runner.start()
        while runner.is_alive():
            counts.append((time.monotonic() - start, int(client.xlen(key))))
            if not group.alive():
                gateway.stop()
                raise WorkerError(f"a worker process died while the maximum was measured; see {logs / 'maximum'}")
            if time.monotonic() - start > length + 30:
                halt.set()  # the gate waits for results that do not come: end the feed
            runner.join(timeout=1.0)
    finally:
        gateway.stop()
        halt.set()
        if runner.is_alive():
            runner.join(timeout=60)
        reports = group.stop()
        _cleanup(settings)
    rate = stored_rate(counts, plan.max_warmup_s, length)
    if rate is None or rate <= 0:
        raise WorkerError(f"no results were stored while the maximum was measured; see {logs / 'maximum'}")
    progress(f"maximum: {rate:.2f} captures/s")
    return {
        "method": "gated gateway (at most max_in_flight captures without a result), gateway and workers on one machine",
        "captures_per_s": rate,
        "warmup_s": plan.max_warmup_s,
        "seconds": plan.max_seconds,
        "max_in_flight": plan.max_in_flight,
        "results": counts[-1][1] if counts else 0,
        "stored_per_worker": [r.get("stored", 0) for r in reports],
        "consumer_rebuilds": sum(r.get("consumer_rebuilds", 0) for r in reports),
    }


@dataclass
class _Phase:
    """What the soak phase saw."""

    settings: Settings
    start: float = 0.0
    end: float = 0.0
    rss: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    gateway: GatewayReport | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    monitor: LagMonitor | None = None
    contents: KafkaContents | None = None


def _soak(plan: SoakPlan, rate: float, cameras: list[str], logs: Path, progress: Progress) -> _Phase:
    """Workers, a paced gateway thread for ``plan.minutes``, RSS samples; then drain and stop the workers."""
    phase = _Phase(_settings(plan), rss={i: [] for i in range(plan.workers)})
    settings = phase.settings
    prepare_topics(settings)
    source = SyntheticSource(cameras, "default", seed=7, size=plan.size, pool=8)
    group = _WorkerGroup(settings, plan.workers, logs / "soak")
    phase.monitor = monitor = LagMonitor(settings, plan.partitions, every=1.0)
    gateway = Gateway(settings, source, fps=rate, check_topics=False)
    outcome: dict[str, GatewayReport] = {}
    runner = threading.Thread(target=lambda: outcome.update(report=gateway.run(timeout=plan.minutes * 60)))
    try:
        group.wait_assigned()
        group.wait_stable(settings)
        monitor.start()
        phase.start = time.time()
        runner.start()
        progress(f"soak: {rate:.2f} captures/s for {plan.minutes:g} min ({plan.workers} workers)")
        next_note = phase.start + 60
        while runner.is_alive():
            now = time.time()
            for i, process in enumerate(group.processes):
                value = rss_mib(process.pid)
                if value is not None:
                    phase.rss[i].append((now - phase.start, value))
            if not group.alive():
                gateway.stop()
                raise WorkerError(f"a worker process died during the soak; see {logs / 'soak'}")
            if now >= next_note:
                lag = monitor.samples[-1].lag if monitor.samples else None
                rss = [round(r[-1][1]) for r in phase.rss.values() if r]
                progress(f"soak: {(now - phase.start) / 60:.0f} min, lag {lag} records, RSS MiB {rss}")
                next_note += 60
            runner.join(timeout=plan.sample_s)
        phase.end = time.time()
        phase.gateway = outcome.get("report")
        progress("soak: draining")
        phase.contents = read_frame_topics(settings)  # the gateway has stopped: this is everything sent
        _drain(settings, len(phase.contents.complete), timeout_s=300)
    finally:
        phase.reports = group.stop()
        monitor.stop()
    return phase


def _drain(settings: Settings, sent: int, timeout_s: float) -> None:
    """Wait until the result stream has ``sent`` entries, one per complete capture in Kafka (or ``timeout_s``)."""
    client = redis_client(settings.redis)
    deadline = time.monotonic() + timeout_s
    while client.xlen(f"{settings.redis.key_prefix}:results") < sent and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(3)  # a late duplicate would show up now


def run_soak(plan: SoakPlan, logs: Path, progress: Progress = logger.info) -> dict[str, Any]:
    """Measure the maximum (unless ``plan.rate``), soak at ``plan.load`` of it, audit; return the figures."""
    cameras = balanced_cameras(plan.partitions, plan.cameras_per_partition)
    measured = None if plan.rate is not None else _maximum(plan, cameras, logs, progress)
    maximum = None if measured is None else float(measured["captures_per_s"])
    rate = plan.rate if plan.rate is not None else plan.load * float(maximum or 0.0)
    if rate <= 0:
        raise WorkerError(f"soak rate must be positive, got {rate}")
    phase = _soak(plan, rate, cameras, logs, progress)
    try:
        figures = _figures(plan, phase, rate, maximum, len(cameras))
        figures["maximum"] = measured
    finally:
        if not plan.keep:
            _cleanup(phase.settings)
    return figures


def _figures(plan: SoakPlan, phase: _Phase, rate: float, maximum: float | None, cameras: int) -> dict[str, Any]:
    """The audit (Kafka against Redis) and the memory and lag figures of a finished soak."""
    settings, monitor = phase.settings, phase.monitor
    samples = monitor.samples if monitor is not None else []
    contents = phase.contents if phase.contents is not None else read_frame_topics(settings)
    sent = contents.complete
    client = redis_client(settings.redis)
    stored, entries = read_results(client, settings.redis.key_prefix)
    stored_at: dict[tuple[str, int], float] = {}
    for capture, t in entries:
        stored_at.setdefault(capture, t)
    duplicated, unexpected = count_duplicates((c for c, _ in entries), sent)
    warm, span = plan.warmup_minutes * 60, phase.end - phase.start
    memory = memory_growth(phase.rss, warm, span)
    lag = lag_trend([(s.t - phase.start, s.lag) for s in samples], warm, span, 2 * rate)
    growth = memory["max_growth_pct"]
    return {
        "scenario": plan.name,
        "first_attempt": True,  # nothing is restarted: a group that does not settle raises WorkerError
        "fault": f"none: soak at {plan.load:.0%} of the measured maximum" if maximum else "none: soak at a given rate",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "model": plan.model,
        "frame": f"{plan.size}x{plan.size} visible + {plan.size // 4}x{plan.size // 4} IR, PNG (synthetic)",
        "cameras": cameras,
        "partitions": plan.partitions,
        "workers": plan.workers,
        "redis_prefix": settings.redis.key_prefix,
        "topics": [settings.topics.visible, settings.topics.infrared, settings.topics.dlq],
        "max_captures_per_s": maximum,
        "offered_captures_per_s": round(rate, 2),
        "offered_frames_per_s": round(2 * rate, 2),
        "minutes": plan.minutes,
        "warmup_minutes": plan.warmup_minutes,
        "duration_s": round(max(stored_at.values(), default=phase.end) - phase.start, 1),
        "frames_sent": contents.frames,
        "captures_sent": len(sent),
        "results_stored": len(stored),
        "lost": len(sent - stored),
        "duplicated": duplicated + unexpected,
        "duplicate_frames_in_kafka": contents.duplicate_frames,
        "incomplete_captures": len(contents.incomplete),
        "dead_letters": contents.dead_letters,
        "gateway_dropped": phase.gateway.frames_dropped if phase.gateway else None,
        "redelivered_already_stored": sum(r.get("already_stored", 0) for r in phase.reports),
        "worker_reports": len(phase.reports),
        "store_errors": sum(r.get("store_errors", 0) for r in phase.reports),
        "stored_per_worker": [r.get("stored", 0) for r in phase.reports],
        "consumer_rebuilds": sum(r.get("consumer_rebuilds", 0) for r in phase.reports),
        "commits_ahead_of_store": commits_ahead_of_store(samples, contents, stored_at),
        "rss": memory,
        "rss_growth_pct": growth,
        "rss_target_met": growth is not None and growth < RSS_TARGET_PCT,
        "lag": lag,
        "lag_slope_per_min": lag["slope_per_min"],
        "lag_max": lag.get("max"),
        "lag_grows": lag["grows"],
        "rss_series": {str(i): [[round(t, 1), round(v, 1)] for t, v in s] for i, s in phase.rss.items()},
        "lag_series": [[round(s.t - phase.start, 1), s.lag] for s in samples[::5]],
    }
