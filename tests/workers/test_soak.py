"""The soak's memory and lag figures, without services."""

from __future__ import annotations

import os

import pytest

from workers.soak import gated, lag_trend, memory_growth, rss_mib, stored_rate


def test_memory_growth_compares_the_first_and_last_minute_after_warm_up() -> None:
    flat = [(t, 600.0) for t in range(0, 600, 5)]
    leaking = [(t, 600.0 + 0.1 * t) for t in range(0, 600, 5)]  # +6 MiB a minute
    figures = memory_growth({0: flat, 1: leaking}, warm=120, end=600)
    rows = figures["per_worker"]
    assert rows[0]["growth_pct"] == pytest.approx(0.0)
    # first minute after warm-up: median of 612..623.5; last minute: median of 654..659.5
    assert rows[1]["growth_pct"] == pytest.approx(100 * (656.75 - 614.75) / 614.75)
    assert figures["max_growth_pct"] == rows[1]["growth_pct"] > 5


def test_lag_trend_flags_a_backlog_that_builds_up_and_not_noise() -> None:
    steady = [(t, 40 + (t % 3)) for t in range(0, 600)]
    growing = [(t, 40 + t // 2) for t in range(0, 600)]  # +30 records a minute
    calm = lag_trend(steady, warm=120, end=600, records_per_s=100)
    assert abs(calm["slope_per_min"]) < 1 and calm["grows"] is False
    rising = lag_trend(growing, warm=120, end=600, records_per_s=100)
    assert rising["slope_per_min"] == pytest.approx(30, rel=0.01)
    assert rising["grows"] is True  # +240 records over 8 minutes > one second of load (100)
    assert lag_trend(steady[:2], warm=0, end=600, records_per_s=100)["grows"] is None


def test_rss_of_this_process_is_readable_and_of_a_missing_one_none() -> None:
    assert (rss_mib(os.getpid()) or 0) > 10
    assert rss_mib(2**22 + 12345) is None


def test_gated_feed_waits_while_too_many_items_lack_a_result() -> None:
    stored = {"n": 0}
    waits: list[int] = []

    def wait(_seconds: float) -> bool:
        waits.append(stored["n"])
        stored["n"] += 1  # one result arrives per pause
        return False

    feed = gated(range(10), lambda taken: taken - stored["n"], limit=3, wait=wait)
    assert list(feed) == list(range(10))
    # items 0-3 go at once (backlog 0..3); from then on each item waits for one more result
    assert waits == [0, 1, 2, 3, 4, 5]


def test_gated_feed_ends_when_its_wait_says_stop() -> None:
    feed = gated(range(100), lambda taken: taken, limit=2, wait=lambda _s: True)  # no result ever comes
    assert list(feed) == [0, 1, 2]


def test_stored_rate_is_the_slope_of_the_count_in_the_window() -> None:
    points = [(float(t), 5 * t if t < 30 else 150 + 2 * (t - 30)) for t in range(0, 120)]  # 5/s warm-up, then 2/s
    assert stored_rate(points, 30, 120) == pytest.approx(2.0)
    assert stored_rate(points[:2], 0, 120) is None
