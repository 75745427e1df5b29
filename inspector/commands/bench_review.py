"""``inspector bench review-loop``: a fine-tune on reviewed parts, against the false calls they show.

The review loop of docs/REVIEW.md, run end to end on **synthetic** parts, with ground truth standing in
for the operator:

1. a synthetic line whose only distractor is one kind (``--kind``, e.g. printed marks), half the parts
   cracked, is inspected by the serving model (``--model``) part by part, in order;
2. every NG part gets its evidence (:func:`inspector.evidence.build_evidence`, the worker's code) and
   a decision as an operator would make it, read from the ground truth: each crack the model found is
   ``real`` when it lies on a true crack, ``not_crack`` otherwise; a part with no real crack is a false
   call. The first ``--reviewed`` NG parts are decided and written as labels with the review station's
   code (:func:`inspector.labels.label_sample`, :func:`~inspector.labels.write_label`);
3. ``inspector train --init MODEL --data LABELS --mix TRAIN`` fine-tunes a candidate on them (it keeps
   the serving model's verdict rules);
4. ``inspector eval``'s comparison scores both models on held-out parts of the same kind (other seeds,
   never reviewed, never trained on) and on a synthetic held-out set (what must not be forgotten).

The figure is the false-reject rate (clean parts judged NG) on the held-out parts with that distractor,
before and after, beside the escape rate and the held-out set's figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer
from rich.table import Table

from inspector.commands.bench import JsonOption, bench_app, emit, machine
from inspector.commands.common import err_console, fail, progress_bar
from inspector.commands.evaluate import compare_models
from inspector.dataset import list_ids, read_sample
from inspector.evidence import build_evidence, evidence_files
from inspector.labels import Decision, decode_infrared, decode_visible, label_sample, review_record, write_label
from inspector.model import create_model
from inspector.pipeline import inspect_pair
from inspector.synth import generate_set, get_preset
from inspector.synth.config import DISTRACTOR_KINDS

LINE_SEED = 78_001  # the held-out parts use the next seed


def operator_marks(evidence: dict[str, Any], truth: np.ndarray, overlap: float = 0.3) -> dict[int, str]:
    """Each found crack ``real`` when at least ``overlap`` of its region lies within 3 px of a true crack."""
    near = cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    marks = {}
    for crack in evidence["cracks"]:
        region = np.zeros(truth.shape, np.uint8)
        outline = np.asarray(crack["outline"], dtype=np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(region, [outline], 1)
        cv2.polylines(region, [outline], True, 1)
        inside = region > 0
        share = float(near[inside].mean()) if inside.any() else 0.0
        marks[int(crack["index"])] = "real" if share >= overlap else "not_crack"
    return marks


def decide(marks: dict[int, str]) -> Decision:
    """The operator's decision from the per-crack marks."""
    if not any(m == "real" for m in marks.values()):
        return Decision(kind="false_call")
    if all(m == "real" for m in marks.values()):
        return Decision(kind="confirm")
    return Decision(kind="relabel", cracks=marks)


def review_line(line: Path, labels: Path, model: Any, reviewed: int) -> dict[str, Any]:
    """Inspect the line in order; decide and label the first ``reviewed`` NG parts. Returns what was decided."""
    decisions: Counter[str] = Counter()
    inspected = ng = 0
    false_call_kinds: Counter[str] = Counter()
    with progress_bar("review", total=reviewed) as advance:
        for sample_id in list_ids(line):
            if sum(decisions.values()) >= reviewed:
                break
            sample = read_sample(line, sample_id)
            meta = sample.meta
            result, probability = inspect_pair(
                sample.visible, sample.infrared, meta.homography, meta.mm_per_px, model, part_id=meta.part_id
            )
            inspected += 1
            if result.verdict != "NG":
                continue
            ng += 1
            bundle = build_evidence(
                result, probability, sample.visible, sample.infrared, ir_to_visible=meta.homography,
                camera_id="line-1", seq=inspected, capture_ts_ns=meta.visible_ts_ns, kept="ng",
            )  # fmt: skip
            evidence = json.loads(bundle.files["evidence.json"])
            truth = sample.mask if sample.mask is not None else np.zeros(sample.visible.shape[:2], bool)
            decision = decide(operator_marks(evidence, truth))
            decisions[decision.kind] += 1
            if decision.kind == "false_call":
                false_call_kinds.update({d.kind for d in meta.distractors})
            visible, infrared = (
                decode_visible(bundle.files[evidence_files(evidence)["visible"]]),
                decode_infrared(bundle.files[evidence_files(evidence)["infrared"]]),
            )
            record = review_record(decision, evidence, who="ground-truth operator", when="synthetic")
            write_label(labels, label_sample(decision, evidence, visible, infrared), record)
            advance(0)
    return {"inspected": inspected, "ng": ng, "decisions": dict(decisions), "false_call_kinds": dict(false_call_kinds)}


