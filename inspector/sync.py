"""Pair the visible and infrared frames of one capture: :func:`pair_frames`.

Each rig (one ``camera_id``) has a visible and an infrared camera fired by the same trigger. Frames
reach a worker on two topics, possibly reordered, duplicated (at-least-once delivery), late or not at
all. :func:`pair_frames` is a pure function: the caller passes the frames that arrived since the last
call, the previous :class:`SyncState` and the current time, and gets back the pairs, the frames that
will never be paired (with a reason), and the new state::

    state = SyncState()
    while running:
        result = pair_frames(new_visible, new_infrared, tolerance_ns=2_000_000, state=state, now_ns=clock())
        state = result.state
        ...  # infer on result.pairs, count result.unpaired by reason

Matching rules, for frames of the same ``camera_id`` only:

* **By trigger sequence** when both frames carry one. ``seq == 0`` means "no trigger counter"
  (counters start at 1), so ``seq > 0`` on both frames pairs them exactly when the numbers are equal,
  whatever their timestamps.
* **By timestamp** otherwise: a visible frame at ``v`` and an infrared frame at ``i`` are candidates
  when ``|i - v - offset| <= tolerance_ns``, where ``offset`` is the rig's running estimate of
  ``infrared_ts - visible_ts``. A visible and an infrared frame pair only when each is the other's
  only candidate; frames with several candidates are reported ``ambiguous`` rather than guessed.

The clock offset is the median of ``infrared_ts - visible_ts`` over the last ``offset_window``
pairs of the rig (sequence pairs included, whatever their skew), so a minority of outliers cannot move
it, and a real clock step is followed once it makes up half of the window. Before a rig's first pair
the state's ``default_offset_ns`` is used; timestamp-only rigs need it (or a tolerance that covers the
offset) to get their first pair. Give ``tolerance_ns`` below half the frame period.

Unpaired reasons (:class:`UnpairedReason`):

* ``duplicate``: a frame with the same camera, modality and key (``seq``, or ``capture_ts_ns`` when
  ``seq == 0``) as one already seen; the first one is kept.
* ``no_partner``: the frame waited more than ``max_wait_ns`` (by the caller's ``now_ns``) and its
  partner did not come. A call pairs what it can before it expires anything, so a partner that arrives
  in the same call as the deadline passes still pairs. In batch mode (``now_ns=None``) every frame
  left unpaired at the end of the call is ``no_partner``.
* ``late``: the frame arrived after its partner had already been reported ``no_partner`` or
  ``ambiguous``.
* ``ambiguous``: timestamp matching found more than one candidate for the frame, or for a frame in its
  chain of candidates. This is judged among the frames present in one call: a frame that arrives after
  its candidate has paired just waits and ends ``no_partner``.

Duplicates and lateness are recognised against frames resolved within the last ``retain_ns`` (by
``now_ns``; default ten times ``max_wait_ns``) and at most the last 8192 of them.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from inspector.errors import InspectorError
from inspector.frame import Frame

__all__ = [
    "DEFAULT_MAX_WAIT_NS",
    "DEFAULT_OFFSET_WINDOW",
    "FramePair",
    "PairingResult",
    "PendingFrame",
    "ResolvedFrame",
    "SyncError",
    "SyncState",
    "Unpaired",
    "UnpairedReason",
    "pair_frames",
]

DEFAULT_MAX_WAIT_NS = 1_000_000_000
DEFAULT_OFFSET_WINDOW = 31
MAX_RESOLVED = 8192

_Key = tuple[str, str, bool, int]  # camera_id, modality, keyed by seq?, seq or capture_ts_ns


class SyncError(InspectorError):
    """``pair_frames`` was called with invalid arguments (a wrong modality, a negative tolerance...)."""


class UnpairedReason(StrEnum):
    """Why a frame was given up on; see the module documentation."""

    DUPLICATE = "duplicate"
    NO_PARTNER = "no_partner"
    LATE = "late"
    AMBIGUOUS = "ambiguous"


class FramePair(NamedTuple):
    """A visible and an infrared frame of the same capture."""

    visible: Frame
    infrared: Frame

    @property
    def by_seq(self) -> bool:
        """Whether the frames were paired by trigger sequence (else by timestamp)."""
        return self.visible.seq > 0 and self.infrared.seq > 0

    @property
    def skew_ns(self) -> int:
        """``infrared.capture_ts_ns - visible.capture_ts_ns``."""
        return self.infrared.capture_ts_ns - self.visible.capture_ts_ns


class Unpaired(NamedTuple):
    """A frame that will not be paired, and why."""

    frame: Frame
    reason: UnpairedReason


@dataclass(frozen=True)
class PendingFrame:
    """A frame waiting for its partner since ``arrived_ns`` (the caller's clock)."""

    frame: Frame
    arrived_ns: int


@dataclass(frozen=True)
class ResolvedFrame:
    """A frame already reported (paired when ``reason`` is ``None``), kept to recognise duplicates and late partners."""

    frame: Frame
    reason: UnpairedReason | None
    resolved_ns: int | None


@dataclass(frozen=True)
class SyncState:
    """Everything :func:`pair_frames` carries from one call to the next; immutable.

    Attributes:
        pending: Frames still waiting for their partner, in arrival order.
        offset_samples: Per ``camera_id``, the recent ``infrared_ts - visible_ts`` of its pairs, oldest first.
        resolved: Recently reported frames, oldest first.
        default_offset_ns: Offset assumed for a rig that has no pair yet.

    """

    pending: tuple[PendingFrame, ...] = ()
    offset_samples: tuple[tuple[str, tuple[int, ...]], ...] = ()
    resolved: tuple[ResolvedFrame, ...] = ()
    default_offset_ns: int = 0

    @property
    def pending_frames(self) -> tuple[Frame, ...]:
        """The frames still waiting for a partner."""
        return tuple(p.frame for p in self.pending)

    @property
    def offsets_ns(self) -> Mapping[str, int]:
        """The current offset estimate of every rig that has had a pair."""
        return {camera: _median(samples) for camera, samples in self.offset_samples}

    def offset_ns(self, camera_id: str) -> int:
        """Return a rig's estimate of ``infrared_ts - visible_ts`` (``default_offset_ns`` before its first pair)."""
        for camera, samples in self.offset_samples:
            if camera == camera_id:
                return _median(samples)
        return self.default_offset_ns


@dataclass(frozen=True)
class PairingResult:
    """What one :func:`pair_frames` call decided.

    Attributes:
        pairs: Pairs found in this call, ordered by visible capture time.
        unpaired: Frames given up on in this call, with the reason.
        state: The state to pass to the next call; ``state.pending`` holds frames still waiting.

    """

    pairs: tuple[FramePair, ...]
    unpaired: tuple[Unpaired, ...]
    state: SyncState


def pair_frames(
    visible: Sequence[Frame],
    infrared: Sequence[Frame],
    *,
    tolerance_ns: int,
    state: SyncState | None = None,
    now_ns: int | None = None,
    max_wait_ns: int = DEFAULT_MAX_WAIT_NS,
    retain_ns: int | None = None,
    offset_window: int = DEFAULT_OFFSET_WINDOW,
) -> PairingResult:
    """Pair newly arrived visible and infrared frames with each other and with the pending ones.

    Args:
        visible: Visible frames that arrived since the last call, in arrival order.
        infrared: Infrared frames that arrived since the last call, in arrival order.
        tolerance_ns: Largest ``|infrared_ts - visible_ts - offset|`` for a timestamp pair.
        state: The previous call's ``result.state``; ``None`` starts afresh.
        now_ns: The caller's current time (any monotonic clock, the same one on every call). ``None``
            is batch mode: every frame not paired in this call is reported ``no_partner``.
        max_wait_ns: How long a frame waits for its partner before it is ``no_partner``.
        retain_ns: How long reported frames are remembered to recognise duplicates and late
            partners; default ``10 * max_wait_ns``.
        offset_window: How many recent pairs per rig the clock-offset median uses.

    Returns:
        The pairs, the unpaired frames with their reasons, and the new state. Every frame passed in
        (and every frame pending in ``state``) is in exactly one of ``pairs``, ``unpaired`` and
        ``state.pending``.

    Raises:
        SyncError: A frame has the wrong modality for its argument, or a limit is negative.

    """
    _check_arguments(visible, infrared, tolerance_ns, max_wait_ns, retain_ns, offset_window)
    state = state if state is not None else SyncState()
    retain = retain_ns if retain_ns is not None else 10 * max_wait_ns
    resolved = [
        r for r in state.resolved if now_ns is None or r.resolved_ns is None or now_ns - r.resolved_ns <= retain
    ]
    pool, unpaired = _admit(visible, infrared, state, resolved, now_ns if now_ns is not None else 0, tolerance_ns)
    samples = {camera: list(values) for camera, values in state.offset_samples}
    pairs, ambiguous = _match(pool, samples, state.default_offset_ns, tolerance_ns, offset_window)
    paired = {frame for pair in pairs for frame in pair}

    still_pending: list[PendingFrame] = []
    for waiting in pool:
        if waiting.frame in paired:
            continue
        if waiting.frame in ambiguous:
            unpaired.append(Unpaired(waiting.frame, UnpairedReason.AMBIGUOUS))
        elif now_ns is None or now_ns - waiting.arrived_ns > max_wait_ns:
            unpaired.append(Unpaired(waiting.frame, UnpairedReason.NO_PARTNER))
        else:
            still_pending.append(waiting)

    pairs.sort(key=lambda p: (p.visible.capture_ts_ns, p.visible.camera_id, p.visible.seq))
    newly = [ResolvedFrame(frame, None, now_ns) for pair in pairs for frame in pair]
    newly += [ResolvedFrame(u.frame, u.reason, now_ns) for u in unpaired if u.reason != UnpairedReason.DUPLICATE]
    new_state = SyncState(
        pending=tuple(still_pending),
        offset_samples=tuple((camera, tuple(values[-offset_window:])) for camera, values in samples.items() if values),
        resolved=tuple((resolved + newly)[-MAX_RESOLVED:]),
        default_offset_ns=state.default_offset_ns,
    )
    return PairingResult(pairs=tuple(pairs), unpaired=tuple(unpaired), state=new_state)


def _admit(
    visible: Sequence[Frame],
    infrared: Sequence[Frame],
    state: SyncState,
    resolved: Sequence[ResolvedFrame],
    arrived_ns: int,
    tolerance_ns: int,
) -> tuple[list[PendingFrame], list[Unpaired]]:
    """Set aside duplicates and late frames; return the pending frames plus the admitted new ones, and the rest."""
    seen = {_key(r.frame) for r in resolved} | {_key(p.frame) for p in state.pending}
    gone = _GoneIndex([r.frame for r in resolved if r.reason in (UnpairedReason.NO_PARTNER, UnpairedReason.AMBIGUOUS)])
    pool = list(state.pending)
    unpaired: list[Unpaired] = []
    for frame in itertools.chain(visible, infrared):
        key = _key(frame)
        if key in seen:
            unpaired.append(Unpaired(frame, UnpairedReason.DUPLICATE))
            continue
        seen.add(key)
        if gone.has_partner(frame, state.offset_ns(frame.camera_id), tolerance_ns):
            unpaired.append(Unpaired(frame, UnpairedReason.LATE))
        else:
            pool.append(PendingFrame(frame, arrived_ns))
    return pool, unpaired


def _match(
    pool: Sequence[PendingFrame],
    samples: dict[str, list[int]],
    default_offset_ns: int,
    tolerance_ns: int,
    offset_window: int,
) -> tuple[list[FramePair], set[Frame]]:
    """Pair the pool rig by rig, by seq first, then by timestamp; extend ``samples`` with the new pairs' skews.

    Returns:
        The pairs, and the frames found ambiguous.

    """
    by_camera: dict[str, list[Frame]] = defaultdict(list)
    for waiting in pool:
        by_camera[waiting.frame.camera_id].append(waiting.frame)
    pairs: list[FramePair] = []
    ambiguous: set[Frame] = set()
    for camera, frames in by_camera.items():
        camera_samples = samples.setdefault(camera, [])
        seq_pairs, rest = _pair_by_seq(frames)
        camera_samples.extend(p.skew_ns for p in seq_pairs)
        offset = _median(camera_samples[-offset_window:]) if camera_samples else default_offset_ns
        ts_pairs, unsure = _pair_by_timestamp(rest, offset, tolerance_ns)
        camera_samples.extend(p.skew_ns for p in ts_pairs)
        pairs += seq_pairs + ts_pairs
        ambiguous.update(rest[i] for i in unsure)
    return pairs, ambiguous


def _check_arguments(
    visible: Sequence[Frame],
    infrared: Sequence[Frame],
    tolerance_ns: int,
    max_wait_ns: int,
    retain_ns: int | None,
    offset_window: int,
) -> None:
    for frames, modality in ((visible, "visible"), (infrared, "infrared")):
        wrong = [f for f in frames if f.modality != modality]
        if wrong:
            msg = (
                f"pair_frames got {len(wrong)} {wrong[0].modality} frame(s) among the {modality} frames "
                f"(first: camera {wrong[0].camera_id} seq {wrong[0].seq}): check which topic feeds which argument"
            )
            raise SyncError(msg)
    limits = {"tolerance_ns": tolerance_ns, "max_wait_ns": max_wait_ns, "retain_ns": retain_ns or 0}
    negative = [f"{name}={value}" for name, value in limits.items() if value < 0]
    if negative:
        msg = f"pair_frames needs non-negative limits, got {', '.join(negative)}"
        raise SyncError(msg)
    if offset_window < 1:
        msg = f"offset_window must be at least 1, got {offset_window}"
        raise SyncError(msg)


def _key(frame: Frame) -> _Key:
    """Identity of a frame for duplicate detection: its seq, or its timestamp when it has no seq."""
    has_seq = frame.seq > 0
    return frame.camera_id, frame.modality, has_seq, frame.seq if has_seq else frame.capture_ts_ns


def _median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2


def _partner_window(frame: Frame, offset_ns: int, tolerance_ns: int) -> tuple[int, int]:
    """Timestamps, on the other camera's clock, that a timestamp partner of ``frame`` may have."""
    expected = frame.capture_ts_ns + offset_ns if frame.modality == "visible" else frame.capture_ts_ns - offset_ns
    return expected - tolerance_ns, expected + tolerance_ns


def _pair_by_seq(frames: Sequence[Frame]) -> tuple[list[FramePair], list[Frame]]:
    """Pair the frames of one rig whose trigger sequences are equal; return the pairs and the rest."""
    infrared = {f.seq: f for f in frames if f.modality == "infrared" and f.seq > 0}
    pairs = [
        FramePair(f, infrared[f.seq]) for f in frames if f.modality == "visible" and f.seq > 0 and f.seq in infrared
    ]
    paired = {p.visible for p in pairs} | {p.infrared for p in pairs}
    return pairs, [f for f in frames if f not in paired]


def _pair_by_timestamp(frames: Sequence[Frame], offset_ns: int, tolerance_ns: int) -> tuple[list[FramePair], list[int]]:
    """Pair frames of one rig that are each other's only timestamp candidate.

    Returns:
        The pairs, and the indices (into ``frames``) of frames that had candidates but no unique one.

    """
    visible = [i for i, f in enumerate(frames) if f.modality == "visible"]
    infrared = sorted(
        (i for i, f in enumerate(frames) if f.modality == "infrared"), key=lambda i: frames[i].capture_ts_ns
    )
    infrared_ts = [frames[i].capture_ts_ns for i in infrared]
    candidates: dict[int, list[int]] = defaultdict(list)
    for v in visible:
        low, high = _partner_window(frames[v], offset_ns, tolerance_ns)
        for i in infrared[bisect.bisect_left(infrared_ts, low) : bisect.bisect_right(infrared_ts, high)]:
            if frames[v].seq == 0 or frames[i].seq == 0:  # two sequence numbers that differ never pair
                candidates[v].append(i)
                candidates[i].append(v)
    pairs: list[FramePair] = []
    paired: set[int] = set()
    for v in visible:
        if len(candidates[v]) == 1 and len(candidates[candidates[v][0]]) == 1:
            i = candidates[v][0]
            pairs.append(FramePair(frames[v], frames[i]))
            paired.update((v, i))
    unsure = [i for i, found in candidates.items() if found and i not in paired]
    return pairs, unsure


class _GoneIndex:
    """Frames already reported unpaired, indexed to find whether a new frame was their partner."""

    def __init__(self, frames: Sequence[Frame]) -> None:
        self._seqs: set[tuple[str, str, int]] = set()
        self._all: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._without_seq: dict[tuple[str, str], list[int]] = defaultdict(list)
        for frame in frames:
            where = (frame.camera_id, frame.modality)
            self._all[where].append(frame.capture_ts_ns)
            if frame.seq > 0:
                self._seqs.add((*where, frame.seq))
            else:
                self._without_seq[where].append(frame.capture_ts_ns)
        for values in (*self._all.values(), *self._without_seq.values()):
            values.sort()

    def has_partner(self, frame: Frame, offset_ns: int, tolerance_ns: int) -> bool:
        """Whether a reported frame of the other modality would have paired with ``frame``."""
        other = (frame.camera_id, "infrared" if frame.modality == "visible" else "visible")
        if frame.seq > 0 and (*other, frame.seq) in self._seqs:
            return True
        stamps = self._without_seq[other] if frame.seq > 0 else self._all[other]
        low, high = _partner_window(frame, offset_ns, tolerance_ns)
        return bisect.bisect_right(stamps, high) > bisect.bisect_left(stamps, low)
