"""The input gate and the shipped model's reports on real and synthetic studies (issue 22, parts 1 and 2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inspector.commands.medical import DEFAULT_MODEL
from inspector.medical.dicom import read_series
from inspector.medical.domain import (
    DomainProfile,
    DomainSample,
    domain_verdict,
    fit_profile,
    hu_distance,
    hu_histogram,
    profile_path,
    sample_of,
)
from inspector.medical.errors import ReportModelError
from inspector.medical.evaluation import evaluate_files, evaluate_studies, pydicom_test_images
from inspector.medical.phantom import make_study, write_dicom
from inspector.medical.report import load_profile, load_report_model


def ct_sample(**changes: object) -> DomainSample:
    phantom = hu_histogram(np.r_[np.full(600, -1000.0), np.full(300, 40.0), np.full(100, -850.0)])
    base = DomainSample("CT", "CHESTABDOMEN", 20, 2.5, 1.9, tuple(phantom), 0.2)
    return replace(base, **changes)  # type: ignore[arg-type]


PROFILE = fit_profile([ct_sample(), ct_sample(pixel_spacing_mm=1.8, organ_coverage=0.21)], "two made-up studies")


def test_a_study_like_the_training_ones_is_inside() -> None:
    verdict = domain_verdict(ct_sample(pixel_spacing_mm=1.85), PROFILE)
    assert not verdict.out_of_domain and verdict.reasons == () and verdict.caveat() is None
    assert verdict.scores["hu_distance"] == 0.0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"modality": "MR", "histogram": None}, "modality MR, validated on CT only"),
        ({"body_part": "HEAD"}, "body part HEAD"),
        ({"slices": 1, "slice_spacing_mm": None}, "1 slice, validated 20"),
        ({"slices": 1, "slice_spacing_mm": None}, "no slice spacing"),
        ({"slice_spacing_mm": 5.0}, "slice spacing 5.0 mm, validated 2.5 mm"),
        ({"pixel_spacing_mm": 0.5}, "pixel spacing 0.50 mm, validated 1.8-1.9 mm"),
        ({"histogram": tuple(hu_histogram(np.full(100, 300.0)))}, "HU histogram"),
        ({"organ_coverage": 0.7}, "the organ maps cover 70% of the image, validated 20-21%"),
    ],
)
def test_each_check_names_its_reason(changes: dict[str, object], reason: str) -> None:
    verdict = domain_verdict(ct_sample(**changes), PROFILE)
    assert verdict.out_of_domain and any(reason in r for r in verdict.reasons), verdict.reasons


def test_chest_and_abdomen_alone_are_inside_a_chest_abdomen_domain_and_no_profile_checks_tags_only() -> None:
    assert not domain_verdict(ct_sample(body_part="CHEST"), PROFILE).out_of_domain
    assert not domain_verdict(ct_sample(body_part=""), PROFILE).out_of_domain  # not stated: the images decide
    assert not domain_verdict(ct_sample(slices=1), None).out_of_domain
    assert domain_verdict(ct_sample(modality="MR"), None).reasons == ("modality MR, validated on CT only",)


def test_the_hu_distance_is_in_hu() -> None:
    a, b = hu_histogram(np.full(10, 0.0)), hu_histogram(np.full(10, 100.0))
    assert hu_distance(a, b) == pytest.approx(100.0)


def test_a_profile_round_trips_and_a_missing_one_says_how_to_make_it(tmp_path: Path) -> None:
    PROFILE.save(tmp_path / "p.json")
    assert DomainProfile.load(tmp_path / "p.json") == PROFILE
    with pytest.raises(ReportModelError, match="inspector medical profile"):
        DomainProfile.load(tmp_path / "missing.json")
    assert load_profile(tmp_path / "model.pt") is None


def test_the_shipped_model_has_its_profile_fitted_on_training_seeds() -> None:
    profile = DomainProfile.load(profile_path(DEFAULT_MODEL))
    assert profile.modalities == ("CT",) and profile.slices == (20, 20)
    assert "seeds 0-199" in profile.fitted_on


@pytest.fixture(scope="module")
def shipped() -> tuple:  # type: ignore[type-arg]
    model, tokenizer, info = load_report_model(DEFAULT_MODEL)
    return model, tokenizer, info, load_profile(DEFAULT_MODEL)


def test_every_pydicom_ct_and_mr_image_is_flagged_and_its_narrative_never_contradicts_it(shipped: tuple) -> None:  # type: ignore[type-arg]
    model, tokenizer, info, profile = shipped
    paths = pydicom_test_images()
    assert len(paths) >= 30  # 41 with pydicom 3.0
    figures = evaluate_files(model, tokenizer, paths, info, profile=profile)
    drafted = [r for r in figures["per_file"] if "refused" not in r]
    assert len(drafted) >= len(paths) - 2  # JPEG-LS without a codec, and a truncated file, are refused
    assert figures["narratives_with_contradictions"] == 0, [r["contradictions"] for r in drafted if r["contradictions"]]
    assert figures["share_flagged"] == 1.0, [r["file"] for r in drafted if not r["out_of_domain"]]
    by_name = {r["file"]: r for r in drafted}
    ct_small, mr_small = by_name["CT_small.dcm"]["narrative"], by_name["MR_small.dcm"]["narrative"]
    assert "Liver: Liver" not in ct_small and ct_small.count("Calcification, hepatic.") <= 1
    assert "Outside the validated domain (modality MR, validated on CT only;" in mr_small
    technique = mr_small.partition("interpretation is not validated. ")[2].partition(" Findings:")[0]
    assert technique.startswith("MR") and "CT" not in technique


def test_held_out_phantoms_are_inside_and_read_back_without_contradiction(shipped: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    model, tokenizer, info, profile = shipped
    for seed in range(710000, 710006):  # the held-out seeds of docs/MEDICAL.md
        write_dicom(make_study(seed), tmp_path / str(seed))
    folders = sorted(tmp_path.iterdir())
    figures = evaluate_studies(model, tokenizer, folders, info, profile=profile)
    assert figures["narratives_with_contradictions"] == 0, figures["contradictions"]
    assert figures["out_of_domain"]["flagged"] == 0, figures["out_of_domain"]
    assert figures["finding"]["f1"] >= 0.9
    sample = sample_of(read_series(folders[0]))
    assert sample.body_part == "CHESTABDOMEN" and sample.slices == 20
