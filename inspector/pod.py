"""Probability of detection (POD) from hit/miss data, as in MIL-HDBK-1823A.

Every true crack is one observation: its size ``a`` (max width in mm) and whether it was found.
The model is the handbook's hit/miss model with a **logit link** on ``ln a`` (log-logistic)::

    POD(a) = 1 / (1 + exp(-(beta0 + beta1 * ln a)))

fitted by maximum likelihood (Newton-Raphson), with the 2x2 covariance of (beta0, beta1) from the
Fisher information at the optimum. From it come a50 and a90 (POD 0.5 and 0.9) and **a90/95**: the
size at which the one-sided 95% lower confidence bound of POD reaches 0.90. The bound is the Wald
bound on the linear predictor, ``eta(a) - 1.645 * se(eta(a))``, turned into POD by the same link.

Where the data cannot support a fit, no number is given: :class:`PodResult` then has ``fit=None``
and a ``reason`` (too few cracks, no hits, no misses, hits and misses separated by size, POD not
increasing with size). Pure functions over typed values; the picture is :func:`inspector.report.plot_pod`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

MIN_OBSERVATIONS = 10
"""Fewer cracks than this give no fit: two parameters from a handful of hits and misses are noise (the
handbook asks for about 60 specimens to *demonstrate* a90/95; 10 is the least we will draw a curve from)."""

MAX_EXTRAPOLATION = 10.0
"""a50, a90 and a90/95 beyond this many times the largest crack observed are reported as absent: the
curve there is extrapolation, not measurement."""

Z_95 = 1.6448536269514722
"""One-sided 95% standard normal quantile of the Wald bound."""

POD_BINS = 3
"""Bins (terciles) of a second variable, e.g. crack contrast, for :func:`pod_by`."""

METHOD = (
    "hit/miss, logit link on ln(a), maximum likelihood (Newton-Raphson); a90/95 where the one-sided 95% "
    "Wald lower bound of the linear predictor reaches logit(0.90) (MIL-HDBK-1823A)"
)
_MAX_ITERATIONS = 100


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _expit(eta: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(-np.logaddexp(0.0, -eta)))


@dataclass(frozen=True)
class HitMiss:
    """One true crack: its size in mm (> 0), whether it was found, and optional grouping variables."""

    size_mm: float
    hit: bool
    contrast: float | None = None  # visible darkening, 0 (invisible) to 1
    ir_delta: float | None = None  # IR warming in counts

    def __post_init__(self) -> None:
        if not self.size_mm > 0:
            raise ValueError(f"crack size must be > 0 mm for a POD fit on ln(a), found {self.size_mm}")


@dataclass(frozen=True)
class PodFit:
    """A fitted hit/miss POD curve; sizes in mm, ``None`` where a size lies beyond the sane range."""

    n: int
    hits: int
    misses: int
    beta0: float
    beta1: float
    covariance: tuple[tuple[float, float], tuple[float, float]]  # of (beta0, beta1)
    a50_mm: float | None
    a90_mm: float | None
    a90_95_mm: float | None
    method: str = METHOD

    def curve(self, sizes_mm: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """POD and its one-sided 95% lower bound at each size (mm), for plotting."""
        x = np.log(np.asarray(sizes_mm, dtype=np.float64))
        (v00, v01), (_, v11) = self.covariance
        eta = self.beta0 + self.beta1 * x
        se = np.sqrt(np.maximum(v00 + 2 * x * v01 + x * x * v11, 0.0))
        return _expit(eta), _expit(eta - Z_95 * se)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON."""
        return {
            "n": self.n,
            "hits": self.hits,
            "misses": self.misses,
            "a50_mm": self.a50_mm,
            "a90_mm": self.a90_mm,
            "a90_95_mm": self.a90_95_mm,
            "beta0": self.beta0,
            "beta1": self.beta1,
            "covariance": [list(row) for row in self.covariance],
            "method": self.method,
        }


