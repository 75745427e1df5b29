"""The narrative of a report, written from its structured findings, and the check that reads it back.

Every size, HU value, location, finding type and count in the narrative and its impression is
rendered here from the structured findings; the indication is quoted from the request or the DICOM
tags, and the technique line names the study's own modality, anatomy and contrast. Nothing is
decoded: the report model only chooses one of :data:`~inspector.medical.vocab.PHRASINGS` phrasings
(:func:`inspector.medical.report.choose_style`). Findings of one type in one organ share one
sentence, and the pulmonary nodules one impression line (their advice follows the largest), so no
sentence repeats.

    context = ReportContext.of(volume)
    texts = narratives(findings, context)            # one per phrasing
    assert contradictions(texts[0], findings, context) == []

:func:`contradictions` parses a narrative back (:func:`parse_narrative`) and lists every way it
disagrees with the findings: a finding missing, added or changed, a number, organ or lesion type
in the impression that no finding holds, another modality, another indication, a repeated
sentence. Pure functions: no I/O, no model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inspector.medical.vocab import LOCATIONS, PHRASINGS, TYPES, Finding, order

__all__ = ["ReportContext", "contradictions", "narrative", "narratives", "parse_narrative", "size_text"]

BODY_PARTS = {  # DICOM BodyPartExamined → the anatomy the technique line names
    "CHESTABDOMEN": "lower chest and upper abdomen", "CHESTABDPELVIS": "chest, abdomen and pelvis",
    "ABDOMENPELVIS": "abdomen and pelvis", "CHEST": "chest", "ABDOMEN": "abdomen", "PELVIS": "pelvis",
    "HEAD": "head", "BRAIN": "brain", "NECK": "neck", "HEADNECK": "head and neck", "SPINE": "spine",
    "KNEE": "knee", "SHOULDER": "shoulder", "HEART": "heart", "LIVER": "liver", "KIDNEY": "kidneys",
}  # fmt: skip
MODALITIES = {"CT": "CT", "MR": "MR", "PT": "PET", "NM": "nuclear medicine", "US": "ultrasound", "CR": "radiograph",
              "DX": "radiograph", "MG": "mammogram", "XA": "angiogram", "OT": "imaging"}  # fmt: skip
_NOUNS = {"nodule": "solid nodule", "mass": "soft-tissue mass", "cyst": "simple cyst", "calcification": "calcification"}
_PLURALS = {"nodule": "solid nodules", "mass": "soft-tissue masses", "cyst": "simple cysts",
            "calcification": "calcifications"}  # fmt: skip
_ADJECTIVES = {"right lung": "right lung", "left lung": "left lung", "liver": "hepatic", "spleen": "splenic",
               "right kidney": "right renal", "left kidney": "left renal"}  # fmt: skip
_COUNTS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ADVICE = (  # the nodule advice sentences (Fleischner size bands), the only other numbers an impression holds
    "Fleischner guidelines do not apply under age 35.",
    "No routine follow-up is required.",
    "Follow-up CT at 6 to 12 months is recommended.",
    "Consider CT at 3 months, PET/CT or tissue sampling.",
)


def size_text(size_mm: float) -> str:
    """A size as the report writes it: whole millimetres, ``<1`` below half a millimetre."""
    whole = round(size_mm)
    return "<1" if whole < 1 else str(whole)


def _hu_text(hu: float | None) -> str | None:
    return None if hu is None else str(round(hu))


def _count(n: int) -> str:
    return _COUNTS[n] if n < len(_COUNTS) else str(n)


def _listed(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


@dataclass(frozen=True)
class ReportContext:
    """What the narrative states besides the findings, all from the request or the DICOM tags.

    Attributes:
        modality: The study's ``Modality`` (``CT``, ``MR``…).
        anatomy: The body part examined in words ("" when the files do not say).
        contrast: Whether a contrast agent is recorded (``ContrastBolusAgent``).
        indication: Why the study was done, quoted as given, or None.
        age: The patient's age in years (the nodule advice depends on it), or None.
        caveat: Why the study is outside the validated domain, or None when it is inside.

    """

    modality: str = "CT"
    anatomy: str = ""
    contrast: bool = False
    indication: str | None = None
    age: float | None = None
    caveat: str | None = None

    @classmethod
    def of(cls, volume: Any, patient: Any = None, caveat: str | None = None) -> ReportContext:
        """The context of a :class:`~inspector.medical.dicom.Volume` (``patient`` overrides its own)."""
        who = patient if patient is not None else volume.patient
        part = str(volume.body_part or "").upper()
        indication = (who.indication or "").strip().rstrip(".").strip() or None
        return cls(
            modality=str(volume.modality or "OT").upper(),
            anatomy=BODY_PARTS.get(part, part.lower()),
            contrast=bool(volume.contrast),
            indication=indication,
            age=who.age_years,
            caveat=caveat,
        )

    @property
    def modality_name(self) -> str:
        """The modality in words."""
        return MODALITIES.get(self.modality, self.modality or "imaging")


# -- writing ------------------------------------------------------------------------------------------


def _technique(context: ReportContext, style: int) -> str:
    name, where = context.modality_name, context.anatomy
    if context.contrast:
        lead = (f"Contrast-enhanced {name}", f"{name} with intravenous contrast", f"Contrast-enhanced {name}")[style]
    else:
        lead = (f"{name}", f"{name} examination", f"{name}")[style]
    if where:
        sentence = (f"{lead} of the {where}.", f"{lead} of the {where}.", f"{lead}, {where}.")[style]
        if context.contrast and style == 1:
            sentence = f"{name} of the {where} with intravenous contrast."
    else:
        sentence = f"{lead} (anatomy not stated)."
    if context.modality != "CT":
        sentence += f" {name} intensities are not calibrated: no attenuation values are given."
    return sentence[0].upper() + sentence[1:]


def _measure(f: Finding) -> str:
    hu = _hu_text(f.mean_hu)
    return f"{size_text(f.size_mm)} mm" + ("" if hu is None else f" ({hu} HU)")


def _sentence(group: Sequence[Finding], style: int) -> str:
    """The findings sentence of one (type, organ) group."""
    first, loc = group[0], group[0].location
    if len(group) == 1:
        s, hu, noun = size_text(first.size_mm), _hu_text(first.mean_hu), _NOUNS[first.type]
        if hu is None:
            return (f"A {s} mm {noun} in the {loc}.", f"There is a {s} mm {noun} in the {loc}.",
                    f"{loc.capitalize()}: {noun} measuring {s} mm.")[style]  # fmt: skip
        return (f"A {s} mm {noun} in the {loc}, mean attenuation {hu} HU.",
                f"There is a {s} mm {noun} in the {loc} ({hu} HU).",
                f"{loc.capitalize()}: {noun} measuring {s} mm, {hu} HU.")[style]  # fmt: skip
    n, plural, items = _count(len(group)), _PLURALS[first.type], _listed([_measure(f) for f in group])
    return (f"{n.capitalize()} {plural} in the {loc}: {items}.", f"There are {n} {plural} in the {loc}: {items}.",
            f"{loc.capitalize()}: {n} {plural}: {items}.")[style]  # fmt: skip


def _advice(largest: Finding, age: float | None) -> str:
    if age is not None and age < 35:
        return ADVICE[0]
    if largest.size_mm < 6:
        return ADVICE[1]
    return ADVICE[2] if largest.size_mm <= 8 else ADVICE[3]


def _impression_item(group: Sequence[Finding], age: float | None, style: int) -> str:
    """The impression line of a group (all pulmonary nodules form one group)."""
    first, n = group[0], len(group)
    s, name = size_text(first.size_mm), _ADJECTIVES.get(first.location, first.location)
    if first.type == "nodule":
        if n == 1:
            lead = (f"{s} mm {first.location} nodule.", f"Solid {first.location} nodule of {s} mm.",
                    f"{s} mm pulmonary nodule.")[style]  # fmt: skip
        else:
            many, loc = _count(n).capitalize(), first.location
            lead = (f"{many} pulmonary nodules, the largest {s} mm in the {loc}.",
                    f"Solid pulmonary nodules ({n}), the largest {s} mm in the {loc}.",
                    f"{many} pulmonary nodules, largest {s} mm ({loc}).")[style]  # fmt: skip
        return f"{lead} {_advice(first, age)}"
    if first.type == "mass":
        if n == 1:
            lead = (f"{s} mm {name} mass", f"{name.capitalize()} mass of {s} mm", f"{s} mm {name} mass")[style]
        else:
            lead = f"{_count(n).capitalize()} {name} masses, the largest {s} mm"
        return f"{lead}, suspicious for malignancy; tissue sampling is recommended."
    if first.type == "cyst":
        word = "cyst" if n == 1 else "cysts"
        return (f"Simple {name} {word}, benign.", f"Benign {name} {word}; no follow-up needed.",
                f"{name.capitalize()} {word}.")[style]  # fmt: skip
    word = "calcification" if n == 1 else "calcifications"
    return (f"Benign {name} {word}.", f"{name.capitalize()} {word}, benign.", f"{word.capitalize()}, {name}.")[style]


def _groups(findings: Sequence[Finding]) -> list[list[Finding]]:
    """Findings grouped by (type, organ) in report order, largest first within a group."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in order(findings):
        groups.setdefault((f.type, f.location), []).append(f)
    return list(groups.values())


