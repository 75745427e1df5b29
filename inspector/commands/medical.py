"""``inspector medical``: synthetic DICOM studies, training, drafting and evaluating radiology reports.

    inspector medical synth --out data/medical/heldout --count 60 --seed 900000
    inspector medical train --out inspector/models/medical-report.pt
    inspector medical report study-folder/ --json
    inspector medical profile --data data/medical/train-profile     # the input gate's validated domain
    inspector medical eval --data data/medical/heldout --json
    inspector medical check --pydicom-test-files                    # real CT/MR files: gate + contradictions

Everything the phantom makes is synthetic; reports are drafts for a radiologist, never diagnoses.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import track
from rich.table import Table

from inspector.commands.common import console, fail, progress_bar
from inspector.errors import InspectorError

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "medical-report.pt"

medical_app = typer.Typer(help="Radiology report drafts from DICOM CT/MR studies (synthetic phantom data).")

ModelOption = Annotated[Path, typer.Option("--model", "-m", help="Report model file (.pt).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ThreadsOption = Annotated[int, typer.Option(min=1, help="CPU threads.")]


@medical_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(help="Folder; one sub-folder of DICOM files + truth.json per study.")],
    count: Annotated[int, typer.Option(min=1, help="Studies to write.")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the first study (held-out figures use 800000).")] = 800_000,
) -> None:
    """Write synthetic phantom CT studies as real DICOM files with their ground truth."""
    from inspector.medical.phantom import make_study, write_dicom

    for index in track(range(count), description="writing studies", console=console):
        study = make_study(seed + index)
        write_dicom(study, out / f"study-{seed + index:07d}")
    console.print(f"wrote {count} synthetic studies to {out}")


@medical_app.command("train")
def train(
    out: Annotated[Path, typer.Option(help="Model file to write.")] = DEFAULT_MODEL,
    train_studies: Annotated[int, typer.Option(min=8, help="Labelled phantom studies (seeds 0…N-1).")] = 400,
    steps: Annotated[int, typer.Option(min=1, help="Fine-tuning steps.")] = 900,
    dapt_steps: Annotated[
        int, typer.Option(min=0, help="DAPT steps of the decoder on unlabelled reports; 0 = none.")
    ] = 1500,
    corpus: Annotated[int, typer.Option(min=100, help="Unlabelled reports in the DAPT corpus.")] = 6000,
    batch: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option(min=1e-6, help="Peak learning rate (cosine schedule).")] = 2e-3,
    calcification_weight: Annotated[
        float, typer.Option(min=1.0, help="BCE weight of calcification pixels (other lesion types: 5).")
    ] = 20.0,
    run_dir: Annotated[Path, typer.Option(help="Metrics and checkpoints of the run.")] = Path("runs/medical"),
    threads: ThreadsOption = 1,
    max_minutes: Annotated[float | None, typer.Option(min=0.1, help="Stop fine-tuning after this long.")] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this report model's weights and vocabulary (no DAPT); a 3-channel model gains the "
            "calcium-window channel with zero weights."
        ),
    ] = None,
    reset_map: Annotated[
        list[str] | None,
        typer.Option(help="With --init: re-initialise this lesion-type map's output layer (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a report model: DAPT of the decoder, then image + patient → maps + narrative on phantom studies."""
    import torch

    import mla
    from inspector.medical.report import load_report_model, model_config, save_report_model
    from inspector.medical.training import (
        Recipe,
        build_tokenizer,
        make_samples,
        report_corpus,
        reset_lesion_map,
        run_dapt,
        run_finetune,
        widen_image_input,
    )
    from mla.seed import seed_everything

    torch.set_num_threads(threads)
    recipe = replace(
        Recipe(),
        train_seeds=(0, train_studies),
        steps=steps,
        dapt_steps=dapt_steps,
        corpus=corpus,
        batch=batch,
        lr=lr,
        calcification_weight=calcification_weight,
        max_seconds=None if max_minutes is None else 60 * max_minutes,
    )
    seed_everything(recipe.seed)
    started = time.perf_counter()
    tokenizer = build_tokenizer(report_corpus(recipe.corpus))
    model = mla.MLAModel(model_config(tokenizer.vocab_size, recipe.width, recipe.image_width, recipe.decoder_depth))
    dapt: dict[str, Any] = {}
    if init is not None:
        try:
            model, tokenizer, start = load_report_model(init)
        except InspectorError as exc:
            fail(exc)
        model = widen_image_input(model, recipe.in_channels).train()
        for kind in reset_map or []:
            try:
                reset_lesion_map(model, kind)
            except ValueError as exc:
                fail(str(exc))
        dapt = {"init": str(init), "init_metadata": start["metadata"], "reset_maps": list(reset_map or [])}
    elif recipe.dapt_steps:
        dapt = run_dapt(model, tokenizer, recipe, str(run_dir / "dapt"))
    samples = make_samples(range(*recipe.train_seeds), recipe.in_channels)
    val = make_samples(range(*recipe.val_seeds), recipe.in_channels)
    fit, evaluation = run_finetune(model, tokenizer, samples, val, recipe, str(run_dir / "finetune"))
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = {
        "version": "2",  # 2: four image channels (calcium window)
        "synthetic_data": True,
        "recipe": asdict(recipe),
        "dapt": dapt,
        "train": fit,
        "validation": evaluation,
        "parameters": mla.count_parameters(model),
        "train_seconds": round(time.perf_counter() - started, 1),
        "command": shlex.join(["inspector", *sys.argv[1:]]),
    }
    save_report_model(model.eval(), tokenizer, out, metadata)
    if as_json:
        console.print_json(data=metadata)
    else:
        console.print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB): validation {json.dumps(evaluation)}")


