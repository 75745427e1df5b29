"""One GenICam camera through Aravis: discovery, opening and configuring it, and its frames.

    camera = Camera(settings.cameras[0].visible, "visible")
    camera.open(start_seq=1)          # configure, allocate the buffer pool, start acquisition
    for item in camera.pop() or []:   # a CameraFrame, or GenICamError for what was wrong
        ...

:class:`Camera` is driven by :class:`workers.genicam.GenICamSource`, one receive thread each. Its
stream has a pool of ``buffers`` buffers sized from the payload, filled by Aravis's own receive
thread; :meth:`Camera.pop` copies the pixels once (``bytes`` out of the buffer, which goes straight
back to the pool), numbers the frame with the rig's seq (:class:`inspector.triggers.FrameCounter`,
from the GigE Vision frame ID) and maps its timestamp to host time
(:class:`inspector.triggers.ClockMap`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspector.config import CameraSettings
from inspector.sources import SourceError
from inspector.triggers import ClockMap, FrameCounter

__all__ = [
    "DTYPES",
    "Camera",
    "CameraFrame",
    "GenICamError",
    "aravis",
    "describe_device",
    "list_devices",
    "open_device",
]

logger = logging.getLogger(__name__)

POP_TIMEOUT_US = 200_000
# pixel format -> (dtype, channels); GVSP sends multi-byte pixels little-endian
DTYPES: dict[str, tuple[np.dtype[Any], int]] = {
    "Mono8": (np.dtype(np.uint8), 1),
    "Mono16": (np.dtype("<u2"), 1),
    "RGB8": (np.dtype(np.uint8), 3),
}


class GenICamError(SourceError):
    """A frame or camera of a GenICam rig that could not become a good capture; ``outcome`` says why."""

    def __init__(self, outcome: str, message: str, *, frames: int = 1) -> None:
        super().__init__(message, outcome=outcome, frames=frames)


def aravis() -> Any:
    """Aravis 0.8 through PyGObject.

    Raises:
        SourceError: PyGObject or Aravis's typelib is not installed (the message says what to install).

    """
    try:
        import gi  # type: ignore[import-untyped]

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis  # type: ignore[import-untyped]
    except (ImportError, ValueError) as exc:
        msg = (
            f"GenICam cameras need Aravis 0.8 and PyGObject ({exc}): apt install gir1.2-aravis-0.8 "
            "libgirepository1.0-dev libcairo2-dev pkg-config, then pip install 'pygobject<3.51'"
        )
        raise SourceError(msg) from exc
    return Aravis


def list_devices() -> list[dict[str, str]]:
    """Every GenICam device Aravis can see: id, vendor, model, serial, address, protocol."""
    arv = aravis()
    arv.update_device_list()
    return [
        {
            "id": arv.get_device_id(i), "vendor": arv.get_device_vendor(i), "model": arv.get_device_model(i),
            "serial": arv.get_device_serial_nbr(i), "address": arv.get_device_address(i),
            "protocol": arv.get_device_protocol(i),
        }
        for i in range(arv.get_n_devices())
    ]  # fmt: skip


def open_device(device: str) -> Any:
    """The Aravis camera for a device id, serial number or address."""
    arv = aravis()
    for found in list_devices():
        if device in (found["id"], found["serial"], found["address"]):
            return arv.Camera.new(found["id"])
    known = ", ".join(f"{d['id']} ({d['address']})" for d in list_devices()) or "none"
    raise GenICamError("camera_lost", f"GenICam device {device!r} not found; devices seen: {known}")


def describe_device(device: str) -> dict[str, Any]:
    """The key features of one device, as an engineer commissioning it wants them."""
    camera = open_device(device)
    x, y, width, height = camera.get_region()
    return {
        "vendor": camera.get_vendor_name(), "model": camera.get_model_name(),
        "serial": camera.get_device_serial_number(), "id": camera.get_device_id(),
        "region": [x, y, width, height], "payload_bytes": camera.get_payload(),
        "pixel_format": camera.get_pixel_format_as_string(),
        "pixel_formats": list(camera.dup_available_pixel_formats_as_strings()),
        "trigger_sources": list(camera.dup_available_trigger_sources()),
        "exposure_us": camera.get_exposure_time() if camera.is_exposure_time_available() else None,
        "gain_db": camera.get_gain() if camera.is_gain_available() else None,
    }  # fmt: skip


@dataclass
class CameraFrame:
    """A good frame: the rig's seq, its capture time on the host's clock, and its pixels."""

    seq: int
    capture_ts_ns: int
    image: np.ndarray


@dataclass
class Camera:
    """One camera of a rig: its Aravis objects, its frame counter and clock map, and its health.

    Not thread-safe: one receive thread owns it; the trigger thread only calls ``software_trigger``
    on :attr:`camera` and sets :attr:`failed`.
    """

    settings: CameraSettings
    role: str
    counter: FrameCounter = field(default_factory=FrameCounter)
    clock: ClockMap = field(default_factory=ClockMap)
    camera: Any = None
    stream: Any = None
    last_buffer: float = 0.0
    last_ts_ns: int | None = None
    period_ns: int | None = None
    intervals: deque[int] = field(default_factory=lambda: deque(maxlen=32))
    failed: threading.Event = field(default_factory=threading.Event)  # a command went unanswered
    received: int = 0  # buffers popped since the source started, good or not
    fired: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=4096))  # (host ns, tick)

    def open(self, start_seq: int = 1) -> None:
        """Open, configure and start the camera; its frames are numbered from ``start_seq``."""
        arv = aravis()
        camera = open_device(self.settings.device)
        s = self.settings
        camera.set_pixel_format_from_string(s.pixel_format)
        if s.region is not None:
            camera.set_region(*s.region)
        if s.exposure_us is not None:
            camera.set_exposure_time(s.exposure_us)
        if s.gain_db is not None:
            camera.set_gain(s.gain_db)
        if s.packet_size is not None and camera.is_gv_device():
            camera.gv_set_packet_size(s.packet_size)
        if s.trigger.mode == "software":
            camera.set_trigger("Software")
        elif s.trigger.mode == "hardware":
            camera.set_trigger(s.trigger.line)
        else:
            camera.clear_triggers()
        stream = camera.create_stream(None, None)
        if camera.is_gv_device():  # a UDP socket buffer of one payload, not the kernel's default (rmem_max caps it)
            stream.set_property("socket-buffer", arv.GvStreamSocketBuffer.AUTO)
            stream.set_property("socket-buffer-size", 0)
        payload = camera.get_payload()
        for _ in range(s.buffers):
            stream.push_buffer(arv.Buffer.new_allocate(payload))
        camera.start_acquisition()
        self.camera, self.stream, self.last_buffer = camera, stream, time.monotonic()
        self.counter = FrameCounter(start_seq)  # a reopened camera's own frame IDs start again
        self.clock = ClockMap()  # and so may its clock (a rebooted camera counts from zero)
        self.last_ts_ns, self.period_ns = None, None
        self.intervals.clear()
        self.failed.clear()

    def pop(self) -> list[CameraFrame | GenICamError] | None:
        """The next frame and what was wrong before or with it; None when no buffer came within the timeout."""
        arv = aravis()
        buffer = self.stream.timeout_pop_buffer(POP_TIMEOUT_US)
        if buffer is None:
            return None
        self.last_buffer = time.monotonic()
        self.received += 1
        out: list[CameraFrame | GenICamError] = []
        try:
            frame_id = buffer.get_frame_id()
            if frame_id > 0xFFFF and self.counter.id_bits == 16:  # GigE Vision 2 extended (64-bit) frame IDs
                self.counter = FrameCounter(self.counter.next_seq, id_bits=64)
            count = self.counter.seq(frame_id) if frame_id > 0 else None
            if count is not None and count.missed:
                what = f"{self.settings.device} missed {count.missed} trigger(s) before seq {count.seq}"
                out.append(GenICamError("missed_trigger", what))
            status = buffer.get_status()
            if status != arv.BufferStatus.SUCCESS or count is None:
                name = status.value_nick if hasattr(status, "value_nick") else str(status)
                out.append(GenICamError("incomplete", f"{self.settings.device}: frame {frame_id} {name}"))
                return out
            dtype, channels = DTYPES[self.settings.pixel_format]
            height, width = buffer.get_image_height(), buffer.get_image_width()
            pixels = np.frombuffer(buffer.get_data(), dtype=dtype)  # the one copy: bytes out of the pool buffer
            shape = (height, width, channels) if channels > 1 else (height, width)
            image = pixels[: height * width * channels].reshape(shape)
            self.clock.observe(buffer.get_timestamp(), buffer.get_system_timestamp())
            out.append(CameraFrame(count.seq, self.clock.to_host(buffer.get_timestamp()), image))
            return out
        finally:
            self.stream.push_buffer(buffer)

    def answers(self) -> bool:
        """Whether the camera still answers a register read over its control channel (GVCP)."""
        try:
            self.camera.get_payload()
        except Exception:  # GLib.Error: timeout or a closed control channel
            return False
        return True

    def close(self, *, stop: bool = True) -> None:
        """Stop acquisition (``stop``: a camera known to be gone is not asked) and let the camera go."""
        if self.camera is not None and stop:
            try:
                self.camera.stop_acquisition()
            except Exception as exc:  # a camera that is gone cannot be stopped: nothing more to do
                logger.debug("stopping %s: %s", self.settings.device, exc)
        if not stop and self.camera is not None:  # Aravis's goodbye to a gone camera waits on GVCP timeouts
            doomed = [self.camera, self.stream]
            threading.Thread(target=doomed.clear, name=f"genicam-release-{self.settings.device}", daemon=True).start()
        self.camera = self.stream = None
