"""The three named presets, ``clean``, ``default`` and ``hard``, and :func:`get_preset`.

- ``clean``: strong contrast, few distractors, low noise: a sanity set and a curriculum start.
- ``default``: a realistic line, where most cracks are readable in visible light alone.
- ``hard``: faint cracks, scratches as dark, thin, tapered and jagged as cracks, stronger machining
  texture, blur and noise, warm reflections and emissivity patches in the infrared. From the visible
  image alone a crack and a crack-like scratch cannot be told apart; the infrared (a crack is warmer,
  a scratch is not) and the visible together can.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from inspector.synth.config import SynthConfig, SynthError

CLEAN = SynthConfig(
    name="clean",
    crack_contrast=(0.6, 0.9),
    crack_ir_delta=(400.0, 900.0),
    texture_strength=(0.04, 0.1),
    illumination_gradient=(0.0, 0.15),
    vignetting=(0.0, 0.15),
    specular_count=(0, 1),
    specular_strength=(0.1, 0.3),
    defocus_px=(0.0, 0.5),
    motion_blur_px=(0.0, 0.5),
    full_well_e=(10000.0, 20000.0),
    read_noise_e=(3.0, 6.0),
    distractor_count=(0, 2),
    crack_like_scratch=0.0,
    scratch_contrast=(0.1, 0.3),
    ir_distractor_counts=(30.0, 120.0),
    ir_streak_probability=0.0,
    ir_netd_counts=(2.0, 4.0),
    ir_fpn_counts=(0.5, 2.0),
)

DEFAULT = SynthConfig(name="default")

HARD = SynthConfig(
    name="hard",
    width_bin_weights=(1.0, 1.5, 1.5, 1.0),
    crack_contrast=(0.12, 0.45),
    crack_wander_rad=0.26,
    crack_ir_delta=(120.0, 350.0),
    texture_weights={"brushed": 0.3, "turned": 0.3, "milled": 0.25, "cast": 0.15},
    texture_strength=(0.12, 0.28),
    illumination_gradient=(0.1, 0.45),
    vignetting=(0.15, 0.4),
    specular_count=(0, 2),
    specular_strength=(0.2, 0.9),
    defocus_px=(0.3, 1.4),
    motion_blur_px=(0.0, 2.5),
    full_well_e=(2000.0, 6000.0),
    read_noise_e=(8.0, 20.0),
    distractor_count=(4, 10),
    distractor_weights={
        "scratch": 4.0,
        "machining_mark": 1.5,
        "stain": 1.5,
        "oil": 1.0,
        "dust": 1.0,
        "printed_mark": 0.5,
        "ir_emissivity": 2.0,
        "ir_reflection": 2.0,
    },
    crack_like_scratch=0.8,
    scratch_contrast=(0.12, 0.45),
    ir_distractor_counts=(60.0, 350.0),
    ir_streak_probability=0.6,
    ir_netd_counts=(5.0, 10.0),
    ir_fpn_counts=(3.0, 8.0),
    ir_gain_sigma=5e-4,
    thermal_blur_mm=(0.24, 0.4),
)

PRESETS: dict[str, SynthConfig] = {"clean": CLEAN, "default": DEFAULT, "hard": HARD}


def list_presets() -> list[str]:
    """Names of the presets, in order of difficulty."""
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> SynthConfig:
    """A preset by name, with some parameters replaced (and the result validated).

    Args:
        name: ``clean``, ``default`` or ``hard``.
        **overrides: :class:`SynthConfig` fields to replace, e.g. ``clean_fraction=0.5``.

    Raises:
        SynthError: unknown preset name or invalid override.

    """
    if name not in PRESETS:
        raise SynthError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return with_overrides(PRESETS[name], **overrides)


def with_overrides(config: SynthConfig, **overrides: Any) -> SynthConfig:
    """A copy of ``config`` with some fields replaced, validated like a fresh config.

    Raises:
        SynthError: an unknown field or a bad value, naming it.

    """
    if not overrides:
        return config
    try:
        return SynthConfig.model_validate({**config.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise SynthError(f"synth parameter {where}: {first['msg']}") from None
