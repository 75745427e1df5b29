"""``inspector vqa synth|train|ask|eval`` and ``inspector bench retrieval``: VQA on Sort-of-CLEVR-style scenes.

See docs/VQA.md. Exit codes: 0 done, 1 the work failed, 2 bad input or configuration.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from inspector.commands.bench import bench_app, emit, machine
from inspector.commands.common import console, fail
from inspector.errors import InspectorError

vqa_app = typer.Typer(
    help="Visual question answering on synthetic Sort-of-CLEVR-style scenes (docs/VQA.md).", no_args_is_help=True
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "vqa-hffn.pt"
HELDOUT_SEED = 10_001


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _model_file(path: Path) -> Path:
    """``path``, or a clear error when there is no file there."""
    if not path.is_file():
        fail(f"model file {path} not found: train one with `inspector vqa train --out {path}`")
    return path


def _load(path: Path) -> Any:
    from inspector.vqa.model import VQAModel

    return VQAModel.load(_model_file(path))


@vqa_app.command("synth")
def vqa_synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for scene PNGs, questions.jsonl, captions.jsonl.")],
    count: Annotated[int, typer.Option(min=1, help="Scenes.")] = 100,
    seed: Annotated[int, typer.Option(help="Scene i of a seed is always the same scene.")] = 0,
    side: Annotated[int, typer.Option(min=16, help="Image side in px (a multiple of 16 for the model).")] = 64,
    per_type: Annotated[int, typer.Option(min=0, help="Questions of each type per scene.")] = 2,
) -> None:
    """Write synthetic scenes with questions (colour, shape, count, position, relational), answers and captions."""
    from inspector.vqa.data import build_set, encode_png, type_counts
    from inspector.vqa.scenes import ANSWERS

    data = build_set(count, seed, side, per_type)
    out.mkdir(parents=True, exist_ok=True)
    for row in range(count):
        (out / f"scene-{row:06d}.png").write_bytes(encode_png(data.images[row]))
    with (out / "questions.jsonl").open("w") as fh:
        for q, a, k, s in zip(data.questions, data.answers, data.kinds, data.scene_index, strict=True):
            record = {"image": f"scene-{s:06d}.png", "question": q, "answer": ANSWERS[a], "type": k}
            fh.write(json.dumps(record) + "\n")
    with (out / "captions.jsonl").open("w") as fh:
        for row, text in enumerate(data.captions):
            fh.write(json.dumps({"image": f"scene-{row:06d}.png", "caption": text}) + "\n")
    console.print(f"{count} scenes, {len(data)} questions {type_counts(data)} in {out}")


@vqa_app.command("train")
def vqa_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (.pt).")],
    fusion: Annotated[str, typer.Option(help="concat, dma or hffn.")] = "hffn",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps (fresh scenes every batch).")] = 2_000,
    batch: Annotated[int, typer.Option(min=1, help="Questions per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of the training scenes and the run.")] = 0,
    side: Annotated[int, typer.Option(help="Image side (multiple of 16).")] = 64,
    eval_scenes: Annotated[int, typer.Option(min=1, help="Held-out scenes evaluated at the end.")] = 500,
    eval_every: Annotated[int, typer.Option(min=0, help="Evaluate every N steps (0: at the end).")] = 0,
    time_limit: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Folder for metrics.jsonl and checkpoints.")] = None,
    reasoning: Annotated[
        str, typer.Option(help="Answer head: relation (pairs of fused cells) or attention (fused vector only).")
    ] = "relation",
    relation_hidden: Annotated[int, typer.Option(min=8, help="Width of the relation head's MLPs.")] = 128,
    text_pool: Annotated[
        str, typer.Option(help="Question vector: mean or max over the words (max keeps one decisive word).")
    ] = "mean",
    relation_level: Annotated[
        int, typer.Option(min=0, max=2, help="Pyramid level the relation head pairs: 1 mid (8x8), 2 coarse (4x4).")
    ] = 1,
    relation_source: Annotated[
        str, typer.Option(help="Cells the relation head pairs: fused (after fusion) or image (the encoder's own).")
    ] = "fused",
    anchor: Annotated[
        bool, typer.Option(help="The relation head also weights pairs by the object the question names.")
    ] = False,
    pointer: Annotated[
        bool,
        typer.Option(help="Add a pointer: the named object, then the closest or furthest one (needs image source)."),
    ] = False,
    glimpse: Annotated[
        int,
        typer.Option(
            min=0,
            help="The pointer also reads an N x N window of cells around the object it finds (its shape); 0: off.",
        ),
    ] = 0,
    pointer_supervision: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of a loss on where the pointer looks (the named object's and the asked object's cells, "
            "known to the scene generator); 0: answers only.",
        ),
    ] = 0.0,
    input_skip: Annotated[
        bool, typer.Option(help="Give each image level the input averaged over its cells (keeps colour).")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    amp: Annotated[bool, typer.Option(help="Mixed precision (bf16 on CPU, fp16 on CUDA).")] = False,
    workers: Annotated[int, typer.Option(min=0, help="Processes rendering training scenes (0: in the loop).")] = 0,
    init: Annotated[
        Path | None, typer.Option(help="Continue from this VQA model (its fusion, head and tokenizer are kept).")
    ] = None,
    warm_start: Annotated[
        Path | None,
        typer.Option(help="Start a new architecture from this VQA model's tokenizer and matching weights."),
    ] = None,
    types: Annotated[
        str | None,
        typer.Option(help="Train only on these question types, comma-separated (e.g. colour,shape,position)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Train an MLAModel (text + image, the chosen fusion, answer head) and evaluate it on held-out scenes."""
    from inspector.vqa.data import build_set
    from inspector.vqa.model import FUSIONS
    from inspector.vqa.training import TrainOptions, evaluate, fit_tokenizer, train_vqa

    if fusion not in FUSIONS:
        fail(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    if side % 16:
        fail(f"--side must be a multiple of 16 (the pyramid's coarsest stride), got {side}")
    if text_pool not in ("mean", "max"):
        fail(f"unknown --text-pool {text_pool!r}: choose mean or max")
    if reasoning not in ("relation", "attention"):
        fail(f"unknown --reasoning {reasoning!r}: choose relation or attention")
    _check_relation_flags(relation_source, pointer, glimpse, pointer_supervision, batch)
    if warm_start is not None:
        _model_file(warm_start)  # train_vqa loads it
    _threads(threads)
    if init is not None:
        fusion = _load(init).fusion  # continuing: the model's own fusion
    chosen = tuple(t.strip() for t in types.split(",") if t.strip()) if types is not None else None
    try:
        options = TrainOptions(
            fusion=fusion, steps=steps, batch=batch, lr=lr, seed=seed, side=side, time_limit_s=time_limit,
            model_options={
                "reasoning": reasoning, "input_skip": input_skip, "relation_hidden": relation_hidden,
                "level": relation_level, "text_pool": text_pool, "relation_source": relation_source,
                "anchor": anchor, "pointer": pointer, "glimpse": glimpse,
            },
            device=device, amp=amp, workers=workers, init=str(init) if init is not None else None,
            warm_start=str(warm_start) if warm_start is not None else None, types=chosen,
            pointer_supervision=pointer_supervision,
        )  # fmt: skip
    except ValueError as exc:  # unknown --types, or --init with --warm-start
        fail(str(exc))
    heldout = build_set(eval_scenes, seed=HELDOUT_SEED, side=side)
    folder = run_dir or Path(tempfile.mkdtemp(prefix=f"vqa-{fusion}-"))
    tokenizer = fit_tokenizer(seed, side=side)
    result = train_vqa(
        options, folder, tokenizer=tokenizer, eval_set=heldout if eval_every else None, eval_every=eval_every,
        progress=progress,
    )  # fmt: skip
    found = evaluate(result.model, heldout)
    figures = {"heldout_seed": HELDOUT_SEED, "heldout_scenes": eval_scenes} | found
    out.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(out, metadata={"figures": figures, "batch": batch, "lr": lr, "seed": seed})
    document = {
        "model": str(out), "fusion": fusion, "steps": result.fit.step, "seconds": round(result.seconds, 1),
        "run_dir": str(folder), "heldout": figures, "history": result.history,
    }  # fmt: skip
    if as_json:
        console.print_json(json.dumps(document))
        return
    console.print(_accuracy_table({fusion: found}))
    console.print(f"saved {out} after {result.fit.step} steps in {result.seconds:.0f} s")


def _check_relation_flags(source: str, pointer: bool, glimpse: int, supervision: float, batch: int) -> None:
    """Fail on ``vqa train`` relation flags that do not go together."""
    if source not in ("fused", "image"):
        fail(f"unknown --relation-source {source!r}: choose fused or image")
    if pointer and source != "image":
        fail("--pointer reads the image encoder's own levels: add --relation-source image")
    if glimpse and not pointer:
        fail("--glimpse is read by the pointer: add --pointer")
    if supervision > 0 and not pointer:
        fail("--pointer-supervision trains the pointer's attention: add --pointer")
    if source == "image" and batch < 2:
        fail("--relation-source image standardises the question over the batch (BatchNorm): use --batch 2 or more")


def _looks_table(results: dict[str, dict[str, Any]]) -> Table:
    """Per model and relational kind: accuracy, and where the pointer looks (models with a pointer)."""
    table = Table(title="relational questions: accuracy and where the pointer looks")
    for column in ("model", "kind"):
        table.add_column(column, no_wrap=True)
    for column in ("questions", "accuracy", "named found", "asked found", "accuracy when found"):
        table.add_column(column, justify="right")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"  # None: the kind has no such object

    for name, found in results.items():
        for kind, look in found.get("pointer_by_kind", {}).items():
            kept = found["relational_by_kind"][kind]
            table.add_row(
                name, kind, str(kept["questions"]), cell(kept["accuracy"]), cell(look["named"]), cell(look["asked"]),
                cell(look["accuracy_when_found"]),
            )  # fmt: skip
    return table


def _accuracy_table(results: dict[str, dict[str, Any]]) -> Table:
    from inspector.vqa.scenes import QUESTION_TYPES

    table = Table("model", *QUESTION_TYPES, "overall", title="held-out accuracy per question type")
    for name, found in results.items():
        by_type = found["by_type"]
        cells = [f"{by_type[k]:.1%}" if k in by_type else "-" for k in QUESTION_TYPES]
        table.add_row(name, *cells, f"{found['overall']:.1%}")
    return table


@vqa_app.command("ask")
def vqa_ask(
    image: Annotated[Path, typer.Option("--image", "-i", help="A scene image (PNG/JPEG, square, colour).")],
    question: Annotated[str, typer.Option("--question", "-q", help="e.g. 'what shape is the red object?'")],
    model: Annotated[Path, typer.Option(help="A model from `inspector vqa train`.")] = SHIPPED,
    as_json: JsonOption = False,
) -> None:
    """Answer one question about one image, with the model's confidence."""
    from inspector.vqa.data import decode_image

    vqa = _load(model)
    try:
        if not image.is_file():
            fail(f"image {image} not found")
        answer = vqa.answer([decode_image(image.read_bytes(), vqa.side)], [question])[0]
    except InspectorError as exc:
        fail(exc)
    if as_json:
        console.print_json(json.dumps({"question": question} | answer.to_dict()))
    else:
        console.print(f"{answer.answer}  (confidence {answer.confidence:.1%})")


@vqa_app.command("eval")
def vqa_eval(
    models: Annotated[str, typer.Option("--models", "-m", help="Comma-separated model files.")] = str(SHIPPED),
    scenes: Annotated[int, typer.Option(min=1, help="Held-out scenes (about 10 questions each).")] = 1_000,
    seed: Annotated[int, typer.Option(help="Seed of the held-out scenes (training uses others).")] = HELDOUT_SEED,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    looks: Annotated[
        bool,
        typer.Option(
            help="Also measure where a model's pointer looks: how often each of its softmaxes puts more than "
            "half its mass on the named / asked object, per relational kind (pointer_by_kind)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Accuracy per question type of one or more models on the same held-out scenes."""
    from inspector.vqa.data import build_set
    from inspector.vqa.training import evaluate

    _threads(threads)
    results: dict[str, dict[str, Any]] = {}
    sides: dict[int, Any] = {}
    for path in [Path(p) for p in models.split(",") if p]:
        vqa = _load(path)
        data = sides.setdefault(vqa.side, build_set(scenes, seed, vqa.side))
        results[path.stem] = evaluate(vqa, data, looks=looks) | {"fusion": vqa.fusion}
    document = {"seed": seed, "scenes": scenes, "models": results, "machine": machine()}
    if as_json:
        console.print_json(json.dumps(document))
        return
    console.print(_accuracy_table(results))
    if looks:
        console.print(_looks_table(results))


@bench_app.command("retrieval")
def bench_retrieval(
    tasks: Annotated[str, typer.Option(help="image_caption, visible_infrared, or both (comma-separated).")] = (
        "image_caption,visible_infrared"
    ),
    fusions: Annotated[str, typer.Option(help="Fusions compared (comma-separated).")] = "concat,dma",
    items: Annotated[int, typer.Option(min=2, help="Held-out items each query ranks.")] = 200,
    align_steps: Annotated[int, typer.Option(min=1, help="Stage-2 alignment steps.")] = 600,
    match_steps: Annotated[int, typer.Option(min=1, help="Fused-matcher fine-tuning steps per fusion.")] = 300,
    batch: Annotated[int, typer.Option(min=2, help="Pairs per step.")] = 32,
    train: Annotated[Path, typer.Option(help="Line data for visible_infrared training.")] = Path("data/train"),
    heldout: Annotated[Path, typer.Option(help="Held-out line data.")] = Path("data/heldout-default"),
    limit: Annotated[int, typer.Option(min=1, help="Line samples loaded per folder.")] = 24,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Top-1/Top-5 cross-modal retrieval with stage-2 aligned encoders: dual encoder and fused matchers, with MACs."""
    from inspector.vqa.retrieval import caption_task, line_task, run_task, summary_rows
    from inspector.vqa.training import fit_tokenizer

    _threads(threads)
    chosen = [t for t in tasks.split(",") if t]
    unknown = sorted(set(chosen) - {"image_caption", "visible_infrared"})
    if unknown:
        fail(f"unknown task {', '.join(unknown)}: choose image_caption and/or visible_infrared")
    np.random.seed(seed)
    results = []
    for name in chosen:
        try:
            if name == "image_caption":
                task = caption_task(fit_tokenizer(seed), count=items, batch=batch)
            else:
                task = line_task(train, heldout, count=items, batch=batch, limit=limit)
        except (InspectorError, OSError) as exc:
            fail(exc)
        results.append(
            run_task(task, align_steps=align_steps, match_steps=match_steps, fusions=fusions.split(","), seed=seed)
        )
    table = Table("task", "method", "direction", "top-1", "top-5", "MACs / pair", title="cross-modal retrieval")
    for row in (r for found in results for r in summary_rows(found)):
        task_name, method, direction, top1, top5, macs = row
        table.add_row(
            task_name, method, direction, f"{top1:.1%}", f"{top5:.1%}", "-" if macs is None else f"{macs / 1e6:.2f} M"
        )
    emit({"results": results, "machine": machine()}, table, as_json)


def register(app: typer.Typer) -> None:
    """Add ``inspector vqa …`` (``bench retrieval`` is added to the bench group on import)."""
    app.add_typer(vqa_app, name="vqa")
