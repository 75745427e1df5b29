"""Held-out evaluation: draft a report for every written phantom study and score it against its truth.

Studies are read back from their DICOM files (the same path as the worker), so the figures include
the reader, the windows, the measurement, the domain gate and the narrative. Data is synthetic.
:func:`evaluate_files` runs other DICOM files (pydicom's test files, real CT and MR slices): no
truth, but every narrative is read back for contradictions and the gate's verdicts are counted.
:func:`domain_samples` measures training studies for :func:`~inspector.medical.domain.fit_profile`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mla
from inspector.medical.dicom import read_series, read_study
from inspector.medical.domain import DomainProfile, DomainSample, sample_of
from inspector.medical.errors import MedicalError
from inspector.medical.metrics import FindingCounts, bleu, corpus_rouge_l, match_findings
from inspector.medical.narrative import ReportContext, contradictions, parsed_findings
from inspector.medical.phantom import read_truth
from inspector.medical.report import (
    StructuredReport,
    draft_report,
    fuse,
    image_channels,
    input_channels,
    maps,
    organ_coverage,
    patient_features,
)
from inspector.medical.vocab import TYPES, Finding, ReportTokenizer


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
    profile: DomainProfile | None = None,
) -> dict[str, Any]:
    """Score drafted reports of written phantom studies against their truth.

    Returns finding P/R/F1 (structured, and parsed from the narrative; overall and per lesion type),
    BLEU-1..4 (all references and the first only), ROUGE-L, size errors, seconds per study, the
    narratives' contradictions with their findings, and the share the domain gate flagged.
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
    contradicted: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    for index, folder in enumerate(folders):
        truth = read_truth(folder)
        gt = [Finding.from_dict(f) for f in truth["findings"]]
        start = time.perf_counter()
        volume = read_series(folder)
        report = draft_report(
            model, tokenizer, volume, info=info, threshold=threshold, calcium_rule=calcium_rule, profile=profile
        )
        seconds.append(time.perf_counter() - start)
        counts = match_findings(report.findings, gt)
        structured = structured + counts
        for kind in TYPES:
            by_type[kind] = by_type[kind] + match_findings(
                [f for f in report.findings if f.type == kind], [f for f in gt if f.type == kind]
            )
        from_text = from_text + match_findings(parsed_findings(report.narrative), gt)
        problems = _contradictions(report, volume)
        if problems:
            contradicted.append({"study": folder.name, "contradictions": problems})
        if report.domain.get("out_of_domain"):
            flagged.append({"study": folder.name, "reasons": report.domain["reasons"]})
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
        "narratives_with_contradictions": len(contradicted),
        "contradictions": contradicted,
        "out_of_domain": {"flagged": len(flagged), "share": round(len(flagged) / max(1, len(folders)), 4),
                          "profile": profile is not None, "studies": flagged},
        "per_study": rows,
    }  # fmt: skip


def _contradictions(report: StructuredReport, volume: Any) -> list[str]:
    caveat = "; ".join(report.domain["reasons"]) if report.domain.get("out_of_domain") else None
    return contradictions(report.narrative, report.findings, ReportContext.of(volume, caveat=caveat))


def evaluate_files(
    model: mla.MLAModel,
    tokenizer: ReportTokenizer,
    paths: Sequence[Path],
    info: dict[str, Any] | None = None,
    profile: DomainProfile | None = None,
    on_file: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Draft a report for each DICOM file (or folder), read its narrative back, and count the gate's verdicts.

    A file the reader refuses (a codec not installed, a truncated file) is listed with the reason;
    it is not a report, so it counts neither as flagged nor as free of contradictions.
    """
    rows: list[dict[str, Any]] = []
    for index, path in enumerate(paths):
        row: dict[str, Any] = {"file": path.name}
        try:
            volume = read_study(path)[0]
        except MedicalError as exc:
            rows.append(row | {"refused": str(exc)[:300]})
            continue
        report = draft_report(model, tokenizer, volume, info=info, profile=profile)
        row |= {
            "modality": volume.modality, "slices": int(volume.pixels.shape[0]), "findings": len(report.findings),
            "out_of_domain": report.domain["out_of_domain"], "reasons": report.domain["reasons"],
            "contradictions": _contradictions(report, volume), "narrative": report.narrative,
        }  # fmt: skip
        rows.append(row)
        if on_file is not None:
            on_file(index)
    drafted = [r for r in rows if "refused" not in r]
    return {
        "files": len(rows),
        "drafted": len(drafted),
        "refused": [{"file": r["file"], "why": r["refused"]} for r in rows if "refused" in r],
        "flagged_out_of_domain": sum(r["out_of_domain"] for r in drafted),
        "share_flagged": round(sum(r["out_of_domain"] for r in drafted) / max(1, len(drafted)), 4),
        "narratives_with_contradictions": sum(bool(r["contradictions"]) for r in drafted),
        "profile": profile is not None,
        "per_file": rows,
    }


@torch.no_grad()
def domain_samples(
    model: mla.MLAModel, folders: Sequence[Path], on_study: Callable[[int], None] | None = None
) -> list[DomainSample]:
    """The domain gate's measurements of written (training) studies, the model's organ coverage included."""
    samples = []
    channels = input_channels(model)
    for index, folder in enumerate(folders):
        volume = read_series(folder)
        image = torch.from_numpy(image_channels(volume.pixels, volume.is_ct, channels=channels))[None]
        tabular = torch.from_numpy(patient_features(volume.patient))[None]
        prob = maps(model, fuse(model, image, tabular))[0].numpy()
        samples.append(sample_of(volume, organ_coverage(prob)))
        if on_study is not None:
            on_study(index)
    return samples


def pydicom_test_images(modalities: Sequence[str] = ("CT", "MR")) -> list[Path]:
    """The bundled pydicom test files that hold an image of these modalities (real, de-identified, not synthetic)."""
    import pydicom
    import pydicom.data

    root = Path(pydicom.data.__file__).parent / "test_files"
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False, force=True, specific_tags=["Modality", "PixelData"])
        except Exception:  # not DICOM, or too broken to read a tag: not a test image
            continue
        if ds.get("Modality") in modalities and "PixelData" in ds:
            found.append(path)
    return found