def narrative(findings: Sequence[Finding], context: ReportContext, style: int = 0) -> str:
    """The narrative of a study in phrasing ``style``: indication, caveat, technique, findings, impression."""
    style %= PHRASINGS
    groups = _groups(findings)
    caveat = (
        ""
        if context.caveat is None
        else f"Outside the validated domain ({context.caveat}): "
        + ("the measurements are reported, their interpretation is not validated. ")
    )
    if groups:
        body = " ".join(_sentence(g, style) for g in groups)
        nodules = [f for g in groups if g[0].type == "nodule" for f in g]
        items, said_nodules = [], False
        for g in groups:
            if g[0].type == "nodule":
                if not said_nodules:
                    items.append(_impression_item(sorted(nodules, key=lambda f: -f.size_mm), context.age, style))
                    said_nodules = True
                continue
            items.append(_impression_item(g, context.age, style))
        impression = " ".join(items)
    else:
        body = ("No focal lesion is identified.", "No focal abnormality is seen.", "No focal lesion.")[style]
        impression = ("No acute abnormality.", "Normal study.", "No significant abnormality.")[style]
    if context.caveat is not None:
        impression = f"{impression} Not validated for this study; not for diagnosis."
    technique = _technique(context, style)
    return (
        f"Indication: {context.indication or 'not given'}. {caveat}{technique} "
        f"Findings: {body} Impression: {impression}"
    )


