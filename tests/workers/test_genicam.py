"""The GenICam source without a camera: the errors it reports (its pairing: tests/inspector/test_rig_pairing.py)."""

from __future__ import annotations

import pytest

from inspector.sources import SourceError
from workers.genicam import GenICamError, GenICamSource


def test_a_genicam_error_says_what_happened_and_to_how_many_frames() -> None:
    error = GenICamError("overflow", "the gateway fell behind", frames=6)
    assert isinstance(error, SourceError) and error.outcome == "overflow" and error.frames == 6
    assert GenICamError("incomplete", "frame 3").frames == 1


def test_a_source_without_rigs_says_where_to_configure_them() -> None:
    with pytest.raises(SourceError, match="cameras:"):
        GenICamSource([])
