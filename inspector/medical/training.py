"""Training the report model: DAPT of the decoder on unlabelled reports, then supervised fine-tuning.

- **DAPT** (domain-adaptive pre-training): the decoder alone learns report language as a language
  model on an unlabelled in-domain corpus (reports without images: :func:`report_corpus`), with an
  empty memory and an empty prompt.
- **Fine-tuning**: image + patient → lesion maps (BCE + soft Dice on the four lesion-type maps, BCE on
  the organ maps) and prompt → narrative (cross-entropy on the report tokens only), one loss. The Dice
  of a lesion type is taken over the whole batch: per study, the Dice of an empty map is
  ``1 / (Σp + 1)``, which punishes any probability on the many studies without that type and had taught
  the 2-4 pixel calcification map to stay at zero everywhere.
- :func:`widen_image_input` starts a 4-channel model (with the calcium window) from a 3-channel one:
  every weight is copied and the new input channel's stem weights start at zero.

The engine is :mod:`mla.train`; this module says what a batch and a loss are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

import mla
from inspector.medical.dicom import PatientInfo
from inspector.medical.phantom import LESIONS, Study, make_study
from inspector.medical.report import (
    IN_CHANNELS,
    INPUT_SIZE,
    fuse,
    image_channels,
    input_channels,
    maps,
    patient_features,
    sequence_head,
)
from inspector.medical.vocab import (
    INDICATIONS,
    LOCATIONS,
    TYPES,
    Finding,
    ReportTokenizer,
    findings_prompt,
    report_text,
)
from mla.text import PAD
from mla.train import Callback

IGNORE = -100
LESION_POS_WEIGHT = torch.tensor([5.0, 5.0, 5.0, 20.0])  # nodule, mass, cyst, calcification


def targets(study: Study, size: int = INPUT_SIZE) -> np.ndarray:
    """(10, size, size) uint8: each lesion type's projected footprint, then each organ's mask."""
    h, w = study.hu.shape[1:]
    scale_x, scale_y = size / w, size / h
    out = np.zeros((len(TYPES) + len(LOCATIONS), size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for lesion in study.lesions:
        cx, cy = (lesion.centre_px[0] + 0.5) * scale_x - 0.5, (lesion.centre_px[1] + 0.5) * scale_y - 0.5
        radius = lesion.finding.size_mm / 2 / study.spacing_mm * scale_x
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= max(radius, 0.75) ** 2
        out[TYPES.index(lesion.finding.type)][disc] = 1
    for index, name in enumerate(LOCATIONS):
        mask = study.organ_masks[name].astype(np.uint8)
        out[len(TYPES) + index] = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return out


@dataclass(frozen=True)
class Samples:
    """Pre-computed training inputs of many studies (arrays, first axis = study)."""

    image: np.ndarray  # (N, C, S, S) float16
    patient: np.ndarray  # (N, 12) float32
    target: np.ndarray  # (N, 10, S, S) uint8
    prompts: list[str]
    reports: list[list[str]]  # per study, one reference per phrasing

    def __len__(self) -> int:
        return len(self.prompts)


def make_samples(seeds: Sequence[int], channels: int = IN_CHANNELS) -> Samples:
    """The studies of ``seeds``: model inputs (``channels`` image planes), targets, prompts and references."""
    images, patients, maps_, prompts, reports = [], [], [], [], []
    for seed in seeds:
        study = make_study(seed)
        images.append(image_channels(study.hu.astype(np.float32), True, channels=channels).astype(np.float16))
        patients.append(patient_features(PatientInfo(float(study.age), study.sex, study.indication)))
        maps_.append(targets(study))
        prompts.append(findings_prompt(study.findings))
        reports.append(study.references)
    return Samples(np.stack(images), np.stack(patients), np.stack(maps_), prompts, reports)


def report_corpus(count: int, seed: int = 1_000_000) -> list[str]:
    """An unlabelled in-domain corpus: report texts of random findings, patients and phrasings (no images)."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        findings = []
        for _ in range(int(rng.integers(0, 4))):
            kind = str(rng.choice(list(TYPES)))
            locations, (smin, smax), (hmin, hmax) = LESIONS[kind]
            findings.append(
                Finding(kind, str(rng.choice(list(locations))), float(rng.integers(smin, smax + 1)),
                        float(rng.integers(hmin, hmax + 1)))
            )  # fmt: skip
        age = float(rng.integers(25, 90))
        texts.append(report_text(findings, str(rng.choice(list(INDICATIONS))), age, int(rng.integers(0, 3))))
    return texts


