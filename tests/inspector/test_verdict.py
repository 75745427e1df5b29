from __future__ import annotations

import pytest
from pydantic import ValidationError

from inspector.measure import CrackMeasurement
from inspector.verdict import VerdictRules, judge


def crack(width: float, length: float, score: float = 1.0) -> CrackMeasurement:
    return CrackMeasurement(length, width, width * 0.8, (0, 0, 1, 1), score, 10)


def test_default_rule_is_0_2_mm_wide_and_1_mm_long() -> None:
    assert judge([]).verdict == "OK"
    assert judge([crack(0.19, 5.0)]).verdict == "OK"
    assert judge([crack(0.25, 0.9)]).verdict == "OK"
    decision = judge([crack(0.15, 3.0), crack(0.2, 1.0)])
    assert decision.verdict == "NG"
    assert [d.max_width_mm for d in decision.defects] == [0.2]
    assert len(decision.cracks) == 2


def test_configurable_rules() -> None:
    strict = VerdictRules(min_width_mm=0.1, min_length_mm=0.5, min_score=0.8)
    assert judge([crack(0.15, 0.6, score=0.9)], strict).verdict == "NG"
    assert judge([crack(0.15, 0.6, score=0.5)], strict).verdict == "OK"


def test_rules_reject_nonsense() -> None:
    with pytest.raises(ValidationError):
        VerdictRules(min_width_mm=-1)
    with pytest.raises(ValidationError):
        VerdictRules(min_widht_mm=0.1)  # type: ignore[call-arg]


def test_choose_rules_finds_the_cut_that_separates_validation_parts() -> None:
    from inspector.verdict import LabelledPart, choose_rules, score_rules

    # the model understates widths a little and leaves faint, narrow debris on clean parts
    parts = [LabelledPart((crack(0.18, 3.0, 0.9),), truly_ng=True, clean=False) for _ in range(4)]
    parts += [LabelledPart((crack(0.21, 2.0, 0.55),), truly_ng=False, clean=True) for _ in range(4)]
    parts += [LabelledPart((), truly_ng=False, clean=True) for _ in range(2)]
    at_spec = score_rules(parts, VerdictRules())
    assert at_spec.escape_rate == 1.0 and at_spec.false_reject_rate == pytest.approx(4 / 6)
    ranked = choose_rules(parts, widths_mm=(0.16, 0.18, 0.2), scores=(0.0, 0.6))
    best = ranked[0]
    assert best.cost == 0.0 and best.rules.min_width_mm == 0.18 and best.rules.min_score == 0.6
    assert best.rules.min_length_mm == VerdictRules().min_length_mm  # the length rule stays the specification's
    assert [c.cost for c in ranked] == sorted(c.cost for c in ranked)
