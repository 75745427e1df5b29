"""Held-out evaluation: draft a report for every written phantom study and score it against its truth.

Studies are read back from their DICOM files (the same path as the worker), so the figures include
the reader, the windows, the measurement and the decoder. Data is synthetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import mla
from inspector.medical.dicom import read_series
from inspector.medical.metrics import FindingCounts, bleu, corpus_rouge_l, match_findings
from inspector.medical.phantom import read_truth
from inspector.medical.report import draft_report
from inspector.medical.vocab import TYPES, Finding, ReportTokenizer, parse_findings


def study_folders(root: Path) -> list[Path]:
    """Folders under ``root`` that hold a written phantom study (``truth.json``), sorted."""
    return sorted(p.parent for p in root.glob("*/truth.json"))


def evaluate_studies(
    model: mla.MLAModel,
    tokenizer: ReportTokenizer,
    folders: Sequence[Path],
    info: dict[str, Any] | None = None,
    on_study: Callable[[int], None] | None = None,
    threshold: float = 0.5,
    calcium_rule: bool = True,
) -> dict[str, Any]:
    """Score drafted reports of written phantom studies against their truth.

    Returns finding P/R/F1 (structured, and parsed from the narrative; overall and per lesion type),
    BLEU-1..4 (all references and the first only), ROUGE-L, size errors and seconds per study.
    ``threshold`` is the lesion probability threshold (choose it on validation studies only);
    ``calcium_rule`` off scores the lesion maps without the density rule for calcifications.
    """
    structured, from_text = FindingCounts(), FindingCounts()
    by_type = {kind: FindingCounts() for kind in TYPES}
    hypotheses: list[str] = []
    refs: list[list[str]] = []
    seconds: list[float] = []
    size_errors: list[float] = []
    rows: list[dict[str, Any]] = []
    for index, folder in enumerate(folders):
        truth = read_truth(folder)
        gt = [Finding.from_dict(f) for f in truth["findings"]]
        start = time.perf_counter()
        report = draft_report(
            model, tokenizer, read_series(folder), info=info, threshold=threshold, calcium_rule=calcium_rule
        )
        seconds.append(time.perf_counter() - start)
        counts = match_findings(report.findings, gt)
        structured = structured + counts
        for kind in TYPES:
            by_type[kind] = by_type[kind] + match_findings(
                [f for f in report.findings if f.type == kind], [f for f in gt if f.type == kind]
            )
        from_text = from_text + match_findings(parse_findings(report.narrative), gt)
        for t in gt:
            same = [p for p in report.findings if p.type == t.type and p.location == t.location]
            if same:
                size_errors.append(min((p.size_mm - t.size_mm for p in same), key=abs))
        hypotheses.append(report.narrative)
        refs.append(list(truth["references"]))
        rows.append({"study": folder.name, **counts.to_dict(), "narrative": report.narrative})
        if on_study is not None:
            on_study(index)
    errors = np.abs(np.array(size_errors)) if size_errors else np.zeros(1)
    return {
        "synthetic": True,
        "studies": len(folders),
        "findings": sum(r["tp"] + r["fn"] for r in rows),
        "finding": structured.to_dict(),
        "finding_by_type": {kind: counts.to_dict() for kind, counts in by_type.items()},
        "finding_from_narrative": from_text.to_dict(),
        "threshold": threshold,
        "calcium_rule": calcium_rule,
        "bleu_all_references": bleu(hypotheses, refs),
        "bleu_first_reference": bleu(hypotheses, [[r[0]] for r in refs]),
        "rouge_l": round(corpus_rouge_l(hypotheses, refs), 4),
        "size_abs_error_mm": {
            "median": round(float(np.median(errors)), 2),
            "p90": round(float(np.percentile(errors, 90)), 2),
        },
        "seconds_per_study": round(float(np.mean(seconds)), 3),
        "per_study": rows,
    }
