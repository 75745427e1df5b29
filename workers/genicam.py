"""GenICam line cameras through Aravis: each rig's visible and infrared camera as one source of captures.

    source = GenICamSource(settings.cameras, fps=10)      # the rigs of the `cameras:` section
    for item in source:                                   # Capture, or SourceError for what was lost
        ...

Each camera is a :class:`workers.genicam_camera.Camera` with a receive thread of its own here,
which pops its frames (one copy out of the pool buffer, a seq from the GigE Vision frame ID, the
capture time on the host's clock). A rig's two frames with the same seq make one
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
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from inspector.config import RigSettings
from inspector.rig_pairing import Missed, Paired, RigPairer, Skewed, Stamped
from inspector.sources import Capture, SourceError
from workers.genicam_camera import Camera, CameraFrame, GenICamError, aravis, describe_device, list_devices

__all__ = ["GenICamError", "GenICamSource", "aravis", "describe_device", "list_devices"]

logger = logging.getLogger(__name__)

LOST_AFTER_S = 5.0  # no buffer this long: ask the camera; if it does not answer, it is gone
PAIR_WINDOW = 8  # a frame whose partner has not come after this many later seqs is given up


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
            rig.id: [Camera(rig.visible, "visible"), Camera(rig.infrared, "infrared")] for rig in self.rigs
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

    def _receive(self, rig: RigSettings, cam: Camera) -> None:
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

    def _lost(self, rig: RigSettings, cam: Camera, why: str) -> None:
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

    def _trigger(self, rig: RigSettings, cam: Camera) -> None:
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

    def _fire(self, cam: Camera, tick: int) -> None:
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

    def _arrived(self, rig: RigSettings, cam: Camera, frame: CameraFrame) -> None:
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
    def _period(cam: Camera, ts_ns: int) -> None:
        """Track the median recent interval between a camera's frames: the trigger period.

        The median, not the minimum: a frame stamped late and the next one on time make one short
        interval, and a missed trigger one long one; neither moves the median of 32.
        """
        if cam.last_ts_ns is not None and ts_ns > cam.last_ts_ns:
            cam.intervals.append(ts_ns - cam.last_ts_ns)
            cam.period_ns = int(statistics.median(cam.intervals))
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
