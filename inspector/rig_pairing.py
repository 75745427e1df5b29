"""Pairing a rig's two cameras by trigger seq, checked against their capture times.

Each camera's frames carry the rig's seq from its own frame IDs (:class:`inspector.triggers.FrameCounter`),
so the visible and infrared frames of one trigger have the same seq, and a gap in a camera's IDs
is already a missed trigger. A camera that does not see a trigger at all sends no frame and its
frame IDs go on without a gap: from then on its frames carry the seq of the trigger before the one
they belong to. :class:`RigPairer` finds that from the capture times::

    pairer = RigPairer()
    for event in pairer.add(Stamped("visible", seq=7, ts_ns=..., item=image), period_ns=100_000_000):
        ...   # Paired(seq, visible, infrared) | Missed(role, triggers, before_seq) | Alone(seq, role)

The two frames of a seq are normally a few milliseconds apart. When they are half a trigger
period or more apart, either the later camera missed triggers, or one frame was stamped very late.
The pair is held, not published. Only when ``confirm`` pairs in a row have the same camera late is
it a missed trigger: the late camera's held and pending frames move on by *n* seqs (*n*: the whole
periods nearest the held pairs' median skew), re-pair with the right partners, and :class:`Missed`
is reported; the other camera's frames of the skipped seqs end :class:`Alone`. As soon as a pair in
between is on time, no missed trigger explains the held pairs: they are :class:`Skewed`, dropped
rather than published as pairs that may join two triggers.

What that guarantees: while the two cameras' stamps of one trigger stay within half a period of each
other, every missed trigger is found, no pair joins two triggers, and nothing is dropped as skewed.
A stamp later than that costs its capture (``Skewed``), never a wrong pair; only ``confirm`` such
stamps in a row, all from one camera, are taken for a missed trigger. Keep the cameras' timestamps
close (hardware triggers, PTP) and this never happens.

A frame whose partner has not come once the rig is ``window`` seqs further is :class:`Alone`.
Pure bookkeeping: no clock is read, nothing is sent; the caller passes the times and the period.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["ROLES", "Alone", "Event", "Missed", "Paired", "RigPairer", "Skewed", "Stamped", "whole_periods"]

ROLES = ("visible", "infrared")
T = TypeVar("T")


@dataclass
class Stamped(Generic[T]):
    """One camera's frame: its role in the rig, seq, capture time on the host clock, and payload."""

    role: str
    seq: int
    ts_ns: int
    item: T


@dataclass(frozen=True)
class Paired(Generic[T]):
    """The two frames of one trigger."""

    seq: int
    visible: Stamped[T]
    infrared: Stamped[T]


@dataclass(frozen=True)
class Missed:
    """The ``role`` camera missed ``triggers`` triggers just before ``before_seq`` (no gap in its frame IDs)."""

    role: str
    triggers: int
    before_seq: int


@dataclass(frozen=True)
class Skewed:
    """Seq ``seq``'s frames came ``skew_ns`` apart (half a period or more), no missed trigger explaining it.

    They may not be one trigger's, so they are not published as a pair.
    """

    seq: int
    skew_ns: int


@dataclass(frozen=True)
class Alone:
    """Seq ``seq`` has only the ``role`` camera's frame: its partner was lost or never taken."""

    seq: int
    role: str


Event = Paired[T] | Missed | Skewed | Alone


def whole_periods(skew_ns: int, period_ns: int) -> int:
    """The whole number of trigger periods nearest to two frames' capture-time skew (0: the same trigger)."""
    return round(abs(skew_ns) / period_ns)


@dataclass
class _Held(Generic[T]):
    seq: int
    frames: dict[str, Stamped[T]]
    late: str
    skew_ns: int


@dataclass
class RigPairer(Generic[T]):
    """A rig's pairing (see the module docs).

    Args:
        confirm: Pairs in a row off by the same whole periods that make a missed trigger.
        window: Seqs the rig may move on before a frame without a partner is given up.

    Attributes:
        shift: Seqs each role's camera has been moved on by missed triggers without an ID gap.

    """

    confirm: int = 3
    window: int = 8
    shift: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    _pending: dict[int, dict[str, Stamped[T]]] = field(default_factory=dict)
    _held: list[_Held[T]] = field(default_factory=list)

    def add(self, frame: Stamped[T], period_ns: int | None) -> list[Event[T]]:
        """File one camera's frame (its seq from its frame IDs); what it completes, in seq order.

        Args:
            frame: The frame; its ``seq`` is moved on by the camera's :attr:`shift`.
            period_ns: The trigger period, or ``None`` where the frames are not triggered together
                (free-run cameras, or the period is not known yet): then seqs are not checked.

        """
        if frame.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {frame.role!r}")
        frame.seq += self.shift[frame.role]
        self._pending.setdefault(frame.seq, {})[frame.role] = frame
        out = self._settle(period_ns)
        newest = max([*self._pending, *(h.seq for h in self._held)], default=frame.seq)
        for seq in sorted(s for s in self._pending if s < newest - self.window):
            (role,) = self._pending.pop(seq)
            out.append(Alone(seq, role))
        return out

    def reset(self, role: str) -> None:
        """A reopened camera: its seqs are counted afresh past the rig's (no shift carried over)."""
        self.shift[role] = 0

    def _settle(self, period_ns: int | None) -> list[Event[T]]:
        out: list[Event[T]] = []
        for seq in sorted(s for s, frames in self._pending.items() if len(frames) == 2):
            frames = self._pending.pop(seq)
            skew = frames["visible"].ts_ns - frames["infrared"].ts_ns
            periods = whole_periods(skew, period_ns) if period_ns else 0
            if periods == 0:
                out += self._release()  # a pair on time: the held ones were jitter
                out.append(Paired(seq, frames["visible"], frames["infrared"]))
                continue
            late = "visible" if skew > 0 else "infrared"
            if self._held and self._held[0].late != late:
                out += self._release()
            self._held.append(_Held(seq, frames, late, abs(skew)))
            if len(self._held) >= self.confirm:
                out += self._realign(period_ns)
                break  # _realign settled what is pending again
        return out

    def _release(self) -> list[Event[T]]:
        released: list[Event[T]] = [Skewed(h.seq, h.skew_ns) for h in self._held]
        self._held.clear()
        return released

    def _realign(self, period_ns: int | None) -> list[Event[T]]:
        """The held pairs' late camera missed triggers: move its frames on and pair again."""
        assert period_ns is not None
        first, late = self._held[0].seq, self._held[0].late
        periods = whole_periods(int(statistics.median(h.skew_ns for h in self._held)), period_ns)
        moving = [h.frames.pop(late) for h in self._held]
        for held in self._held:
            (early,) = held.frames.values()
            self._pending.setdefault(held.seq, {})[early.role] = early
        self._held.clear()
        for seq in sorted(s for s in self._pending if s >= first):  # its frames still waiting, filed the same way
            if late in self._pending[seq]:
                moving.append(self._pending[seq].pop(late))
                if not self._pending[seq]:
                    del self._pending[seq]
        for frame in sorted(moving, key=lambda f: f.seq, reverse=True):
            frame.seq += periods
            self._pending.setdefault(frame.seq, {})[late] = frame
        self.shift[late] += periods
        return [Missed(late, periods, first + periods), *self._settle(period_ns)]
