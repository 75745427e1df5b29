"""Part verdicts: OK or NG from measured cracks and configurable rules.

Also the choice of a model's operating point (:func:`choose_rules`) on labelled validation parts.
"""

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


@dataclass(frozen=True)
class LabelledPart:
    """A validation part for choosing rules: what the model measured on it, and what it truly is."""

    cracks: tuple[CrackMeasurement, ...]
    truly_ng: bool  # a true crack meets the specification (max width >= 0.2 mm, length >= 1 mm)
    clean: bool  # no crack at all


@dataclass(frozen=True)
class RuleScore:
    """How a candidate rule does on labelled parts."""

    rules: VerdictRules
    escape_rate: float  # NG parts judged OK
    false_reject_rate: float  # clean parts judged NG

    @property
    def cost(self) -> float:
        """What the choice minimises: escapes plus false rejects, each as a rate."""
        return self.escape_rate + self.false_reject_rate


def score_rules(parts: Sequence[LabelledPart], rules: VerdictRules) -> RuleScore:
    """Escape and false-reject rates of ``rules`` on labelled parts (0 where a kind of part is absent)."""
    ng = [p for p in parts if p.truly_ng]
    clean = [p for p in parts if p.clean]
    escapes = sum(judge(p.cracks, rules).verdict == "OK" for p in ng)
    rejects = sum(judge(p.cracks, rules).verdict == "NG" for p in clean)
    return RuleScore(rules, escapes / len(ng) if ng else 0.0, rejects / len(clean) if clean else 0.0)


def choose_rules(
    parts: Sequence[LabelledPart],
    widths_mm: Sequence[float],
    scores: Sequence[float],
    specification: VerdictRules | None = None,
) -> list[RuleScore]:
    """Every candidate rule scored on validation parts, the best first.

    A model reads widths and confidence with its own biases, so the operating point that best enforces
    the specification (a crack of ``specification.min_width_mm`` and ``min_length_mm`` is a defect) is
    chosen on validation parts: the measured-width cut and the least mean crack probability that
    minimise escapes plus false rejects; ties go to the rule closest to the specification. The length
    rule stays the specification's. Validation data only: never held-out parts.
    """
    spec = specification or VerdictRules()
    candidates = [
        score_rules(parts, VerdictRules(min_width_mm=w, min_length_mm=spec.min_length_mm, min_score=s))
        for w in widths_mm
        for s in scores
    ]
    return sorted(
        candidates,
        key=lambda c: (round(c.cost, 9), abs(c.rules.min_width_mm - spec.min_width_mm), c.rules.min_score),
    )
