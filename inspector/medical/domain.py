"""The input gate: whether a study lies inside the domain the report model was validated on, and why not.

The model was trained and validated on synthetic contrast-enhanced CT phantoms of the lower chest and
upper abdomen (:mod:`.phantom`). :func:`domain_verdict` compares a study with a
:class:`DomainProfile` fitted on training phantoms (:func:`fit_profile`) and returns an
``out_of_domain`` verdict with one reason per failed check:

============================  ==========================================================================
check                         out of domain when
============================  ==========================================================================
modality                      not one the profile holds (CT)
body part                     ``BodyPartExamined`` names another region
slices                        fewer than half or more than twice the training count
slice spacing                 unknown (one slice), or outside 0.8-1.25 × the training range
pixel spacing                 outside 0.5-2 × the training range
HU histogram                  the Wasserstein distance (in HU) from the training phantoms' mean histogram
                              exceeds 2 × the largest seen on the training phantoms
organ coverage (model-based)  the share of the image the model's organ maps cover is outside
                              0.5-1.5 × the training range: the anatomy is not what it knows
============================  ==========================================================================

An out-of-domain study is still measured; the report says it is outside the validated domain. Pure
functions over values: the volume and the model's organ maps come in, nothing is read or run here.

    profile = fit_profile(samples)                       # DomainSample per training phantom
    verdict = domain_verdict(volume, coverage, profile)  # .out_of_domain, .reasons, .scores
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspector.medical.errors import ReportModelError

__all__ = ["DomainProfile", "DomainSample", "DomainVerdict", "domain_verdict", "fit_profile", "sample_of"]

HU_EDGES = np.arange(-1100.0, 1550.0, 50.0)  # 53 bins of 50 HU; values outside are clipped to the end bins
SLICE_FACTOR = 2.0
SPACING_FACTOR = 1.25
PIXEL_FACTOR = 2.0
HU_FACTOR = 2.0
COVERAGE_FACTOR = 1.5
FORMAT = "inspector.medical.domain/1"


def hu_histogram(hu: np.ndarray) -> np.ndarray:
    """The share of voxels per 50 HU bin from -1100 to 1500 HU (clipped at both ends); sums to 1."""
    counts, _ = np.histogram(np.clip(hu, HU_EDGES[0], HU_EDGES[-1] - 1e-3), bins=HU_EDGES)
    share: np.ndarray = counts / max(1, int(counts.sum()))
    return share


def hu_distance(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Wasserstein-1 distance between two HU histograms, in HU (how far the voxel values must move)."""
    cdf = np.cumsum(np.asarray(a, float)) - np.cumsum(np.asarray(b, float))
    return float(np.abs(cdf).sum() * (HU_EDGES[1] - HU_EDGES[0]))


@dataclass(frozen=True)
class DomainSample:
    """The gate's measurements of one study."""

    modality: str
    body_part: str
    slices: int
    slice_spacing_mm: float | None
    pixel_spacing_mm: float
    histogram: tuple[float, ...] | None  # None when the values are not HU
    organ_coverage: float | None  # None without the model's maps


def sample_of(volume: Any, organ_coverage: float | None = None) -> DomainSample:
    """Measure a :class:`~inspector.medical.dicom.Volume` (and the organ coverage of its maps) for the gate."""
    return DomainSample(
        modality=str(volume.modality).upper(),
        body_part=str(volume.body_part or "").upper(),
        slices=int(volume.pixels.shape[0]),
        slice_spacing_mm=volume.slice_spacing_mm,
        pixel_spacing_mm=float(np.mean(volume.spacing_mm)),
        histogram=tuple(float(x) for x in hu_histogram(volume.pixels)) if volume.is_ct else None,
        organ_coverage=organ_coverage,
    )


@dataclass(frozen=True)
class DomainProfile:
    """The validated domain, fitted on training studies (:func:`fit_profile`); saved as JSON beside the model."""

    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    slices: tuple[int, int]
    slice_spacing_mm: tuple[float, float]
    pixel_spacing_mm: tuple[float, float]
    hu_histogram: tuple[float, ...]
    hu_distance_max: float
    organ_coverage: tuple[float, float]
    fitted_on: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainProfile:
        """Back from :meth:`to_dict`."""
        if data.get("format") != FORMAT:
            raise ReportModelError(f"not a domain profile (format {data.get('format')!r}, expected {FORMAT})")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "format"}
        return cls(**fields)

    def save(self, path: Path) -> None:
        """Write it as JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> DomainProfile:
        """Read a saved profile.

        Raises:
            ReportModelError: Missing or not a profile; the message says how to make one.

        """
        if not path.is_file():
            raise ReportModelError(f"domain profile {path} not found: fit one with `inspector medical profile`")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ReportModelError(f"cannot read domain profile {path}: {exc}") from None


def profile_path(model: Path) -> Path:
    """Where a model's domain profile lives: beside it, ``<model>.domain.json``."""
    return model.with_suffix(".domain.json")


