from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mla
from inspector.medical.dicom import PatientInfo, read_series
from inspector.medical.errors import ReportModelError
from inspector.medical.report import (
    FEATURES,
    INPUT_SIZE,
    draft_report,
    image_channels,
    load_report_model,
    model_config,
    patient_features,
)
from inspector.medical.training import (
    Recipe,
    batches,
    dapt_batches,
    dapt_loss,
    make_samples,
    report_corpus,
    report_loss,
)
from workers.cli import app


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "dicomdirtests/98892001/CT5N", "dicomdirtests/98892003/MR2", "JPEG2000.dcm"],
)
def test_shipped_files_run_end_to_end(testdata: Path, tiny_model: Path, name: str) -> None:
    model, tokenizer, info = load_report_model(tiny_model)
    volume = read_series(testdata / name)
    report = draft_report(model, tokenizer, volume, info=info).to_dict()
    json.dumps(report)
    assert report["study_uid"] == volume.study_uid and report["draft"] is True
    assert isinstance(report["narrative"], str) and report["timings_ms"]["total"] > 0
    assert (report["warnings"] == []) == (volume.modality == "CT")


def test_phantom_study_report_has_measured_findings(phantom, tiny_model: Path) -> None:
    _study, folder = phantom
    model, tokenizer, info = load_report_model(tiny_model)
    report = draft_report(model, tokenizer, read_series(folder), info=info, threshold=0.0)  # every pixel a lesion
    for finding in report.findings:
        assert finding.size_mm > 0 and finding.mean_hu is not None and 0 <= finding.confidence <= 1


def test_inputs_have_fixed_shapes() -> None:
    volume = np.random.default_rng(0).normal(0, 100, (3, 40, 70)).astype(np.float32)
    channels = image_channels(volume, True)
    assert channels.shape == (4, INPUT_SIZE, INPUT_SIZE) and channels.min() >= 0 and channels.max() <= 1
    assert image_channels(volume, True, channels=3).shape == (3, INPUT_SIZE, INPUT_SIZE)  # version-1 models
    assert not image_channels(volume, False)[3].any()  # no calcium plane without HU
    x = patient_features(PatientInfo(64.0, "M", "cough"))
    assert x.shape == (FEATURES,) and x.sum() == pytest.approx(0.64 + 3)
    assert patient_features(PatientInfo()).sum() == 2  # unknown sex, unknown indication


def test_a_model_file_without_report_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crack.pt"
    mla.save_model(mla.MLAModel(mla.crack_config()), path)
    with pytest.raises(ReportModelError, match="not a report model"):
        load_report_model(path)
    with pytest.raises(ReportModelError, match="not found"):
        load_report_model(tmp_path / "missing.pt")


def test_losses_are_finite_and_train(tokenizer) -> None:
    torch.manual_seed(0)
    model = mla.MLAModel(model_config(tokenizer.vocab_size, width=16, image_width=8, decoder_depth=1))
    samples = make_samples(range(2))
    rng = np.random.default_rng(0)
    batch = next(batches(samples, tokenizer, 2, rng, 300))
    loss, logged = report_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and {"seg_bce", "dice", "text"} <= set(logged)
    ids, labels = next(dapt_batches(report_corpus(8), tokenizer, 4, rng, 300))
    assert (labels[:, 0] == -100).all() and (labels[:, 1] != -100).all()  # empty prompt: the report starts at 1
    assert torch.isfinite(dapt_loss(model, (ids, labels))[0])
    assert Recipe().train_seeds[1] <= Recipe().val_seeds[0]  # validation seeds are never trained on


def test_cli_synth_report_and_eval(tmp_path: Path, tiny_model: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "held"
    result = runner.invoke(app, ["medical", "synth", "--out", str(data), "--count", "2", "--seed", "950000"])
    assert result.exit_code == 0, result.output
    study = sorted(data.iterdir())[0]
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["medical", "report", str(study), "--model", str(tiny_model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["modality"] == "CT"
    figures = tmp_path / "figures.json"
    result = runner.invoke(
        app, ["medical", "eval", "--data", str(data), "--model", str(tiny_model), "--out", str(figures)]
    )
    assert result.exit_code == 0, result.output
    data_out = json.loads(figures.read_text())
    assert data_out["synthetic"] is True and data_out["studies"] == 2 and "bleu4" in data_out["bleu_all_references"]


def test_cli_report_on_bad_input_exits_2(tmp_path: Path, tiny_model: Path) -> None:
    bad = tmp_path / "random.dcm"
    bad.write_bytes(np.random.default_rng(1).bytes(2000))
    result = CliRunner().invoke(app, ["medical", "report", str(bad), "--model", str(tiny_model)])
    assert result.exit_code == 2 and "not a DICOM file" in result.output


def test_the_shipped_model_drafts_a_phantom_report(phantom) -> None:
    from inspector.commands.medical import DEFAULT_MODEL

    study, folder = phantom
    model, tokenizer, info = load_report_model(DEFAULT_MODEL)
    report = draft_report(model, tokenizer, read_series(folder), info=info)
    assert report.narrative.startswith(f"Indication: {study.indication}.") and "Impression:" in report.narrative
    assert report.findings, "the phantom has lesions: a report without findings measured nothing"
    assert all(f.mean_hu is not None and f.size_mm > 0 for f in report.findings)
    assert DEFAULT_MODEL.stat().st_size < 10e6
    card = DEFAULT_MODEL.with_suffix(".md").read_text()
    assert "synthetic data only" in card
