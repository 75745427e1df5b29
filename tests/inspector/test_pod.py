from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize  # type: ignore[import-untyped]

from inspector.commands.evaluate import pod_cell, report_table
from inspector.evaluate import evaluate_sample, pod_observations, summarize
from inspector.pod import MIN_OBSERVATIONS, HitMiss, PodResult, fit_pod, pod_by
from inspector.report import plot_pod
from tests.inspector.shapes import capsule
from tests.inspector.test_evaluate import SHAPE, meta, truth_crack

TRUE_A50, TRUE_A90 = 0.12, 0.2
LOGIT_90 = math.log(9)
BETA1 = LOGIT_90 / math.log(TRUE_A90 / TRUE_A50)
BETA0 = -BETA1 * math.log(TRUE_A50)


def hit_miss(seed: int, n: int, contrast: bool = False) -> list[HitMiss]:
    """``n`` cracks, sizes log-uniform over 0.05-0.6 mm, found with the true log-logistic POD."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(math.log(0.05), math.log(0.6), n))
    found = rng.random(n) < 1 / (1 + np.exp(-(BETA0 + BETA1 * np.log(sizes))))
    shade = rng.random(n)
    return [
        HitMiss(float(a), bool(h), contrast=float(c) if contrast else None)
        for a, h, c in zip(sizes, found, shade, strict=True)
    ]


def a90_interval(result: PodResult, z: float = 1.96) -> tuple[float, float]:
    """Two-sided delta-method interval of a90: se(ln a90) = se(eta at ln a90) / beta1."""
    fit = result.fit
    assert fit is not None and fit.a90_mm is not None
    (v00, v01), (_, v11) = fit.covariance
    x = math.log(fit.a90_mm)
    se = math.sqrt(v00 + 2 * x * v01 + x * x * v11) / fit.beta1
    return math.exp(x - z * se), math.exp(x + z * se)


def test_fit_is_the_maximum_likelihood() -> None:
    data = hit_miss(0, 300)
    fit = fit_pod(data).fit
    assert fit is not None
    x = np.log([o.size_mm for o in data])
    y = np.array([o.hit for o in data], dtype=float)

    def nll(b: np.ndarray) -> float:
        eta = b[0] + b[1] * x
        return float(np.sum(np.logaddexp(0, eta) - y * eta))

    best = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    assert fit.beta0 == pytest.approx(best.x[0], abs=1e-3) and fit.beta1 == pytest.approx(best.x[1], abs=1e-3)
    assert fit.a50_mm == pytest.approx(math.exp(-fit.beta0 / fit.beta1))
    assert fit.a90_mm == pytest.approx(math.exp((LOGIT_90 - fit.beta0) / fit.beta1))
    assert fit.a50_mm is not None and fit.a90_mm is not None and fit.a90_95_mm is not None
    pod, lower = fit.curve([fit.a50_mm, fit.a90_mm, fit.a90_95_mm])
    assert pod[:2] == pytest.approx([0.5, 0.9]) and lower[2] == pytest.approx(0.9)  # a90/95: the bound reaches 0.9
    assert np.all(lower <= pod)


def test_true_a90_lies_in_the_interval_for_most_seeds() -> None:
    inside, bounded = 0, 0
    for seed in range(20):
        result = fit_pod(hit_miss(seed, 300))
        low, high = a90_interval(result)
        inside += low <= TRUE_A90 <= high
        assert result.fit is not None and result.fit.a90_95_mm is not None and result.reason == ""
        bounded += result.fit.a90_95_mm >= TRUE_A90  # a one-sided 95% bound: above the truth most of the time
    assert inside >= 18 and bounded >= 18


def test_a90_95_is_never_below_a90() -> None:
    rng = np.random.default_rng(7)
    fitted = 0
    for seed in range(300):
        n = int(rng.integers(MIN_OBSERVATIONS, 60))
        result = fit_pod(hit_miss(seed, n))
        if result.fit is None:
            assert result.reason
            continue
        fitted += 1
        if result.fit.a90_95_mm is not None:
            assert result.fit.a90_mm is not None and result.fit.a90_95_mm >= result.fit.a90_mm
        else:
            assert result.reason
    assert fitted > 100


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([HitMiss(0.1 + 0.01 * i, i % 2 == 0) for i in range(MIN_OBSERVATIONS - 1)], "too few"),
        ([HitMiss(0.05 + 0.02 * i, True) for i in range(30)], "no misses"),
        ([HitMiss(0.05 + 0.02 * i, False) for i in range(30)], "no hits"),
        (
            [HitMiss(0.05 + 0.02 * i, i >= 12) for i in range(30)],
            "separated (largest miss 0.270 mm, smallest hit 0.290 mm)",
        ),
        ([HitMiss(0.05 + 0.02 * i, i < 12) for i in range(30)], "does not increase"),  # hits small, misses large
        ([HitMiss(0.05 + 0.02 * i, i % 3 != 0 if i < 15 else i % 3 == 0) for i in range(30)], "does not increase"),
    ],
)
def test_no_number_without_the_data_for_it(data: list[HitMiss], reason: str) -> None:
    result = fit_pod(data)
    assert result.fit is None and reason in result.reason
    document = result.to_dict()
    assert document["a90_95_mm"] is None and document["a90_mm"] is None and reason in str(document["reason"])
    assert document["n"] == len(data)
    assert pod_cell(result, "a90_95_mm") == f"n/a: {result.reason}" and pod_cell(result, "a50_mm") == "n/a"


def test_separated_data_report_the_largest_miss_and_smallest_hit() -> None:
    result = fit_pod([HitMiss(0.05 + 0.02 * i, i >= 12) for i in range(30)])
    assert result.largest_miss_mm == pytest.approx(0.27) and result.smallest_hit_mm == pytest.approx(0.29)


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="> 0"):
        HitMiss(0.0, True)


def test_pod_by_contrast_fits_each_tercile() -> None:
    data = hit_miss(3, 300, contrast=True)
    bins = pod_by(data, "contrast")
    assert len(bins) == 3
    assert sum(b.result.n for b in bins) == 300 and all(90 <= b.result.n <= 110 for b in bins)
    assert bins[0].low == pytest.approx(min(o.contrast or 0 for o in data))
    assert [b.high for b in bins[:-1]] == [b.low for b in bins[1:]]
    for b in bins:
        assert all(b.low <= (o.contrast or 0) <= b.high for o in b.result.observations)
        assert b.result.fit is not None and b.to_dict()["variable"] == "contrast"
    few = pod_by(data[:12], "contrast")  # 4 per bin: too few to fit
    assert all(b.result.fit is None and "too few" in b.result.reason for b in few)
    assert pod_by(data, "ir_delta") == []  # nobody carries it
    tied = pod_by([HitMiss(0.1, True, ir_delta=0.0)] * 12, "ir_delta")
    assert len(tied) == 1 and tied[0].result.n == 12


def test_plot_pod_with_and_without_a_fit(tmp_path: Path) -> None:
    path = tmp_path / "pod.png"
    plot_pod({"fitted": fit_pod(hit_miss(1, 200)), "none": fit_pod(hit_miss(1, 5))}, path, "POD")
    assert path.stat().st_size > 1000


def test_summary_has_the_pod_section_and_the_width_bias() -> None:
    found = capsule(SHAPE, (20, 40), (170, 80), 6)
    evaluations = [
        evaluate_sample(
            meta([truth_crack((20, 40), (170, 80), 6), truth_crack((20, 100), (170, 100), 1.5)], f"s{i}"),
            found | capsule(SHAPE, (20, 100), (170, 100), 1.5),
            found.astype(np.float32),  # finds the 0.3 mm crack, misses the 0.075 mm one
            "NG",
        )
        for i in range(6)
    ]
    observations = pod_observations(evaluations)
    assert len(observations) == 12 and sum(o.hit for o in observations) == 6
    assert {o.contrast for o in observations} == {1.0} and {o.ir_delta for o in observations} == {0.0}
    report = summarize(evaluations)
    document = report.to_dict()
    pod = document["pod"]
    assert isinstance(pod, dict)
    assert pod["n"] == 12 and pod["hits"] == 6 and pod["misses"] == 6
    assert pod["a90_95_mm"] is None and "separated" in pod["reason"]
    assert pod["largest_miss_mm"] == pytest.approx(0.075) and pod["smallest_hit_mm"] == pytest.approx(0.3)
    assert isinstance(document["pod_by_contrast"], list) and len(document["pod_by_contrast"]) == 1  # one tied bin
    assert isinstance(document["pod_by_ir_delta"], list)
    bias = report.measurement["max_width_bias_mm_ge_0_2"]
    assert abs(bias) < 0.05 and report.measurement["max_width_mae_mm_ge_0_2"] == pytest.approx(abs(bias))
    table = report_table({"m": report})
    rows = dict(zip(table.columns[0].cells, table.columns[1].cells, strict=True))
    assert str(rows["POD a90/95 (mm)"]).startswith("n/a: hits and misses separated")