def narratives(findings: Sequence[Finding], context: ReportContext) -> list[str]:
    """One narrative per phrasing (the candidates the report model chooses from)."""
    return [narrative(findings, context, style) for style in range(PHRASINGS)]


# -- reading back ----------------------------------------------------------------------------------------

_LOC = "|".join(re.escape(loc) for loc in LOCATIONS)
_NOUN = "|".join(re.escape(n) for n in [*_NOUNS.values(), *_PLURALS.values()])
_SIZE = r"(?:<1|\d+)"
_SINGLE = (
    re.compile(rf"(?P<size>{_SIZE}) mm (?P<noun>{_NOUN}) in the (?P<loc>{_LOC})(?:, mean attenuation (?P<hu>-?\d+) HU"
               rf"| \((?P<hu2>-?\d+) HU\))?\."),
    re.compile(rf"(?P<loc>{_LOC}): (?P<noun>{_NOUN}) measuring (?P<size>{_SIZE}) mm(?:, (?P<hu>-?\d+) HU)?\.",
               re.IGNORECASE),
)  # fmt: skip
_GROUP = re.compile(rf"(?P<count>\w+) (?P<noun>{_NOUN}) in the (?P<loc>{_LOC}): (?P<items>[^.]*)\.", re.IGNORECASE)
_GROUP_2 = re.compile(rf"(?P<loc>{_LOC}): (?P<count>\w+) (?P<noun>{_NOUN}): (?P<items>[^.]*)\.", re.IGNORECASE)
_ITEM = re.compile(rf"(?P<size>{_SIZE}) mm(?: \((?P<hu>-?\d+) HU\))?")
_TYPE_OF = {**{v: k for k, v in _NOUNS.items()}, **{v: k for k, v in _PLURALS.items()}}


