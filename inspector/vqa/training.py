"""Training and evaluating VQA models: fresh scenes every batch, accuracy per question type.

Training never reuses a scene: each batch renders new ones from ``(seed, epoch, batch)``, so the
model cannot memorise images, and held-out sets (other seeds) are scenes it never saw. The loop is
:class:`mla.train.Trainer` (AdamW, warm-up + cosine, checkpoints) on the ``MLAModel`` itself::

    tokenizer = fit_tokenizer(seed=0)
    result = train_vqa(TrainOptions(fusion="hffn", steps=3_000), "runs/vqa-hffn", tokenizer=tokenizer)
    evaluate(result.model, build_set(1_000, seed=10_001))   # {"overall": 0.9, "by_type": {...}, ...}
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from inspector.vqa.data import VQASet, build_set, to_tensor
from inspector.vqa.errors import VQAError
from inspector.vqa.model import VQAModel
from inspector.vqa.scenes import QUESTION_TYPES, cells_covered, relational_kind
from inspector.vqa.scenes import referents as scene_referents
from inspector.vqa.tokenizer import WordTokenizer
from mla import MLAModel
from mla.train import FitResult, StopWhen, TrainConfig, Trainer

logger = logging.getLogger(__name__)

Batch = dict[str, Tensor]
Cells = tuple[np.ndarray, np.ndarray]  # (named, partner) cells (B, N) of the referents, from referent_cells
TRAIN_STREAM = 1


@dataclass(frozen=True)
class TrainOptions:
    """How to train one VQA model.

    Attributes:
        fusion: ``concat``, ``dma`` or ``hffn``.
        steps: Optimizer steps.
        batch: Questions per step.
        lr: Peak learning rate (AdamW, warm-up then cosine to 5 %).
        seed: Seed of the scenes and of the run.
        side: Image side in pixels (a multiple of 16).
        time_limit_s: Stop early after this many seconds (the schedule is not shortened).
        model_options: Further keywords of :func:`~inspector.vqa.model.vqa_config` (``width``, …).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        amp: Mixed precision (bf16 on CPU, fp16 with a grad scaler on CUDA).
        workers: Processes that render training scenes (0: render in the training loop).
        init: A VQA model file to continue from (its architecture and tokenizer are kept).
        warm_start: A VQA model file whose tokenizer, and whose tensors of the same name and shape,
            a new model of ``model_options`` starts from (the rest starts fresh).
        types: Train only on these question types (``None``: all); a curriculum can continue with
            ``init`` on all types.
        pointer_supervision: Weight of a loss on where the answer head's pointer looks (the cells of
            the object a question names and of the one it asks about, from the generator); 0: none.

    """

    fusion: str = "hffn"
    steps: int = 2_000
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    side: int = 64
    time_limit_s: float | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    amp: bool = False
    workers: int = 0
    init: str | None = None
    warm_start: str | None = None
    types: tuple[str, ...] | None = None
    pointer_supervision: float = 0.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types or ()) - set(QUESTION_TYPES))
        if unknown or self.types == ():
            msg = f"unknown question types {unknown}: choose from {', '.join(QUESTION_TYPES)}"
            raise ValueError(msg)
        if self.init is not None and self.warm_start is not None:
            msg = "give init (continue a model as it is) or warm_start (a new architecture from its weights), not both"
            raise ValueError(msg)


@dataclass
class TrainResult:
    """The trained model, how the run ended and the evaluations made during it."""

    model: VQAModel
    fit: FitResult
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def fit_tokenizer(seed: int = 0, scenes: int = 2_000, side: int = 64) -> WordTokenizer:
    """A word tokenizer fitted on the questions and captions of ``scenes`` generated training scenes."""
    data = build_set(scenes, seed=seed, side=side, per_type=2)
    return WordTokenizer.fit([*data.questions, *data.captions])


def batches(tokenizer: WordTokenizer, options: TrainOptions) -> Callable[[int], Iterator[Batch]]:
    """``epoch -> batches`` of fresh scenes: ``ids`` (B, T), ``image`` (B, 5, S, S), ``answer`` (B,).

    With ``options.workers`` > 0 the scenes are rendered by a pool of processes, in order, so the
    batches are the same as without it.
    """
    per_epoch = 100
    pool: Any = None

    def epoch(number: int) -> Iterator[Batch]:
        nonlocal pool
        make = partial(_fresh_batch, tokenizer, options, number)
        if options.workers <= 0:
            made: Iterator[tuple[VQASet, np.ndarray, Cells | None]] = map(make, range(per_epoch))
        else:
            if pool is None:
                pool = multiprocessing.get_context("fork").Pool(options.workers)
            made = pool.imap(make, range(per_epoch), chunksize=4)
        for data, rows, cells in made:  # workers send uint8 scenes (and referent cells); the float image is made here
            yield batch_of(data, rows, tokenizer, cells=cells)

    return epoch


def _fresh_batch(
    tokenizer: WordTokenizer, options: TrainOptions, number: int, index: int
) -> tuple[VQASet, np.ndarray, Cells | None]:
    """Scenes of batch ``index`` of epoch ``number`` (seeded by stream, run seed, epoch, batch), rows picked.

    With pointer supervision also the cells of each row's referents (``referent_cells``), made here so
    that render workers make them too.
    """
    seed = (TRAIN_STREAM, options.seed, number, index)  # never equal to an int (held-out) seed
    scenes = max(1, options.batch // 8 + 1)  # about 10 questions per scene
    data = build_set(scenes, seed=seed, side=options.side, per_type=2)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(data))
    if options.types is not None:
        pool = pool[np.isin(np.asarray(data.kinds), options.types)]
    rows = rng.choice(pool, size=options.batch, replace=len(pool) < options.batch)
    return data, rows, referent_cells(data, rows) if options.pointer_supervision > 0 else None


FINE_STRIDE = 4  # input pixels per cell of the image encoder's finest level (conv_pyramid, scale 1)


def referent_cells(data: VQASet, rows: np.ndarray) -> Cells:
    """``named`` and ``partner`` (B, N): the finest-level cells (stride 4) of each question's named and asked object.

    Rows whose question names no object, or asks about none, are zeros.
    """
    grid = data.side // FINE_STRIDE
    named, partner = np.zeros((2, len(rows), grid * grid), np.float32)
    for row, i in enumerate(rows):
        found = scene_referents(data.scenes[data.scene_index[i]], data.questions[i])
        for masks, obj in zip((named, partner), found, strict=True):
            if obj is not None:
                masks[row] = cells_covered(obj, data.side, grid)
    return named, partner


def batch_of(data: VQASet, rows: np.ndarray, tokenizer: WordTokenizer, cells: Cells | None = None) -> Batch:
    """Questions ``rows`` of ``data`` as tensors (unknown words become ``UNK``).

    With ``cells`` (``referent_cells(data, rows)``) also ``named_cells`` and ``partner_cells`` (B, N):
    the cells of the finest level covered by the object each question names and by the one it asks
    about (zeros when none).
    """
    batch = {
        "ids": tokenizer.batch([data.questions[i] for i in rows], strict=False),
        "image": to_tensor(data.images[data.scene_index[rows]]),
        "answer": torch.from_numpy(data.answers[rows]),
    }
    if cells is not None:
        batch |= {"named_cells": torch.from_numpy(cells[0]), "partner_cells": torch.from_numpy(cells[1])}
    return batch


def answer_loss(network: MLAModel, batch: Batch, pointer_weight: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy over the answers, and the batch accuracy.

    With ``pointer_weight`` > 0 and a pointer in the answer head, plus that weight times the
    cross-entropy of the pointer's two attentions against the cells of the named object and of the
    object asked about (``batch_of(cells=referent_cells(...))``; questions without one add nothing).
    """
    logits = network(batch["ids"], batch["image"]).outputs["answer"]
    loss = F.cross_entropy(logits.float(), batch["answer"])
    found = {"acc": float((logits.argmax(dim=1) == batch["answer"]).float().mean())}
    pointer = getattr(network.heads["answer"], "pointer", None)
    if pointer_weight > 0 and pointer is not None and pointer.maps is not None and "named_cells" in batch:
        named, asked = _checked_maps(pointer.maps, batch)
        look = _look_loss(named, batch["named_cells"]) + _look_loss(asked, batch["partner_cells"])
        loss = loss + pointer_weight * look
        found["look"] = float(look.detach())
    return loss, found


