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
