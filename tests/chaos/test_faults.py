"""Fault injection on real processes: nothing lost, nothing stored twice (issue 9, scenarios 1–5).

Every scenario streams synthetic captures from an ``inspector gateway`` process through the chaos
stack's Kafka to two ``inspector worker`` processes and Redis, injects one fault mid-stream, and then
compares Redis with what Kafka acknowledged (see ``harness.py`` for what is counted and how). The
figures go to ``runs/chaos/<scenario>.json``; ``python -m tests.chaos.report`` renders
docs/RELIABILITY.md's table from them.

Frames are small (64 px) and the model is the classical ``baseline`` so that thousands of captures
pass in a minute on two cores: the subject is delivery semantics, not inspection speed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.chaos.harness import (
    ChaosRun,
    PrivateStack,
    assert_no_loss_no_duplicates,
    assert_workers_reported,
    restart_broker,
    stop_redis,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SCALE = float(os.environ.get("INSPECTOR_CHAOS_SCALE", "1"))  # < 1 only while developing a scenario
RATE = float(os.environ.get("INSPECTOR_CHAOS_RATE", "80"))  # captures/s offered (160 frames/s)


def captures(n: int) -> int:
    """``n`` captures, scaled for development runs (a multiple of the 8 cameras)."""
    return max(80, int(n * SCALE) // 8 * 8)


def test_1_sigkill_one_of_two_workers(chaos_stack: PrivateStack) -> None:
    title = "SIGKILL one of two workers"
    with ChaosRun(chaos_stack, "1-sigkill-worker", title, captures=captures(5000), rate=RATE) as run:
        victim, _ = run.start_workers(2)
        run.start_gateway()
        run.wait_stored(0.4)
        run.fault("SIGKILL worker-0 with 40% of the results stored", affected=run.cameras_of(victim))
        victim.kill()
        run.fault_over()
        figures = run.finish()
    assert_no_loss_no_duplicates(figures, run)
    assert figures["frames_sent"] >= 10_000 * SCALE


def test_2_restart_the_kafka_broker(chaos_stack: PrivateStack) -> None:
    title = "restart the Kafka broker"
    with ChaosRun(chaos_stack, "2-restart-broker", title, captures=captures(2400), rate=RATE) as run:
        run.start_workers(2)
        run.start_gateway()
        run.wait_stored(0.4)
        restart_broker(chaos_stack, run)
        figures = run.finish()
    assert_no_loss_no_duplicates(figures, run)
    assert figures["gateway_dropped"] == 0, figures


def test_3_stop_redis_for_20_seconds(chaos_stack: PrivateStack) -> None:
    title = "stop Redis for 20 s"
    with ChaosRun(chaos_stack, "3-stop-redis", title, captures=captures(3200), rate=RATE) as run:
        run.start_workers(2)
        run.start_gateway()
        run.wait_stored(0.3)
        committed_during = stop_redis(chaos_stack, run)
        figures = run.finish()
    assert_no_loss_no_duplicates(figures, run)
    assert figures["store_errors"] > 0, "the workers never noticed Redis was down"
    assert committed_during == 0, f"offsets moved by {committed_during} records while nothing could be stored"


def test_4_a_worker_stalls_past_max_poll_interval(chaos_stack: PrivateStack) -> None:
    title = "a worker stalls past max_poll_interval_ms"
    env = {"INSPECTOR__WORKER__MAX_POLL_INTERVAL_MS": "5000"}
    with ChaosRun(chaos_stack, "4-stall-worker", title, captures=captures(2800), rate=RATE, worker_env=env) as run:
        stalled, other = run.start_workers(2)
        mine = stalled.assignment()
        run.start_gateway()
        run.wait_stored(0.3)
        run.fault("SIGSTOP worker-0 for 15 s (max_poll_interval_ms 5000, session timeout 10 s), then SIGCONT",
                  affected=run.cameras_of(stalled))  # fmt: skip
        stalled.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: (other.assignment() or set()) >= (mine or set()), 30, "the partitions to move")
            run.notes["partitions_moved_after_s"] = round(time.time() - (run.fault_t or 0), 1)
            time.sleep(max(0.0, 15 - (time.time() - (run.fault_t or 0))))
        finally:
            stalled.signal(signal.SIGCONT)
        run.fault_over()
        figures = run.finish()
    assert_no_loss_no_duplicates(figures, run)
    assert_workers_reported(figures, run.notes, 2, "the stalled worker did not come back and stop cleanly")


def test_5_restart_the_gateway(chaos_stack: PrivateStack) -> None:
    title = "restart the gateway (SIGKILL, start again)"
    total = captures(2400)
    with ChaosRun(chaos_stack, "5-restart-gateway", title, captures=total, rate=RATE) as run:
        run.start_workers(2)
        first = run.start_gateway()
        run.wait_stored(0.4)
        run.fault("SIGKILL the gateway with 40% of the results stored; start a new one (it resumes after its seq)")
        first.kill()
        run.start_gateway(count=total // 2)
        run.fault_over()
        figures = run.finish()
    assert_no_loss_no_duplicates(figures, run)
    assert figures["captures_sent"] >= 0.8 * total, figures