def fit_profile(samples: Sequence[DomainSample], fitted_on: str = "") -> DomainProfile:
    """The ranges of training studies (the limits apply the factors of the module table at check time).

    Raises:
        ValueError: No samples, or none with an HU histogram and organ coverage.

    """
    ct = [s for s in samples if s.histogram is not None and s.organ_coverage is not None]
    if not ct:
        raise ValueError("fitting a domain profile needs CT training studies with their organ coverage")
    mean = np.mean([s.histogram for s in ct if s.histogram is not None], axis=0)
    spacings = [s.slice_spacing_mm for s in ct if s.slice_spacing_mm is not None]
    coverage = [float(s.organ_coverage) for s in ct if s.organ_coverage is not None]
    return DomainProfile(
        modalities=tuple(sorted({s.modality for s in ct})),
        body_parts=tuple(sorted({s.body_part for s in ct if s.body_part})),
        slices=(min(s.slices for s in ct), max(s.slices for s in ct)),
        slice_spacing_mm=(min(spacings), max(spacings)) if spacings else (0.0, 0.0),
        pixel_spacing_mm=(round(min(s.pixel_spacing_mm for s in ct), 4), round(max(s.pixel_spacing_mm for s in ct), 4)),
        hu_histogram=tuple(round(float(x), 6) for x in mean),
        hu_distance_max=round(max(hu_distance(s.histogram or (), mean) for s in ct), 2),
        organ_coverage=(round(min(coverage), 4), round(max(coverage), 4)),
        fitted_on=fitted_on,
    )


@dataclass(frozen=True)
class DomainVerdict:
    """The gate's answer: out of the validated domain or not, why, and what it measured."""

    out_of_domain: bool
    reasons: tuple[str, ...] = ()
    scores: dict[str, Any] = field(default_factory=dict)

    def caveat(self) -> str | None:
        """The reasons as one clause for the narrative (None when inside the domain)."""
        return "; ".join(self.reasons) if self.out_of_domain else None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the report."""
        return {"out_of_domain": self.out_of_domain, "reasons": list(self.reasons), "scores": self.scores}


def _range(low: float, high: float, form: str) -> str:
    low_text, high_text = form.format(low), form.format(high)
    return low_text if low_text == high_text else f"{low_text}-{high_text}"


def _outside(value: float, low: float, high: float, factor: float) -> bool:
    return not low / factor - 1e-9 <= value <= high * factor + 1e-9


def domain_verdict(sample: DomainSample, profile: DomainProfile | None) -> DomainVerdict:
    """Check one study against the validated domain (without a profile: CT of the chest and abdomen only)."""
    modalities = profile.modalities if profile else ("CT",)
    parts = profile.body_parts if profile else ("CHESTABDOMEN",)
    allowed_parts = {*parts, "CHEST", "ABDOMEN"} if "CHESTABDOMEN" in parts else set(parts)
    reasons: list[str] = []
    scores: dict[str, Any] = {"slices": sample.slices, "slice_spacing_mm": sample.slice_spacing_mm}
    if sample.modality not in modalities:
        reasons.append(f"modality {sample.modality}, validated on {'/'.join(modalities)} only")
    if sample.body_part and sample.body_part not in allowed_parts:
        reasons.append(f"body part {sample.body_part}, validated on {'/'.join(sorted(allowed_parts))}")
    if profile is None:
        return DomainVerdict(bool(reasons), tuple(reasons), scores | {"profile": None})
    low, high = profile.slices
    if _outside(sample.slices, low, high, SLICE_FACTOR):
        reasons.append(f"{sample.slices} slice{'s' * (sample.slices != 1)}, validated {_range(low, high, '{:d}')}")
    if sample.slice_spacing_mm is None:
        reasons.append("no slice spacing, a single slice")
    elif _outside(sample.slice_spacing_mm, *profile.slice_spacing_mm, SPACING_FACTOR):
        validated = _range(*profile.slice_spacing_mm, "{:.1f}")
        reasons.append(f"slice spacing {sample.slice_spacing_mm:.1f} mm, validated {validated} mm")
    if _outside(sample.pixel_spacing_mm, *profile.pixel_spacing_mm, PIXEL_FACTOR):
        validated = _range(*profile.pixel_spacing_mm, "{:.1f}")
        reasons.append(f"pixel spacing {sample.pixel_spacing_mm:.2f} mm, validated {validated} mm")
    limit = HU_FACTOR * profile.hu_distance_max
    if sample.histogram is not None:
        distance = hu_distance(sample.histogram, profile.hu_histogram)
        scores["hu_distance"] = round(distance, 1)
        if distance > limit:
            reasons.append(f"HU histogram {distance:.0f} HU from the training phantoms', limit {limit:.0f} HU")
    if sample.organ_coverage is not None:
        scores["organ_coverage"] = round(sample.organ_coverage, 4)
        if _outside(sample.organ_coverage, *profile.organ_coverage, COVERAGE_FACTOR):
            lo, hi = profile.organ_coverage
            reasons.append(
                f"the organ maps cover {100 * sample.organ_coverage:.0f}% of the image, "
                f"validated {100 * lo:.0f}-{100 * hi:.0f}%"
            )
    return DomainVerdict(bool(reasons), tuple(reasons), scores)
