"""Aravis's GigE Vision camera simulator as subprocesses: the cameras of the tests and ``inspector bench cameras``.

    with FakeCameras() as cameras:
        cameras.start("VIS-1", "127.0.0.1")          # one loopback address per camera (GVCP port 3956)
        cameras.start("IR-1", "127.0.0.2", "-r", "1")  # 1 GVSP packet in 1,000 lost
        ...
        cameras.kill("IR-1"); cameras.restart("IR-1")

``arv-fake-gv-camera-0.8`` (Debian's ``aravis-tools``) speaks the real GVCP/GVSP protocol. It fills
every frame with a diagonal ramp that starts at its frame ID, stamps it with the host clock when
its own loop sees the trigger, and serves Mono8, Mono16 and RGB8 with software triggers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import TracebackType

from workers.errors import WorkerError
from workers.genicam import list_devices

__all__ = ["SIMULATOR", "FakeCameras", "cpu_seconds", "loopback_address"]

SIMULATOR = "arv-fake-gv-camera-0.8"


def loopback_address(address: str) -> None:
    """Put ``address`` on the loopback interface if it is not there (needs root, as CI has).

    Raises:
        WorkerError: The address cannot be added (not root): the message says the command to run.

    """
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    if f"inet {address}/" in shown.stdout:
        return
    added = subprocess.run(["ip", "addr", "add", f"{address}/8", "dev", "lo"], capture_output=True, text=True)
    if added.returncode != 0:
        msg = f"cannot add {address} to lo ({added.stderr.strip()}): run `ip addr add {address}/8 dev lo` as root"
        raise WorkerError(msg)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FakeCameras:
    """Simulated cameras by serial number: started, killed, restarted; all killed on exit."""

    def __init__(self) -> None:
        self.processes: dict[str, tuple[subprocess.Popen[bytes], list[str]]] = {}

    @property
    def pids(self) -> dict[str, int]:
        """The simulator process of each serial number."""
        return {serial: process.pid for serial, (process, _) in self.processes.items()}

    def start(self, serial: str, address: str, *extra: str, timeout_s: float = 15.0) -> None:
        """Start a simulated camera on ``address`` and wait until discovery sees it.

        Raises:
            WorkerError: The simulator is not installed, the address cannot be added, or the camera
                never answered discovery.

        """
        if shutil.which(SIMULATOR) is None:
            raise WorkerError(
                f"{SIMULATOR} is not installed: apt install aravis-tools (deploy/local/install-system-deps)"
            )
        loopback_address(address)
        command = [SIMULATOR, "-i", address, "-s", serial, *extra]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[serial] = (process, command)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(d["serial"] == serial for d in list_devices()):
                return
            time.sleep(0.2)
        raise WorkerError(f"simulated camera {serial} on {address} never answered discovery")

    def kill(self, serial: str) -> None:
        """SIGKILL one camera: it vanishes from the network as an unplugged camera does."""
        process, _ = self.processes[serial]
        process.kill()
        process.wait(timeout=10)

    def restart(self, serial: str) -> None:
        """Start a killed camera again as it was started (a rebooted camera: its frame IDs start over)."""
        _, command = self.processes[serial]
        self.start(serial, command[2], *command[5:])

    def stop_all(self) -> None:
        """Kill every camera started here."""
        for process, _ in self.processes.values():
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> FakeCameras:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop_all()
