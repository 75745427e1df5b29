"""GenICam line cameras through Aravis: each rig's visible and infrared camera as one source of captures.

    source = GenICamSource(settings.cameras, fps=10)      # the rigs of the `cameras:` section
    for item in source:                                   # Capture, or SourceError for what was lost
        ...

Each camera streams into a pool of ``buffers`` buffers sized from its payload, filled by Aravis's own
receive thread; one thread per camera here pops them, copies the pixels once (``bytes`` out of the
buffer, which goes straight back to the pool), numbers the frame with the rig's trigger seq
(:class:`inspector.triggers.FrameCounter`, from the GigE Vision frame ID) and maps its timestamp to
host time (:class:`inspector.triggers.ClockMap`). A rig's two frames with the same seq make one
:class:`~inspector.sources.Capture`, once their capture times agree that they belong to one trigger
(:class:`inspector.rig_pairing.RigPairer`). What cannot be published as a good capture is yielded as a
:class:`~inspector.sources.SourceError` with its :attr:`GenICamError.outcome`:

* ``incomplete``: the buffer lost packets (GVSP loss) or timed out; never published (its frame ID
  still counts, so the loss is not mistaken for a missed trigger);
* ``missed_trigger``: a camera's frame IDs jumped (frames numbered but never received), or it sent
  no frame for a trigger, found when its frames come a whole period late three triggers in a row
  (one item per event); the pairing of later captures is unchanged;
* ``unpaired``: a good frame whose partner never came (it was incomplete, or missed its trigger),
  given up once the rig is :data:`PAIR_WINDOW` triggers further;
* ``skewed``: a pair whose frames came half a trigger period or more apart with no missed trigger to
  explain it: not sure to be one trigger's, so both frames are dropped rather than paired;
* ``camera_lost``: a camera stopped answering; it is reopened with back-off and only its rig waits;
* ``overflow``: captures dropped because the gateway did not take them (``frames`` says how many).

With ``trigger.mode: software`` the source fires both cameras of a rig together at ``fps`` (the
stand-in for a line trigger); ``hardware`` cameras are fired by their input line, ``free-run`` ones
by their own frame rate.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspector.config import CameraSettings, RigSettings
from inspector.rig_pairing import Missed, Paired, RigPairer, Skewed, Stamped
from inspector.sources import Capture, SourceError
from inspector.triggers import ClockMap, FrameCounter

__all__ = ["GenICamError", "GenICamSource", "aravis", "describe_device", "list_devices"]

logger = logging.getLogger(__name__)

POP_TIMEOUT_US = 200_000
LOST_AFTER_S = 5.0  # no buffer this long: ask the camera; if it does not answer, it is gone
PAIR_WINDOW = 8  # a frame whose partner has not come after this many later seqs was a missed trigger
DTYPES = {"Mono8": (np.uint8, 1), "Mono16": (np.uint16, 1), "RGB8": (np.uint8, 3)}


class GenICamError(SourceError):
    """A frame or camera of a GenICam rig that could not become a good capture; ``outcome`` says why."""

    def __init__(self, outcome: str, message: str, *, frames: int = 1) -> None:
        super().__init__(message)
        self.outcome, self.frames = outcome, frames


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


def _open(device: str) -> Any:
    """The Aravis camera for a device id, serial number or address."""
    arv = aravis()
    for found in list_devices():
        if device in (found["id"], found["serial"], found["address"]):
            return arv.Camera.new(found["id"])
    known = ", ".join(f"{d['id']} ({d['address']})" for d in list_devices()) or "none"
    raise GenICamError("camera_lost", f"GenICam device {device!r} not found; devices seen: {known}")


def describe_device(device: str) -> dict[str, Any]:
    """The key features of one device, as an engineer commissioning it wants them."""
    camera = _open(device)
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
class _Frame:
    seq: int
    capture_ts_ns: int
    image: np.ndarray


@dataclass
class _Camera:
    """One camera of a rig: its Aravis objects, counters, and the thread that pops its buffers."""

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
        camera = _open(self.settings.device)
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

    def pop(self) -> list[_Frame | GenICamError] | None:
        """The next frame and what was wrong before or with it; None when no buffer came within the timeout."""
        arv = aravis()
        buffer = self.stream.timeout_pop_buffer(POP_TIMEOUT_US)
        if buffer is None:
            return None
        self.last_buffer = time.monotonic()
        self.received += 1
        out: list[_Frame | GenICamError] = []
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
            out.append(_Frame(count.seq, self.clock.to_host(buffer.get_timestamp()), image))
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


class GenICamSource:
    """The captures of every rig in ``rigs`` (see the module docs).

    Args:
        rigs: The ``cameras:`` section.
        fps: Triggers per second fired for software-triggered cameras; 0: only by :meth:`fire`.
        start_seq: The first seq (a restarted gateway continues after the seqs already in Kafka, so
            the workers' idempotent store never takes a new capture for an old one).
        reconnect_s: First wait before reopening a lost camera; doubles up to 30 s.
        clock_ns: Host clock for the trigger timing (tests).
        on_ready: Called with a rig's id and readiness whenever it changes (the ``rig_ready`` gauge).

    Attributes:
        reconnects: Cameras reopened so far.
        triggers: Software line triggers fired so far, by rig (only while the rig streams).
        counts: Frames by outcome (``published`` pairs count once per frame).

    """

    def __init__(
        self, rigs: Sequence[RigSettings], fps: float = 5.0, *, start_seq: int = 1, reconnect_s: float = 1.0,
        clock_ns: Callable[[], int] = time.time_ns, on_ready: Callable[[str, bool], None] | None = None,
    ) -> None:  # fmt: skip
        if not rigs:
            raise SourceError("no GenICam rig configured: add a `cameras:` section (README, Connecting line cameras)")
        self.rigs, self.fps, self.reconnect_s, self.clock_ns = list(rigs), fps, reconnect_s, clock_ns
        self._fired_period_ns = int(1e9 / fps) if fps > 0 else None  # known when this source fires the triggers
        self.start_seq: int = start_seq
        self.reconnects = 0
        self.counts: dict[str, int] = dict.fromkeys(
            ("published", "incomplete", "missed_trigger", "unpaired", "skewed", "camera_lost", "overflow"), 0
        )
        self.items: queue.Queue[Capture | SourceError] = queue.Queue(maxsize=256)
        self._overflowed = 0  # frames dropped because the queue was full, not yet reported
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairers: dict[str, RigPairer[np.ndarray]] = {rig.id: RigPairer(window=PAIR_WINDOW) for rig in self.rigs}
        self.on_ready = on_ready
        self.ready: dict[str, bool] = {}
        for rig in self.rigs:
            self._set_ready(rig.id, False)
        self._cameras = {
            rig.id: [_Camera(rig.visible, "visible"), _Camera(rig.infrared, "infrared")] for rig in self.rigs
        }
        self._threads = [
            threading.Thread(target=self._receive, args=(rig, cam), name=f"genicam-{rig.id}-{cam.role}", daemon=True)
            for rig in self.rigs
            for cam in self._cameras[rig.id]
        ]
        self._ticks = 0
        self._ticked = threading.Condition()
        self._ticks_stopped = threading.Event()
        self.triggers = dict.fromkeys(self.ready, 0)
        if fps > 0:
            self._threads.append(threading.Thread(target=self._tick, name="genicam-trigger", daemon=True))
            self._threads += [
                threading.Thread(
                    target=self._trigger, args=(rig, cam), name=f"genicam-{rig.id}-{cam.role}-trigger", daemon=True
                )
                for rig in self.rigs
                for cam in self._cameras[rig.id]
                if cam.settings.trigger.mode == "software"
            ]
        for thread in self._threads:
            thread.start()

    # -- threads -----------------------------------------------------------------------------------

    def _receive(self, rig: RigSettings, cam: _Camera) -> None:
        wait, reported = self.reconnect_s, False
        while not self._stop.is_set():
            if cam.camera is None:
                try:
                    cam.open(self._next_seq(rig))
                    with self._lock:
                        self._pairers[rig.id].reset(cam.role)
                    wait, reported = self.reconnect_s, False
                    self._set_ready(rig.id, all(c.camera is not None for c in self._cameras[rig.id]))
                except Exception as exc:  # unplugged, rebooting, or refused: try again after a back-off
                    if reported:
                        logger.debug("rig %s: cannot open %s yet: %s", rig.id, cam.settings.device, exc)
                    else:  # once per outage
                        self._lost(rig, cam, f"cannot open {cam.settings.device}: {exc}")
                        reported = True
                    self._stop.wait(wait)
                    wait = min(30.0, wait * 2)
                    continue
            try:
                items = cam.pop()
            except Exception as exc:  # a buffer this source cannot read: never end the thread silently
                items = [GenICamError("incomplete", f"{cam.settings.device}: unreadable buffer: {exc}")]
            if items is None:
                quiet = time.monotonic() - cam.last_buffer > LOST_AFTER_S
                if cam.failed.is_set() or (quiet and not cam.answers()):
                    self._lost(rig, cam, f"{cam.settings.device} does not answer")
                    self.reconnects, reported = self.reconnects + 1, True
                    cam.close(stop=False)
                elif quiet:  # an idle line (no triggers), not a lost camera
                    cam.last_buffer = time.monotonic()
                continue
            for item in items:
                if isinstance(item, GenICamError):
                    self._put(item)
                else:
                    self._arrived(rig, cam, item)
        cam.close()

    def _next_seq(self, rig: RigSettings) -> int:
        """The seq a (re)opened camera of ``rig`` starts from: past every seq either camera has used."""
        with self._lock:
            shift = self._pairers[rig.id].shift
            used = [c.counter.next_seq + shift[c.role] for c in self._cameras[rig.id] if c.counter.last_id is not None]
            return int(max([self.start_seq, *used]))

    def _lost(self, rig: RigSettings, cam: _Camera, why: str) -> None:
        self._set_ready(rig.id, False)
        logger.warning("rig %s, %s camera: %s", rig.id, cam.role, why)
        self._put(GenICamError("camera_lost", f"rig {rig.id}, {cam.role} camera: {why}"))

    def _tick(self) -> None:
        """The line trigger: ``fps`` ticks a second, each fired by every software camera's own thread."""
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while not self._stop.is_set() and not self._ticks_stopped.is_set():
            with self._ticked:
                self._ticks += 1
                for rig in self.rigs:
                    self.triggers[rig.id] += self.ready[rig.id]
                self._ticked.notify_all()
            next_at += period
            if next_at < time.monotonic():  # late: a line trigger is never made up in a burst
                next_at = time.monotonic() + period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop_triggers(self) -> None:
        """Stop firing software triggers (frames already on their way still arrive)."""
        self._ticks_stopped.set()

    def _trigger(self, rig: RigSettings, cam: _Camera) -> None:
        """Fire one camera at every tick while its rig streams (a camera that does not answer blocks only here)."""
        seen = 0

        def due() -> bool:
            return self._ticks != seen or self._stop.is_set()

        while not self._stop.is_set():
            with self._ticked:
                self._ticked.wait_for(due, timeout=0.5)
                tick = self._ticks
            if tick != seen:
                seen = tick
                if self.ready[rig.id]:
                    self._fire(cam, tick)

    def _fire(self, cam: _Camera, tick: int) -> None:
        if cam.camera is None:
            return
        cam.fired.append((self.clock_ns(), tick))
        try:
            cam.camera.software_trigger()
        except Exception as exc:  # GVCP timeout: the camera went away; its receive thread reopens it
            logger.debug("software trigger on %s: %s", cam.settings.device, exc)
            cam.failed.set()

    def _set_ready(self, rig_id: str, ready: bool) -> None:
        self.ready[rig_id] = ready
        if self.on_ready is not None:
            self.on_ready(rig_id, ready)

    def trigger_of(self, rig_id: str, role: str, ts_ns: int) -> int | None:
        """The tick of the last software trigger fired at the ``role`` camera before ``ts_ns`` (diagnostics).

        For checking pairs where the cameras stamp frames on the host's clock, as the simulator does.
        """
        cam = next(c for c in self._cameras[rig_id] if c.role == role)
        fired = list(cam.fired)
        index = bisect.bisect_right(fired, (ts_ns, 2**62)) - 1
        return fired[index][1] if index >= 0 else None

    def received(self) -> dict[str, int]:
        """Buffers each camera has delivered so far (good, incomplete or unreadable), by device."""
        return {cam.settings.device: cam.received for cams in self._cameras.values() for cam in cams}

    def readiness(self) -> tuple[bool, str]:
        """``readyz``: ready while every rig streams; the text names the rigs that do not."""
        down = sorted(rig for rig, ready in self.ready.items() if not ready)
        return (not down, f"rigs down: {', '.join(down)}" if down else f"{len(self.ready)} rig(s) streaming")

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Wait until every rig's cameras are open and streaming; whether they are."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(self.ready.values()):
            time.sleep(0.05)
        return all(self.ready.values())

    def fire(self, rig_id: str, roles: Sequence[str] = ("visible", "infrared")) -> None:
        """One software trigger on the ``roles`` cameras of a rig (both: the line trigger)."""
        for cam in self._cameras[rig_id]:
            if cam.role in roles and cam.settings.trigger.mode == "software":
                self._fire(cam, -1)

    def _arrived(self, rig: RigSettings, cam: _Camera, frame: _Frame) -> None:
        """Pair a frame with its partner (:class:`inspector.rig_pairing.RigPairer`); publish what that completes.

        The seqs from the frame IDs are checked against the capture times there, with the trigger
        period: ``1 / fps`` when this source fires the triggers, else the cameras' median interval;
        free-run cameras are paired by seq alone.
        """
        with self._lock:
            self._period(cam, frame.capture_ts_ns)
            other = next(c for c in self._cameras[rig.id] if c is not cam)
            fired = self._fired_period_ns if cam.settings.trigger.mode == "software" else None
            period = fired or min((p for p in (cam.period_ns, other.period_ns) if p), default=None)
            if "free-run" in (cam.settings.trigger.mode, other.settings.trigger.mode):
                period = None
            stamped = Stamped(cam.role, frame.seq, frame.capture_ts_ns, frame.image)
            for event in self._pairers[rig.id].add(stamped, period):
                if isinstance(event, Paired):
                    capture = Capture(
                        rig.id, event.seq, event.visible.ts_ns, event.visible.item, event.infrared.item,
                        mm_per_px=rig.mm_per_px, infrared_ts_ns=event.infrared.ts_ns,
                    )  # fmt: skip
                    self.counts["published"] += 2
                    self._put(capture)
                elif isinstance(event, Missed):
                    device = (rig.visible if event.role == "visible" else rig.infrared).device
                    what = f"rig {rig.id}: {device} missed {event.triggers} trigger(s) before seq {event.before_seq}"
                    self._put(GenICamError("missed_trigger", what))
                elif isinstance(event, Skewed):
                    what = f"rig {rig.id}: seq {event.seq}'s frames {event.skew_ns / 1e6:.0f} ms apart, not one trigger"
                    self._put(GenICamError("skewed", what, frames=2))
                else:
                    missing = _other(event.role)
                    self._put(GenICamError("unpaired", f"rig {rig.id}: seq {event.seq} has no good {missing} frame"))

    @staticmethod
    def _period(cam: _Camera, ts_ns: int) -> None:
        """Track the median recent interval between a camera's frames: the trigger period.

        The median, not the minimum: a frame stamped late and the next one on time make one short
        interval, and a missed trigger one long one; neither moves the median of 32.
        """
        if cam.last_ts_ns is not None and ts_ns > cam.last_ts_ns:
            cam.intervals.append(ts_ns - cam.last_ts_ns)
            cam.period_ns = int(np.median(cam.intervals))
        cam.last_ts_ns = ts_ns

    def _put(self, item: Capture | SourceError) -> None:
        if isinstance(item, GenICamError):
            self.counts[item.outcome] = self.counts.get(item.outcome, 0) + 1
        try:
            if self._overflowed:  # tell the gateway what was dropped while it was behind
                self.items.put_nowait(GenICamError("overflow", "the gateway fell behind", frames=self._overflowed))
                self._overflowed = 0
            self.items.put(item, timeout=1.0)
        except queue.Full:  # the gateway is not taking captures: count it rather than block the camera
            self._overflowed += 2 if isinstance(item, Capture) else 1
            logger.warning("gateway is behind: dropping %s", type(item).__name__)

    # -- the Source protocol -----------------------------------------------------------------------

    def __iter__(self) -> GenICamSource:
        return self

    def __next__(self) -> Capture | SourceError:
        while not self._stop.is_set():
            try:
                return self.items.get(timeout=0.2)
            except queue.Empty:
                continue
        raise StopIteration

    def close(self) -> None:
        """Stop triggering and receiving, stop the cameras' acquisition."""
        self._stop.set()
        with self._ticked:
            self._ticked.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)


def _other(role: str) -> str:
    return "infrared" if role == "visible" else "visible"
