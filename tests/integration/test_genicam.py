"""GenICam rigs against Aravis's GigE Vision camera simulator (real GVCP/GVSP on loopback addresses).

Each test starts its own simulated cameras (``arv-fake-gv-camera-0.8``, one loopback address each)
as subprocesses and stops them at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest

from inspector.config import RigSettings
from inspector.sources import Capture, SourceError
from workers.genicam import GenICamError, GenICamSource, list_devices

pytestmark = pytest.mark.integration

SIMULATOR = "arv-fake-gv-camera-0.8"


def _address(address: str) -> None:
    """Put ``address`` on the loopback interface (one simulated camera per address; CI runs as root)."""
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    if f"inet {address}/" not in shown.stdout:
        subprocess.run(["ip", "addr", "add", f"{address}/8", "dev", "lo"], check=True)


class Simulators:
    """Simulated cameras by serial: started, killed and restarted by the test."""

    def __init__(self) -> None:
        self.processes: dict[str, tuple[subprocess.Popen[bytes], list[str]]] = {}

    def start(self, serial: str, address: str, *extra: str) -> None:
        if shutil.which(SIMULATOR) is None:
            raise AssertionError(
                f"{SIMULATOR} is not installed: apt install aravis-tools (deploy/local/install-system-deps)"
            )
        _address(address)
        command = [SIMULATOR, "-i", address, "-s", serial, *extra]
        self.processes[serial] = (
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            command,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(d["serial"] == serial for d in list_devices()):
                return
            time.sleep(0.2)
        raise AssertionError(f"simulated camera {serial} on {address} never answered discovery")

    def kill(self, serial: str) -> None:
        process, _ = self.processes[serial]
        process.kill()
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process, _ in self.processes.values():
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def simulators() -> Iterator[Simulators]:
    running = Simulators()
    try:
        yield running
    finally:
        running.stop_all()


def rig(rig_id: str, visible: str, infrared: str) -> RigSettings:
    return RigSettings(
        id=rig_id, mm_per_px=0.05,
        visible={"device": visible, "pixel_format": "Mono8", "region": (0, 0, 1024, 1024)},
        infrared={"device": infrared, "pixel_format": "Mono16", "region": (0, 0, 256, 256)},
    )  # fmt: skip


def take(source: GenICamSource, captures: int, timeout_s: float = 30) -> tuple[list[Capture], list[SourceError]]:
    good: list[Capture] = []
    bad: list[SourceError] = []
    deadline = time.monotonic() + timeout_s
    for item in source:
        (bad if isinstance(item, SourceError) else good).append(item)  # type: ignore[arg-type]
        if len(good) >= captures or time.monotonic() > deadline:
            break
    return good, bad


def test_one_software_line_trigger_fires_both_cameras_and_their_frames_share_the_seq(simulators: Simulators) -> None:
    simulators.start("VIS-A", "127.0.0.1")
    simulators.start("IR-A", "127.0.0.2")
    source = GenICamSource([rig("rig-a", "VIS-A", "IR-A")], fps=10)
    try:
        good, bad = take(source, 30)
    finally:
        source.close()
    assert [c.seq for c in good] == list(range(1, 31)) and not bad
    first = good[0]
    assert first.camera_id == "rig-a" and first.mm_per_px == 0.05
    assert first.visible is not None and first.visible.shape == (1024, 1024) and first.visible.dtype == np.uint8
    assert first.infrared is not None and first.infrared.shape == (256, 256) and first.infrared.dtype == np.uint16
    assert all(abs(c.capture_ts_ns - time.time_ns()) < 60e9 for c in good)  # on the host's clock
    assert source.counts["published"] == 60


def test_frames_with_lost_packets_are_counted_and_never_become_captures(simulators: Simulators) -> None:
    simulators.start("VIS-B", "127.0.0.1", "-r", "1")  # 1 GVSP packet in 1,000 lost: about half the 1 MB frames
    simulators.start("IR-B", "127.0.0.2")
    source = GenICamSource([rig("rig-b", "VIS-B", "IR-B")], fps=10)
    try:
        good, bad = take(source, 20, timeout_s=40)
    finally:
        source.close()
    outcomes = {e.outcome for e in bad if isinstance(e, GenICamError)}
    assert source.counts["incomplete"] > 0 and "incomplete" in outcomes and "unpaired" in outcomes
    assert source.counts["missed_trigger"] == 0  # a lost frame still counts its frame ID: no trigger was missed
    assert len(good) == 20 and all(c.visible is not None and c.infrared is not None for c in good)
    seqs = [c.seq for c in good]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # whatever was lost, pairs never shift


def test_a_trigger_one_camera_missed_is_reported_and_every_other_capture_still_pairs(simulators: Simulators) -> None:
    simulators.start("VIS-C", "127.0.0.1")
    simulators.start("IR-C", "127.0.0.2")
    source = GenICamSource([rig("rig-c", "VIS-C", "IR-C")], fps=0)  # triggers fired by the test
    try:
        assert source.wait_ready(), "the simulated cameras did not start streaming"
        for trigger in range(1, 21):
            source.fire("rig-c", ("visible",) if trigger == 6 else ("visible", "infrared"))  # IR misses trigger 6
            time.sleep(0.1)
        good, bad = take(source, 19, timeout_s=20)
    finally:
        source.close()
    assert [c.seq for c in good] == [s for s in range(1, 21) if s != 6]
    missed = [e for e in bad if isinstance(e, GenICamError) and e.outcome == "missed_trigger"]
    assert len(missed) == 1 and "IR-C missed 1 trigger(s) before seq 7" in str(missed[0])
    assert [str(e) for e in bad if isinstance(e, GenICamError) and e.outcome == "unpaired"] == [
        "rig rig-c: seq 6 has no good infrared frame"
    ]
