"""Commit positions: never past an unsettled record, whatever order records settle in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.kafka.offsets import OffsetTracker

P = ("frames.visible", 0)


def test_a_waiting_record_holds_the_commit_back() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.consumed(P, offset)
    tracker.settled(P, 11)
    tracker.settled(P, 12)
    assert tracker.committable() == {} and tracker.pending() == 1  # where the group already stands
    tracker.settled(P, 10)
    assert tracker.committable() == {P: 13}


def test_forget_drops_a_revoked_partition() -> None:
    tracker = OffsetTracker()
    tracker.consumed(P, 5)
    tracker.forget([P])
    assert tracker.committable() == {} and tracker.pending() == 0


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_commit_position_is_the_first_unsettled_offset(order: list[int], settled: int) -> None:
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.consumed(P, offset)
    done = set(order[:settled])
    for offset in order[:settled]:
        tracker.settled(P, offset)
    first_open = min(set(range(30)) - done, default=30)
    assert tracker.committable().get(P, 0) == first_open