def _number(word: str) -> int | None:
    word = word.lower()
    return _COUNTS.index(word) if word in _COUNTS else (int(word) if word.isdigit() else None)


def parse_narrative(text: str) -> tuple[list[tuple[str, str, str, str | None]], str]:
    """The findings a narrative's findings section states, as ``(type, organ, size, HU)`` texts, and what is left.

    The rest is the section with every parsed finding cut out (a contradiction check looks there for
    numbers no finding explains). A group sentence whose count differs from its listed sizes is left
    unparsed, so it shows up as unexplained.
    """
    body = text.partition(" Findings: ")[2].partition(" Impression: ")[0]
    found: list[tuple[int, tuple[str, str, str, str | None]]] = []
    spans: list[tuple[int, int]] = []
    for pattern in (_GROUP, _GROUP_2):
        for m in pattern.finditer(body):
            items = list(_ITEM.finditer(m["items"]))
            if _number(m["count"]) != len(items) or len(items) < 2:
                continue
            kind, loc = _TYPE_OF[m["noun"].lower()], m["loc"].lower()
            found += [(m.start() + i, (kind, loc, it["size"], it["hu"])) for i, it in enumerate(items)]
            spans.append(m.span())
    for pattern in _SINGLE:
        for m in pattern.finditer(body):
            if any(a <= m.start() < b for a, b in spans):
                continue
            hu = m["hu"] if "hu2" not in m.groupdict() or m["hu2"] is None else m["hu2"]
            found.append((m.start(), (_TYPE_OF[m["noun"].lower()], m["loc"].lower(), m["size"], hu)))
            spans.append(m.span())
    rest = "".join(ch for i, ch in enumerate(body) if not any(a <= i < b for a, b in spans))
    return [f for _, f in sorted(found, key=lambda item: item[0])], rest


def parsed_findings(text: str) -> list[Finding]:
    """The findings a narrative states, as :class:`Finding` values (``<1`` mm read as 0.5 mm)."""
    out = []
    for kind, loc, size, hu in parse_narrative(text)[0]:
        out.append(Finding(kind, loc, 0.5 if size == "<1" else float(size), None if hu is None else float(hu)))
    return out


def _rendered(findings: Sequence[Finding]) -> Counter[tuple[str, str, str, str | None]]:
    return Counter((f.type, f.location, size_text(f.size_mm), _hu_text(f.mean_hu)) for f in findings)


