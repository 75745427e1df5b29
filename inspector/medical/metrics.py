"""Report metrics: corpus BLEU-1..4 (sacrebleu), ROUGE-L, and finding-level precision / recall / F1.

A predicted finding matches a ground-truth one when type and location are equal and the sizes
differ by at most ``size_tol_mm`` (2 mm); each ground-truth finding matches at most one prediction
(greedy, closest size first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics.bleu import BLEU

from inspector.medical.vocab import Finding


@dataclass(frozen=True)
class FindingCounts:
    """True positives, false positives, false negatives over a set of studies."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: FindingCounts) -> FindingCounts:
        return FindingCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 1 when there was nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, float]:
        """Counts and rates."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}  # fmt: skip


def match_findings(predicted: Sequence[Finding], truth: Sequence[Finding], size_tol_mm: float = 2.0) -> FindingCounts:
    """Count matches of one study (type and location equal, size within ``size_tol_mm``)."""
    pairs = sorted(
        (abs(p.size_mm - t.size_mm), i, j)
        for i, p in enumerate(predicted)
        for j, t in enumerate(truth)
        if p.type == t.type and p.location == t.location and abs(p.size_mm - t.size_mm) <= size_tol_mm
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    tp = len(used_t)
    return FindingCounts(tp, len(predicted) - tp, len(truth) - tp)


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (sacrebleu, 13a tokenisation, as fractions 0-1) against one or more references per study.

    Args:
        hypotheses: One generated report per study.
        references: Per study, its reference reports (all studies the same number).

    """
    streams = [list(stream) for stream in zip(*references, strict=True)]
    out: dict[str, float] = {}
    for n in (1, 2, 3, 4):
        score = BLEU(max_ngram_order=n).corpus_score(list(hypotheses), streams)
        out[f"bleu{n}"] = round(score.score / 100, 4)
    return out


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, references: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-score (LCS over lower-cased whitespace tokens), best over the references."""
    hyp = hypothesis.lower().split()
    best = 0.0
    for reference in references:
        ref = reference.lower().split()
        lcs = _lcs(hyp, ref)
        if not lcs:
            continue
        p, r = lcs / len(hyp), lcs / len(ref)
        best = max(best, (1 + beta**2) * p * r / (r + beta**2 * p))
    return best


def corpus_rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean ROUGE-L over studies."""
    scores = [rouge_l(h, refs) for h, refs in zip(hypotheses, references, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0