@medical_app.command("report")
def report(
    study: Annotated[Path, typer.Argument(help="A DICOM file, a folder of them (one study) or a zip.")],
    model: ModelOption = DEFAULT_MODEL,
    age: Annotated[float | None, typer.Option(help="Override the patient's age (years).")] = None,
    sex: Annotated[str | None, typer.Option(help="Override the patient's sex (M, F, O).")] = None,
    indication: Annotated[str | None, typer.Option(help="Override the indication.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the report JSON here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Draft a structured report (findings, impression, narrative) for one study."""
    from inspector.medical.dicom import read_study
    from inspector.medical.report import draft_report, load_profile, load_report_model

    try:
        net, tokenizer, info = load_report_model(model)
        profile = load_profile(model)
        volume = read_study(study.read_bytes() if study.suffix == ".zip" else study)[0]
    except InspectorError as exc:
        fail(exc)
    given = volume.patient
    patient = replace(
        given,
        age_years=given.age_years if age is None else age,
        sex=given.sex if sex is None else sex.upper(),
        indication=given.indication if indication is None else indication,
    )
    info.pop("metadata", None)
    result = draft_report(net, tokenizer, volume, patient, info=info, profile=profile).to_dict()
    if out is not None:
        out.write_text(json.dumps(result, indent=1))
    if as_json:
        console.print_json(data=result)
        return
    outside = result["domain"]["out_of_domain"]
    domain = "[red]outside the validated domain[/]" if outside else "inside the validated domain"
    title = f"findings ({result['modality']}, {domain})"
    table = Table("type", "location", "size mm", "mean HU", "confidence", title=title)
    for f in result["findings"]:
        table.add_row(f["type"], f["location"], str(f["size_mm"]), str(f["mean_hu"]), f"{f['confidence']:.2f}")
    console.print(table)
    console.print(result["narrative"])
    for warning in result["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


@medical_app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Option(help="Folder written by `inspector medical synth` (held-out seeds).")],
    model: ModelOption = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option(help="Write the figures (and per-study rows) as JSON here.")] = None,
    threads: ThreadsOption = 1,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Lesion probability threshold (choose it on validation seeds).")
    ] = 0.5,
    calcium_rule: Annotated[
        bool, typer.Option(help="Add calcium-density components as calcifications (off: the lesion maps alone).")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Finding P/R/F1, BLEU-1..4, ROUGE-L on held-out synthetic studies read back from their DICOM files."""
    import torch

    from inspector.medical.evaluation import evaluate_studies, study_folders

    torch.set_num_threads(threads)
    folders = study_folders(data)
    if not folders:
        fail(f"{data} holds no studies with truth.json: write some with `inspector medical synth --out {data}`")
    net, tokenizer, info, profile = _served(model)
    with progress_bar("drafting reports", len(folders)) as advance:
        figures = evaluate_studies(
            net, tokenizer, folders, info, threshold=threshold, calcium_rule=calcium_rule, profile=profile,
            on_study=advance,
        )  # fmt: skip
    _record(figures, info, out)
    summary = {k: v for k, v in figures.items() if k != "per_study"}
    if as_json:
        console.print_json(data=summary)
        return
    table = Table("figure", "value", title=f"held-out synthetic studies: {figures['studies']}")
    for key, value in summary.items():
        table.add_row(key, json.dumps(value))
    console.print(table)


@medical_app.command("profile")
def profile(
    data: Annotated[Path, typer.Option(help="Training studies written by `inspector medical synth` (training seeds).")],
    model: ModelOption = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option(help="Where to write it (default: beside the model).")] = None,
    threads: ThreadsOption = 1,
    as_json: JsonOption = False,
) -> None:
    """Fit the input gate's validated domain on training studies and save it beside the model.

    Modality, body part, slice count and spacing, pixel spacing, the mean HU histogram and the share
    of the image the model's organ maps cover, as measured on these studies; the gate flags a study
    outside them (see docs/MEDICAL.md, "Out-of-domain studies"). Use the seeds the model trained on,
    never held-out ones.
    """
    import torch

    from inspector.medical.domain import fit_profile, profile_path
    from inspector.medical.evaluation import domain_samples, study_folders
    from inspector.medical.report import load_report_model

    torch.set_num_threads(threads)
    folders = study_folders(data)
    if not folders:
        fail(f"{data} holds no studies with truth.json: write some with `inspector medical synth --out {data}`")
    try:
        net, _, info = load_report_model(model)
    except InspectorError as exc:
        fail(exc)
    with progress_bar("measuring training studies", len(folders)) as advance:
        samples = domain_samples(net, folders, on_study=advance)
    seeds = sorted(json.loads((f / "truth.json").read_text()).get("seed", -1) for f in folders)
    fitted = fit_profile(samples, f"{len(folders)} synthetic phantom studies, seeds {seeds[0]}-{seeds[-1]}; model "
                                  f"{info['name']} sha256 {info['sha256'][:12]}")  # fmt: skip
    target = out or profile_path(model)
    fitted.save(target)
    if as_json:
        console.print_json(data=fitted.to_dict())
        return
    console.print(f"domain profile of {len(folders)} studies written to {target}")
    summary = {k: v for k, v in fitted.to_dict().items() if k != "hu_histogram"}
    table = Table("check", "validated on")
    for key, value in summary.items():
        table.add_row(key, json.dumps(value))
    console.print(table)


@medical_app.command("check")
def check(
    files: Annotated[list[Path] | None, typer.Argument(help="DICOM files or study folders (no truth needed).")] = None,
    pydicom_test_files: Annotated[
        bool, typer.Option(help="Add every CT and MR image among pydicom's bundled test files (real, de-identified).")
    ] = False,
    model: ModelOption = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option(help="Write the figures (and per-file rows) as JSON here.")] = None,
    threads: ThreadsOption = 1,
    as_json: JsonOption = False,
) -> None:
    """Draft reports for studies without truth: the input gate's verdict and the narrative read back for contradictions.

    A file the reader refuses (a codec not installed, a truncated file) is listed with the reason.
    """
    import torch

    from inspector.medical.evaluation import evaluate_files, pydicom_test_images

    torch.set_num_threads(threads)
    paths = list(files or []) + (pydicom_test_images() if pydicom_test_files else [])
    if not paths:
        fail("no files: give DICOM files or study folders, or --pydicom-test-files")
    net, tokenizer, info, profile = _served(model)
    with progress_bar("drafting reports", len(paths)) as advance:
        figures = evaluate_files(net, tokenizer, paths, info, profile=profile, on_file=advance)
    _record(figures, info, out)
    if as_json:
        console.print_json(data={k: v for k, v in figures.items() if k != "per_file"})
        return
    table = Table("file", "modality", "slices", "findings", "domain", "contradictions", title="reports without truth")
    for row in figures["per_file"]:
        if "refused" in row:
            table.add_row(row["file"], "", "", "", f"[yellow]refused:[/] {row['refused'][:60]}", "")
            continue
        reasons = row["reasons"]
        verdict = f"[red]out[/] ({len(reasons)}): {reasons[0]}" if row["out_of_domain"] else "in"
        table.add_row(row["file"], row["modality"], str(row["slices"]), str(row["findings"]), verdict,
                      str(len(row["contradictions"])))  # fmt: skip
    console.print(table)
    console.print(
        f"{figures['drafted']} drafted, {figures['flagged_out_of_domain']} out of domain, "
        f"{figures['narratives_with_contradictions']} with contradictions, {len(figures['refused'])} refused"
    )


def _served(model: Path) -> tuple[Any, Any, dict[str, Any], Any]:
    """The report model, its tokenizer, its info (without the training metadata) and its domain profile; or exit."""
    from inspector.medical.report import load_profile, load_report_model

    try:
        net, tokenizer, info = load_report_model(model)
        profile = load_profile(model)
    except InspectorError as exc:
        fail(exc)
    info.pop("metadata", None)
    return net, tokenizer, info, profile


def _record(figures: dict[str, Any], info: dict[str, Any], out: Path | None) -> None:
    """Add the model and the command line to the figures; write them to ``out`` if given."""
    figures["model"] = info
    figures["command"] = shlex.join(["inspector", *sys.argv[1:]])
    if out is not None:
        out.write_text(json.dumps(figures, indent=1))


def register(app: typer.Typer) -> None:
    """Add ``inspector medical …``."""
    app.add_typer(medical_app, name="medical")
