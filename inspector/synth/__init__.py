"""Synthetic visible + infrared line data: metal parts with cracks and distractors, with ground truth.

No public visible + IR crack data set exists, so the project trains and evaluates on this one. It is
physically motivated (see ``docs/DATA.md``) and deterministic by ``(seed, index)``. The output is the
:mod:`inspector.dataset` format.

    >>> from inspector.synth import generate_sample, get_preset
    >>> sample = generate_sample(0, seed=1, preset=get_preset("hard"), size=256)
"""

from inspector.synth.config import WIDTH_BIN_LABELS, SynthConfig, SynthError, width_bin
from inspector.synth.generator import SetSummary, generate_sample, generate_set, sample_id
from inspector.synth.presets import PRESETS, get_preset, list_presets, with_overrides
from inspector.synth.sweep import SweepLevel, sweep_levels

__all__ = [
    "PRESETS",
    "WIDTH_BIN_LABELS",
    "SetSummary",
    "SweepLevel",
    "SynthConfig",
    "SynthError",
    "generate_sample",
    "generate_set",
    "get_preset",
    "list_presets",
    "sample_id",
    "sweep_levels",
    "width_bin",
    "with_overrides",
]
