"""A worker with a pruned width family steps down under overload, on the real broker and Redis.

The line offers more captures per second than the widest variant can inspect on this machine. Two
runs, each on fresh topics, a fresh consumer group and a fresh Redis prefix, with the same offered
rate and window:

* **A** — the widest variant alone (a family of one): the worker falls behind and the consumer
  group's lag, read from the broker (end offsets minus committed offsets), grows through the window.
* **B** — the family ``[wide, narrow]``: the worker switches down to the narrow variant, which
  ``inspector_model_width_ratio`` (in the worker's own registry) and the ``model.width`` of every
  stored result document show, and the lag stops growing: from the switch to the end of the window
  its slope is a small fraction of run A's over the same seconds, it ends no higher than it was at
  the switch, and it ends below run A's by at least half of what run A's grew meanwhile.

The two variants are real ``mla`` networks of different cost (a wide ``pyramid`` network and a
narrow ``unshuffle`` one), timed by the worker's own probe; the offered rate is derived from those
probes, so the overload is real compute on this CPU, not a sleep. Comparisons are between the two
runs rather than against absolute numbers, so a busy machine slows both alike.

The switch is not immediate: the worker decides every 2 s, at the end of a poll's inspection, from
end offsets it asks the broker for (its backlog, and the rate captures arrive at). Before it asked
the broker it read the client's cached high-water marks, refreshed only by fetch responses that a
slow, seeking worker mostly discards, and counted the frames it *consumed* (capped by its own
capacity); it then switched 6 to 23 s into the overload while the broker showed the backlog within
2 s. A switch too late to observe fails with the samples that show it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from kafka import KafkaAdminClient
from kafka.admin import OffsetSpec
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

import mla
from inspector.config import Settings
from inspector.results import RedisLayout, RedisResultStore
from inspector.sources import SyntheticSource
from inspector.training import crack_model_config
from inspector.width import WidthPolicy
from tests.conftest import Stack
from tests.integration.frames import create_topics, fresh_settings
from workers.gateway import Gateway, GatewayReport
from workers.inspection import InspectionWorker, WorkerReport
from workers.metrics import WorkerMetrics
from workers.widths import WidthFamily

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 512  # visible side of every capture and of the probe (one 576 px tile: no tiling overhead)
WIDE_RATIO, NARROW_RATIO = 1.0, 0.25
OVERLOAD = 2.5  # offered captures/s as a multiple of what the widest variant's probe says it sustains
MAX_SHARE_OF_NARROW = 0.1  # ... and at most this share of the narrow one's: Kafka and Redis cost per capture too
MIN_COST_RATIO = 6.0  # the widest must cost at least this many times the narrow one, or the setup proves nothing
WINDOW_S = 28.0  # how long the line offers captures in each run (room for a late switch on a busy machine)
SAMPLE_EVERY_S = 0.5
MIN_SAMPLES = int(0.6 * WINDOW_S / SAMPLE_EVERY_S)
MIN_SAMPLES_AFTER_SWITCH = 6  # 3 s of lag seen after the switch, to tell growth from noise
JOIN_TIMEOUT_S = 45.0
CAMERA = "rig-1"
POLL_RECORDS = 8  # records per poll: a wide step is short enough for the worker to decide every few seconds


@dataclass
class Run:
    """What one overload run measured."""

    name: str
    offered_fps: float
    times: list[float] = field(default_factory=list)  # seconds since the line started
    lags: list[int] = field(default_factory=list)  # the group's lag in records, from the broker
    worker_lags: list[float] = field(default_factory=list)  # the worker's own inspector_consumer_lag_records
    widths: list[float] = field(default_factory=list)  # inspector_model_width_ratio at each sample
    documents: list[dict[str, Any]] = field(default_factory=list)  # stored results, by seq
    final_width: float | None = None
    report: WorkerReport | None = None
    gateway: GatewayReport | None = None

    def between(self, lo: float, hi: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
        """Times and lags of the samples taken from ``lo`` to ``hi`` seconds."""
        t, lag = np.asarray(self.times), np.asarray(self.lags, dtype=np.float64)
        keep = (t >= lo) & (t <= hi)
        return t[keep], lag[keep]

    def third(self, which: int) -> tuple[np.ndarray, np.ndarray]:
        """Times and lags of the first (0), middle (1) or last (2) third of the window."""
        return self.between(which * WINDOW_S / 3, (which + 1) * WINDOW_S / 3)

    def mean_lag(self, which: int) -> float:
        """Mean lag (records) over one third of the window."""
        return float(self.third(which)[1].mean())

    def slope(self, lo: float = 0.0, hi: float = float("inf")) -> float:
        """Least-squares growth of the lag from ``lo`` to ``hi`` seconds, in records per second."""
        t, lag = self.between(lo, hi)
        assert len(t) >= 3, f"fewer than 3 lag samples from {lo:.1f} to {hi:.1f} s in run {self.name}"
        return float(np.polyfit(t, lag, 1)[0])

    @property
    def switched_at(self) -> float | None:
        """When the width gauge first read the narrow width (seconds), if it did."""
        return self.times[self.widths.index(NARROW_RATIO)] if NARROW_RATIO in self.widths else None

    def summary(self) -> str:
        """The measurements, for failure messages and the log."""
        report, gateway = self.report, self.gateway
        by_width: dict[float, int] = {}
        for doc in self.documents:
            by_width[doc["model"]["width"]] = by_width.get(doc["model"]["width"], 0) + 1
        thirds = [round(self.mean_lag(i), 1) if len(self.third(i)[0]) else None for i in range(3)]
        slope = f"{self.slope():.2f}" if len(self.times) >= 3 else "n/a"
        return (
            f"run {self.name}: offered {self.offered_fps:.1f} captures/s, "
            f"published {gateway.published if gateway else None}, samples {len(self.lags)}, "
            f"lag by thirds {thirds} records, slope {slope} records/s, final lag {self.lags[-1:]}, "
            f"widths seen {sorted(set(self.widths))}, switched at {self.switched_at} s, "
            f"final width {self.final_width}, stored {report.stored if report else None}, "
            f"documents by width {by_width},\n  broker lags {self.lags},\n  worker's own lag view {self.worker_lags}"
        )


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A wide (slow) and a narrow (fast) crack model file of one family, widest first."""
    folder = tmp_path_factory.mktemp("widths")
    wide, narrow = folder / "wide.pt", folder / "narrow.pt"
    for path, arch, width, ratio in ((wide, "pyramid", 192, WIDE_RATIO), (narrow, "unshuffle", 8, NARROW_RATIO)):
        model = mla.MLAModel(crack_model_config("concat", width=width, arch=arch))
        mla.save_model(model, path, metadata={"name": path.stem, "version": "1", "width": ratio})
    return wide, narrow


