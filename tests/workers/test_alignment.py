"""Aligned reading of the two frame topics, and the pairing clock that stops while behind."""

from __future__ import annotations

from workers.alignment import PairingClock, StreamAlignment, within_budget

VIS, IR = ("frames.visible", 0), ("frames.infrared", 0)


def test_records_ahead_of_the_partner_topic_are_left_for_later() -> None:
    align = StreamAlignment("frames.visible", "frames.infrared", max_skew_ms=1000)
    # Only visible records came, and IR still has a backlog: take none of them yet.
    assert align.admit({VIS: [10_000, 10_500]}, {VIS: 50, IR: 80}) == {VIS: 0}
    # Both came: each side is taken up to the other's newest record + 1 s.
    assert align.admit({VIS: [10_000, 10_500, 12_000], IR: [9_500]}, {VIS: 48, IR: 79}) == {VIS: 2, IR: 1}
    assert align.latest == {VIS: 12_000, IR: 9_500}
    # The side behind is taken whole even when only the side ahead was seen again.
    assert align.admit({IR: [9_600, 11_500]}, {VIS: 49, IR: 77}) == {IR: 2}
    # The partner has nothing left to read: waiting for it would stall this side.
    assert align.admit({VIS: [12_000, 15_000]}, {VIS: 40, IR: 0}) == {VIS: 2}


def test_forget_drops_a_revoked_partition() -> None:
    align = StreamAlignment("frames.visible", "frames.infrared", max_skew_ms=1000)
    align.admit({VIS: [10_000], IR: [10_000]}, {VIS: 0, IR: 0})
    align.forget([VIS])
    assert align.latest == {IR: 10_000}


def test_the_pairing_clock_stops_while_behind_unless_frames_pile_up() -> None:
    clock = PairingClock(max_waiting=10)
    assert clock.tick(1_000, behind=False, waiting=0) == 0
    assert clock.tick(3_000, behind=False, waiting=2) == 2_000
    assert clock.tick(9_000, behind=True, waiting=5) == 2_000  # a backlog: partners may still be unread
    assert clock.tick(10_000, behind=True, waiting=11) == 3_000  # too many waiting: time runs anyway
    assert clock.tick(10_500, behind=False, waiting=0) == 3_500


def test_the_byte_budget_takes_the_oldest_records_first_and_leaves_the_rest() -> None:
    polled = {VIS: [(1_000, 40), (1_200, 40), (1_400, 40)], IR: [(1_100, 10), (1_300, 10)]}
    take = {VIS: 3, IR: 2}
    assert within_budget(polled, take, budget=10_000) == take  # all fit: nothing is cut
    assert within_budget(polled, take, budget=100) == {VIS: 2, IR: 2}  # 40+10+40+10; the third visible would pass
    assert within_budget(polled, take, budget=95) == {VIS: 2, IR: 1}  # stops at the first record that does not fit
    assert within_budget(polled, {VIS: 1, IR: 0}, budget=100) == {VIS: 1, IR: 0}  # never more than admitted


def test_the_byte_budget_always_takes_one_record() -> None:
    assert within_budget({VIS: [(5, 10**9)], IR: [(6, 1)]}, {VIS: 1, IR: 1}, budget=1024) == {VIS: 1, IR: 0}
    assert within_budget({VIS: [(5, 10)]}, {VIS: 0}, budget=1024) == {VIS: 0}  # nothing admitted: nothing taken