# -- batches ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportBatch:
    """One fine-tuning batch."""

    image: Tensor  # (B, C, S, S)
    patient: Tensor  # (B, 12)
    target: Tensor  # (B, 10, S, S)
    ids: Tensor  # (B, T) [BOS] prompt [SEP] report [EOS] PAD…
    labels: Tensor  # (B, T) next-token labels, IGNORE on the prompt and padding


def token_batch(
    tokenizer: ReportTokenizer, prompts: Sequence[str], texts: Sequence[str], max_len: int
) -> tuple[Tensor, Tensor]:
    """Teacher-forcing inputs and next-token labels (loss on the report part only)."""
    rows = [tokenizer.sequence(p, t) for p, t in zip(prompts, texts, strict=True)]
    length = min(max(len(ids) for ids, _ in rows), max_len + 1)
    ids = torch.full((len(rows), length - 1), PAD, dtype=torch.long)
    labels = torch.full((len(rows), length - 1), IGNORE, dtype=torch.long)
    for r, (full, sep) in enumerate(rows):
        seq = full[:length]
        ids[r, : len(seq) - 1] = torch.tensor(seq[:-1])
        labels[r, sep : len(seq) - 1] = torch.tensor(seq[sep + 1 :])
    return ids, labels


def batches(
    samples: Samples, tokenizer: ReportTokenizer, batch: int, rng: np.random.Generator, max_len: int
) -> Iterator[ReportBatch]:
    """One epoch of shuffled batches; each study's reference phrasing is drawn at random."""
    order = rng.permutation(len(samples))
    for start in range(0, len(order) - batch + 1, batch):
        idx = order[start : start + batch]
        texts = [samples.reports[i][int(rng.integers(len(samples.reports[i])))] for i in idx]
        ids, labels = token_batch(tokenizer, [samples.prompts[i] for i in idx], texts, max_len)
        yield ReportBatch(
            torch.from_numpy(samples.image[idx].astype(np.float32)),  # no flips: left and right are labels
            torch.from_numpy(samples.patient[idx]),
            torch.from_numpy(samples.target[idx].astype(np.float32)),
            ids,
            labels,
        )


def report_loss(
    model: mla.MLAModel, batch: ReportBatch, pos_weight: Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Lesion-map BCE + batch Dice per lesion type, organ-map BCE, and report-token cross-entropy.

    Args:
        model: The report model.
        batch: One batch.
        pos_weight: (4,) BCE weight of each lesion type's positive pixels (default
            :data:`LESION_POS_WEIGHT`).

    """
    inputs = fuse(model, batch.image, batch.patient)
    logits = model.heads["segmentation"](inputs).float()  # (B, 10, S, S)
    k = len(TYPES)
    lesion_logits, lesion_target = logits[:, :k], batch.target[:, :k]
    weight = LESION_POS_WEIGHT if pos_weight is None else pos_weight  # calcifications are 2-4 px: weighted up
    weight = weight.to(logits.device).view(1, k, 1, 1)
    bce = F.binary_cross_entropy_with_logits(lesion_logits, lesion_target, pos_weight=weight)
    prob = torch.sigmoid(lesion_logits)
    inter = (prob * lesion_target).sum(dim=(0, 2, 3))  # per type, over the batch: see the module docstring
    dice = ((2 * inter + 1) / (prob.sum(dim=(0, 2, 3)) + lesion_target.sum(dim=(0, 2, 3)) + 1)).mean()
    organ = F.binary_cross_entropy_with_logits(logits[:, k:], batch.target[:, k:])
    head = sequence_head(model)
    memory, padding = head.memory(inputs)
    token_logits = head.decode(batch.ids, memory, padding).float()  # (B, T, V)
    text = F.cross_entropy(token_logits.transpose(1, 2), batch.labels, ignore_index=IGNORE)
    loss = bce + (1 - dice) + organ + text
    return loss, {"seg_bce": float(bce.detach()), "dice": float(dice.detach()), "text": float(text.detach())}


# -- DAPT ---------------------------------------------------------------------------------------------


def dapt_batches(
    corpus: Sequence[str], tokenizer: ReportTokenizer, batch: int, rng: np.random.Generator, max_len: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Language-model batches of the unlabelled corpus: ``[BOS] [SEP] report [EOS]``."""
    order = rng.permutation(len(corpus))
    for start in range(0, len(order) - batch + 1, batch):
        texts = [corpus[i] for i in order[start : start + batch]]
        yield token_batch(tokenizer, [""] * len(texts), texts, max_len)