def _checked_maps(maps: tuple[Tensor, Tensor], batch: Batch) -> tuple[Tensor, Tensor]:
    """The pointer's ``maps``, once their cells are known to be the batch's referent cells."""
    if maps[0].shape[1] != batch["named_cells"].shape[1]:
        msg = (
            f"the pointer looks over {maps[0].shape[1]} cells but the batch marks {batch['named_cells'].shape[1]}: "
            f"where it looks is measured on the image encoder's finest level at stride {FINE_STRIDE}"
        )
        raise VQAError(msg)
    return maps


def _look_loss(logits: Tensor, cells: Tensor) -> Tensor:
    """Cross-entropy of a softmax over cells (B, N) against the uniform share of each row's marked cells."""
    cells = cells.to(logits.device)
    marked = cells.sum(dim=1) > 0
    if not bool(marked.any()):
        return logits.sum() * 0.0
    target = cells[marked] / cells[marked].sum(dim=1, keepdim=True)
    return -(target * torch.log_softmax(logits[marked].float(), dim=1)).sum(dim=1).mean()


@torch.no_grad()
def evaluate(model: VQAModel, data: VQASet, batch: int = 256, looks: bool = False) -> dict[str, Any]:
    """Accuracy over ``data``: overall, per question type, and per kind of relational question.

    Types with no question are left out; relational kinds are ``closest-colour``, ``same-count``, ….
    With ``looks`` and a pointer in the answer head, also ``pointer_by_kind`` (``pointer_looks``).
    """
    was_training = model.network.training
    model.network.eval()
    device = next(model.network.parameters()).device
    pointer = getattr(model.network.heads["answer"], "pointer", None) if looks else None
    shares = np.full((2, len(data)), np.nan)  # the pointer's mass on the named and on the asked object
    predicted = np.zeros(len(data), np.int64)
    try:
        if pointer is not None:
            pointer.keep_maps = True
        for start in range(0, len(data), batch):
            rows = np.arange(start, min(start + batch, len(data)))
            found = batch_of(data, rows, model.tokenizer, referent_cells(data, rows) if pointer is not None else None)
            logits = model.logits(found["ids"].to(device), found["image"].to(device))
            predicted[rows] = logits.argmax(dim=1).cpu().numpy()
            if pointer is not None and pointer.maps is not None:
                marks = (found["named_cells"], found["partner_cells"])
                for share, got, marked in zip(shares, _checked_maps(pointer.maps, found), marks, strict=True):
                    on = (torch.softmax(got.float(), dim=1).cpu() * (marked > 0)).sum(dim=1)  # (B,)
                    share[rows] = np.where(marked.sum(dim=1).numpy() > 0, on.numpy(), np.nan)
    finally:
        if pointer is not None:
            pointer.keep_maps = False
        model.network.train(was_training)
    correct = predicted == data.answers
    kinds = np.asarray(data.kinds)
    by_type = {k: float(correct[kinds == k].mean()) for k in QUESTION_TYPES if (kinds == k).any()}
    counts = {k: int((kinds == k).sum()) for k in by_type}
    relation = np.asarray([relational_kind(text) or "" for text in data.questions])
    relational = {
        str(k): {"accuracy": float(correct[relation == k].mean()), "questions": int((relation == k).sum())}
        for k in sorted(set(relation) - {""})
    }  # str keys: numpy strings would not load back from a model file's metadata
    found_looks = {"pointer_by_kind": pointer_looks(shares, correct, relation)} if pointer is not None else {}
    return {
        "overall": float(correct.mean()) if len(data) else 0.0,
        "by_type": by_type,
        "questions": counts,
        "relational_by_kind": relational,
    } | found_looks


