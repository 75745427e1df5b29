"""The width policy on a simulated line: narrows in a burst, bounds the queue, comes back, does not flap."""

from __future__ import annotations

import itertools

import pytest

from inspector.width import Load, WidthPolicy, WidthState, WidthVariant

FAMILY = (WidthVariant("w100", 1.0, 40.0), WidthVariant("w60", 0.6, 22.0), WidthVariant("w35", 0.35, 13.0))


def simulate(policy: WidthPolicy, arrivals_fps: list[float], step_s: float = 1.0) -> tuple[list[str], list[float]]:
    """A worker draining a queue: each step frames arrive, the active variant processes what it can."""
    state, lag = WidthState(), 0.0
    names, lags = [], []
    for fps in arrivals_fps:
        state = policy.decide(state, Load(lag_frames=lag, arrival_fps=fps))
        variant = policy.variants[state.index]
        capacity = step_s * 1000.0 / variant.ms_per_frame
        lag = max(0.0, lag + fps * step_s - capacity)
        names.append(variant.name)
        lags.append(lag)
    return names, lags


def test_burst_narrows_bounds_the_queue_and_recovers() -> None:
    policy = WidthPolicy(FAMILY, latency_budget_ms=1000, dwell=5)
    trace = [10.0] * 20 + [45.0] * 40 + [10.0] * 40  # a line speeding up 4.5x for 40 s
    names, lags = simulate(policy, trace)
    assert set(names[:20]) == {"w100"}  # 10 fps needs 40% of the unpruned model's time
    assert "w35" in names[20:60] or "w60" in names[20:60]
    assert max(lags[30:60]) < 45  # the queue stops growing: less than a second of frames waiting
    assert names[-1] == "w100"  # and back to full width once the burst is over
    unpruned_only, unpruned_lags = simulate(WidthPolicy(FAMILY[:1], latency_budget_ms=1000), trace)
    assert set(unpruned_only) == {"w100"} and max(unpruned_lags) > 10 * max(lags[30:60])  # without it the lag explodes


def test_load_at_a_threshold_does_not_flap() -> None:
    policy = WidthPolicy(FAMILY, latency_budget_ms=1000, dwell=5)
    # 21-22 fps puts the unpruned model right at the 0.85 high-water mark, alternating above and below
    names, _ = simulate(policy, [21.0, 22.0] * 50)
    switches = sum(a != b for a, b in itertools.pairwise(names))
    assert switches <= 2


def test_backlog_alone_narrows() -> None:
    policy = WidthPolicy(FAMILY, latency_budget_ms=500)
    state = policy.decide(WidthState(), Load(lag_frames=30, arrival_fps=1))  # 30 x 40 ms = 1.2 s waiting
    assert policy.variants[state.index].name in {"w60", "w35"}


def test_widening_waits_for_dwell() -> None:
    policy = WidthPolicy(FAMILY, latency_budget_ms=1000, dwell=3)
    state = WidthState(index=2, held=0)
    calm = Load(lag_frames=0, arrival_fps=1)
    history = []
    for _ in range(8):
        state = policy.decide(state, calm)
        history.append(state.index)
    assert history[:3] == [2, 2, 2] and history[3] == 1 and history[-1] == 0


@pytest.mark.parametrize(
    ("variants", "message"),
    [((), "at least one"), ((FAMILY[1], FAMILY[0]), "widest first")],
)
def test_bad_policies(variants: tuple[WidthVariant, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WidthPolicy(variants, latency_budget_ms=100)
