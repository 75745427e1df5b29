"""Levels of an optics sweep: one :class:`SweepLevel` per held-out set, each one capture variation.

A sweep asks how a model's figures move when only the camera changes. Every level is the same parts
(same preset, seed and count) seen through one capture variation (:mod:`inspector.capture`), given as
:class:`~inspector.synth.config.SynthConfig` overrides. The blur rows come first (``blur 0 px`` is the
identity); every further row varies one factor from the identity: sensor noise, gain, gamma or JPEG.

    >>> [level.label for level in sweep_levels(blur=[0, 1.0], jpeg=[50])]
    ['blur 0 px', 'blur 1 px', 'jpeg q50']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from inspector.synth.config import SynthConfig, SynthError

Factor = Literal["blur", "noise", "gain", "gamma", "jpeg"]
FIELDS: dict[Factor, str] = {  # sweep factor -> SynthConfig field
    "blur": "psf_blur_px",
    "noise": "sensor_noise_dn",
    "gain": "gain",
    "gamma": "gamma",
    "jpeg": "jpeg_quality",
}
IDENTITY: dict[str, Any] = {field: SynthConfig.model_fields[field].default for field in FIELDS.values()}
"""The capture-variation fields of :class:`SynthConfig` at the identity (their defaults)."""


@dataclass(frozen=True)
class SweepLevel:
    """One row of a sweep: a factor at a value, everything else at the identity."""

    factor: Factor
    value: float

    @property
    def overrides(self) -> dict[str, Any]:
        """:class:`SynthConfig` overrides that make this level's sets (all capture fields, explicitly)."""
        value: Any = int(self.value) if self.factor == "jpeg" else float(self.value)
        return {**IDENTITY, FIELDS[self.factor]: value}

    @property
    def is_identity(self) -> bool:
        """True when the level changes nothing (e.g. ``blur 0 px``, ``gain 1``)."""
        return self.overrides == IDENTITY

    @property
    def label(self) -> str:
        """Row label: ``blur 1 px``, ``noise 4 DN``, ``gain 1.3``, ``gamma 0.8``, ``jpeg q50``."""
        return {
            "blur": f"blur {self.value:g} px",
            "noise": f"noise {self.value:g} DN",
            "gain": f"gain {self.value:g}",
            "gamma": f"gamma {self.value:g}",
            "jpeg": f"jpeg q{int(self.value)}",
        }[self.factor]

    @property
    def key(self) -> str:
        """Folder name of the level's set: ``identity`` for every identity level, else e.g. ``blur-1``."""
        return "identity" if self.is_identity else f"{self.factor}-{self.value:g}"


def sweep_levels(
    blur: Sequence[float] = (0.0, 0.5, 1.0, 1.5),
    noise: Sequence[float] = (),
    gain: Sequence[float] = (),
    gamma: Sequence[float] = (),
    jpeg: Sequence[float] = (),
) -> list[SweepLevel]:
    """The rows of a sweep, blur first, in the order given (a value repeated within a factor: once).

    Raises:
        SynthError: no level at all, or a JPEG quality that is not a whole number.

    """
    levels: list[SweepLevel] = []
    given: tuple[tuple[Factor, Sequence[float]], ...] = (
        ("blur", blur),
        ("noise", noise),
        ("gain", gain),
        ("gamma", gamma),
        ("jpeg", jpeg),
    )
    for factor, values in given:
        for value in values:
            if factor == "jpeg" and float(value) != int(value):
                raise SynthError(f"JPEG quality must be a whole number from 1 to 100, got {value}")
            level = SweepLevel(factor, float(value))
            if level not in levels:
                levels.append(level)
    if not levels:
        raise SynthError("an optics sweep needs at least one level, e.g. blur 0,0.5,1.0,1.5")
    return levels
