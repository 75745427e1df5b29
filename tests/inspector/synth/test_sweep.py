from __future__ import annotations

import pytest

from inspector.synth import SynthError, get_preset
from inspector.synth.sweep import IDENTITY, SweepLevel, sweep_levels


def test_default_sweep_is_blur_0_to_1_5() -> None:
    levels = sweep_levels()
    assert [lv.label for lv in levels] == ["blur 0 px", "blur 0.5 px", "blur 1 px", "blur 1.5 px"]
    assert levels[0].is_identity and levels[0].key == "identity"
    assert levels[2].overrides == {**IDENTITY, "psf_blur_px": 1.0} and levels[2].key == "blur-1"


def test_further_rows_vary_one_factor_from_the_identity() -> None:
    levels = sweep_levels(blur=[0, 1.0], noise=[2], gain=[1.4], gamma=[0.8], jpeg=[50])
    assert [lv.label for lv in levels] == ["blur 0 px", "blur 1 px", "noise 2 DN", "gain 1.4", "gamma 0.8", "jpeg q50"]
    for level in levels[2:]:
        changed = {k: v for k, v in level.overrides.items() if v != IDENTITY[k]}
        assert len(changed) == 1
        get_preset("default", **level.overrides)  # every level is a valid config
    assert levels[-1].overrides["jpeg_quality"] == 50 and isinstance(levels[-1].overrides["jpeg_quality"], int)


def test_identity_levels_share_one_set_and_repeats_are_dropped() -> None:
    levels = sweep_levels(blur=[0, 0.0, 1], gain=[1.0])
    assert [lv.label for lv in levels] == ["blur 0 px", "blur 1 px", "gain 1"]
    assert levels[0].key == levels[2].key == "identity"
    assert SweepLevel("jpeg", 80).key == "jpeg-80"


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"blur": []}, "at least one level"), ({"blur": [], "jpeg": [50.5]}, "whole number")]
)
def test_bad_sweeps_are_refused(kwargs: dict[str, list[float]], message: str) -> None:
    with pytest.raises(SynthError, match=message):
        sweep_levels(**kwargs)