def dapt_loss(model: mla.MLAModel, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Next-token cross-entropy of the decoder with an empty memory (one zero slot)."""
    ids, labels = batch
    head = sequence_head(model)
    width = head.embed.weight.shape[1]
    memory = torch.zeros(ids.shape[0], 1, width, device=ids.device)
    padding = torch.zeros(ids.shape[0], 1, dtype=torch.bool, device=ids.device)
    logits = head.decode(ids, memory, padding).float()
    loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE)
    return loss, {"text": float(loss.detach())}


def widen_image_input(model: mla.MLAModel, channels: int = IN_CHANNELS) -> mla.MLAModel:
    """The same model taking ``channels`` image planes: old weights copied, new input channels' weights zero.

    The widened model computes exactly what the old one did on the old planes until training gives the
    new ones weight.

    Raises:
        ValueError: ``channels`` is fewer than the model takes.

    """
    old = input_channels(model)
    if channels == old:
        return model
    if channels < old:
        raise ValueError(f"cannot narrow a report model from {old} to {channels} image channels")
    spec = model.config.encoders["image"]
    config = replace(model.config, encoders={**model.config.encoders, "image": replace(spec, in_channels=channels)})
    wider = mla.MLAModel(config)
    state = model.state_dict()
    for name, value in wider.state_dict().items():
        if state[name].shape != value.shape:  # the stem convolution: (out, in, k, k)
            grown = torch.zeros_like(value)
            grown[:, :old] = state[name]
            state[name] = grown
    wider.load_state_dict(state)
    return wider.train(model.training)


def reset_lesion_map(model: mla.MLAModel, kind: str, prior: float = 0.05) -> None:
    """Re-initialise the output of one lesion-type map: zero weights, bias ``logit(prior)`` (in place).

    A map that training drove to saturation (logits near -13 everywhere: no gradient through the
    sigmoid for the Dice term) starts again from the same state as at the beginning of training,
    while every other weight is kept.

    Raises:
        ValueError: ``kind`` is not one of :data:`TYPES`.

    """
    if kind not in TYPES:
        raise ValueError(f"unknown lesion type {kind!r}: choose one of {', '.join(TYPES)}")
    index = TYPES.index(kind)
    classifier = model.heads["segmentation"].classifier
    if not isinstance(classifier, torch.nn.Conv2d) or classifier.bias is None:
        raise TypeError("the segmentation head's classifier is not a 1x1 convolution with a bias")
    with torch.no_grad():
        classifier.weight[index].zero_()
        classifier.bias[index] = float(np.log(prior / (1 - prior)))


def decoder_state(model: mla.MLAModel) -> dict[str, Tensor]:
    """The decoder's weights (what DAPT trains and fine-tuning starts from)."""
    return {k: v for k, v in sequence_head(model).state_dict().items()}


@torch.no_grad()
def lesion_dice(model: mla.MLAModel, samples: Samples, batch: int = 8) -> float:
    """Mean soft Dice of the lesion maps on a sample set (validation)."""
    scores = []
    for start in range(0, len(samples), batch):
        sl = slice(start, start + batch)
        inputs = fuse(
            model, torch.from_numpy(samples.image[sl].astype(np.float32)), torch.from_numpy(samples.patient[sl])
        )
        prob = maps(model, inputs)[:, : len(TYPES)]
        target = torch.from_numpy(samples.target[sl, : len(TYPES)].astype(np.float32))
        inter = (prob * target).sum()
        scores.append(float((2 * inter + 1) / (prob.sum() + target.sum() + 1)))
    return float(np.mean(scores))


# -- the whole recipe ---------------------------------------------------------------------------------


def build_tokenizer(corpus: Sequence[str]) -> ReportTokenizer:
    """The vocabulary of the report corpus plus the prompt words."""
    extra = ["none ; unknown HU mm " + " ".join(TYPES) + " " + " ".join(LOCATIONS)]
    return ReportTokenizer.build([*corpus, *extra])


@dataclass(frozen=True)
class Recipe:
    """How a report model is trained (all synthetic: phantom seeds and a generated corpus)."""

    train_seeds: tuple[int, int] = (0, 400)  # [start, stop)
    val_seeds: tuple[int, int] = (900_000, 900_032)
    corpus: int = 6000
    dapt_steps: int = 600
    steps: int = 1500
    batch: int = 8
    lr: float = 2e-3
    width: int = 64
    image_width: int = 16
    decoder_depth: int = 2
    max_len: int = 300
    seed: int = 0
    max_seconds: float | None = None  # stop fine-tuning (then evaluate and save) after this much training
    in_channels: int = IN_CHANNELS
    calcification_weight: float = float(LESION_POS_WEIGHT[3])  # BCE weight of calcification pixels


def run_dapt(model: mla.MLAModel, tokenizer: ReportTokenizer, recipe: Recipe, out_dir: str) -> dict[str, float]:
    """Pre-train the decoder on the unlabelled report corpus (in place); returns the last training record."""
    from mla.train import TrainConfig, Trainer

    corpus = report_corpus(recipe.corpus)
    rng = np.random.default_rng(recipe.seed + 1)
    cfg = TrainConfig(
        lr=recipe.lr, total_steps=recipe.dapt_steps, warmup_steps=min(50, recipe.dapt_steps), device="cpu",
        log_every=50, min_lr_ratio=0.1,
    )  # fmt: skip

    def epoch(_: int) -> Iterator[tuple[Tensor, Tensor]]:
        return dapt_batches(corpus, tokenizer, recipe.batch, rng, recipe.max_len)

    trainer: Trainer[torch.nn.Module, tuple[Tensor, Tensor]] = Trainer(
        head_only(model), lambda _m, b: dapt_loss(model, b), cfg, out_dir, progress=False
    )
    return trainer.fit(epoch, overwrite=True).train


def head_only(model: mla.MLAModel) -> torch.nn.Module:
    """The decoder as the module the optimiser sees during DAPT (the encoders and fusion stay untouched)."""
    return sequence_head(model)


def run_finetune(
    model: mla.MLAModel, tokenizer: ReportTokenizer, samples: Samples, val: Samples, recipe: Recipe, out_dir: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Supervised training on the labelled phantom studies (in place); returns (train, validation) records."""
    from mla.train import TrainConfig, Trainer

    rng = np.random.default_rng(recipe.seed + 2)
    cfg = TrainConfig(
        lr=recipe.lr, total_steps=recipe.steps, warmup_steps=min(100, recipe.steps), device="cpu", log_every=50,
        min_lr_ratio=0.05,
    )  # fmt: skip

    def epoch(_: int) -> Iterator[ReportBatch]:
        return batches(samples, tokenizer, recipe.batch, rng, recipe.max_len)

    def evaluate(m: mla.MLAModel) -> dict[str, float]:
        return {"val_dice": lesion_dice(m, val), "val_text": validation_text_loss(m, tokenizer, val, recipe.max_len)}

    callbacks = [Deadline(recipe.max_seconds)] if recipe.max_seconds else []
    weight = LESION_POS_WEIGHT.clone()
    weight[3] = recipe.calcification_weight

    def loss(m: mla.MLAModel, b: ReportBatch) -> tuple[Tensor, dict[str, float]]:
        return report_loss(m, b, weight)

    trainer = Trainer(model, loss, cfg, out_dir, evaluate=evaluate, callbacks=callbacks, progress=False)
    result = trainer.fit(epoch, overwrite=True)
    return {**result.train, "steps_done": result.step}, result.eval


class Deadline(Callback):
    """Stop training once ``seconds`` of training have passed (a budget on a shared machine)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, trainer: Any, record: Any) -> None:
        """Ask the trainer to stop when over budget."""
        if trainer.wall_s > self.seconds:
            trainer.request_stop(f"time budget of {self.seconds:.0f} s spent")


@torch.no_grad()
def validation_text_loss(model: mla.MLAModel, tokenizer: ReportTokenizer, val: Samples, max_len: int) -> float:
    """Mean report-token cross-entropy on the validation studies (first phrasing)."""
    losses = []
    for start in range(0, len(val), 8):
        sl = slice(start, start + 8)
        ids, labels = token_batch(tokenizer, val.prompts[sl], [r[0] for r in val.reports[sl]], max_len)
        inputs = fuse(model, torch.from_numpy(val.image[sl].astype(np.float32)), torch.from_numpy(val.patient[sl]))
        head = sequence_head(model)
        memory, padding = head.memory(inputs)
        logits = head.decode(ids, memory, padding).float()
        losses.append(float(F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE)))
    return float(np.mean(losses))
