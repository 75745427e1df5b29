"""Where captures come from: synthetic parts, a data folder, or a camera stream; and how they become frames.

A :class:`Capture` is what one trigger of a rig produced: a visible image, an infrared image (or
``None`` when that camera is not part of the source) and their metadata. A source is an iterator of
captures; a capture it could not deliver is yielded as a :class:`SourceError` *value* so that the
caller can count it and go on (as :func:`inspector.dataset.iter_samples` does), while a source that
is gone for good *raises* :class:`SourceError`::

    source = SyntheticSource(["rig-1", "rig-2"], preset="hard", size=512)
    for item in pace(source, fps=10):
        if isinstance(item, SourceError):
            continue                                   # count it
        for frame, data in capture_to_records(item, "png"):
            ...                                        # publish: headers frame.to_headers(), value data

Sources:

* :class:`SyntheticSource` renders a small pool of parts once (:func:`inspector.synth.generate_sample`)
  and cycles through it, so it can run at line speed on a laptop.
* :class:`FolderSource` replays a data folder in the ``inspector.sample/1`` format (docs/DATA.md).
* :class:`VideoSource` reads one camera through OpenCV (USB index, RTSP URL, video file) and
  reconnects with back-off when a read fails.

Both synthetic and folder captures carry trigger sequence numbers (per camera, from 1), so the
worker pairs their visible and infrared frames exactly. A :class:`VideoSource` has no trigger counter
(``seq = 0``): it reads one modality, and a rig whose visible and infrared cameras are two video
streams runs one source (one gateway) per stream under the same ``camera_id``; the worker then pairs
the frames by capture time (``worker.tolerance_ms``), with no guarantee beyond that.

Capture times come from an injected clock (``clock_ns``, the wall clock by default), never from the
recorded data, so a replay looks like a live line to the worker's skew and deadline checks.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import cv2
import numpy as np

from inspector.dataset import DataError, Sample, list_ids, read_sample
from inspector.errors import InspectorError
from inspector.frame import Encoding, Frame, ImageArray, Modality, encode_frame
from inspector.synth import SynthConfig, generate_sample

__all__ = [
    "Capture",
    "FolderSource",
    "Source",
    "SourceError",
    "SyntheticSource",
    "VideoSource",
    "capture_to_records",
    "pace",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_CAMERA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SourceError(InspectorError):
    """A capture could not be read (yielded, the source goes on) or the source is gone (raised).

    Args:
        message: What went wrong.
        outcome: The gateway's drop reason for it (``source_error`` unless the source knows better,
            e.g. a GenICam camera's ``incomplete``; ``camera_lost`` is no frame but a reconnect).
        frames: Frames it stands for.

    """

    def __init__(self, message: str, *, outcome: str = "source_error", frames: int = 1) -> None:
        super().__init__(message)
        self.outcome, self.frames = outcome, frames


@dataclass(frozen=True, eq=False)
class Capture:
    """What one trigger of a rig produced.

    Attributes:
        camera_id: The rig (one id for its visible and its infrared camera).
        seq: Trigger sequence number shared by both frames, from 1; ``0`` when the source has no
            trigger counter (frames are then paired by time).
        capture_ts_ns: Capture time of the visible frame (or of the only frame), in nanoseconds.
        visible: ``(H, W)`` or ``(H, W, 3)`` RGB ``uint8``/``uint16`` image, or ``None``.
        infrared: ``(h, w)`` ``uint16`` radiometric counts (``uint8`` from a plain video device), or
            ``None`` when the source has no infrared camera.
        part_id: The part in view, when known.
        mm_per_px: Visible-image calibration, when known (the infrared scale follows from the
            registration, so the infrared frame carries none).
        infrared_ts_ns: Capture time of the infrared frame when it differs from ``capture_ts_ns``.

    """

    camera_id: str
    seq: int
    capture_ts_ns: int
    visible: ImageArray | None
    infrared: ImageArray | None = None
    part_id: str | None = None
    mm_per_px: float | None = None
    infrared_ts_ns: int | None = None

    def __post_init__(self) -> None:
        if self.visible is None and self.infrared is None:
            msg = f"capture {self.camera_id} seq={self.seq} has neither a visible nor an infrared image"
            raise SourceError(msg)

    @property
    def frame_count(self) -> int:
        """1 or 2: how many frames (records) this capture makes."""
        return (self.visible is not None) + (self.infrared is not None)


class Source(Protocol):
    """An iterator of captures (or of :class:`SourceError` values for captures it lost).

    ``reconnects`` counts how often the source had to reopen its camera; ``close()`` releases it.
    """

    reconnects: int

    def __iter__(self) -> Iterator[Capture | SourceError]: ...

    def __next__(self) -> Capture | SourceError: ...

    def close(self) -> None:
        """Release the camera or files the source holds."""


Item = TypeVar("Item", bound=Capture | SourceError)


class _BaseSource(Generic[Item]):
    """Shared plumbing: iterator protocol, ``reconnects``, context manager."""

    reconnects: int = 0

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (nothing by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def check_cameras(cameras: Iterable[str]) -> list[str]:
    """The camera ids, checked (1-64 of letters, digits, ``._-``; distinct), or raise :class:`SourceError`."""
    names = list(cameras)
    bad = [c for c in names if not _CAMERA_ID.fullmatch(c)]
    if not names or bad:
        msg = (
            f"camera ids must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, e.g. rig-1 (got {', '.join(map(repr, bad)) or 'none'})"
        )
        raise SourceError(msg)
    if len(set(names)) != len(names):
        msg = f"camera ids must be distinct, got {', '.join(names)}"
        raise SourceError(msg)
    return names


def _infrared_ts(capture_ts_ns: int, sample: Sample) -> int:
    """The capture time of the infrared frame, keeping the sample's visible → infrared offset."""
    return max(capture_ts_ns + sample.meta.infrared_ts_ns - sample.meta.visible_ts_ns, 0)