def line_settings(stack: Stack, widths: tuple[Path, ...]) -> Settings:
    """Fresh topics, group and Redis prefix; the width family; torch on the CPU; raw frames."""
    base = fresh_settings(
        stack.kafka_bootstrap, stack.redis_url, partitions=1,
        widths=tuple(str(p) for p in widths), probe_size=SIZE, max_poll_records=POLL_RECORDS,
    )  # fmt: skip
    return base.model_copy(
        update={
            "inference": base.inference.model_copy(update={"backend": "torch"}),
            "gateway": base.gateway.model_copy(update={"encoding": "raw"}),
        }
    )


class BrokerLag:
    """The consumer group's lag as the broker sees it: end offsets minus committed offsets, in records."""

    def __init__(self, settings: Settings) -> None:
        self.group = settings.worker.group_id
        self.admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
        topics = (settings.topics.visible, settings.topics.infrared)
        self.partitions = [TopicPartition(t, p) for t in topics for p in range(settings.topics.partitions)]

    def __call__(self) -> int:
        ends = self.admin.list_partition_offsets(dict.fromkeys(self.partitions, OffsetSpec.LATEST))
        committed = self.admin.list_group_offsets(self.group).get(self.group, {})
        lag = 0
        for tp in self.partitions:
            assert ends[tp].offset >= 0, f"no end offset for {tp}"
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            lag += ends[tp].offset - done
        return lag

    def close(self) -> None:
        self.admin.close()


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any], list[BaseException]]:
    """Start ``target`` in a thread; its return value or exception lands in the lists."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            out.append(target())
        except BaseException as exc:  # re-raised by the test
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out, errors


def gauge_sum(registry: CollectorRegistry, name: str) -> float:
    """The sum of a gauge's series (e.g. the lag over every partition)."""
    return sum(s.value for metric in registry.collect() for s in metric.samples if s.name == name)