def fine_tune(
    init: Path, labels: Path, mix: tuple[Path, float], val: Path, out: Path, steps: int, lr: float, threads: int
) -> float:
    """``inspector train --init ... --data LABELS --mix MIX --mix-fraction F``; returns its wall seconds."""
    command = [str(Path(sys.executable).with_name("inspector")), "train", "--init", str(init), "--data", str(labels),
               "--mix", str(mix[0]), "--mix-fraction", str(mix[1]), "--val", str(val), "--out", str(out),
               "--steps", str(steps), "--lr", str(lr), "--threads", str(threads),
               "--workdir", str(out.with_suffix("")) + "-run", "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    run(command, "fine-tuning")
    return time.perf_counter() - started


def run(command: list[str], what: str) -> None:
    """Run an ``inspector`` command; exit 1 with its output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        fail(f"{what} failed ({' '.join(command)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}", code=1)


@bench_app.command("review-loop")
def review_loop(
    mix: Annotated[Path, typer.Option(help="Synthetic training data replayed during the fine-tune.")] = Path(
        "data/train"
    ),
    val: Annotated[Path, typer.Option(help="Validation data of the fine-tune (not scored here).")] = Path("data/val"),
    heldout: Annotated[Path, typer.Option(help="Synthetic held-out set scored before and after.")] = Path(
        "data/heldout-default"
    ),
    model: Annotated[Path, typer.Option(help="The serving model (a .pt file).")] = Path(
        "inspector/models/crack-concat.pt"
    ),
    kind: Annotated[str, typer.Option(help="The one distractor kind on the line.")] = "printed_mark",
    preset: Annotated[str, typer.Option(help="Synthetic preset of the line.")] = "hard",
    reviewed: Annotated[int, typer.Option(min=1, help="NG parts the operator decides.")] = 30,
    heldout_parts: Annotated[
        int, typer.Option(min=10, help="Held-out parts with the distractor, and of --heldout.")
    ] = 100,
    mix_fraction: Annotated[
        float, typer.Option(min=0, max=0.95, help="Share of each fine-tuning batch drawn from --mix.")
    ] = 0.75,
    steps: Annotated[int, typer.Option(min=1, help="Fine-tuning steps.")] = 600,
    lr: Annotated[float, typer.Option(help="Fine-tuning peak learning rate.")] = 3e-4,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for training.")] = 2,
    out: Annotated[Path, typer.Option(help="Working folder (line, labels, candidate, predictions).")] = Path(
        "runs/review-loop"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the line; its held-out parts use seed + 1.")] = (LINE_SEED),
    as_json: JsonOption = False,
) -> None:
    """Review the first NG parts of a synthetic line with one distractor kind, fine-tune on them, compare.

    Ground truth plays the operator (a found crack is real when it lies on a true crack), so the figure
    measures the loop, not a person. Everything is synthetic; the held-out parts use other seeds.
    """
    if kind not in DISTRACTOR_KINDS:
        fail(f"unknown --kind {kind!r}: choose one of {', '.join(DISTRACTOR_KINDS)}")
    config = get_preset(preset, distractor_weights={kind: 1.0}, distractor_count=(4, 8))
    if out.exists():
        shutil.rmtree(out)
    line, labels, held_kind = out / "line", out / "labels", out / f"heldout-{kind}"
    err_console.print(f"synthetic line and held-out parts with {kind} distractors ({preset}) ...")
    generate_set(line, 4 * reviewed, seed=seed, preset=config, clean_fraction=0.5)
    generate_set(held_kind, heldout_parts, seed=seed + 1, preset=config, clean_fraction=0.5)
    heldout_copy = out / heldout.name
    heldout_copy.mkdir(parents=True)
    for sample_id in list_ids(heldout)[:heldout_parts]:
        for path in heldout.glob(f"{sample_id}.*"):
            shutil.copy2(path, heldout_copy / path.name)
    serving = create_model(str(model))
    review = review_line(line, labels, serving, reviewed)
    if sum(review["decisions"].values()) < reviewed:
        fail(f"the line had only {review['ng']} NG parts; raise the line size or pick another --kind", code=1)
    candidate = out / "candidate.pt"
    train_s = fine_tune(model, labels, (mix, mix_fraction), val, candidate, steps, lr, threads)
    reports = compare_models([str(model), str(candidate)], [held_kind, heldout_copy], out / "eval", None, False)
    figures = {
        Path(folder).name: {
            name: {
                "parts": r.samples,
                "false_reject_rate": r.parts["false_reject_rate"],
                "escape_rate": r.parts["escape_rate"],
                "pixel_f1": r.pixel["f1"],
                "defect_crack_recall": r.defect_crack_recall["recall"],
            }
            for name, r in by_model.items()
        }
        for folder, by_model in reports.items()
    }
    document = {
        "benchmark": "review-loop",
        "synthetic": True,
        "machine": machine(),
        "kind": kind,
        "preset": preset,
        "line_seed": seed,
        "heldout_seed": seed + 1,
        "model": str(model),
        "review": review,
        "fine_tune": {
            "steps": steps,
            "lr": lr,
            "mix": str(mix),
            "mix_fraction": mix_fraction,
            "seconds": round(train_s, 1),
        },
        "figures": figures,
    }
    table = Table("held-out set", "model", "parts", "false-reject rate", "escape rate", "pixel F1", title=(
        f"review loop: {reviewed} reviewed parts ({review['decisions']}), synthetic"
    ))  # fmt: skip
    for folder, by_model in figures.items():
        for name, f in by_model.items():
            table.add_row(folder, name, str(f["parts"]), f"{f['false_reject_rate']:.3f}", f"{f['escape_rate']:.3f}",
                          f"{f['pixel_f1']:.3f}")  # fmt: skip
    (out / "review-loop.json").write_text(json.dumps(document, indent=1) + "\n")
    emit(document, table, as_json)
