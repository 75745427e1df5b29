"""Trigger sequence numbers from camera frame IDs, and camera timestamps mapped to host time.

A rig's visible and infrared cameras are fired by the same line trigger, so the *n*-th frame of one
is the *n*-th of the other. Each camera numbers its frames itself (the GigE Vision block ID), from
its own start: :class:`FrameCounter` turns a camera's frame IDs into the rig's ``seq``, aligned at
start and checked on every frame::

    counter = FrameCounter(start_seq=1)
    counter.seq(frame_id=7)      # Count(seq=1, missed=0): the first frame sets the origin
    counter.seq(frame_id=8)      # Count(seq=2, missed=0)
    counter.seq(frame_id=11)     # Count(seq=5, missed=2): two triggers this camera did not see

A gap in one camera's frame IDs is a missed trigger: it is counted and the seq moves past it, so
the pairing never shifts (the other camera's frame 3 and 4 stay unpaired; frame 5 pairs with 5).
GigE Vision 1.x block IDs are 16 bits and skip 0 when they wrap (65535 → 1); GVSP 2.0's are 64 bits.

Camera clocks are not the host's: :class:`ClockMap` maps a device timestamp to host nanoseconds
with an offset measured from frames whose arrival the host timed (``host - device``), keeping the
smallest offset of a sliding window (the frame that crossed the network fastest), so queueing delay
does not age the capture time and drift between the clocks is followed.

Pure bookkeeping: no clock is read here; the gateway passes the readings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["GVSP1_MAX_ID", "ClockMap", "Count", "FrameCounter"]

GVSP1_MAX_ID = 0xFFFF  # 16-bit block IDs of GigE Vision 1.x; 0 is never used


@dataclass(frozen=True)
class Count:
    """The seq of a frame, and the triggers this camera missed just before it."""

    seq: int
    missed: int = 0


class FrameCounter:
    """One camera's frame IDs to the rig's trigger seq (see the module docs).

    Args:
        start_seq: The seq of the first frame seen.
        id_bits: 16 for GigE Vision 1.x block IDs (they wrap 65535 → 1), 64 for GVSP 2.0.
        max_gap: A jump of more frame IDs than this is not missed triggers but a restarted camera
            (its counter began again): the counter re-aligns and reports it through :attr:`restarts`.

    Attributes:
        missed: Triggers missed so far.
        restarts: Times the camera's counter went backwards or jumped past ``max_gap``.
        last_id: The last frame ID seen (``None`` before the first).

    """

    def __init__(self, start_seq: int = 1, id_bits: int = 16, max_gap: int = 10_000) -> None:
        if start_seq < 1:
            raise ValueError(f"start_seq must be at least 1, got {start_seq}")
        if id_bits not in (16, 64):
            raise ValueError(f"id_bits must be 16 (GigE Vision 1.x) or 64 (GVSP 2.0), got {id_bits}")
        self.id_bits, self.max_gap = id_bits, max_gap
        self.next_seq = start_seq
        self.last_id: int | None = None
        self.missed = 0
        self.restarts = 0

    def _step(self, frame_id: int) -> int:
        """Frame IDs from the last one to ``frame_id`` (1 = the next frame), with the 16-bit wrap."""
        assert self.last_id is not None
        if self.id_bits == 64:
            return frame_id - self.last_id
        if frame_id >= self.last_id:
            return frame_id - self.last_id
        return (GVSP1_MAX_ID - self.last_id) + frame_id  # wrapped: 0 is skipped

    def seq(self, frame_id: int) -> Count:
        """The seq of the frame with ``frame_id``, and how many triggers were missed before it."""
        if frame_id < 0 or (self.id_bits == 16 and not 1 <= frame_id <= GVSP1_MAX_ID):
            raise ValueError(f"frame ID {frame_id} is out of range for {self.id_bits}-bit block IDs")
        if self.last_id is None:
            self.last_id = frame_id
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            return Count(seq)
        step = self._step(frame_id)
        if step <= 0 or step > self.max_gap:  # the same ID again, backwards, or absurdly far: the camera restarted
            self.restarts += 1
            self.last_id = frame_id
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            return Count(seq)
        self.last_id = frame_id
        missed = step - 1
        self.missed += missed
        seq = self.next_seq + missed
        self.next_seq = seq + 1
        return Count(seq, missed)


class ClockMap:
    """Device timestamps to host nanoseconds through the smallest recent ``host - device`` offset.

    Args:
        window: How many recent frames the offset is taken over (the minimum of their offsets).

    """

    def __init__(self, window: int = 256) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._offsets: deque[int] = deque(maxlen=window)

    def observe(self, device_ns: int, host_ns: int) -> None:
        """A frame stamped ``device_ns`` by the camera reached the host at ``host_ns``."""
        self._offsets.append(host_ns - device_ns)

    @property
    def offset_ns(self) -> int | None:
        """The current offset (``None`` before the first frame)."""
        return min(self._offsets) if self._offsets else None

    def to_host(self, device_ns: int) -> int:
        """``device_ns`` on the host's clock.

        Raises:
            ValueError: No frame was observed yet.

        """
        offset = self.offset_ns
        if offset is None:
            raise ValueError("no frame observed yet: call observe() with a timed frame first")
        return device_ns + offset