class SyntheticSource(_BaseSource[Capture]):
    """An endless synthetic line: a pool of rendered parts, cycled over the cameras.

    Round ``r`` (from 0) yields one capture per camera, in order, each with ``seq = start_seq + r``,
    a fresh capture time from ``clock_ns`` and part ``(r * len(cameras) + i) % pool`` of the pool,
    so neighbouring cameras show different parts. ``part_id`` is ``{camera_id}-{seq:06d}``.

    Args:
        cameras: Camera ids, e.g. ``["rig-1", "rig-2"]``.
        preset: Synthetic preset name or :class:`~inspector.synth.SynthConfig`.
        seed: Set seed of the pool (same seed, same parts).
        size: Visible frame side in pixels (a multiple of 4, at least 64); infrared is 4x coarser.
        pool: Parts rendered up front (each takes ~0.1-1 s at 1024 px).
        mm_per_px: Visible calibration of the rendered parts.
        rgb: RGB visible images instead of grey.
        start_seq: First sequence number (1; raise it to keep captures of a second run distinct).
        clock_ns: Wall clock in nanoseconds, read once per capture.
        progress: Called with ``(done, pool)`` after each part is rendered.

    Raises:
        SourceError: No or invalid camera ids, or ``pool``/``start_seq`` below 1.
        SynthError: A bad preset, size or calibration.

    """

    def __init__(
        self,
        cameras: Iterable[str],
        preset: SynthConfig | str = "default",
        seed: int = 0,
        size: int = 1024,
        pool: int = 8,
        *,
        mm_per_px: float = 0.05,
        rgb: bool = False,
        start_seq: int = 1,
        clock_ns: Callable[[], int] = time.time_ns,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.cameras = check_cameras(cameras)
        if pool < 1 or start_seq < 1:
            msg = f"pool and start_seq must be >= 1, got pool={pool}, start_seq={start_seq}"
            raise SourceError(msg)
        self.clock_ns = clock_ns
        self.mm_per_px = mm_per_px
        self.samples: list[Sample] = []
        for index in range(pool):
            self.samples.append(generate_sample(index, seed, preset, mm_per_px=mm_per_px, size=size, rgb=rgb))
            if progress is not None:
                progress(index + 1, pool)
        self._seq = start_seq
        self._camera = 0
        self._taken = 0

    def __next__(self) -> Capture:
        camera_id = self.cameras[self._camera]
        sample = self.samples[self._taken % len(self.samples)]
        now = self.clock_ns()
        capture = Capture(
            camera_id=camera_id,
            seq=self._seq,
            capture_ts_ns=now,
            visible=sample.visible,
            infrared=sample.infrared,
            part_id=f"{camera_id}-{self._seq:06d}",
            mm_per_px=self.mm_per_px,
            infrared_ts_ns=_infrared_ts(now, sample),
        )
        self._taken += 1
        self._camera += 1
        if self._camera == len(self.cameras):
            self._camera = 0
            self._seq += 1
        return capture


class FolderSource(_BaseSource[Capture | SourceError]):
    """Replay a data folder (``inspector.sample/1``, see docs/DATA.md): each sample becomes a capture.

    Samples are taken in id order. Sample ``i`` is captured by ``cameras[i % len(cameras)]``, or by
    the ``camera_id`` in its metadata when ``cameras`` is not given. Sequence numbers are fresh per
    camera, from 1, and keep counting over loops; ``part_id`` and ``mm_per_px`` come from the
    metadata; capture times from ``clock_ns``, with the recorded infrared offset kept.

    A sample that cannot be read is yielded as a :class:`SourceError` value (the replay goes on).

    Args:
        path: The data folder.
        cameras: Camera ids to spread the samples over; ``None`` uses each sample's own.
        loop: Start again after the last sample instead of stopping.
        clock_ns: Wall clock in nanoseconds, read once per capture.

    Raises:
        SourceError: The folder does not exist or holds no sample, or a camera id is invalid.

    """

    def __init__(
        self,
        path: Path | str,
        cameras: Iterable[str] | None = None,
        *,
        loop: bool = False,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = Path(path)
        self.cameras = check_cameras(cameras) if cameras is not None else None
        self.loop = loop
        self.clock_ns = clock_ns
        try:
            self.ids = list_ids(self.path)
        except DataError as exc:
            raise SourceError(str(exc)) from None
        if not self.ids:
            msg = f"data folder {self.path} holds no sample ({{id}}.json): generate one with `inspector synth`"
            raise SourceError(msg)
        self._index = 0
        self._seq: dict[str, int] = {}

    def __next__(self) -> Capture | SourceError:
        if self._index == len(self.ids):
            if not self.loop:
                raise StopIteration
            self._index = 0
        position, sample_id = self._index, self.ids[self._index]
        self._index += 1
        try:
            sample = read_sample(self.path, sample_id, with_mask=False)
        except DataError as exc:
            return SourceError(f"sample {sample_id} skipped: {exc}")
        camera_id = self.cameras[position % len(self.cameras)] if self.cameras else sample.meta.camera_id
        seq = self._seq[camera_id] = self._seq.get(camera_id, 0) + 1
        now = self.clock_ns()
        return Capture(
            camera_id=camera_id,
            seq=seq,
            capture_ts_ns=now,
            visible=sample.visible,
            infrared=sample.infrared,
            part_id=sample.meta.part_id,
            mm_per_px=sample.meta.mm_per_px,
            infrared_ts_ns=_infrared_ts(now, sample),
        )


class _VideoCapture(Protocol):
    """The part of ``cv2.VideoCapture`` a :class:`VideoSource` uses."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


def _open_video(uri: str | int, api_preference: int) -> _VideoCapture:
    capture: _VideoCapture = cv2.VideoCapture(uri, api_preference)
    return capture


class VideoSource(_BaseSource[Capture]):
    """One camera read through OpenCV: a USB device index, an RTSP/HTTP URL or a video file.

    Every frame read becomes a capture of one modality (``seq = 0``: video streams have no trigger
    counter, so the worker pairs by time). Visible frames are RGB (or grey, as decoded); infrared
    frames are single-channel (a colour frame is converted to grey; a 16-bit ``Y16`` frame is kept).

    When a read or an open fails, the source releases the device, waits (``backoff_s``, doubling up to
    ``max_backoff_s``), reopens it and counts one reconnect; after ``max_reconnects`` consecutive
    failed attempts it raises :class:`SourceError` (``None``: it never gives up). The end of a video
    file is not a failure: the source stops there, or starts the file again with ``loop=True``.

    Args:
        uri: Device index (``0`` or ``"0"``), URL, GStreamer pipeline (when OpenCV has GStreamer) or file.
        camera_id: The rig this camera belongs to.
        modality: ``visible`` or ``infrared``.
        mm_per_px: Visible calibration to put on each frame (the worker needs one for visible frames,
            or ``worker`` settings must supply a default).
        loop: Replay a video file from the start when it ends.
        clock_ns: Wall clock in nanoseconds, read after each frame is read.
        sleep: Sleeps the back-off (injected by tests).
        backoff_s: First wait before reopening.
        max_backoff_s: Longest wait between attempts.
        max_reconnects: Consecutive failed attempts before giving up; ``None`` retries forever.
        api_preference: OpenCV backend (``cv2.CAP_ANY``, ``cv2.CAP_FFMPEG``, ``cv2.CAP_V4L2``, ...).
        open_capture: Opens the device (``cv2.VideoCapture`` by default; injected by tests).

    """

    def __init__(
        self,
        uri: str | int,
        camera_id: str,
        *,
        modality: Modality = "visible",
        mm_per_px: float | None = None,
        loop: bool = False,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], object] = time.sleep,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_reconnects: int | None = None,
        api_preference: int = cv2.CAP_ANY,
        open_capture: Callable[[str | int, int], _VideoCapture] = _open_video,
    ) -> None:
        self.uri: str | int = int(uri) if isinstance(uri, str) and uri.isdigit() else uri
        self.camera_id = check_cameras([camera_id])[0]
        self.cameras = [self.camera_id]
        if modality not in ("visible", "infrared"):
            msg = f"modality must be visible or infrared, got {modality!r}"
            raise SourceError(msg)
        self.modality: Modality = modality
        self.mm_per_px = mm_per_px
        self.loop = loop
        self.clock_ns = clock_ns
        self.sleep = sleep
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_reconnects = max_reconnects
        self.api_preference = api_preference
        self.open_capture = open_capture
        self.is_file = isinstance(self.uri, str) and Path(self.uri).is_file()
        self.reconnects = 0
        self.frames = 0
        self._capture: _VideoCapture | None = None
        self._failures = 0  # consecutive failed opens or reads
        self._read_since_open = 0
        self._last_error = ""

    def __next__(self) -> Capture:
        while True:
            if self._capture is None:
                capture = self.open_capture(self.uri, self.api_preference)
                if not capture.isOpened():
                    capture.release()
                    self._fail(f"could not open {self.uri!r}")
                    continue
                self._capture, self._read_since_open = capture, 0
            ok, image = self._capture.read()
            if ok and image is not None:
                self._failures = 0
                self._read_since_open += 1
                self.frames += 1
                return self._to_capture(np.asarray(image))
            at_end = self.is_file and self._read_since_open > 0
            self.close()
            if at_end:
                if not self.loop:
                    raise StopIteration
                continue
            self._fail(f"reading {self.uri!r} failed")

    def _fail(self, what: str) -> None:
        """Record a failed attempt; wait the back-off and count a reconnect, or give up."""
        self._failures += 1
        self._last_error = what
        if self.max_reconnects is not None and self._failures > self.max_reconnects:
            msg = (
                f"camera {self.camera_id}: {what} after {self.max_reconnects} reconnect attempt(s): check the "
                "device index, URL or file, and that no other program holds the camera"
            )
            raise SourceError(msg)
        delay = min(self.backoff_s * 2 ** (self._failures - 1), self.max_backoff_s)
        logger.warning("camera %s: %s; reconnecting in %.1f s", self.camera_id, what, delay)
        self.sleep(delay)
        self.reconnects += 1

    def _to_capture(self, image: np.ndarray) -> Capture:
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 3 and self.modality == "infrared":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        elif image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
        now = self.clock_ns()
        visible, infrared = (image, None) if self.modality == "visible" else (None, image)
        return Capture(
            camera_id=self.camera_id,
            seq=0,
            capture_ts_ns=now,
            visible=visible,
            infrared=infrared,
            mm_per_px=self.mm_per_px,
        )

    def close(self) -> None:
        """Release the device (the next read opens it again)."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def pace(
    source: Iterable[T],
    fps: float | None,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield the items of ``source`` at ``fps`` items per second (``None`` or ``<= 0``: as fast as they come).

    The wait happens *before* each item is taken, so a capture time read by the source is the time
    the item is handed on. A consumer that falls behind gets the next item at once, but the schedule
    never bursts to catch up more than one period.

    Args:
        source: Any iterable (a source, a list of captures).
        fps: Items per second.
        sleep: Waits ``seconds`` (``time.sleep``; a stop event's ``wait`` ends pacing early).
        clock: Monotonic clock in seconds.

    """
    if fps is None or fps <= 0:
        yield from source
        return
    period = 1.0 / fps
    iterator = iter(source)
    due = clock()
    while True:
        delay = due - clock()
        if delay > 0:
            sleep(delay)
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item
        due = max(due + period, clock() - period)


def capture_to_records(
    capture: Capture, encoding: Encoding = "png", *, jpeg_quality: int = 95
) -> list[tuple[Frame, bytes]]:
    """Encode a capture as its frames: ``[(frame, data)]``, visible first, one per image present.

    The visible frame carries ``mm_per_px`` and ``part_id``; the infrared frame carries ``part_id``
    only. JPEG holds 8 bits, so a ``uint16`` infrared image is sent as PNG (lossless) when
    ``encoding`` is ``jpeg``.

    Args:
        capture: The capture.
        encoding: ``png``, ``jpeg`` or ``raw``.
        jpeg_quality: JPEG quality, 0 to 100.

    Raises:
        FrameEncodeError: An image or a metadata value cannot be encoded.

    """
    records = []
    common: dict[str, Any] = {"camera_id": capture.camera_id, "seq": capture.seq, "part_id": capture.part_id}
    if capture.visible is not None:
        records.append(
            encode_frame(
                capture.visible,
                modality="visible",
                capture_ts_ns=capture.capture_ts_ns,
                encoding=encoding,
                mm_per_px=capture.mm_per_px,
                jpeg_quality=jpeg_quality,
                **common,
            )
        )
    if capture.infrared is not None:
        ir_encoding: Encoding = "png" if encoding == "jpeg" and capture.infrared.dtype != np.uint8 else encoding
        ts = capture.infrared_ts_ns if capture.infrared_ts_ns is not None else capture.capture_ts_ns
        records.append(
            encode_frame(
                capture.infrared,
                modality="infrared",
                capture_ts_ns=ts,
                encoding=ir_encoding,
                jpeg_quality=jpeg_quality,
                **common,
            )
        )
    return records
