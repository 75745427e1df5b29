"""The calcium window, the density rule for calcifications, and the training helpers added with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mla
from inspector.medical.dicom import read_series
from inspector.medical.measure import calcium_candidates, findings_from_maps
from inspector.medical.metrics import match_findings
from inspector.medical.phantom import make_study, write_dicom
from inspector.medical.report import (
    draft_report,
    fuse,
    image_channels,
    input_channels,
    load_report_model,
    maps,
    model_config,
)
from inspector.medical.training import reset_lesion_map, targets, widen_image_input
from inspector.medical.vocab import TYPES, ReportTokenizer
from mla.seed import seed_everything


def _no_type_maps(study_hu: np.ndarray) -> np.ndarray:
    return np.zeros((len(TYPES), *study_hu.shape[1:]), np.float32)


@pytest.mark.parametrize("seed", [5, 6, 8, 9, 13, 16])
def test_the_density_rule_finds_calcifications_the_type_maps_miss(seed: int) -> None:
    study = make_study(seed)
    truth = [f for f in study.findings if f.type == "calcification"]
    organs = targets(study)[len(TYPES) :].astype(np.float32)  # organ maps as a perfect model would give them
    hu = study.hu.astype(np.float32)
    found = findings_from_maps(hu, (study.spacing_mm,) * 2, _no_type_maps(hu), organs)
    counts = match_findings(found, truth)
    assert counts.tp == len(truth) and counts.fp == 0  # the vertebra (450-650 HU) is bone in no organ
    assert not findings_from_maps(hu, (study.spacing_mm,) * 2, _no_type_maps(hu), organs, calcium_rule=False)
    assert not findings_from_maps(hu, (study.spacing_mm,) * 2, _no_type_maps(hu), organs, calibrated=False)


def test_the_density_rule_finds_nothing_in_a_study_without_lesions() -> None:
    study = make_study(4)
    assert not study.lesions
    organs = targets(study)[len(TYPES) :].astype(np.float32)
    assert calcium_candidates(study.hu.astype(np.float32), (study.spacing_mm,) * 2, organs) == []


def test_a_calcification_the_maps_found_is_not_reported_twice() -> None:
    study = make_study(13)
    t = targets(study).astype(np.float32)
    found = findings_from_maps(study.hu.astype(np.float32), (study.spacing_mm,) * 2, t[:4], t[4:])
    assert [f.type for f in found] == ["calcification"]


def test_a_30_mm_lung_mass_measured_just_under_30_mm_keeps_the_maps_type() -> None:
    study = make_study(900076)  # a validation seed: a 30 mm right-lung mass, measured 29.7 mm
    t = targets(study).astype(np.float32)
    found = findings_from_maps(study.hu.astype(np.float32), (study.spacing_mm,) * 2, t[:4], t[4:])
    assert match_findings(found, study.findings).fn == 0


def test_the_calcium_plane_shows_only_calcium_density() -> None:
    study = make_study(13)
    planes = image_channels(study.hu.astype(np.float32), True)
    lesion = study.lesions[0]
    x, y = (int(v) for v in lesion.centre_px)
    assert planes[3, y, x] > 0.1 and planes[0, y, x] == 1.0  # the soft-tissue window clips it to white
    organs = targets(study)[len(TYPES) :].astype(bool).any(axis=0)
    assert planes[3][organs].mean() < 0.01  # organs (≤ 190 HU) are black in the calcium window


def test_a_3_channel_model_widens_without_changing_its_maps(tokenizer: ReportTokenizer) -> None:
    seed_everything(0)
    narrow = mla.MLAModel(model_config(tokenizer.vocab_size, width=16, image_width=8, decoder_depth=1, in_channels=3))
    narrow.eval()
    wide = widen_image_input(narrow).eval()
    assert input_channels(narrow) == 3 and input_channels(wide) == 4
    assert widen_image_input(wide) is wide
    with pytest.raises(ValueError, match="narrow"):
        widen_image_input(wide, 3)
    volume = make_study(5).hu.astype(np.float32)
    patient = torch.zeros(1, 12)
    with torch.no_grad():
        before = maps(narrow, fuse(narrow, torch.from_numpy(image_channels(volume, True, channels=3))[None], patient))
        after = maps(wide, fuse(wide, torch.from_numpy(image_channels(volume, True))[None], patient))
    assert torch.allclose(before, after)


def test_resetting_a_lesion_map_starts_it_from_the_prior(tokenizer: ReportTokenizer) -> None:
    model = mla.MLAModel(model_config(tokenizer.vocab_size, width=16, image_width=8, decoder_depth=1))
    reset_lesion_map(model, "calcification", prior=0.05)
    classifier = model.heads["segmentation"].classifier
    assert isinstance(classifier, torch.nn.Conv2d) and classifier.bias is not None
    index = TYPES.index("calcification")
    assert float(classifier.weight[index].detach().abs().sum()) == 0.0
    assert float(torch.sigmoid(classifier.bias[index].detach())) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown lesion type"):
        reset_lesion_map(model, "tumour")


def test_the_shipped_model_reports_a_calcification_in_its_organ(tmp_path: Path) -> None:
    from inspector.commands.medical import DEFAULT_MODEL

    study = make_study(5)  # a training seed: nodule, 8 mm right-kidney calcification, mass
    write_dicom(study, tmp_path / "study")
    model, tokenizer, _ = load_report_model(DEFAULT_MODEL)
    assert input_channels(model) == 4
    report = draft_report(model, tokenizer, read_series(tmp_path / "study"))
    assert match_findings(report.findings, study.findings).tp == len(study.findings)
    assert "calcification" in report.narrative and "right kidney" in report.narrative
