"""The narrative is written from the findings and read back without a contradiction (issue 22, part 1)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.medical.narrative import (
    ReportContext,
    contradictions,
    narrative,
    narratives,
    parse_narrative,
    parsed_findings,
    size_text,
)
from inspector.medical.phantom import LESIONS
from inspector.medical.vocab import PHRASINGS, Finding

EXTRA = "A 4 mm simple cyst in the spleen, mean attenuation 2 HU."
CT = ReportContext("CT", "lower chest and upper abdomen", True, "cough", 64.0)

# the findings of the issue's example: eight small calcifications in the liver of CT_small.dcm
MEASURED = [(3.6, 259), (2.7, 263), (2.2, 242), (2.0, 241), (1.6, 239), (1.2, 280), (0.7, 253), (0.4, 250)]
CT_SMALL = [Finding("calcification", "liver", size, hu) for size, hu in MEASURED]


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text) if s]


def test_the_issues_example_has_one_sentence_per_organ_and_every_measured_number() -> None:
    text = narrative(CT_SMALL, CT, 0)
    assert "Eight calcifications in the liver: 4 mm (259 HU), 3 mm (263 HU), 2 mm (242 HU)" in text
    assert "1 mm (253 HU) and <1 mm (250 HU)." in text
    assert text.count("calcification") == 2  # the findings sentence and one impression line
    assert "Impression: Benign hepatic calcifications." in text
    assert len(sentences(text)) == len(set(sentences(text)))
    assert contradictions(text, CT_SMALL, CT) == []


@pytest.mark.parametrize("style", range(PHRASINGS))
def test_the_technique_names_the_studys_modality_anatomy_and_contrast(style: int) -> None:
    mr = ReportContext("MR", "abdomen", False, None, None)
    text = narrative([Finding("cyst", "liver", 12.0, None)], mr, style)
    technique = text.partition(" Findings:")[0]
    assert "MR" in technique and "CT" not in technique and "abdomen" in technique
    assert "contrast" not in technique.lower()
    assert "HU" not in text  # no attenuation values without calibrated HU
    assert text.startswith("Indication: not given.")
    assert contradictions(text, [Finding("cyst", "liver", 12.0, None)], mr) == []
    ct = narrative([], CT, style)
    assert "CT" in ct.partition(" Findings:")[0] and "contrast" in ct.lower() and "lower chest" in ct


def test_the_indication_is_quoted_from_the_request_never_decoded() -> None:
    context = ReportContext("CT", "chest", False, "staging of a known lesion", None)
    assert narrative([], context).startswith("Indication: staging of a known lesion. CT of the chest.")


def test_an_out_of_domain_study_says_so_in_its_narrative_and_impression() -> None:
    context = ReportContext("MR", "", False, None, None, caveat="modality MR, validated on CT only")
    text = narrative([], context, 1)
    assert "Outside the validated domain (modality MR, validated on CT only)" in text
    assert text.endswith("Not validated for this study; not for diagnosis.")
    assert contradictions(text, [], context) == []


def test_many_nodules_share_one_impression_line_whose_advice_follows_the_largest() -> None:
    nodules = [Finding("nodule", "right lung", 9.0, 40), Finding("nodule", "left lung", 4.0, 30),
               Finding("nodule", "right lung", 5.0, 35)]  # fmt: skip
    text = narrative(nodules, CT, 0)
    impression = text.partition("Impression: ")[2]
    assert impression.startswith("Three pulmonary nodules, the largest 9 mm in the right lung.")
    assert "Consider CT at 3 months" in impression and impression.count("nodule") == 1
    assert contradictions(text, nodules, CT) == []


@pytest.mark.parametrize(
    ("style", "edit", "found"),
    [
        (0, lambda t: t.replace("12 mm solid nodule", "13 mm solid nodule"), "states ('nodule', 'right lung', '13'"),
        (0, lambda t: t.replace("attenuation 35 HU", "attenuation 36 HU"), "no structured finding holds"),
        (1, lambda t: t.replace("(35 HU)", "(36 HU)"), "no structured finding holds"),
        (0, lambda t: t.replace("Contrast-enhanced CT", "Contrast-enhanced MR"), "the technique names ['MR']"),
        (0, lambda t: t.replace("Indication: cough.", "Indication: Liver: Liver:."), "the indication"),
        (0, lambda t: t.replace(" Impression:", f" {EXTRA} Impression:"), "states ('cyst', 'spleen', '4', '2')"),
        (0, lambda t: t + " Benign hepatic calcification.", "no finding is one"),
        (2, lambda t: t + " Hepatic cyst.", "a repeated sentence"),
        (0, lambda t: t.replace("the largest 12 mm", "the largest 15 mm"), "the impression gives 15 mm"),
        (0, lambda t: t.replace("Two pulmonary", "Three pulmonary"), "counts Three pulmonary nodules"),
        (0, lambda t: t.replace("Impression:", "Findings: 7 mm. Impression:"), "numbers no finding explains"),
    ],
)
def test_a_changed_narrative_is_caught(style: int, edit: Callable[[str], str], found: str) -> None:
    findings = [Finding("nodule", "right lung", 12.0, 35), Finding("nodule", "left lung", 5.0, 40),
                Finding("cyst", "liver", 20.0, 4)]  # fmt: skip
    text = narrative(findings, CT, style)
    assert contradictions(text, findings, CT) == []
    changed = edit(text)
    problems = contradictions(changed, findings, CT)
    assert changed != text and any(found in p for p in problems), (changed, problems)


findings_strategy = st.lists(
    st.sampled_from([(kind, loc) for kind, (locs, _, _) in LESIONS.items() for loc in locs]).flatmap(
        lambda kl: st.builds(
            Finding, st.just(kl[0]), st.just(kl[1]), st.floats(0.2, 60.0),
            st.one_of(st.none(), st.floats(-900.0, 1200.0)),
        )
    ),
    max_size=9,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    findings=findings_strategy,
    modality=st.sampled_from(["CT", "MR", "PT", "US"]),
    anatomy=st.sampled_from(["", "chest", "lower chest and upper abdomen", "head"]),
    contrast=st.booleans(),
    indication=st.one_of(st.none(), st.sampled_from(["cough", "follow-up", "r/o mass 5 cm"])),
    age=st.one_of(st.none(), st.floats(1.0, 100.0)),
    caveat=st.one_of(st.none(), st.just("1 slice, validated 20; pixel spacing 0.31 mm, validated 1.8-2.0 mm")),
)
def test_every_narrative_reads_back_as_its_findings_in_every_phrasing(
    findings: list[Finding], modality: str, anatomy: str, contrast: bool, indication: str | None,
    age: float | None, caveat: str | None,
) -> None:  # fmt: skip
    context = ReportContext(modality, anatomy, contrast, indication, age, caveat)
    for text in narratives(findings, context):
        assert contradictions(text, findings, context) == [], text
        stated = parse_narrative(text)[0]
        hu = [None if f.mean_hu is None else str(round(f.mean_hu)) for f in findings]
        assert Counter(stated) == Counter(
            (f.type, f.location, size_text(f.size_mm), h) for f, h in zip(findings, hu, strict=True)
        )
        assert len(parsed_findings(text)) == len(findings)
        assert len(sentences(text)) == len(set(sentences(text)))