def pointer_looks(shares: np.ndarray, correct: np.ndarray, relation: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per relational kind: how often the pointer looks at the right objects, and the accuracy when it does.

    ``shares`` (2, Q) is each softmax's mass on the named and on the asked object's cells (NaN where the
    question has no such object). ``named`` and ``asked`` are the shares of questions with more than half
    the mass on that object (``None`` for kinds without one); ``accuracy_when_found`` is the accuracy over
    the questions whose asked object (or named one, for kinds without an asked object) was found.
    """

    def share(values: np.ndarray) -> float | None:
        return None if np.isnan(values).all() else float(np.mean(values > 0.5))

    out: dict[str, dict[str, float | None]] = {}
    for kind in sorted(set(relation) - {""}):
        named, asked = shares[0, relation == kind], shares[1, relation == kind]
        found = (asked if not np.isnan(asked).all() else named) > 0.5
        when = float(correct[relation == kind][found].mean()) if found.any() else None
        out[str(kind)] = {"named": share(named), "asked": share(asked), "accuracy_when_found": when}
    return out


def warm_started(path: str | Path, options: TrainOptions) -> VQAModel:
    """A new model of ``options`` with the tokenizer of ``path`` and its tensors where names and shapes match."""
    source = VQAModel.load(path)
    model = VQAModel.create(options.fusion, source.tokenizer, options.side, **options.model_options)
    given = source.network.state_dict()
    state = model.network.state_dict()
    kept = {k: v for k, v in given.items() if k in state and state[k].shape == v.shape}
    model.network.load_state_dict(kept, strict=False)
    fresh = sorted(set(state) - set(kept))
    logger.info("warm start from %s: %d tensors kept, %d fresh (%s)", path, len(kept), len(fresh), ", ".join(fresh[:8]))
    model.metadata = {"warm_start": Path(path).name, "warm_start_sha256": source.sha256}
    return model


def train_vqa(
    options: TrainOptions,
    out_dir: str | Path,
    *,
    tokenizer: WordTokenizer | None = None,
    eval_set: VQASet | None = None,
    eval_every: int = 0,
    progress: bool | None = None,
) -> TrainResult:
    """Train one model on fresh scenes; evaluate on ``eval_set`` every ``eval_every`` steps and at the end.

    The run's metrics and checkpoints go to ``out_dir`` (an earlier run there is replaced).
    """
    if options.init is not None:
        model = VQAModel.load(options.init)
        model.metadata = {"init": Path(options.init).name, "init_sha256": model.sha256}
        model.sha256 = ""
        tokenizer = model.tokenizer
    elif options.warm_start is not None:
        model = warm_started(options.warm_start, options)
        tokenizer = model.tokenizer
    else:
        tokenizer = tokenizer or fit_tokenizer(options.seed, side=options.side)
        model = VQAModel.create(options.fusion, tokenizer, options.side, **options.model_options)
    history: list[dict[str, float]] = []

    def check(network: MLAModel) -> Mapping[str, float]:
        if eval_set is None:
            return {}
        found = evaluate(model, eval_set)
        flat = {"acc": found["overall"]} | {f"acc_{k}": v for k, v in found["by_type"].items()}
        history.append(flat)
        logger.info("eval: %s", ", ".join(f"{k} {v:.3f}" for k, v in flat.items()))
        return flat

    cfg = TrainConfig(
        lr=options.lr, total_steps=options.steps, warmup_steps=min(200, options.steps // 10), min_lr_ratio=0.05,
        weight_decay=0.01, seed=options.seed, log_every=50, eval_every=eval_every, device=options.device,
        amp=options.amp, keep_checkpoints=1,
    )  # fmt: skip
    started = time.monotonic()
    callbacks = []
    if options.time_limit_s is not None:
        limit = options.time_limit_s
        callbacks.append(StopWhen(lambda _step, _m: time.monotonic() - started > limit))
    loss = partial(answer_loss, pointer_weight=options.pointer_supervision)
    trainer = Trainer(
        model.network, loss, cfg, out_dir, evaluate=check if eval_set is not None else None,
        callbacks=callbacks, progress=progress,
    )  # fmt: skip
    fit = trainer.fit(batches(tokenizer, options), overwrite=True)
    model.network.cpu().eval()
    seconds = time.monotonic() - started
    model.metadata.update({"fusion": options.fusion, "steps": fit.step, "train_seconds": round(seconds, 1)})
    return TrainResult(model, fit, seconds, history)
