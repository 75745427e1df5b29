"""One fault-injection run: a private stack, worker and gateway processes, a lag monitor, and the final count.

A scenario streams synthetic captures through real processes (``inspector gateway`` → Kafka →
``inspector worker`` × 2 → Redis), injects one fault mid-stream, and then compares what Redis holds
with what Kafka acknowledged::

    with ChaosRun(chaos_stack, "1-sigkill-worker", "SIGKILL one of two workers", captures=5000, rate=80) as run:
        a, b = run.start_workers(2)
        run.start_gateway()
        run.wait_stored(0.4)                       # mid-stream: 40% of the results are in
        run.fault("SIGKILL worker a", affected=run.cameras_of(a))
        a.kill()
        run.fault_over()
        figures = run.finish()                     # drain, stop, count, write runs/chaos/<name>.json

What is counted, and how (nothing here trusts a process's own report for the verdict):

- **sent**: read back from the frame topics after the run — the captures with both frames in Kafka.
  Frames that appear twice there (same camera, seq, modality) are ``duplicate_frames`` (what the
  idempotent producer and the gateway's resume rule must prevent).
- **stored**: the result keys under the run's Redis prefix; **lost** = sent − stored.
- **duplicated**: result-stream entries beyond the first for a capture, plus entries for captures
  never sent. The stream is what downstream systems read (``XREAD``), so a second entry is a
  second result to them. The stream is written by the same Lua script that claims the result key,
  which is why :func:`count_duplicates` is tested on its own (``test_checks.py``): the check would
  see a second write if the store stopped being idempotent.
- **redelivered**: captures a worker inspected again and found already stored (from the reports of
  workers that ended normally): evidence that the fault really re-delivered frames.
- **commits ahead of store**: from the lag monitor's samples of the group's committed offsets and
  the Redis stream's entry times (the Redis clock at the write): frame records whose offset was
  committed before their capture's result existed. Must be 0 (commit after store).
- **recovery**: ``first_result_s`` — from the fault to the first stored result of a capture taken
  after the fault on an affected camera; ``lag_s`` — from the fault until the group's lag
  (end offset − committed) is back to its pre-fault ceiling for good.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from kafka.partitioner.default import murmur2

from inspector.config import KafkaSettings, RedisSettings, Settings, TopicSettings, WorkerSettings
from workers.audit import (
    Capture,
    KafkaContents,
    LagMonitor,
    LagSample,
    capture_times,
    commits_ahead_of_store,
    count_duplicates,
    read_frame_topics,
    read_results,
)
from workers.gateway import prepare_topics
from workers.pipeline_bench import balanced_cameras, worker_env

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.py"
OUT = Path(os.environ.get("INSPECTOR_CHAOS_OUT", str(REPO / "runs" / "chaos")))
PARTITIONS = 4
FRAME_SIZE = 64  # visible px (IR 16 px): delivery semantics, not model speed, are under test
MODEL = "baseline"


@dataclass(frozen=True)
class PrivateStack:
    """The local stack's Kafka and Redis on free ports, in a folder of their own (``deploy/local/stack``)."""

    env: dict[str, str]
    bootstrap: str
    redis_url: str

    def command(self, *args: str) -> float:
        """Run ``deploy/local/stack ARGS`` against this stack; return its seconds (raise if it failed)."""
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(STACK_SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise AssertionError(f"stack {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return time.monotonic() - t0


def machine() -> str:
    """The machine a run was on, for the figures."""
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def now_utc() -> str:
    """The date of a run, for the figures."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_figures(name: str, figures: dict[str, Any]) -> Path:
    """Write ``runs/chaos/<name>.json`` (the report's input); its path."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(figures, indent=1) + "\n")
    return path


def forget_figures(name: str) -> None:
    """Remove an earlier run's ``<name>.json``: a run that fails must not leave older figures in the table."""
    (OUT / f"{name}.json").unlink(missing_ok=True)


def write_failure(name: str, title: str, kind: str, error: BaseException) -> None:
    """The figures of a run that ended without figures: what failed, so the report shows it as failed.

    ``first_attempt`` stays true: nothing is ever started a second time, the first attempt failed.
    """
    why = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    write_figures(name, {
        "scenario": name, "fault": title, "worker_kind": kind, "date": now_utc(), "machine": machine(),
        "failed": why[:400], "first_attempt": True,
    })  # fmt: skip


def restart_broker(stack: PrivateStack, run: Any) -> None:
    """The fault of scenario 2: stop the broker (SIGTERM) and start it again; both times go to ``run.notes``."""
    try:
        run.notes["broker_stop_s"] = round(stack.command("stop", "kafka"), 1)
        run.fault("deploy/local/stack stop kafka, then start kafka (as `stack restart kafka` does)")
    finally:
        run.notes["broker_start_s"] = round(stack.command("start", "kafka"), 1)  # waits until it answers
    run.fault_over()


def stop_redis(stack: PrivateStack, run: Any, seconds: float = 20.0) -> int:
    """The fault of scenario 3: Redis down for ``seconds``; how far the group's commits moved meanwhile.

    The records moved and the lag samples they come from go to ``run.notes`` (see :func:`committed_moved`).
    """
    try:
        stack.command("stop", "redis")
        run.fault(
            f"deploy/local/stack stop redis; {seconds:.0f} s; start redis (data kept: SHUTDOWN SAVE, then loaded)"
        )
        time.sleep(seconds)
        moved, samples = committed_moved(run.monitor.samples, (run.fault_t or 0) + 2.0, time.time())
        run.notes |= {"committed_while_redis_down": moved, "commit_samples_while_redis_down": samples}
    finally:
        stack.command("start", "redis")
    run.fault_over()
    return moved


def committed_moved(samples: list[LagSample], since: float, until: float) -> tuple[int, int]:
    """``(records, samples)``: how far the group's committed offsets moved between two moments, from lag samples.

    Raises:
        AssertionError: Fewer than two samples in the window, or they hold no committed offsets:
            nothing was measured, so nothing may be concluded.

    """
    window = [s for s in samples if since <= s.t <= until]
    assert len(window) >= 2, f"the lag monitor took {len(window)} sample(s) between {since:.1f} and {until:.1f} s"
    first, last = window[0].committed, window[-1].committed
    assert last, "the lag monitor read no committed offsets: the group's commits were not measured"
    return sum(last.get(p, 0) - first.get(p, 0) for p in last), len(window)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.25) -> None:
    """Poll ``condition`` until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _report_json(text: str) -> dict[str, Any] | None:
    start = text.find("\n{")
    if start < 0:
        return None
    try:
        parsed: dict[str, Any] = json.loads(text[start:])
    except json.JSONDecodeError:
        return None
    return parsed


class Proc:
    """One ``inspector`` process (worker or gateway) with its stdout and stderr in files."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.log, self.out = folder / f"{name}.log", folder / f"{name}.out"
        with self.log.open("w") as err, self.out.open("w") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=REPO)
        self.report: dict[str, Any] | None = None
        self.stuck = False  # did not stop within its grace period (its stacks are at the end of its log)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Still running."""
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to this process (only this one)."""
        if self.alive():
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 90) -> dict[str, Any] | None:
        """SIGTERM, wait, and read the ``--json`` report it printed (``None`` if it printed none)."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:  # PYTHONFAULTHANDLER: every thread's stack to the log first
                self.signal(signal.SIGABRT)
                time.sleep(2)
                self.kill()
                self.stuck = True
        self.report = _report_json("\n" + self.out.read_text())
        return self.report

    def tail(self, lines: int = 40) -> str:
        """The last lines of its stderr, for failure messages."""
        return f"--- {self.name} ---\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def assignment(self) -> set[tuple[str, int]] | None:
        """The partitions of the last assignment a worker logged."""
        lines = [line for line in self.log.read_text().splitlines() if "partitions assigned:" in line]
        if not lines:
            return None
        listed = lines[-1].split("partitions assigned:", 1)[1].split(" (gone:", 1)[0]
        return set(ast.literal_eval(listed.strip()))


def assert_workers_reported(figures: dict[str, Any], notes: dict[str, Any], expected: int, what: str) -> None:
    """``expected`` workers stopped within their grace period and printed their report; else ``what`` and their logs."""
    assert figures["worker_reports"] == expected, f"{what}\n{notes.get('logs', '')}"


def abort_unsettled(workers: list[Proc]) -> str:
    """Workers whose group never settled: SIGABRT (their stacks to the log), SIGKILL, logs kept as ``.stuck.log``.

    Returns:
        The last lines of each log, for the failure message.

    """
    for worker in workers:  # PYTHONFAULTHANDLER: SIGABRT writes every thread's stack to the log
        worker.signal(signal.SIGABRT)
    time.sleep(2)
    tails = []
    for worker in workers:
        worker.kill()
        tails.append(worker.tail(120))
        worker.log = worker.log.rename(worker.log.with_suffix(".stuck.log"))
    return "\n".join(tails)


def recovery_lag_s(samples: list[LagSample], fault_t: float, settle_t: float) -> tuple[float | None, int, int]:
    """``(seconds, ceiling, worst)``: from the fault until the lag is seen at or below its pre-fault ceiling for good.

    The ceiling is the highest lag sampled between ``settle_t`` (the stream in steady state) and the
    fault, at least 16 records. The lag cannot be read while the broker is down, so the answer is
    the first sample, after the last one above the ceiling, that shows it back — not earlier than
    the first sample after the fault. ``None`` when the lag never came back down.
    """
    before = [s.lag for s in samples if settle_t <= s.t < fault_t]
    ceiling = max([16, *before])
    after = [s for s in samples if s.t >= fault_t]
    worst = max((s.lag for s in after), default=0)
    above = [s.t for s in after if s.lag > ceiling]
    later = [s.t for s in after if not above or s.t > above[-1]]
    return (round(later[0] - fault_t, 2) if later else None), ceiling, worst


class ChaosRun:
    """One scenario's topics, Redis prefix, processes, monitor and figures (see the module docs).

    Args:
        stack: The private stack.
        name: Scenario id, e.g. ``1-sigkill-worker`` (the JSON file's name).
        title: What the fault is, for the report.
        captures: Captures the gateway is asked for (all cameras together).
        rate: Captures per second offered (all cameras together).
        cameras_per_partition: Camera ids spread evenly over the 4 partitions.
        worker_env: Extra environment for the worker processes.

    """

    def __init__(
        self,
        stack: PrivateStack,
        name: str,
        title: str,
        *,
        captures: int,
        rate: float,
        cameras_per_partition: int = 2,
        worker_env: dict[str, str] | None = None,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.stack, self.name, self.title = stack, name, title
        self.folder = OUT / "logs" / name  # the processes' logs, kept after the run
        self.settings = Settings(
            kafka=KafkaSettings(bootstrap=stack.bootstrap),
            redis=RedisSettings(url=stack.redis_url, key_prefix=f"chaos-{tag}"),
            topics=TopicSettings(
                visible=f"chaos-vis-{tag}", infrared=f"chaos-ir-{tag}", dlq=f"chaos-dlq-{tag}", partitions=PARTITIONS
            ),
            worker=WorkerSettings(group_id=f"chaos-{tag}", model=MODEL),
        )
        self.cameras = balanced_cameras(PARTITIONS, cameras_per_partition)
        self.captures, self.rate = captures, rate
        self.extra_env = dict(worker_env or {})
        self.client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
        self.workers: list[Proc] = []
        self.gateways: list[Proc] = []
        self.monitor = LagMonitor(self.settings, PARTITIONS)
        self.started_at: float | None = None
        self.fault_t: float | None = None
        self.fault_end_t: float | None = None
        self.fault_text = ""
        self.affected: set[str] = set(self.cameras)
        self.notes: dict[str, Any] = {}

    # -- processes --------------------------------------------------------------------------------

    def __enter__(self) -> ChaosRun:
        forget_figures(self.name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        prepare_topics(self.settings)
        self.monitor.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and not (OUT / f"{self.name}.json").exists():
            write_failure(self.name, self.title, "inspection", exc)
        for proc in self.workers + self.gateways:
            if proc.alive():
                proc.signal(signal.SIGCONT)
                proc.kill()
        if self.monitor.is_alive():
            self.monitor.stop()

    def start_workers(self, n: int) -> list[Proc]:
        """Start ``n`` ``inspector worker`` processes and wait until they own disjoint shares of the partitions.

        The first attempt is the only one: a pair that does not settle within 60 s (kafka-python
        3.0.12 has left a member stuck in its group join before) fails the run. Each worker is then
        sent SIGABRT (``PYTHONFAULTHANDLER``: every thread's stack goes to its log), its log is kept
        as ``worker-N.stuck.log``, and the run fails (its figures JSON says so: see ``__exit__``).
        """
        env = worker_env(self.settings, workers=2) | {"PYTHONFAULTHANDLER": "1"} | self.extra_env  # 1 thread each
        command = [sys.executable, "-m", "workers.cli", "worker", "--json"]
        every = {(t, p) for t in (self.settings.topics.visible, self.settings.topics.infrared) for p in range(4)}

        def balanced(group: list[Proc]) -> bool:
            owned = [w.assignment() or set() for w in group]
            if not all(w.alive() for w in group) or not all(owned):
                return False
            return set().union(*owned) == every and sum(len(o) for o in owned) == len(every)

        first = len(self.workers)
        new = [Proc(f"worker-{first + i}", command, env, self.folder) for i in range(n)]
        self.workers += new
        try:
            wait_for(lambda: balanced(new), 60, f"{n} workers to share the partitions")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{abort_unsettled(new)}") from exc
        return new

    def start_gateway(self, count: int | None = None) -> Proc:
        """Start an ``inspector gateway`` (synthetic, paced at ``rate``) for ``count`` captures (default all)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR__")}
        env |= {
            "INSPECTOR__KAFKA__BOOTSTRAP": self.settings.kafka.bootstrap,
            "INSPECTOR__TOPICS__VISIBLE": self.settings.topics.visible,
            "INSPECTOR__TOPICS__INFRARED": self.settings.topics.infrared,
            "INSPECTOR__TOPICS__DLQ": self.settings.topics.dlq,
            "INSPECTOR__TOPICS__PARTITIONS": str(PARTITIONS),
            "OMP_NUM_THREADS": "1",
        }
        command = [
            sys.executable, "-m", "workers.cli", "gateway", "--source", "synthetic", "--cameras",
            ",".join(self.cameras), "--fps", f"{self.rate / len(self.cameras):.6f}", "--count",
            str(count or self.captures), "--size", str(FRAME_SIZE), "--seed", "3", "--json",
        ]  # fmt: skip
        proc = Proc(f"gateway-{len(self.gateways)}", command, env, self.folder)
        self.gateways.append(proc)
        if self.started_at is None:
            self.started_at = time.time()
        return proc

    def cameras_of(self, worker: Proc) -> set[str]:
        """The cameras whose partitions ``worker`` owns now."""
        owned = {p for _, p in worker.assignment() or set()}
        return {c for c in self.cameras if (murmur2(c.encode()) & 0x7FFFFFFF) % PARTITIONS in owned}

    # -- the stream -------------------------------------------------------------------------------

    def stored_count(self) -> int:
        """Entries in the result stream now (0 while Redis is down)."""
        try:
            return int(self.client.xlen(f"{self.settings.redis.key_prefix}:results"))
        except redis.RedisError:
            return 0

    def wait_stored(self, share: float, timeout: float = 240) -> None:
        """Wait until ``share`` of the captures have results (the stream is mid-way)."""
        target = int(share * self.captures)
        try:
            wait_for(lambda: self.stored_count() >= target, timeout, f"{target} results")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(p.tail() for p in self.workers + self.gateways)) from exc

    def fault(self, text: str, affected: set[str] | None = None) -> None:
        """The fault starts now."""
        self.fault_t, self.fault_text = time.time(), text
        if affected is not None:
            self.affected = affected

    def fault_over(self) -> None:
        """The fault is over (the service is back, the process is killed or resumed)."""
        self.fault_end_t = time.time()

    # -- the end ----------------------------------------------------------------------------------

    def finish(self, drain_timeout: float = 120) -> dict[str, Any]:
        """Let the gateways end, wait for the results, stop the workers, count, write the JSON, return it."""
        for gateway in self.gateways:
            if gateway.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    gateway.process.wait(timeout=max(60.0, 3 * self.captures / self.rate))
            gateway.stop()
        contents = read_frame_topics(self.settings)
        sent = contents.complete
        try:
            wait_for(lambda: self.stored_count() >= len(sent), drain_timeout, "every capture sent to be stored")
            wait_for(self._caught_up, 30, "the group to commit everything")
        except AssertionError as exc:
            self.notes["drain"] = str(exc)
        time.sleep(2)  # anything late would show up as an extra stream entry
        end_t = time.time()
        reports = [w.stop() for w in self.workers]
        self.monitor.stop()
        stored, entries = read_results(self.client, self.settings.redis.key_prefix)
        figures = self._figures(contents, stored, entries, reports, end_t)
        write_figures(self.name, figures)
        self.notes["logs"] = "\n".join(p.tail(150 if p.stuck else 25) for p in self.workers + self.gateways)
        return figures

    def _caught_up(self) -> bool:
        samples = self.monitor.samples
        return bool(samples) and samples[-1].lag == 0 and samples[-1].t > time.time() - 2

    def _figures(
        self,
        contents: KafkaContents,
        stored: set[Capture],
        entries: list[tuple[Capture, float]],
        reports: list[dict[str, Any] | None],
        end_t: float,
    ) -> dict[str, Any]:
        sent = contents.complete
        stored_at: dict[Capture, float] = {}
        for capture, t in entries:
            stored_at.setdefault(capture, t)
        duplicated, unexpected = count_duplicates((c for c, _ in entries), sent)
        taken = capture_times(self.client, self.settings.redis.key_prefix, sorted(stored))
        start = min(taken.values(), default=self.started_at or end_t)  # the first capture of the stream
        last_store = max(stored_at.values(), default=end_t)
        gateway_reports = [g.report for g in self.gateways]
        figures: dict[str, Any] = {
            "scenario": self.name,
            "fault": self.title,
            "worker_kind": "inspection",
            "first_attempt": True,  # a worker group that does not settle fails the run; nothing is restarted
            "date": now_utc(),
            "machine": machine(),
            "model": MODEL,
            "frame": f"{FRAME_SIZE}x{FRAME_SIZE} visible + {FRAME_SIZE // 4}x{FRAME_SIZE // 4} IR, PNG (synthetic)",
            "cameras": len(self.cameras),
            "partitions": PARTITIONS,
            "workers": len(self.workers),
            "offered_captures_per_s": self.rate,
            "offered_frames_per_s": 2 * self.rate,
            "duration_s": round(last_store - start, 1),
            "captures_requested": self.captures,
            "frames_sent": contents.frames,
            "captures_sent": len(sent),
            "results_stored": len(stored),
            "lost": len(sent - stored),
            "lost_first": [list(c) for c in sorted(sent - stored, key=lambda c: (c[1], c[0]))[:40]],
            "duplicated": duplicated + unexpected,
            "stream_entries": len(entries),
            "duplicate_frames_in_kafka": contents.duplicate_frames,
            "incomplete_captures": len(contents.incomplete),
            "dead_letters": contents.dead_letters,
            "gateway_dropped": sum(r["frames_dropped"] for r in gateway_reports if r),
            "gateway_reports": sum(1 for r in gateway_reports if r),
            "redelivered_already_stored": sum(r["already_stored"] for r in reports if r),
            "worker_reports": sum(1 for r in reports if r),
            "store_errors": sum(r["store_errors"] for r in reports if r),
            "commits_ahead_of_store": commits_ahead_of_store(self.monitor.samples, contents, stored_at),
            "lag_samples": len(self.monitor.samples),
            "lag_sample_failures": self.monitor.failures,
        }
        if self.fault_t is not None:
            fault_t, fault_end = self.fault_t, self.fault_end_t or self.fault_t
            after = [t for c, t in stored_at.items() if c[0] in self.affected and taken.get(c, 0.0) > fault_t]
            lag_s, ceiling, worst = recovery_lag_s(self.monitor.samples, fault_t, start + 5)
            figures |= {
                "fault_detail": self.fault_text,
                "fault_at_s": round(fault_t - start, 1),
                "fault_lasted_s": round(fault_end - fault_t, 1),
                "recovery_first_result_s": round(min(after) - fault_t, 2) if after else None,
                "recovery_lag_s": lag_s,
                "lag_ceiling_before_fault": ceiling,
                "lag_worst_after_fault": worst,
            }
        figures["lag_series"] = [[round(s.t - start, 1), s.lag] for s in self.monitor.samples[::2] if s.t >= start]
        figures |= self.notes_json()
        return figures

    def notes_json(self) -> dict[str, Any]:
        """Extra facts a scenario recorded (``notes``), minus the logs."""
        return {k: v for k, v in self.notes.items() if k != "logs"}


def assert_no_loss_no_duplicates(figures: dict[str, Any], run: ChaosRun) -> None:
    """The verdict every scenario shares, with the figures and the process logs when it fails."""
    summary = {k: v for k, v in figures.items() if k != "lag_series"}
    message = f"{json.dumps(summary, indent=1)}\n{run.notes.get('logs', '')}"
    assert figures["first_attempt"] is True, message
    assert figures["captures_sent"] > 0, message
    assert figures["lost"] == 0, message
    assert figures["duplicated"] == 0, message
    assert figures["duplicate_frames_in_kafka"] == 0, message
    assert figures["commits_ahead_of_store"] == 0, message
    assert figures["dead_letters"] == 0, message
    assert figures["results_stored"] == figures["captures_sent"], message