_CAVEAT = re.compile(r"Outside the validated domain \(.*?\): the measurements are reported, [^.]*\. ")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def contradictions(text: str, findings: Sequence[Finding], context: ReportContext) -> list[str]:
    """Every way ``text`` disagrees with the structured findings and the context ([] when it does not)."""
    problems: list[str] = []
    head, found_findings, tail = text.partition(" Findings: ")
    _, found_impression, impression = tail.partition(" Impression: ")
    if not (text.startswith("Indication: ") and found_findings and found_impression):
        return ["not a narrative: it needs 'Indication:', 'Findings:' and 'Impression:' sections"]
    expected = f"Indication: {context.indication or 'not given'}."
    if not head.startswith(expected):
        problems.append(f"the indication is not the request's ({context.indication or 'not given'})")
    technique = _CAVEAT.sub("", head[len(expected) :])
    names = {*MODALITIES.values(), context.modality_name}
    named = {name for name in names if re.search(rf"(?<![\w/]){re.escape(name)}(?![\w/])", technique)}
    if named != {context.modality_name}:
        problems.append(f"the technique names {sorted(named) or 'no modality'}, the study is {context.modality_name}")
    stated, rest = parse_narrative(text)
    said, truth = Counter(stated), _rendered(findings)
    for item in sorted((said - truth).elements(), key=str):
        problems.append(f"the findings section states {item}, which no structured finding holds")
    for item in sorted((truth - said).elements(), key=str):
        problems.append(f"the structured finding {item} is missing from the findings section")
    if re.search(r"\d", rest):
        problems.append(f"the findings section holds numbers no finding explains: {rest.strip()!r}")
    problems += _impression_problems(impression, findings)
    seen: set[str] = set()
    for sentence in _sentences(text):
        if sentence in seen:
            problems.append(f"a repeated sentence: {sentence!r}")
        seen.add(sentence)
    return problems


def _impression_problems(impression: str, findings: Sequence[Finding]) -> list[str]:
    problems: list[str] = []
    sizes = {size_text(f.size_mm) for f in findings if f.type in ("nodule", "mass")}
    kinds = {f.type for f in findings}
    places = {(f.type, f.location) for f in findings}
    for sentence in _sentences(impression):
        if sentence in ADVICE:
            continue
        for size in re.findall(r"(<1|\d+) mm", sentence):
            if size not in sizes:
                problems.append(f"the impression gives {size} mm, no nodule or mass measures that: {sentence!r}")
        if re.search(r"\d", re.sub(r"(<1|\d+) mm|\((\d+)\)", "", sentence)):
            problems.append(f"the impression holds a number no finding explains: {sentence!r}")
        lower = sentence.lower()
        said = {t for t in TYPES if re.search(rf"\b{t}(e?s)?\b", lower)}
        for kind in said - kinds:
            problems.append(f"the impression names a {kind}, no finding is one: {sentence!r}")
        organs = {loc for loc, adj in _ADJECTIVES.items() if re.search(rf"\b({re.escape(loc)}|{adj})\b", lower)}
        lungs = {loc for kind, loc in places if "lung" in loc and kind in (said or kinds)}
        if "pulmonary" in lower:
            organs |= lungs or {"right lung"}
        for loc in organs:
            if not any((kind, loc) in places for kind in said or kinds):
                problems.append(f"the impression names the {loc}, where no such finding is: {sentence!r}")
        problems += _count_problems(sentence, findings)
    if not findings and any(re.search(rf"\b{t}", impression.lower()) for t in TYPES):
        problems.append("the impression names a lesion, the study has no findings")
    return problems


def _count_problems(sentence: str, findings: Sequence[Finding]) -> list[str]:
    """Counts of nodules or masses an impression sentence gives that the findings do not hold."""
    problems = []
    adjectives = "|".join(_ADJECTIVES.values())
    for word, noun in re.findall(rf"(\w+) (pulmonary nodules|(?:{adjectives}) masses)\b", sentence) + [
        (n, "pulmonary nodules") for n in re.findall(r"nodules \((\d+)\)", sentence)
    ]:
        if noun == "pulmonary nodules":
            want = sum(f.type == "nodule" for f in findings)
        else:
            adjective = noun.removesuffix(" masses")
            want = sum(f.type == "mass" and _ADJECTIVES.get(f.location) == adjective for f in findings)
        if word.lower() != "solid" and _number(word) != want:
            problems.append(f"the impression counts {word} {noun}, the findings hold {want}: {sentence!r}")
    return problems
