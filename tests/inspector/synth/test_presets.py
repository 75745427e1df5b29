from __future__ import annotations

import pytest

from inspector.synth import PRESETS, SynthConfig, SynthError, get_preset, list_presets, with_overrides


def test_presets_are_named_frozen_configs() -> None:
    assert list_presets() == ["clean", "default", "hard"]
    for name, config in PRESETS.items():
        assert config.name == name
        with pytest.raises(ValueError, match="frozen"):
            config.clean_fraction = 0.5  # type: ignore[misc]


def test_hard_is_harder_than_default_than_clean() -> None:
    clean, default, hard = (get_preset(n) for n in list_presets())
    assert clean.crack_contrast[0] > default.crack_contrast[0] > hard.crack_contrast[0]
    assert clean.crack_like_scratch < default.crack_like_scratch < hard.crack_like_scratch
    assert clean.distractor_count[1] < default.distractor_count[1] < hard.distractor_count[1]
    assert clean.ir_netd_counts[1] < hard.ir_netd_counts[1]


def test_overrides_are_validated() -> None:
    config = get_preset("hard", clean_fraction=0.5, crack_contrast=[0.1, 0.2])
    assert config.clean_fraction == 0.5 and config.crack_contrast == (0.1, 0.2) and config.name == "hard"
    assert get_preset("hard") is PRESETS["hard"]  # the preset itself is untouched
    with pytest.raises(SynthError, match="crack_contrast"):
        get_preset("default", crack_contrast=(0.5, 0.1))  # low > high
    with pytest.raises(SynthError, match="no_such_knob"):
        with_overrides(SynthConfig(), no_such_knob=1)
    with pytest.raises(SynthError, match="unknown preset 'medium': choose one of clean, default, hard"):
        get_preset("medium")
