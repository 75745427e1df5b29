"""Report text: findings, their phrasings, and a word-piece tokenizer for the decoder.

A finding is ``(type, location, size_mm, mean_hu)``. :func:`report_text` writes a report in one of
:data:`PHRASINGS` styles (several phrasings per finding); the reference set of a study holds one
report per style: the training targets of the decoder and the BLEU references. The decoder reads the
measured findings as a prompt (:func:`findings_prompt`); in a drafted report it only chooses which
phrasing :mod:`.narrative` writes.

:class:`ReportTokenizer` splits text into words, single digits and punctuation, a leading ``▁`` marking
a preceding space, so ``decode(encode(text)) == text`` for any text of known pieces; ids 0-3 are
``PAD``, ``BOS``, ``EOS``, ``SEP`` as in :mod:`mla.text`, 4 is ``UNK``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mla.text import BOS, EOS, PAD, SEP

UNK = 4
SPECIALS = ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>")

TYPES = ("nodule", "mass", "cyst", "calcification")
LOCATIONS = ("right lung", "left lung", "liver", "spleen", "right kidney", "left kidney")
INDICATIONS = ("cough", "abdominal pain", "weight loss", "haematuria", "staging", "follow-up")
PHRASINGS = 3

_NAMES = {  # adjective / noun forms used by the impression
    "right lung": "right lung", "left lung": "left lung", "liver": "hepatic", "spleen": "splenic",
    "right kidney": "right renal", "left kidney": "left renal",
}  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One lesion: what, where, how big (mm, in-plane long axis), how dense (mean HU), how sure."""

    type: str
    location: str
    size_mm: float
    mean_hu: float | None = None
    confidence: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values, numbers rounded for the report."""
        data = asdict(self)
        data["size_mm"] = round(float(self.size_mm), 1)
        data["mean_hu"] = None if self.mean_hu is None else round(float(self.mean_hu), 1)
        data["confidence"] = round(float(self.confidence), 3)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """Back from :meth:`to_dict`."""
        return cls(
            str(data["type"]), str(data["location"]), float(data["size_mm"]),
            None if data.get("mean_hu") is None else float(data["mean_hu"]), float(data.get("confidence", 1.0)),
        )  # fmt: skip


def order(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in report order: by location (lungs, liver, spleen, kidneys), then largest first."""
    rank = {loc: i for i, loc in enumerate(LOCATIONS)}
    return sorted(findings, key=lambda f: (rank.get(f.location, len(rank)), -f.size_mm))


def _mm(size: float) -> str:
    return str(round(size))


def _hu(value: float | None) -> str:
    return "unknown" if value is None else str(round(value))


def finding_sentence(f: Finding, style: int) -> str:
    """One finding in phrasing ``style`` (0 … PHRASINGS-1)."""
    s, loc, hu = _mm(f.size_mm), f.location, _hu(f.mean_hu)
    noun = {
        "nodule": "solid nodule",
        "mass": "soft-tissue mass",
        "cyst": "simple cyst",
        "calcification": "calcification",
    }[f.type]
    if style == 0:
        return f"A {s} mm {noun} in the {loc}, mean attenuation {hu} HU."
    if style == 1:
        return f"There is a {s} mm {noun} in the {loc} ({hu} HU)."
    return f"{loc.capitalize()}: {noun} measuring {s} mm, {hu} HU."


def impression_item(f: Finding, age: float | None, style: int) -> str:
    """The impression line for one finding (nodule advice follows the Fleischner size bands)."""
    s, name = _mm(f.size_mm), _NAMES.get(f.location, f.location)
    if f.type == "nodule":
        if age is not None and age < 35:
            advice = "Fleischner guidelines do not apply under age 35."
        elif f.size_mm < 6:
            advice = "No routine follow-up is required."
        elif f.size_mm <= 8:
            advice = "Follow-up CT at 6 to 12 months is recommended."
        else:
            advice = "Consider CT at 3 months, PET/CT or tissue sampling."
        lead = (f"{s} mm {f.location} nodule.", f"Solid {f.location} nodule of {s} mm.", f"{s} mm pulmonary nodule.")
        return f"{lead[style]} {advice}"
    if f.type == "mass":
        lead = (f"{s} mm {name} mass", f"{name.capitalize()} mass of {s} mm", f"{s} mm {name} mass")
        return f"{lead[style]}, suspicious for malignancy; tissue sampling is recommended."
    if f.type == "cyst":
        return (
            f"Simple {name} cyst, benign.",
            f"Benign {name} cyst; no follow-up needed.",
            f"{name.capitalize()} cyst.",
        )[style]
    return (f"Benign {name} calcification.", f"{name.capitalize()} calcification, benign.", f"Calcification, {name}.")[
        style
    ]


