"""``inspector bench cameras``: GenICam rigs of simulated GigE Vision cameras through the gateway into Kafka.

Each repeat starts ``rigs`` pairs of ``arv-fake-gv-camera-0.8`` processes (Mono8 visible,
Mono16 infrared, one loopback address each), a :class:`~workers.genicam.GenICamSource` that fires
their software triggers at ``fps``, and the gateway publishing raw frames to fresh topics. After
``seconds`` the triggers stop, frames on their way are given two seconds, and the run is counted:

* **drops**: line triggers fired minus captures the broker acknowledged (both frames);
* **gateway CPU**: this process's CPU time (Aravis's receive threads, the pairing, the producer)
  over the measured window, after a warm-up, as a share of one core; the simulators' own CPU apart;
* **single copy**: captures whose two images were sent as the very ``bytes`` copied out of the
  camera buffers (checked on every capture, see :func:`inspector.frame.encode_image`);
* **pairing lag changes**: how often a rig's captures start joining other frame IDs (read back from
  the simulator's ramp, :func:`ramp_id`): each missed trigger shifts it once;
* **max pair skew**: the largest gap between the capture times of a published pair's two frames;
* **pairs joining two triggers**: published pairs whose two frames follow different software
  triggers (the simulator stamps frames on the host's clock, so each frame's trigger is the last one
  fired at its camera before its capture time): the pairing's errors, measured.

The simulators share the machine with the gateway and the broker, as they would not on a line.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from kafka import KafkaAdminClient
from prometheus_client import CollectorRegistry

from inspector.config import GatewaySettings, KafkaSettings, RigSettings, Settings, TopicSettings
from inspector.frame import viewed_bytes
from inspector.sources import Capture, SourceError
from workers.errors import WorkerError
from workers.fake_cameras import FakeCameras, cpu_seconds
from workers.gateway import Gateway, GatewayReport
from workers.genicam import GenICamSource
from workers.metrics import GatewayMetrics

__all__ = ["CameraBench", "run_camera_bench"]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
WARMUP_S = 5.0
SETTLE_S = 2.0


@dataclass(frozen=True)
class CameraBench:
    """What to run: rigs, trigger rate, frame sizes, length and repeats."""

    rigs: int = 2
    fps: float = 10.0
    visible: int = 1024
    infrared: int = 256
    seconds: float = 60.0
    repeats: int = 3
    loss_per_thousand: int = 0
    kafka: str = "127.0.0.1:9092"


class _Counted:
    """The source, counting what the bench reports about its captures.

    Captures whose images are whole camera buffers (sent without another copy), and how often a
    rig's pairs change which frame IDs they join (each missed trigger does so once).
    """

    def __init__(self, source: GenICamSource) -> None:
        self.source, self.captures, self.single_copy, self.lag_changes = source, 0, 0, 0
        self.max_skew_ns = 0
        self.two_triggers = 0  # published pairs whose frames follow different software triggers
        self._lags: dict[str, int] = {}

    @property
    def reconnects(self) -> int:
        return self.source.reconnects

    def __iter__(self) -> Iterator[Capture | SourceError]:
        for item in self.source:
            if isinstance(item, Capture):
                self.captures += 1
                images = [i for i in (item.visible, item.infrared) if i is not None]
                self.single_copy += all(viewed_bytes(i) is not None for i in images)  # raw-encoded as they are
                lag = (ramp_id(item.visible) - ramp_id(item.infrared)) % 255  # type: ignore[arg-type]
                self.lag_changes += item.camera_id in self._lags and self._lags[item.camera_id] != lag
                self._lags[item.camera_id] = lag
                if item.infrared_ts_ns is not None:
                    self.max_skew_ns = max(self.max_skew_ns, abs(item.infrared_ts_ns - item.capture_ts_ns))
                    ticks = (
                        self.source.trigger_of(item.camera_id, "visible", item.capture_ts_ns),
                        self.source.trigger_of(item.camera_id, "infrared", item.infrared_ts_ns),
                    )
                    self.two_triggers += ticks[0] != ticks[1]
            yield item

    def close(self) -> None:
        self.source.close()


def ramp_id(image: np.ndarray) -> int:
    """The frame ID behind a simulator frame, from its first pixel: mod 255 (Mono8) or mod 65535 (Mono16).

    ``arv-fake-gv-camera-0.8`` fills Mono8 with ``(x + y + id) % 255`` and Mono16 with
    ``256 (x + y + id) % 65535`` (at exposure 10 ms, gain 0; 256 is invertible mod 65535).
    """
    if image.dtype == np.uint8:
        return int(image[0, 0])
    return int(image[0, 0]) * pow(256, -1, 65535) % 65535


def _rig(index: int, tag: str, bench: CameraBench) -> tuple[RigSettings, list[tuple[str, str]]]:
    visible, infrared = f"V{index}-{tag}", f"I{index}-{tag}"
    rig = RigSettings(
        id=f"rig-{index + 1}", mm_per_px=0.05,
        visible={"device": visible, "pixel_format": "Mono8", "region": (0, 0, bench.visible, bench.visible),
                 "exposure_us": 10_000},
        infrared={"device": infrared, "pixel_format": "Mono16", "region": (0, 0, bench.infrared, bench.infrared),
                  "exposure_us": 10_000},
    )  # fmt: skip
    return rig, [(visible, f"127.0.0.{2 * index + 1}"), (infrared, f"127.0.0.{2 * index + 2}")]


def run_once(bench: CameraBench, progress: Progress) -> dict[str, Any]:
    """One repeat (see the module docs); its figures."""
    tag = uuid.uuid4().hex[:6]
    topics = TopicSettings(visible=f"bench.cam.vis.{tag}", infrared=f"bench.cam.ir.{tag}", dlq=f"bench.cam.dlq.{tag}")
    settings = Settings(
        kafka=KafkaSettings(bootstrap=bench.kafka), topics=topics, gateway=GatewaySettings(encoding="raw")
    )
    extra = ("-r", str(bench.loss_per_thousand)) if bench.loss_per_thousand else ()
    with FakeCameras() as cameras:
        rigs = []
        for index in range(bench.rigs):
            rig, serials = _rig(index, tag, bench)
            for serial, address in serials:
                cameras.start(serial, address, *extra)
            rigs.append(rig)
        source = GenICamSource(rigs, fps=bench.fps)
        counted = _Counted(source)
        if not source.wait_ready(30):
            source.close()
            raise WorkerError(f"the simulated cameras did not start streaming: {source.readiness()[1]}")
        gateway = Gateway(settings, counted, GatewayMetrics(CollectorRegistry()), fps=None)
        reports: list[GatewayReport] = []
        thread = threading.Thread(target=lambda: reports.append(gateway.run()), name="bench-gateway")
        started = time.monotonic()
        thread.start()
        time.sleep(WARMUP_S)
        cpu0, sims0, t0 = time.process_time(), {p: cpu_seconds(p) for p in cameras.pids.values()}, time.monotonic()
        progress(f"{bench.rigs} rig(s) at {bench.fps:g} triggers/s: measuring {bench.seconds:g} s")
        time.sleep(bench.seconds)
        source.stop_triggers()
        cpu1, sims1, t1 = time.process_time(), {p: cpu_seconds(p) for p in cameras.pids.values()}, time.monotonic()
        time.sleep(SETTLE_S)
        source.close()
        thread.join(timeout=60)
    _delete_topics(bench.kafka, [topics.visible, topics.infrared, topics.dlq])
    if not reports:
        raise WorkerError("the gateway did not finish within 60 s of the source closing")
    report = reports[0]
    triggers = sum(source.triggers.values())
    published = min(report.published.values())  # captures with both frames acknowledged
    window = t1 - t0
    return {
        "triggers": triggers, "captures_published": published, "drops": triggers - published,
        "drop_rate": (triggers - published) / triggers if triggers else None,
        "dropped_by_reason": {k: v for k, v in report.dropped.items() if v},
        "source_outcomes": {k: v for k, v in source.counts.items() if v},
        "gateway_cpu_core_share": (cpu1 - cpu0) / window,
        "simulators_cpu_core_share": sum(sims1[p] - sims0[p] for p in sims0) / window,
        "measured_s": window, "run_s": time.monotonic() - started,
        "single_copy_captures": counted.single_copy, "captures_seen": counted.captures,
        "pairing_lag_changes": counted.lag_changes, "max_pair_skew_ms": counted.max_skew_ns / 1e6,
        "pairs_joining_two_triggers": counted.two_triggers,
        "frames_short_of_triggers": {  # per camera: triggers its rig fired minus buffers it delivered
            device: source.triggers[rig.id] - source.received()[device]
            for rig in rigs for device in (rig.visible.device, rig.infrared.device)
        },
        "publish_p50_ms": report.publish_p50_ms, "publish_p95_ms": report.publish_p95_ms,
        "frame_mib_per_s": published * (bench.visible**2 + 2 * bench.infrared**2) / 2**20 / (t1 - started),
    }  # fmt: skip


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-cameras")
    try:
        admin.delete_topics([n for n in names if n in set(admin.list_topics())])
    finally:
        admin.close()


def run_camera_bench(bench: CameraBench, progress: Progress = logger.info) -> dict[str, Any]:
    """Every repeat and the medians; synthetic frames from simulated cameras."""
    runs = []
    for repeat in range(bench.repeats):
        progress(f"repeat {repeat + 1}/{bench.repeats}")
        runs.append(run_once(bench, progress))
    median = {
        key: statistics.median(run[key] for run in runs)
        for key in ("drops", "drop_rate", "gateway_cpu_core_share", "simulators_cpu_core_share", "publish_p95_ms")
        if all(run[key] is not None for run in runs)
    }
    return {
        "bench": asdict(bench), "cores": os.cpu_count(), "frame": f"Mono8 {bench.visible}² + Mono16 {bench.infrared}²",
        "data": "synthetic (arv-fake-gv-camera-0.8 ramp frames)", "median": median, "runs": runs,
    }  # fmt: skip
