"""Fault injection on the request/response workers: medical reports and VQA answers, nothing lost or stored twice.

Scenarios 1 (SIGKILL one of two workers), 2 (restart the broker), 3 (stop Redis for 20 s) and 4 (a
worker stalls) of the inspection suite (``test_faults.py``; scenario 5 restarts the camera gateway,
which these workers do not have), for ``inspector medical-worker`` and ``inspector vqa-worker`` processes: the
test publishes requests at a steady rate, injects the fault mid-stream, and compares Redis with the
request topic (see ``services.py`` for what is counted and how). Figures go to
``runs/chaos/<kind>-<scenario>.json``; ``python -m tests.chaos.report`` renders them.

The loads are what two workers on two cores keep up with, and one alone just about: phantom CT
studies (claim checks to DICOM folders) at 2 per second, VQA requests (64 px PNG scenes) at 40 per
second, each stream about 70 s long.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.chaos.harness import PrivateStack, assert_workers_reported, restart_broker, stop_redis
from tests.chaos.services import MEDICAL, VQA, ServiceRun, WorkerKind, assert_measured_no_loss_no_duplicates

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SCALE = float(os.environ.get("INSPECTOR_CHAOS_SCALE", "1"))  # < 1 only while developing a scenario
LOAD = {"medical": (140, 2.0), "vqa": (2800, 40.0)}  # requests, requests/s
KINDS = pytest.mark.parametrize("kind", [MEDICAL, VQA], ids=lambda kind: kind.name)


def run_of(stack: PrivateStack, kind: WorkerKind, scenario: str, title: str) -> ServiceRun:
    """The scenario's run with its kind's load (the request count scaled for development runs)."""
    requests, rate = LOAD[kind.name]
    return ServiceRun(stack, kind, scenario, title, requests=max(20, int(requests * SCALE)), rate=rate)


@KINDS
def test_1_sigkill_one_of_two_workers(chaos_stack: PrivateStack, kind: WorkerKind) -> None:
    title = "SIGKILL one of two workers"
    with run_of(chaos_stack, kind, "1-sigkill-worker", title) as run:
        victim, _ = run.start_workers(2)
        run.start_load()
        run.wait_stored(0.4)
        assert victim.alive(), victim.tail()
        run.fault("SIGKILL worker-0 with 40% of the results stored")
        victim.kill()
        run.fault_over()
        run.resolve_victim()
        figures = run.finish()
    assert_measured_no_loss_no_duplicates(figures, run)
    assert figures["affected_partitions"], "the killed worker held no partitions"
    assert_workers_reported(figures, run.notes, 1, "the survivor did not stop cleanly (or the killed one reported)")


@KINDS
def test_3_stop_redis_for_20_seconds(chaos_stack: PrivateStack, kind: WorkerKind) -> None:
    title = "stop Redis for 20 s"
    with run_of(chaos_stack, kind, "3-stop-redis", title) as run:
        run.start_workers(2)
        run.start_load()
        run.wait_stored(0.3)
        moved = stop_redis(chaos_stack, run)
        figures = run.finish()
    assert_measured_no_loss_no_duplicates(figures, run)
    assert_workers_reported(figures, run.notes, 2, "a worker did not stop cleanly: its store errors were not counted")
    assert figures["store_errors"] > 0, "the workers never noticed Redis was down"
    assert moved == 0, f"offsets moved by {moved} records while nothing could be stored"


@KINDS
def test_2_restart_the_kafka_broker(chaos_stack: PrivateStack, kind: WorkerKind) -> None:
    title = "restart the Kafka broker"
    with run_of(chaos_stack, kind, "2-restart-broker", title) as run:
        run.start_workers(2)
        run.start_load()
        run.wait_stored(0.4)
        restart_broker(chaos_stack, run)
        figures = run.finish()
    assert_measured_no_loss_no_duplicates(figures, run)
    assert_workers_reported(figures, run.notes, 2, "a worker did not stop cleanly after the broker came back")
    assert figures["producer_failures"] == 0, figures


@KINDS
def test_4_a_worker_stalls_past_the_session_timeout(chaos_stack: PrivateStack, kind: WorkerKind) -> None:
    title = "a worker stalls past the session timeout"
    with run_of(chaos_stack, kind, "4-stall-worker", title) as run:
        stalled, _ = run.start_workers(2)
        run.start_load()
        run.wait_stored(0.3)
        run.fault("SIGSTOP worker-0 for 15 s (session timeout 10 s: the group moves its partitions), then SIGCONT")
        stalled.signal(signal.SIGSTOP)
        try:
            run.resolve_victim()  # the stalled member is evicted: its partitions move to the other worker
            time.sleep(max(0.0, 15 - (time.time() - (run.fault_t or 0))))
        finally:
            stalled.signal(signal.SIGCONT)
        run.fault_over()
        figures = run.finish()
    assert_measured_no_loss_no_duplicates(figures, run)
    assert figures["affected_partitions"], "the stalled worker held no partitions"
    assert_workers_reported(figures, run.notes, 2, "the stalled worker did not come back and stop cleanly")