def report_text(findings: Sequence[Finding], indication: str | None, age: float | None, style: int = 0) -> str:
    """The narrative report of a study in phrasing ``style``."""
    style = style % PHRASINGS
    technique = (
        "Contrast-enhanced CT of the lower chest and upper abdomen.",
        "CT of the lower chest and upper abdomen with intravenous contrast.",
        "Contrast-enhanced CT, lower chest and upper abdomen.",
    )[style]
    ordered = order(findings)
    if ordered:
        body = " ".join(finding_sentence(f, style) for f in ordered)
        impression = " ".join(impression_item(f, age, style) for f in ordered)
    else:
        body = ("No focal lesion is identified.", "No focal abnormality is seen.", "No focal lesion.")[style]
        impression = ("No acute abnormality.", "Normal study.", "No significant abnormality.")[style]
    return f"Indication: {indication or 'not given'}. {technique} Findings: {body} Impression: {impression}"


def references(findings: Sequence[Finding], indication: str | None, age: float | None) -> list[str]:
    """One reference report per phrasing style."""
    return [report_text(findings, indication, age, style) for style in range(PHRASINGS)]


def findings_prompt(findings: Sequence[Finding]) -> str:
    """The decoder's prompt: the measured findings in report order, e.g. ``nodule right lung 12 mm 35 HU ;``."""
    ordered = order(findings)
    if not ordered:
        return "none"
    return " ; ".join(f"{f.type} {f.location} {_mm(f.size_mm)} mm {_hu(f.mean_hu)} HU" for f in ordered)


def impression_of(text: str) -> str:
    """The impression section of a narrative ('' when it has none)."""
    _, _, tail = text.partition("Impression:")
    return tail.strip()


# -- tokenizer ----------------------------------------------------------------------------------------

_PIECE = re.compile(r"\s*(?:\d|[A-Za-z]+|[^\sA-Za-z\d])")


def pieces(text: str) -> list[str]:
    """Word pieces: words, single digits and punctuation marks, ``▁`` in front when a space precedes."""
    return [("▁" + p.strip()) if p[0].isspace() else p for p in _PIECE.findall(" " + text.strip())]


class ReportTokenizer:
    """A fixed vocabulary of word pieces (built from a corpus, saved with the model).

    Args:
        vocab: The pieces after the five special tokens.

    """

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(SPECIALS) + [p for p in vocab if p not in SPECIALS]
        self.index = {p: i for i, p in enumerate(self.vocab)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> ReportTokenizer:
        """The vocabulary of a corpus plus every digit, sorted."""
        found = (
            {p for text in texts for p in pieces(text)} | {d for d in "0123456789"} | {f"▁{d}" for d in "0123456789"}
        )
        return cls(sorted(found))

    @property
    def vocab_size(self) -> int:
        """V, specials included."""
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of a text (no specials); unknown pieces are ``UNK``."""
        return [self.index.get(p, UNK) for p in pieces(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids; specials are skipped and decoding stops at ``EOS``."""
        out: list[str] = []
        for i in ids:
            if i == EOS:
                break
            if i in (PAD, BOS, SEP) or not 0 <= i < len(self.vocab):
                continue
            out.append("?" if i == UNK else self.vocab[i])
        return "".join(out).replace("▁", " ").strip()

    def sequence(self, prompt: str, text: str | None = None) -> tuple[list[int], int]:
        """``[BOS] prompt [SEP] text [EOS]`` (or without text and EOS) and the index of ``SEP``."""
        head = [BOS, *self.encode(prompt), SEP]
        return (head + ([*self.encode(text), EOS] if text is not None else [])), len(head) - 1

    def to_json(self) -> str:
        """The vocabulary as JSON."""
        return json.dumps(self.vocab[len(SPECIALS) :])

    @classmethod
    def from_json(cls, data: str) -> ReportTokenizer:
        """Back from :meth:`to_json`."""
        return cls(json.loads(data))

    def save(self, path: Path) -> None:
        """Write the vocabulary to a JSON file."""
        path.write_text(self.to_json())