@dataclass(frozen=True)
class PodResult:
    """A POD analysis: the fit, or ``None`` and the reason (``reason`` also says why an a90/95 is missing)."""

    observations: tuple[HitMiss, ...]
    fit: PodFit | None
    reason: str = ""

    @property
    def n(self) -> int:
        """Number of cracks."""
        return len(self.observations)

    @property
    def hits(self) -> int:
        """Number of cracks found."""
        return sum(o.hit for o in self.observations)

    @property
    def largest_miss_mm(self) -> float | None:
        """Size of the largest crack missed."""
        return max((o.size_mm for o in self.observations if not o.hit), default=None)

    @property
    def smallest_hit_mm(self) -> float | None:
        """Size of the smallest crack found."""
        return min((o.size_mm for o in self.observations if o.hit), default=None)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON: always the same keys, ``None`` for the figures there is no fit for."""
        empty = dict.fromkeys(("a50_mm", "a90_mm", "a90_95_mm", "beta0", "beta1", "covariance", "method"))
        return {
            **(self.fit.to_dict() if self.fit else empty),
            "n": self.n,
            "hits": self.hits,
            "misses": self.n - self.hits,
            "largest_miss_mm": self.largest_miss_mm,
            "smallest_hit_mm": self.smallest_hit_mm,
            "reason": self.reason or None,
        }


def _newton(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Maximum-likelihood (beta0, beta1) and the Fisher information; ``None`` when Newton does not converge."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.array([_logit(float(np.clip(y.mean(), 0.01, 0.99))), 0.0])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    for _ in range(_MAX_ITERATIONS):
        p = _expit(design @ beta)
        info = design.T @ (design * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(info, design.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        before, scale = loglik(beta), 1.0
        while loglik(beta + scale * step) < before - 1e-12 and scale > 1e-6:
            scale /= 2  # step halving keeps every step uphill
        beta = beta + scale * step
        if np.max(np.abs(scale * step)) < 1e-10:
            p = _expit(design @ beta)
            return beta, design.T @ (design * (p * (1 - p))[:, None])
    return None


def _log_size_at(beta: np.ndarray, cov: np.ndarray, pod: float, z: float) -> float | None:
    """The ln(a) where ``eta - z * se(eta)`` reaches logit(pod); ``None`` when the bound never does.

    ``eta(x) - L = z * se(x)`` squared is a quadratic in x; the bound rises steadily (and crosses once)
    only while beta1 > z * sqrt(var beta1), and then the crossing is its larger root.
    """
    d0, b1 = beta[0] - _logit(pod), beta[1]
    if z == 0:
        return float(-d0 / b1)
    qa = b1 * b1 - z * z * cov[1, 1]
    if qa <= 0:
        return None
    qb = 2 * (b1 * d0 - z * z * cov[0, 1])
    qc = d0 * d0 - z * z * cov[0, 0]
    return float((-qb + math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))) / (2 * qa))


def _too_few(data: Sequence[HitMiss]) -> str:
    """Why these hit/miss data cannot support a fit ("" when they can)."""
    n, hits = len(data), sum(o.hit for o in data)
    if n < MIN_OBSERVATIONS:
        return f"too few cracks ({n} < {MIN_OBSERVATIONS})"
    if hits == n:
        return f"no misses (all {hits} found)"
    if hits == 0:
        return f"no hits (none of {n} found)"
    largest_miss = max(o.size_mm for o in data if not o.hit)
    smallest_hit = min(o.size_mm for o in data if o.hit)
    if largest_miss <= smallest_hit:  # complete separation: the likelihood grows without bound
        return (
            f"hits and misses separated (largest miss {largest_miss:.3f} mm, smallest hit {smallest_hit:.3f} mm): "
            "the data cannot bound POD"
        )
    if max(o.size_mm for o in data if o.hit) <= min(o.size_mm for o in data if not o.hit):
        return "POD does not increase with size (every hit is smaller than every miss)"
    return ""


def fit_pod(observations: Sequence[HitMiss]) -> PodResult:
    """Fit the hit/miss POD curve of crack size; no fit (and the reason) where the data cannot support one."""
    data = tuple(observations)
    reason = _too_few(data)
    if reason:
        return PodResult(data, None, reason)
    x = np.log([o.size_mm for o in data])
    y = np.array([o.hit for o in data], dtype=np.float64)
    solved = _newton(x, y)
    if solved is None:
        return PodResult(data, None, "the maximum-likelihood fit did not converge")
    beta, info = solved
    if beta[1] <= 0:
        return PodResult(data, None, f"POD does not increase with size (slope {beta[1]:.2f})")
    cov = np.linalg.inv(info)
    largest = float(np.exp(x.max()))

    def size(log_a: float | None) -> float | None:
        return None if log_a is None or log_a > math.log(MAX_EXTRAPOLATION * largest) else math.exp(log_a)

    a90 = size(_log_size_at(beta, cov, 0.9, 0.0))
    log_a90_95 = _log_size_at(beta, cov, 0.9, Z_95)
    a90_95 = None if a90 is None else size(log_a90_95)
    if a90 is not None and a90_95 is not None:
        a90_95 = max(a90_95, a90)  # true by construction; guards rounding when the variance is ~0
    reason = ""
    if a90 is None:
        reason = f"a90 beyond {MAX_EXTRAPOLATION:g}x the largest crack ({largest:.3f} mm)"
    elif log_a90_95 is None:
        reason = "the slope is too uncertain: the 95% lower bound of POD never reaches 0.90"
    elif a90_95 is None:
        reason = f"a90/95 beyond {MAX_EXTRAPOLATION:g}x the largest crack ({largest:.3f} mm)"
    fit = PodFit(
        n=len(data),
        hits=int(y.sum()),
        misses=len(data) - int(y.sum()),
        beta0=float(beta[0]),
        beta1=float(beta[1]),
        covariance=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        a50_mm=size(_log_size_at(beta, cov, 0.5, 0.0)),
        a90_mm=a90,
        a90_95_mm=a90_95,
    )
    return PodResult(data, fit, reason)


@dataclass(frozen=True)
class PodBin:
    """POD of the cracks whose ``variable`` lies in [low, high]."""

    variable: str
    low: float
    high: float
    result: PodResult

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON: the bin range, then the counts and figures of its fit."""
        return {"variable": self.variable, "low": self.low, "high": self.high, **self.result.to_dict()}


def pod_by(
    observations: Sequence[HitMiss], variable: Literal["contrast", "ir_delta"], bins: int = POD_BINS
) -> list[PodBin]:
    """POD fitted separately in quantile bins (terciles by default) of a second variable.

    Observations without the variable are left out. Bin ``i`` holds values in [edge i, edge i+1), the
    last one includes its upper edge; equal quantile edges merge, so tied values give fewer bins.
    """
    known = [o for o in observations if getattr(o, variable) is not None]
    if not known:
        return []
    values = np.array([getattr(o, variable) for o in known], dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    index = np.searchsorted(edges[1:-1], values, side="right")
    out = []
    for i in range(max(len(edges) - 1, 1)):
        members = [o for o, k in zip(known, index, strict=True) if k == i]
        low, high = float(edges[i]), float(edges[min(i + 1, len(edges) - 1)])
        out.append(PodBin(variable, low, high, fit_pod(members)))
    return out