def stored_documents(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """Every result document under the run's prefix, in capture order."""
    docs = []
    for key in client.scan_iter(f"{settings.redis.key_prefix}:result:*"):
        value = client.get(key)
        assert isinstance(value, bytes), f"{key!r} holds {value!r}"
        docs.append(json.loads(value))
    return sorted(docs, key=lambda d: int(d["seq"]))


def overload(name: str, settings: Settings, family: WidthFamily, offered_fps: float) -> Run:
    """Run the worker while the line offers ``offered_fps``; sample the lag and the width gauge."""
    create_topics(settings)
    client = redis.Redis.from_url(settings.redis.url)
    registry = CollectorRegistry()
    worker = InspectionWorker(
        settings, family.active, RedisResultStore(client, RedisLayout(prefix=settings.redis.key_prefix)),
        metrics=WorkerMetrics(registry), model_info=family.info(), widths=family,
    )  # fmt: skip
    source = SyntheticSource([CAMERA], size=SIZE, pool=4)
    gateway = Gateway(settings, source, fps=offered_fps)
    lag = BrokerLag(settings)
    run = Run(name, offered_fps)
    worker_thread, worker_out, worker_errors = in_thread(worker.run)
    gateway_thread: threading.Thread | None = None
    try:
        # The line starts once the worker holds both partitions, so a group join does not count as lag.
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while registry.get_sample_value("inspector_assigned_partitions") != 2:
            assert not worker_errors, worker_errors
            assert time.monotonic() < deadline, f"run {name}: the worker got no partitions in {JOIN_TIMEOUT_S} s"
            time.sleep(0.1)
        gateway_thread, gateway_out, gateway_errors = in_thread(lambda: gateway.run(timeout=WINDOW_S))
        start = time.monotonic()
        while (now := time.monotonic() - start) <= WINDOW_S:
            run.times.append(now)
            run.lags.append(lag())
            run.worker_lags.append(gauge_sum(registry, "inspector_consumer_lag_records"))
            run.widths.append(float(registry.get_sample_value("inspector_model_width_ratio") or 0.0))
            time.sleep(max(0.0, start + len(run.times) * SAMPLE_EVERY_S - time.monotonic()))
        run.final_width = registry.get_sample_value("inspector_model_width_ratio")
        gateway_thread.join(timeout=60)
        assert not gateway_errors, gateway_errors
        run.gateway = gateway_out[0]
    finally:
        gateway.stop()
        if gateway_thread is not None:
            gateway_thread.join(timeout=60)
        worker.stop()
        worker_thread.join(timeout=120)
        lag.close()
    assert not worker_errors, worker_errors
    assert not worker_thread.is_alive(), f"run {name}: the worker did not stop"
    run.report = worker_out[0]
    run.documents = stored_documents(client, settings)
    client.close()
    print(run.summary())
    return run


@dataclass
class Runs:
    """Both runs and what the probes said."""

    wide_ms: float
    narrow_ms: float
    offered_fps: float
    a: Run
    b: Run


@pytest.fixture(scope="module")
def runs(stack: Stack, variants: tuple[Path, Path]) -> Iterator[Runs]:
    """Probe the family, derive the offered rate from the probes, then run A and B one after the other."""
    wide, narrow = variants
    settings_b = line_settings(stack, (wide, narrow))
    family_b = WidthFamily.load(settings_b)  # times both variants on a SIZE² capture, as the worker does
    wide_ms, narrow_ms = (v.ms_per_frame for v in family_b.policy.variants)
    assert [v.width for v in family_b.policy.variants] == [WIDE_RATIO, NARROW_RATIO]
    assert wide_ms >= MIN_COST_RATIO * narrow_ms, (
        f"the wide variant ({wide_ms:.0f} ms per capture) must cost >= {MIN_COST_RATIO}x the narrow one "
        f"({narrow_ms:.1f} ms) for this test to mean anything"
    )
    # The worker counts a partition whose end it does not know yet as 1 record behind: with a widest
    # variant this slow, that alone would be "overloaded" and it would narrow with nothing waiting.
    assert wide_ms < settings_b.worker.latency_budget_ms / 2, f"the wide variant is too slow ({wide_ms:.0f} ms)"
    offered = min(OVERLOAD * 1000 / wide_ms, MAX_SHARE_OF_NARROW * 1000 / narrow_ms)
    # The widest alone: a family of one, the same loaded model and probe as run B's widest.
    settings_a = line_settings(stack, (wide,))
    alone = WidthPolicy(family_b.policy.variants[:1], latency_budget_ms=settings_a.worker.latency_budget_ms)
    a = overload("A (widest alone)", settings_a, WidthFamily(family_b.models[:1], alone), offered)
    b = overload("B (family)", settings_b, family_b, offered)
    print(f"probe: wide {wide_ms:.1f} ms, narrow {narrow_ms:.1f} ms per capture; offered {offered:.1f} captures/s")
    yield Runs(wide_ms, narrow_ms, offered, a, b)


def check_measured(run: Run) -> None:
    """The run really offered the load, sampled the lag, and stored results."""
    assert run.gateway is not None and run.report is not None
    offered = run.offered_fps * WINDOW_S
    assert run.gateway.published["visible"] >= 0.7 * offered, (
        f"the line published {run.gateway.published} of ~{offered:.0f} captures offered: not the overload intended\n"
        + run.summary()
    )
    assert len(run.lags) >= MIN_SAMPLES, f"only {len(run.lags)} lag samples (< {MIN_SAMPLES})\n" + run.summary()
    for third in range(3):
        assert len(run.third(third)[0]) >= 3, f"fewer than 3 lag samples in third {third}\n" + run.summary()
    assert run.report.stored >= 4 and len(run.documents) == run.report.stored, (
        f"{run.report.stored} results stored, {len(run.documents)} found in Redis\n" + run.summary()
    )


def test_the_widest_width_alone_falls_behind(runs: Runs) -> None:
    a = runs.a
    check_measured(a)
    offered_records = 2 * runs.offered_fps  # a capture is two records
    assert a.slope() >= 0.25 * offered_records, (
        f"the lag grew by {a.slope():.2f} records/s; with the widest alone at {OVERLOAD}x its capacity it should "
        f"grow by at least {0.25 * offered_records:.1f} (a quarter of the {offered_records:.1f} records/s offered)\n"
        + a.summary()
    )
    assert a.mean_lag(2) >= 2 * a.mean_lag(0) + 10, "the lag of the last third is not well above the first\n" + (
        a.summary()
    )
    assert a.lags[-1] >= 0.8 * max(a.lags), "the lag did not end near its highest\n" + a.summary()
    assert set(a.widths) == {WIDE_RATIO} and a.final_width == WIDE_RATIO, a.summary()
    assert {d["model"]["width"] for d in a.documents} == {WIDE_RATIO}, a.summary()
    assert {d["model"]["name"] for d in a.documents} == {"wide"}, a.summary()


def test_the_family_switches_down_and_each_result_says_so(runs: Runs) -> None:
    b = runs.b
    check_measured(b)
    assert b.widths[0] == WIDE_RATIO, f"the family did not start on its widest width\n{b.summary()}"
    assert b.switched_at is not None and b.final_width == NARROW_RATIO, (
        "inspector_model_width_ratio never read the narrow width\n" + b.summary()
    )
    after = b.widths[b.widths.index(NARROW_RATIO) :]
    assert after == [NARROW_RATIO] * len(after), "the worker widened again under the same overload\n" + b.summary()
    widths = [d["model"]["width"] for d in b.documents]
    narrow = [d for d in b.documents if d["model"]["width"] == NARROW_RATIO]
    assert len(narrow) >= 0.5 * len(b.documents) and len(narrow) >= 10, (
        f"{len(narrow)} of {len(b.documents)} results came from the narrow width\n" + b.summary()
    )
    assert set(widths) == {WIDE_RATIO, NARROW_RATIO}, f"results carry widths {set(widths)}\n" + b.summary()
    assert widths == sorted(widths, reverse=True), "results in capture order went back to the wide width\n" + (
        b.summary()
    )
    assert {d["model"]["name"] for d in narrow} == {"narrow"}, "a narrow-width result names another model"
    assert b.report is not None and runs.a.report is not None
    assert b.report.stored >= 1.5 * runs.a.report.stored, (
        f"the family stored {b.report.stored} results, the widest alone {runs.a.report.stored}\n" + b.summary()
    )


def test_the_family_stops_the_lag_growing_where_the_widest_alone_lets_it_grow(runs: Runs) -> None:
    a, b = runs.a, runs.b
    check_measured(a)
    check_measured(b)
    both = a.summary() + "\n" + b.summary()
    switched = b.switched_at
    assert switched is not None, "run B never switched down\n" + both
    seen_after = len(b.between(switched)[0])
    assert seen_after >= MIN_SAMPLES_AFTER_SWITCH, (
        f"run B switched down only at {switched:.1f} s of {WINDOW_S:.0f}: {seen_after} lag samples after it "
        f"(< {MIN_SAMPLES_AFTER_SWITCH}) cannot show whether the lag stopped growing\n" + both
    )
    # Over the same stretch of time, from B's switch to the end of the window:
    grows_a, grows_b = a.slope(switched), b.slope(switched)
    assert grows_a >= 0.5 * runs.offered_fps, (
        f"from {switched:.1f} s run A's lag grew by only {grows_a:.2f} records/s: nothing to compare with\n" + both
    )
    assert grows_b <= 0.25 * grows_a, (
        f"after switching down at {switched:.1f} s the family's lag still grows by {grows_b:.2f} records/s "
        f"where the widest alone's grows by {grows_a:.2f}\n" + both
    )
    at_switch = b.lags[b.times.index(switched)]
    assert b.lags[-1] <= at_switch + 2 * POLL_RECORDS, (  # two polls in hand at most: not growth
        f"the family's lag rose from {at_switch} records at the switch to {b.lags[-1]} at the end\n" + both
    )
    a_at_switch = a.between(switched)[1][0]
    assert b.lags[-1] <= a.lags[-1] - (a.lags[-1] - a_at_switch) / 2, (
        f"at the end of the window the family's lag ({b.lags[-1]} records) is not below the widest alone's "
        f"({a.lags[-1]}) by at least half of what that grew after {switched:.1f} s (from {a_at_switch:.0f})\n" + both
    )
