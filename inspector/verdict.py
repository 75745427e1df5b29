"""Part verdicts: OK or NG from measured cracks and configurable rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inspector.measure import CrackMeasurement

Verdict = Literal["OK", "NG"]


class VerdictRules(BaseModel):
    """When a crack makes a part NG. Default: any crack ≥ 0.2 mm wide and ≥ 1 mm long."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_width_mm: float = Field(0.2, ge=0, description="a crack at least this wide (max width) is a defect")
    min_length_mm: float = Field(1.0, ge=0, description="... and at least this long")
    min_score: float = Field(0.0, ge=0, le=1, description="... and at least this confident")

    def is_defect(self, crack: CrackMeasurement) -> bool:
        """True when this crack alone makes the part NG."""
        return (
            crack.max_width_mm >= self.min_width_mm
            and crack.length_mm >= self.min_length_mm
            and crack.score >= self.min_score
        )


@dataclass(frozen=True)
class PartVerdict:
    """The verdict on one part and the cracks that decided it."""

    verdict: Verdict
    defects: tuple[CrackMeasurement, ...]  # cracks that meet the rules (NG causes)
    cracks: tuple[CrackMeasurement, ...]  # every crack found, defect or not


def judge(cracks: Sequence[CrackMeasurement], rules: VerdictRules | None = None) -> PartVerdict:
    """Decide OK/NG for one part from its measured cracks."""
    rules = rules or VerdictRules()
    defects = tuple(c for c in cracks if rules.is_defect(c))
    return PartVerdict(verdict="NG" if defects else "OK", defects=defects, cracks=tuple(cracks))
