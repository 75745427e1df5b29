"""Trigger seqs from frame IDs (missed triggers, 16-bit wrap, restarts) and device clocks mapped to the host's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.triggers import GVSP1_MAX_ID, ClockMap, Count, FrameCounter


def test_consecutive_ids_count_from_the_start_seq() -> None:
    counter = FrameCounter(start_seq=41)
    assert [counter.seq(i) for i in (7, 8, 9)] == [Count(41), Count(42), Count(43)]
    assert counter.missed == 0


def test_a_gap_is_missed_triggers_and_never_shifts_the_pairing() -> None:
    visible, infrared = FrameCounter(), FrameCounter()
    seqs_visible = [visible.seq(i).seq for i in range(100, 110)]
    seqs_infrared = [infrared.seq(i).seq for i in (5, 6, 7, 9, 10, 11, 12, 13, 14)]  # missed trigger 4
    assert seqs_visible == list(range(1, 11))
    assert seqs_infrared == [1, 2, 3, 5, 6, 7, 8, 9, 10]  # frame 5 still pairs with visible's 5
    assert infrared.missed == 1 and visible.missed == 0


def test_16_bit_block_ids_wrap_past_zero() -> None:
    counter = FrameCounter()
    counter.seq(GVSP1_MAX_ID - 1)
    assert counter.seq(GVSP1_MAX_ID) == Count(2)
    assert counter.seq(1) == Count(3)  # 65535 → 1: 0 is never used
    assert counter.seq(3) == Count(5, missed=1)


def test_a_restarted_camera_realigns_and_is_reported() -> None:
    counter = FrameCounter()
    counter.seq(500)
    counter.seq(501)
    assert counter.seq(1) == Count(3) and counter.restarts == 1  # its counter began again: no 65,035 missed
    assert counter.seq(2) == Count(4) and counter.missed == 0


def test_bad_ids_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        FrameCounter().seq(0)
    with pytest.raises(ValueError, match="id_bits"):
        FrameCounter(id_bits=32)
    with pytest.raises(ValueError, match="start_seq"):
        FrameCounter(start_seq=0)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=200), st.integers(1, GVSP1_MAX_ID))
def test_seqs_follow_the_triggers_whatever_is_missed(steps: list[int], first: int) -> None:
    counter, frame_id, trigger = FrameCounter(), first, 1
    assert counter.seq(frame_id).seq == 1
    for step in steps:  # the camera saw the trigger `step` triggers after the last one it saw
        frame_id = (frame_id - 1 + step) % GVSP1_MAX_ID + 1
        trigger += step
        assert counter.seq(frame_id) == Count(trigger, step - 1)
    assert counter.missed == sum(steps) - len(steps)


def test_the_clock_map_keeps_the_fastest_frames_offset_and_follows_drift() -> None:
    clock = ClockMap(window=3)
    with pytest.raises(ValueError, match="no frame observed"):
        clock.to_host(0)
    for device, delay in ((1_000, 50), (2_000, 400), (3_000, 60)):
        clock.observe(device, 10_000_000 + device + delay)  # host = device + 10 ms + network delay
    assert clock.offset_ns == 10_000_050 and clock.to_host(5_000) == 10_005_050
    for device in (4_000, 5_000, 6_000):  # the camera's clock now runs 1 µs behind
        clock.observe(device, 10_001_000 + device + 70)
    assert clock.offset_ns == 10_001_070  # the old offsets left the window
