"""Evaluation against ground truth: pixels, crack instances, measurements and part verdicts.

- **Pixels**: precision, recall and F1 with a 2-pixel tolerance, as crack benchmarks do (a predicted
  pixel within 2 px of a true one is correct, and the other way round), summed over the set, at every
  threshold of a sweep (the PR curve) and at the operating threshold 0.5.
- **Crack instances**: a true crack is found when at least half of its centre line lies within the
  tolerance of predicted crack pixels; recall is reported per max-width bin.
- **Measurements**: each found crack is matched to the predicted region covering most of its centre
  line; width and length errors are taken on those matches.
- **Parts**: the escape rate (a part with a defect-size crack judged OK) and the false-reject rate
  (a part with no crack judged NG).
- **Probability of detection**: every true crack is a hit/miss observation of its max width (hit = found,
  as for crack recall), fitted as in MIL-HDBK-1823A (:mod:`inspector.pod`): a50, a90, a90/95, overall
  and per tercile of visible contrast and of IR excess temperature.

Pure functions over arrays and metadata; plotting lives in :mod:`inspector.report`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspector.dataset import CrackTruth, SampleMeta
from inspector.measure import CrackMeasurement, measure_region
from inspector.pod import HitMiss, PodBin, PodResult, fit_pod, pod_by
from inspector.verdict import Verdict, VerdictRules

TOLERANCE_PX = 2
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 1.0, 0.05))
WIDTH_BINS: tuple[tuple[str, float, float], ...] = (
    ("<0.1", 0.0, 0.1),
    ("0.1-0.2", 0.1, 0.2),
    ("0.2-0.3", 0.2, 0.3),
    (">=0.3", 0.3, float("inf")),
)


def width_bin(width_mm: float) -> str:
    """The name of the max-width bin a crack falls in."""
    for name, low, high in WIDTH_BINS:
        if low <= width_mm < high:
            return name
    return WIDTH_BINS[-1][0]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


@dataclass(frozen=True)
class PixelCounts:
    """Tolerant pixel counts for one threshold, summable over samples."""

    pred_hits: int = 0  # predicted pixels within tolerance of a true pixel
    pred_total: int = 0
    truth_hits: int = 0  # true pixels within tolerance of a predicted pixel
    truth_total: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(
            self.pred_hits + other.pred_hits,
            self.pred_total + other.pred_total,
            self.truth_hits + other.truth_hits,
            self.truth_total + other.truth_total,
        )

    @property
    def precision(self) -> float:
        """Share of predicted pixels that are near a true one (1.0 when nothing is predicted)."""
        return self.pred_hits / self.pred_total if self.pred_total else 1.0

    @property
    def recall(self) -> float:
        """Share of true pixels that are near a predicted one (1.0 when there is nothing to find)."""
        return self.truth_hits / self.truth_total if self.truth_total else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def tolerant_counts(pred: np.ndarray, truth: np.ndarray, tolerance_px: int = TOLERANCE_PX) -> PixelCounts:
    """Pixel counts with a tolerance: (H, W) bool prediction against (H, W) bool truth."""
    kernel = _disk(tolerance_px)
    near_truth = cv2.dilate(truth.astype(np.uint8), kernel) > 0
    near_pred = cv2.dilate(pred.astype(np.uint8), kernel) > 0
    return PixelCounts(
        pred_hits=int((pred & near_truth).sum()),
        pred_total=int(pred.sum()),
        truth_hits=int((truth & near_pred).sum()),
        truth_total=int(truth.sum()),
    )


def centre_line_points(crack: CrackTruth, spacing_px: float = 1.0) -> np.ndarray:
    """(N, 2) points as (x, y) every ``spacing_px`` along all polylines of a crack."""
    points = []
    for line in crack.polylines:
        xy = np.asarray(line, dtype=np.float64)
        for a, b in itertools.pairwise(xy):
            n = max(int(np.ceil(np.hypot(*(b - a)) / spacing_px)), 1)
            t = np.arange(n)[:, None] / n
            points.append(a + t * (b - a))
        points.append(xy[-1:])
    return np.concatenate(points)


@dataclass(frozen=True)
class CrackMatch:
    """A true crack and what the prediction made of it."""

    truth: CrackTruth
    coverage: float  # share of the centre line within tolerance of predicted crack pixels
    measured: CrackMeasurement | None  # the predicted region covering most of the centre line

    @property
    def found(self) -> bool:
        """At least half of the centre line was predicted."""
        return self.coverage >= 0.5


def match_cracks(
    cracks: Sequence[CrackTruth],
    binary: np.ndarray,
    values: np.ndarray,
    mm_per_px: float,
    tolerance_px: int = TOLERANCE_PX,
) -> list[CrackMatch]:
    """Match true cracks to the connected regions of a predicted (H, W) bool map and measure them."""
    _, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    near = cv2.dilate(labels.astype(np.float32), _disk(tolerance_px)).astype(np.int32)  # label of a nearby region
    height, width = binary.shape
    measured_cache: dict[int, CrackMeasurement] = {}
    matches = []
    for crack in cracks:
        xy = np.rint(centre_line_points(crack)).astype(int)
        xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)]
        hit = near[xy[:, 1], xy[:, 0]] if len(xy) else np.zeros(0, dtype=np.int32)
        coverage = float((hit > 0).mean()) if len(hit) else 0.0
        measured = None
        if (hit > 0).any():
            label = int(np.bincount(hit[hit > 0]).argmax())
            if label not in measured_cache:
                ys, xs = np.nonzero(labels == label)
                y0, y1, x0, x1 = max(ys.min() - 2, 0), ys.max() + 3, max(xs.min() - 2, 0), xs.max() + 3
                region = labels[y0:y1, x0:x1] == label
                measured_cache[label] = measure_region(region, values[y0:y1, x0:x1], mm_per_px, origin=(x0, y0))
            measured = measured_cache[label]
        matches.append(CrackMatch(truth=crack, coverage=coverage, measured=measured))
    return matches


@dataclass(frozen=True)
class SampleEvaluation:
    """Everything the report needs about one sample."""

    sample_id: str
    counts: dict[float, PixelCounts]  # per threshold
    matches: list[CrackMatch]
    truth_verdict: Verdict
    predicted_verdict: Verdict
    is_clean: bool


def truth_verdict(meta: SampleMeta, rules: VerdictRules) -> Verdict:
    """NG when a true crack meets the rules by its true dimensions."""
    ng = any(c.max_width_mm >= rules.min_width_mm and c.length_mm >= rules.min_length_mm for c in meta.cracks)
    return "NG" if ng else "OK"


def evaluate_sample(
    meta: SampleMeta,
    truth_mask: np.ndarray,
    probability: np.ndarray,
    predicted_verdict: Verdict,
    rules: VerdictRules | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
) -> SampleEvaluation:
    """Compare one prediction (probability in [0, 1] and verdict) with the truth."""
    rules = rules or VerdictRules()
    if probability.shape != truth_mask.shape:
        raise ValueError(f"prediction {probability.shape} and mask {truth_mask.shape} differ in size")
    counts = {float(t): tolerant_counts(probability >= t, truth_mask) for t in thresholds}
    if 0.5 not in counts:
        counts[0.5] = tolerant_counts(probability >= 0.5, truth_mask)
    matches = match_cracks(meta.cracks, probability >= 0.5, probability, meta.mm_per_px)
    return SampleEvaluation(
        sample_id=meta.id,
        counts=counts,
        matches=matches,
        truth_verdict=truth_verdict(meta, rules),
        predicted_verdict=predicted_verdict,
        is_clean=meta.is_clean,
    )


@dataclass
class EvaluationReport:
    """Figures over a set of samples (JSON-ready through :meth:`to_dict`)."""

    samples: int
    pixel: dict[str, float]
    pr_curve: list[dict[str, float]]
    recall_by_width: dict[str, dict[str, float]]
    measurement: dict[str, float]
    parts: dict[str, float]
    worst: list[str] = field(default_factory=list)
    pod: PodResult = field(default_factory=lambda: fit_pod([]))  # hit/miss POD on max width
    pod_by_contrast: list[PodBin] = field(default_factory=list)  # per tercile of visible contrast
    pod_by_ir_delta: list[PodBin] = field(default_factory=list)  # per tercile of IR excess temperature

    @property
    def defect_crack_recall(self) -> dict[str, float]:
        """Recall over the cracks of defect size (max width ≥ 0.2 mm): found, cracks, recall."""
        bins = [self.recall_by_width[b] for b in ("0.2-0.3", ">=0.3") if b in self.recall_by_width]
        found, cracks = sum(b["found"] for b in bins), sum(b["cracks"] for b in bins)
        return {"found": found, "cracks": cracks, "recall": found / cracks if cracks else float("nan")}

    def to_dict(self) -> dict[str, object]:
        """Plain dict for ``--json``."""
        return {
            "samples": self.samples,
            "defect_crack_recall": self.defect_crack_recall,
            "pixel": self.pixel,
            "pr_curve": self.pr_curve,
            "recall_by_width": self.recall_by_width,
            "measurement": self.measurement,
            "parts": self.parts,
            "worst": self.worst,
            "pod": self.pod.to_dict(),
            "pod_by_contrast": [b.to_dict() for b in self.pod_by_contrast],
            "pod_by_ir_delta": [b.to_dict() for b in self.pod_by_ir_delta],
        }


def pod_observations(evaluations: Sequence[SampleEvaluation]) -> list[HitMiss]:
    """One hit/miss observation per true crack: its max width, found or not, its contrast and IR warming.

    Cracks of zero width have no place on a ln(size) axis and are left out.
    """
    return [
        HitMiss(m.truth.max_width_mm, m.found, contrast=m.truth.contrast, ir_delta=m.truth.ir_delta)
        for e in evaluations
        for m in e.matches
        if m.truth.max_width_mm > 0
    ]


def _badness(e: SampleEvaluation) -> float:
    missed = sum(1 for m in e.matches if not m.found and m.truth.max_width_mm >= 0.2)
    c = e.counts[0.5]
    false_px = c.pred_total - c.pred_hits
    wrong_verdict = e.truth_verdict != e.predicted_verdict
    return 10.0 * missed + 5.0 * wrong_verdict + false_px / 1000.0 + (c.truth_total - c.truth_hits) / 1000.0


def summarize(evaluations: Sequence[SampleEvaluation], worst: int = 12) -> EvaluationReport:
    """Aggregate per-sample evaluations into the set's figures."""
    total: dict[float, PixelCounts] = {}
    for e in evaluations:
        for t, c in e.counts.items():
            total[t] = total.get(t, PixelCounts()) + c
    at = total.get(0.5, PixelCounts())
    matches = [m for e in evaluations for m in e.matches]
    by_width: dict[str, dict[str, float]] = {}
    for name, _, _ in WIDTH_BINS:
        in_bin = [m for m in matches if width_bin(m.truth.max_width_mm) == name]
        found = sum(m.found for m in in_bin)
        by_width[name] = {
            "cracks": len(in_bin),
            "found": found,
            "recall": found / len(in_bin) if in_bin else float("nan"),
        }
    measured = [m for m in matches if m.found and m.measured is not None]
    wide = [m for m in measured if m.truth.max_width_mm >= 0.2]

    def mae(values: list[float]) -> float:
        return float(np.mean(np.abs(values))) if values else float("nan")

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    ng_truth = [e for e in evaluations if e.truth_verdict == "NG"]
    clean = [e for e in evaluations if e.is_clean]
    ok_truth = [e for e in evaluations if e.truth_verdict == "OK"]
    observations = pod_observations(evaluations)
    return EvaluationReport(
        samples=len(evaluations),
        pixel={"threshold": 0.5, "precision": at.precision, "recall": at.recall, "f1": at.f1, "tolerance_px": 2},
        pr_curve=[
            {"threshold": t, "precision": c.precision, "recall": c.recall, "f1": c.f1} for t, c in sorted(total.items())
        ],
        recall_by_width=by_width,
        measurement={
            "matched_cracks": len(measured),
            "max_width_mae_mm": mae([m.measured.max_width_mm - m.truth.max_width_mm for m in measured if m.measured]),
            "max_width_mae_mm_ge_0_2": mae(
                [m.measured.max_width_mm - m.truth.max_width_mm for m in wide if m.measured]
            ),
            "max_width_bias_mm_ge_0_2": mean(  # measured - true: > 0 when widths are overstated
                [m.measured.max_width_mm - m.truth.max_width_mm for m in wide if m.measured]
            ),
            "mean_width_mae_mm": mae(
                [m.measured.mean_width_mm - m.truth.mean_width_mm for m in measured if m.measured]
            ),
            "length_mae_mm": mae([m.measured.length_mm - m.truth.length_mm for m in measured if m.measured]),
            "length_rel_error": mae(
                [
                    (m.measured.length_mm - m.truth.length_mm) / max(m.truth.length_mm, 1e-9)
                    for m in measured
                    if m.measured
                ]
            ),
        },
        parts={
            "ng_parts": len(ng_truth),
            "escape_rate": sum(e.predicted_verdict == "OK" for e in ng_truth) / len(ng_truth)
            if ng_truth
            else float("nan"),
            "clean_parts": len(clean),
            "false_reject_rate": sum(e.predicted_verdict == "NG" for e in clean) / len(clean)
            if clean
            else float("nan"),
            "ok_parts": len(ok_truth),
            "overkill_rate": sum(e.predicted_verdict == "NG" for e in ok_truth) / len(ok_truth)
            if ok_truth
            else float("nan"),
            "verdict_accuracy": sum(e.predicted_verdict == e.truth_verdict for e in evaluations)
            / max(len(evaluations), 1),
        },
        worst=[e.sample_id for e in sorted(evaluations, key=_badness, reverse=True)[:worst] if _badness(e) > 0],
        pod=fit_pod(observations),
        pod_by_contrast=pod_by(observations, "contrast"),
        pod_by_ir_delta=pod_by(observations, "ir_delta"),
    )
