"""The soak's memory and lag figures, without services."""

from __future__ import annotations

import os

import pytest

from workers.soak import lag_trend, memory_growth, rss_mib


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
