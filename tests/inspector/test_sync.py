from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.frame import Frame
from inspector.sync import (
    FramePair,
    PairingResult,
    SyncError,
    SyncState,
    Unpaired,
    UnpairedReason,
    pair_frames,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MS = 1_000_000
TOL = 2 * MS


def vis(seq: int, ts: int, camera: str = "rig-1", part: str | None = None) -> Frame:
    return Frame(
        camera_id=camera,
        modality="visible",
        seq=seq,
        capture_ts_ns=ts,
        encoding="png",
        dtype="uint8",
        shape=(4, 4),
        part_id=part,
    )


def ir(seq: int, ts: int, camera: str = "rig-1", part: str | None = None) -> Frame:
    return vis(seq, ts, camera, part).model_copy(update={"modality": "infrared", "dtype": "uint16"})


def reasons(result: PairingResult) -> list[tuple[Frame, UnpairedReason]]:
    return [(u.frame, u.reason) for u in result.unpaired]


# --- matching rules -----------------------------------------------------------------------------------------


def test_pairs_by_seq_whatever_the_timestamps() -> None:
    v, i = vis(5, 1_000 * MS), ir(5, 9_000 * MS)
    result = pair_frames([v], [i], tolerance_ns=TOL)
    assert result.pairs == (FramePair(v, i),)
    assert result.pairs[0].by_seq and result.pairs[0].skew_ns == 8_000 * MS
    assert result.unpaired == () and result.state.pending == ()


def test_different_seqs_never_pair_even_at_the_same_time() -> None:
    v, i = vis(5, 100 * MS), ir(6, 100 * MS)
    result = pair_frames([v], [i], tolerance_ns=TOL)
    assert result.pairs == ()
    assert reasons(result) == [(v, UnpairedReason.NO_PARTNER), (i, UnpairedReason.NO_PARTNER)]


@pytest.mark.parametrize(("v_seq", "i_seq"), [(0, 0), (3, 0), (0, 3)])
def test_pairs_by_timestamp_when_a_seq_is_missing(v_seq: int, i_seq: int) -> None:
    v, i = vis(v_seq, 100 * MS), ir(i_seq, 100 * MS + TOL)
    result = pair_frames([v], [i], tolerance_ns=TOL)
    assert result.pairs == (FramePair(v, i),)
    assert not result.pairs[0].by_seq


def test_timestamp_tolerance_is_inclusive() -> None:
    assert pair_frames([vis(0, 100 * MS)], [ir(0, 100 * MS - TOL)], tolerance_ns=TOL).pairs
    assert not pair_frames([vis(0, 100 * MS)], [ir(0, 100 * MS - TOL - 1)], tolerance_ns=TOL).pairs


def test_default_offset_is_used_before_the_first_pair() -> None:
    v, i = vis(0, 100 * MS), ir(0, 130 * MS)
    assert not pair_frames([v], [i], tolerance_ns=TOL).pairs
    assert pair_frames([v], [i], tolerance_ns=TOL, state=SyncState(default_offset_ns=30 * MS)).pairs


def test_only_frames_of_the_same_rig_pair() -> None:
    result = pair_frames(
        [vis(1, 0, "rig-1"), vis(0, 0, "rig-1")], [ir(1, 0, "rig-2"), ir(0, 0, "rig-2")], tolerance_ns=TOL
    )
    assert result.pairs == ()
    assert [r for _, r in reasons(result)] == [UnpairedReason.NO_PARTNER] * 4


def test_two_candidates_are_ambiguous_not_guessed() -> None:
    v = vis(0, 100 * MS)
    i1, i2 = ir(0, 100 * MS - MS), ir(0, 100 * MS + MS)
    result = pair_frames([v], [i1, i2], tolerance_ns=TOL, state=SyncState(), now_ns=0)
    assert result.pairs == ()
    assert sorted(reasons(result), key=lambda r: r[0].capture_ts_ns) == [
        (i1, UnpairedReason.AMBIGUOUS),
        (v, UnpairedReason.AMBIGUOUS),
        (i2, UnpairedReason.AMBIGUOUS),
    ]
    assert result.state.pending == ()


def test_ambiguity_does_not_spread_to_clear_pairs() -> None:
    clear_v, clear_i = vis(0, 500 * MS), ir(0, 500 * MS)
    result = pair_frames([vis(0, 100 * MS), clear_v], [ir(0, 99 * MS), ir(0, 101 * MS), clear_i], tolerance_ns=TOL)
    assert result.pairs == (FramePair(clear_v, clear_i),)
    assert {r for _, r in reasons(result)} == {UnpairedReason.AMBIGUOUS}


def test_pairs_come_out_in_capture_order() -> None:
    visible = [vis(s, s * 100 * MS) for s in (3, 1, 2)]
    infrared = [ir(s, s * 100 * MS) for s in (2, 3, 1)]
    result = pair_frames(visible, infrared, tolerance_ns=TOL)
    assert [p.visible.seq for p in result.pairs] == [1, 2, 3]
    assert all(p.visible.seq == p.infrared.seq for p in result.pairs)


# --- streaming: reordering, duplicates, drops, late arrivals ----------------------------------------------------


def test_partner_arriving_in_a_later_call_pairs() -> None:
    i = ir(9, 100 * MS)
    first = pair_frames([], [i], tolerance_ns=TOL, now_ns=0)
    assert first.pairs == () and first.unpaired == () and first.state.pending_frames == (i,)
    v = vis(9, 100 * MS)
    second = pair_frames([v], [], tolerance_ns=TOL, state=first.state, now_ns=10 * MS)
    assert second.pairs == (FramePair(v, i),)
    assert second.state.pending == ()


def test_duplicate_in_one_batch_keeps_the_first() -> None:
    first, again = vis(4, 10 * MS), vis(4, 11 * MS)  # same seq: a duplicate even with another timestamp
    i = ir(4, 10 * MS)
    result = pair_frames([first, again], [i], tolerance_ns=TOL)
    assert result.pairs == (FramePair(first, i),)
    assert reasons(result) == [(again, UnpairedReason.DUPLICATE)]


def test_duplicate_of_a_pending_frame() -> None:
    v = vis(4, 10 * MS)
    state = pair_frames([v], [], tolerance_ns=TOL, now_ns=0).state
    result = pair_frames([v], [], tolerance_ns=TOL, state=state, now_ns=1)
    assert reasons(result) == [(v, UnpairedReason.DUPLICATE)]
    assert result.state.pending_frames == (v,)


def test_duplicate_of_an_already_paired_frame() -> None:
    v, i = vis(4, 10 * MS), ir(4, 10 * MS)
    state = pair_frames([v], [i], tolerance_ns=TOL, now_ns=0).state
    result = pair_frames([], [i], tolerance_ns=TOL, state=state, now_ns=1)
    assert reasons(result) == [(i, UnpairedReason.DUPLICATE)]
    assert result.state.pending == ()


def test_duplicate_without_seq_is_recognised_by_timestamp() -> None:
    v, i = vis(0, 10 * MS), ir(0, 10 * MS)
    state = pair_frames([v], [i], tolerance_ns=TOL, now_ns=0).state
    assert reasons(pair_frames([v], [], tolerance_ns=TOL, state=state, now_ns=1)) == [(v, UnpairedReason.DUPLICATE)]


def test_duplicates_are_forgotten_after_retain_ns() -> None:
    v = vis(4, 10 * MS)
    state = pair_frames([v], [ir(4, 10 * MS)], tolerance_ns=TOL, now_ns=0, retain_ns=100).state
    assert reasons(pair_frames([v], [], tolerance_ns=TOL, state=state, now_ns=100, retain_ns=100)) == [
        (v, UnpairedReason.DUPLICATE)
    ]
    later = pair_frames([v], [], tolerance_ns=TOL, state=state, now_ns=101, retain_ns=100)
    assert later.unpaired == () and later.state.pending_frames == (v,)


def test_no_partner_after_max_wait() -> None:
    v = vis(4, 10 * MS)
    state = pair_frames([v], [], tolerance_ns=TOL, now_ns=1_000, max_wait_ns=500).state
    waiting = pair_frames([], [], tolerance_ns=TOL, state=state, now_ns=1_500, max_wait_ns=500)
    assert waiting.unpaired == () and waiting.state.pending_frames == (v,)
    expired = pair_frames([], [], tolerance_ns=TOL, state=waiting.state, now_ns=1_501, max_wait_ns=500)
    assert reasons(expired) == [(v, UnpairedReason.NO_PARTNER)]
    assert expired.state.pending == ()


def test_batch_mode_reports_every_leftover_as_no_partner() -> None:
    v = vis(4, 10 * MS)
    pending = pair_frames([v], [], tolerance_ns=TOL, now_ns=0).state
    result = pair_frames([], [], tolerance_ns=TOL, state=pending)
    assert reasons(result) == [(v, UnpairedReason.NO_PARTNER)]
    assert result.state.pending == ()


def test_partner_arriving_as_the_deadline_passes_still_pairs() -> None:
    v, i = vis(4, 10 * MS), ir(4, 10 * MS)
    state = pair_frames([v], [], tolerance_ns=TOL, now_ns=0, max_wait_ns=500).state
    result = pair_frames([], [i], tolerance_ns=TOL, state=state, now_ns=10_000, max_wait_ns=500)
    assert result.pairs == (FramePair(v, i),) and result.unpaired == ()


@pytest.mark.parametrize(("v_seq", "i_seq"), [(4, 4), (0, 0), (4, 0)])
def test_partner_of_a_frame_already_given_up_is_late(v_seq: int, i_seq: int) -> None:
    v, i = vis(v_seq, 10 * MS), ir(i_seq, 10 * MS + MS)
    state = pair_frames([v], [], tolerance_ns=TOL, now_ns=0, max_wait_ns=500).state
    expired = pair_frames([], [], tolerance_ns=TOL, state=state, now_ns=501, max_wait_ns=500)
    assert reasons(expired) == [(v, UnpairedReason.NO_PARTNER)]
    late = pair_frames([], [i], tolerance_ns=TOL, state=expired.state, now_ns=600, max_wait_ns=500)
    assert reasons(late) == [(i, UnpairedReason.LATE)]
    assert late.state.pending == ()
    # and a copy of the late frame is a duplicate, not late again
    again = pair_frames([], [i], tolerance_ns=TOL, state=late.state, now_ns=700, max_wait_ns=500)
    assert reasons(again) == [(i, UnpairedReason.DUPLICATE)]


def test_frame_that_did_not_belong_to_a_given_up_frame_is_not_late() -> None:
    state = pair_frames([vis(4, 10 * MS)], [], tolerance_ns=TOL).state  # batch mode: reported no_partner
    other = ir(5, 10 * MS)
    result = pair_frames([], [other], tolerance_ns=TOL, state=state, now_ns=0)
    assert result.unpaired == () and result.state.pending_frames == (other,)


def test_state_is_not_changed_by_a_call() -> None:
    state = pair_frames([vis(1, 0)], [ir(2, 5 * MS)], tolerance_ns=TOL, now_ns=0).state
    before = (state.pending, state.offset_samples, state.resolved)
    one = pair_frames([vis(2, 5 * MS)], [ir(1, 0)], tolerance_ns=TOL, state=state, now_ns=1)
    two = pair_frames([vis(2, 5 * MS)], [ir(1, 0)], tolerance_ns=TOL, state=state, now_ns=1)
    assert (state.pending, state.offset_samples, state.resolved) == before
    assert one == two and len(one.pairs) == 2


# --- clock offset -------------------------------------------------------------------------------------------


def test_offset_is_the_median_of_recent_pairs_and_ignores_outliers() -> None:
    visible = [vis(s, s * 100 * MS) for s in range(1, 14)]
    infrared = [ir(s, s * 100 * MS + 5 * MS + (900 * MS if s in (3, 7, 11) else 0)) for s in range(1, 14)]
    state = pair_frames(visible, infrared, tolerance_ns=TOL).state
    assert state.offset_ns("rig-1") == 5 * MS
    assert state.offsets_ns == {"rig-1": 5 * MS}
    assert state.offset_ns("rig-9") == 0


def test_offset_window_keeps_the_most_recent_pairs() -> None:
    visible = [vis(s, s * 100 * MS) for s in range(1, 11)]
    infrared = [ir(s, s * 100 * MS + (MS if s <= 5 else 3 * MS)) for s in range(1, 11)]
    state = pair_frames(visible, infrared, tolerance_ns=TOL, offset_window=3).state
    assert state.offset_samples == (("rig-1", (3 * MS, 3 * MS, 3 * MS)),)


def test_offset_learned_from_seq_pairs_lets_timestamp_frames_pair() -> None:
    offset = 30 * MS  # far beyond the 2 ms tolerance
    visible = [vis(s, s * 100 * MS) for s in range(1, 4)] + [vis(0, 1_000 * MS)]
    infrared = [ir(s, s * 100 * MS + offset) for s in range(1, 4)] + [ir(0, 1_000 * MS + offset + MS)]
    result = pair_frames(visible, infrared, tolerance_ns=TOL)
    assert len(result.pairs) == 4 and result.unpaired == ()
    assert result.state.offset_ns("rig-1") == offset


def test_each_rig_has_its_own_offset() -> None:
    result = pair_frames([vis(1, 0, "a"), vis(1, 0, "b")], [ir(1, 7 * MS, "a"), ir(1, 2 * MS, "b")], tolerance_ns=TOL)
    assert result.state.offsets_ns == {"a": 7 * MS, "b": 2 * MS}


# --- argument checks ----------------------------------------------------------------------------------------


def test_wrong_modality_is_refused() -> None:
    with pytest.raises(SyncError, match=r"infrared frame.*among the visible frames"):
        pair_frames([ir(1, 0)], [], tolerance_ns=TOL)
    with pytest.raises(SyncError, match=r"visible frame.*among the infrared frames"):
        pair_frames([], [vis(1, 0)], tolerance_ns=TOL)


@pytest.mark.parametrize(
    "limits", [{"tolerance_ns": -1}, {"tolerance_ns": 1, "max_wait_ns": -1}, {"tolerance_ns": 1, "retain_ns": -1}]
)
def test_negative_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(SyncError, match="non-negative"):
        pair_frames([], [], **limits)


def test_offset_window_must_be_positive() -> None:
    with pytest.raises(SyncError, match="offset_window"):
        pair_frames([], [], tolerance_ns=1, offset_window=0)


# --- property tests -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Captures of one or two rigs after drops, duplicates and shuffling, cut into arrival batches."""

    batches: tuple[tuple[Frame, ...], ...]
    offset_ns: int
    jitter_ns: int
    tolerance_ns: int
    outliers: frozenset[str]  # part ids of captures whose infrared clock jumped

    @property
    def arrived(self) -> list[Frame]:
        return [f for batch in self.batches for f in batch]


@st.composite
def scenarios(draw: st.DrawFn, *, seq: str, outliers: bool = False) -> Scenario:
    """``seq``: ``all`` (every frame has a trigger seq) or ``mixed`` (some frames or captures have none)."""
    rng = draw(st.randoms(use_true_random=False))
    period = draw(st.integers(10 * MS, 50 * MS))
    jitter = draw(st.integers(0, 200_000))
    tolerance = 4 * jitter + draw(st.integers(50_000, 500_000))  # covers the skew jitter and the estimate's error
    max_offset = (period - tolerance - 4 * jitter) // 2 - 1  # beyond that, timestamps alone cannot tell captures apart
    offset = draw(st.integers(-max_offset, max_offset) if seq == "mixed" else st.integers(-(10**9), 10**9))
    start = draw(st.integers(10**10, 10**15))
    count = draw(st.integers(1, 40))
    cameras = draw(st.sampled_from([("rig-1",), ("rig-1", "rig-2")]))
    drop = draw(st.sampled_from([0.0, 0.1, 0.3]))
    duplicate = draw(st.sampled_from([0.0, 0.1, 0.3]))
    jumped = set(rng.sample(range(count), min(count, draw(st.integers(0, 3))))) if outliers else set()

    frames: list[Frame] = []
    for camera in cameras:
        for k in range(count):
            part = f"{camera}-{k}"
            seq_v = seq_i = k + 1
            if seq == "mixed":
                seq_v, seq_i = rng.choice([(k + 1, k + 1), (k + 1, 0), (0, k + 1), (0, 0)])
            ts = start + k * period
            ts_v = ts + rng.randint(-jitter, jitter)
            ts_i = (
                ts
                + offset
                + rng.randint(-jitter, jitter)
                + (rng.choice([-1, 1]) * 10**9 * rng.randint(1, 5) if k in jumped else 0)
            )
            for frame in (vis(seq_v, ts_v, camera, part), ir(seq_i, ts_i, camera, part)):
                if rng.random() >= drop:
                    frames.append(frame)
                    while rng.random() < duplicate:
                        frames.append(frame)
    rng.shuffle(frames)
    cuts = sorted(rng.sample(range(1, len(frames)), min(len(frames) - 1, rng.randint(0, 8)))) if frames else []
    bounds = [0, *cuts, len(frames)]
    batches = tuple(tuple(frames[a:b]) for a, b in itertools.pairwise(bounds))
    parts = frozenset(f"{camera}-{k}" for camera in cameras for k in jumped)
    return Scenario(batches, offset, jitter, tolerance, parts)


@dataclass
class Outcome:
    pairs: list[FramePair]
    unpaired: list[tuple[int, Unpaired]]  # (call number, unpaired)
    pending: tuple[Frame, ...]
    state: SyncState


def stream(
    batches: Sequence[Sequence[Frame]], tolerance_ns: int, *, max_wait_ns: int, step_ns: int, flush: bool
) -> Outcome:
    """Feed the batches one call each, ``step_ns`` apart; optionally flush in batch mode at the end."""
    state = SyncState()
    pairs: list[FramePair] = []
    unpaired: list[tuple[int, Unpaired]] = []
    calls: list[tuple[Sequence[Frame], int | None]] = [(b, n * step_ns) for n, b in enumerate(batches)]
    if flush:
        calls.append(((), None))
    for number, (batch, now) in enumerate(calls):
        result = pair_frames(
            [f for f in batch if f.modality == "visible"],
            [f for f in batch if f.modality == "infrared"],
            tolerance_ns=tolerance_ns,
            state=state,
            now_ns=now,
            max_wait_ns=max_wait_ns,
        )
        state = result.state
        pairs += result.pairs
        unpaired += [(number, u) for u in result.unpaired]
    return Outcome(pairs, unpaired, state.pending_frames, state)


def check_invariants(scenario: Scenario, outcome: Outcome) -> None:
    """Every frame exactly once; no frame paired twice; every pair is a true pair."""
    paired = [f for pair in outcome.pairs for f in pair]
    out = Counter(paired) + Counter(u.frame for _, u in outcome.unpaired) + Counter(outcome.pending)
    assert out == Counter(scenario.arrived)
    assert max(Counter(paired).values(), default=1) == 1
    for pair in outcome.pairs:
        assert (pair.visible.modality, pair.infrared.modality) == ("visible", "infrared")
        assert pair.visible.camera_id == pair.infrared.camera_id
        assert pair.visible.part_id == pair.infrared.part_id  # the same capture
        if pair.by_seq:
            assert pair.visible.seq == pair.infrared.seq
        else:
            assert abs(pair.skew_ns - scenario.offset_ns) <= 2 * scenario.jitter_ns
    # the scenarios duplicate by copying, so a duplicate is a frame that arrived more than once
    arrived = Counter(scenario.arrived)
    assert all(arrived[u.frame] >= 2 for _, u in outcome.unpaired if u.reason == UnpairedReason.DUPLICATE)


def check_all_arrived_pairs_paired(scenario: Scenario, outcome: Outcome, cameras: set[str] | None = None) -> None:
    """Every capture of ``cameras`` (default all) whose two frames arrived is paired; only copies are duplicates."""
    frames = [f for f in scenario.arrived if cameras is None or f.camera_id in cameras]
    modalities: dict[str, set[str]] = {}
    for f in frames:
        modalities.setdefault(str(f.part_id), set()).add(f.modality)
    complete = {part for part, seen in modalities.items() if len(seen) == 2}
    assert {p.visible.part_id for p in outcome.pairs if p.visible.part_id in modalities} == complete
    unpaired = [u for _, u in outcome.unpaired if cameras is None or u.frame.camera_id in cameras]
    duplicates = Counter(u.frame for u in unpaired if u.reason == UnpairedReason.DUPLICATE)
    assert duplicates == Counter(frames) - Counter(set(frames))
    assert {u.reason for u in unpaired} <= {UnpairedReason.DUPLICATE, UnpairedReason.NO_PARTNER}
    assert outcome.pending == ()


def check_offset_converged(scenario: Scenario, outcome: Outcome) -> None:
    for camera in {f.camera_id for f in scenario.arrived}:
        pairs = [p for p in outcome.pairs if p.visible.camera_id == camera]
        jumped = sum(p.visible.part_id in scenario.outliers for p in pairs)
        if len(pairs) - jumped >= 8:
            assert abs(outcome.state.offset_ns(camera) - scenario.offset_ns) <= 2 * scenario.jitter_ns


@FAST
@given(scenarios(seq="all", outliers=True))
def test_batch_mode_pairs_every_arrived_capture(scenario: Scenario) -> None:
    result = pair_frames(
        [f for f in scenario.arrived if f.modality == "visible"],
        [f for f in scenario.arrived if f.modality == "infrared"],
        tolerance_ns=scenario.tolerance_ns,
    )
    outcome = Outcome(list(result.pairs), [(0, u) for u in result.unpaired], result.state.pending_frames, result.state)
    check_invariants(scenario, outcome)
    check_all_arrived_pairs_paired(scenario, outcome)
    check_offset_converged(scenario, outcome)


@FAST
@given(scenarios(seq="mixed"))
def test_streaming_in_random_batches_pairs_every_arrived_capture(scenario: Scenario) -> None:
    outcome = stream(scenario.batches, scenario.tolerance_ns, max_wait_ns=10**15, step_ns=MS, flush=True)
    check_invariants(scenario, outcome)
    check_offset_converged(scenario, outcome)
    # a rig pairs every timestamp capture once it has an offset estimate: from a trigger-seq pair, or because
    # the true offset is within the tolerance of the default estimate (0)
    small_offset = abs(scenario.offset_ns) + 2 * scenario.jitter_ns <= scenario.tolerance_ns
    learned = {p.visible.camera_id for p in outcome.pairs if p.by_seq or small_offset}
    check_all_arrived_pairs_paired(scenario, outcome, learned)


@FAST
@given(scenarios(seq="all"), st.integers(1, 5))
def test_streaming_with_deadlines_reports_drops_and_late_frames(scenario: Scenario, wait_calls: int) -> None:
    step = 10 * MS
    outcome = stream(scenario.batches, scenario.tolerance_ns, max_wait_ns=wait_calls * step, step_ns=step, flush=False)
    check_invariants(scenario, outcome)
    given_up: dict[Frame, int] = {}
    for number, u in outcome.unpaired:
        if u.reason in (UnpairedReason.NO_PARTNER, UnpairedReason.AMBIGUOUS):
            given_up[u.frame] = number
    for number, u in outcome.unpaired:
        if u.reason == UnpairedReason.LATE:
            partner = [f for f in given_up if f.part_id == u.frame.part_id and f.modality != u.frame.modality]
            assert partner and given_up[partner[0]] < number
    # with trigger sequences, nothing is ambiguous, and both frames of an arrived capture never wait out together
    assert UnpairedReason.AMBIGUOUS not in {u.reason for _, u in outcome.unpaired}
    paired_parts = {p.visible.part_id for p in outcome.pairs}
    for frame in given_up:
        partner_given_up = [f for f in given_up if f.part_id == frame.part_id and f.modality != frame.modality]
        assert frame.part_id not in paired_parts
        assert not partner_given_up, "two frames of one capture both waited out: they should have paired"


def test_property_harness_sees_a_broken_pairer() -> None:
    """The invariant check is not vacuous: pairing the wrong frames is caught."""
    scenario = Scenario(((vis(1, 0, part="a"), ir(2, 0, part="b")),), 0, 0, TOL, frozenset())
    wrong = Outcome([FramePair(*scenario.batches[0])], [], (), SyncState())
    with pytest.raises(AssertionError):
        check_invariants(scenario, wrong)
    lost = Outcome([], [], (), SyncState())
    with pytest.raises(AssertionError):
        check_invariants(scenario, lost)
