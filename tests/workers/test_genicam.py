"""The GenICam source's pure parts: trigger-period arithmetic and the errors it reports (no camera needed)."""

from __future__ import annotations

import pytest

from inspector.sources import SourceError
from workers.genicam import GenICamError, GenICamSource, whole_periods

PERIOD = 250_000_000  # 4 triggers a second


@pytest.mark.parametrize(
    ("skew_ms", "expected"),
    [
        (0, 0), (40, 0), (-40, 0),        # the same trigger, stamped with the simulator's jitter
        (125, 0), (180, 0),               # half a period or so: ambiguous, never moves a pairing
        (250, 1), (-250, 1), (200, 1), (310, 1),  # one trigger apart, within a quarter period
        (500, 2), (-740, 3),
        (375, 0),                         # one and a half periods: ambiguous
    ],
)  # fmt: skip
def test_only_a_skew_of_whole_trigger_periods_counts_as_missed_triggers(skew_ms: int, expected: int) -> None:
    assert whole_periods(skew_ms * 1_000_000, PERIOD) == expected


def test_a_genicam_error_says_what_happened_and_to_how_many_frames() -> None:
    error = GenICamError("overflow", "the gateway fell behind", frames=6)
    assert isinstance(error, SourceError) and error.outcome == "overflow" and error.frames == 6
    assert GenICamError("incomplete", "frame 3").frames == 1


def test_a_source_without_rigs_says_where_to_configure_them() -> None:
    with pytest.raises(SourceError, match="cameras:"):
        GenICamSource([])
