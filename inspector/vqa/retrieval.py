"""Cross-modal retrieval with stage-2 aligned encoders: image ↔ caption (synthetic scenes), visible ↔ IR (line tiles).

Two ways to rank the N candidates of a query, both from the same aligned encoders:

* **dual encoder**: the alignment stage's projection heads embed each side once; cosine similarity
  ranks (one encoder pass per item, a dot product per pair; no fusion involved).
* **fused matcher**: an ``MLAModel`` with the fusion under test (``concat`` or ``dma``) and a one-logit
  head, its encoders copied from the aligned ones, fine-tuned to tell a true pair from shuffled ones;
  every (query, candidate) pair goes through the fusion and the head (the encoders still run once per
  item). MACs per scored pair are what the fusion and head cost. The head must be non-linear in the
  fused features (a linear ``classification`` head on a fused *sum* scores pairs additively, which
  cannot rank): ``answer`` with one answer (an MLP after cross-attention over the caption's tokens)
  for captions, the ``segmentation`` head's map averaged for visible ↔ IR tiles.

::

    task = caption_task(tokenizer)            # or line_task(Path("data/train"), Path("data/heldout-default"))
    found = run_task(task, align_steps=800, match_steps=300, fusions=("concat", "dma"))
    found["dual"]["a_to_b"]["top1"], found["fused"]["dma"]["b_to_a"]["top5"], found["fused"]["dma"]["pair_macs"]

Scores are Top-k accuracy over ``N`` held-out items: a query is right when its own partner is among
the ``k`` best-scored candidates.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from inspector.vqa.data import IN_CHANNELS, build_set, to_tensor
from inspector.vqa.tokenizer import WordTokenizer
from mla import EncoderSpec, MLAModel, ModalConfig
from mla.encoders import ModalFeatures
from mla.heads import HeadInput
from mla.pretrain import AlignmentStage, build_stage
from mla.pretrain.alignment import alignment_loss
from mla.profile import count_macs
from mla.train import TrainConfig, Trainer

logger = logging.getLogger(__name__)

Batch = dict[str, Tensor]
CAPTION_TOKENS = 64


@dataclass
class RetrievalTask:
    """A pair of modalities, how to build the model, fresh training batches and the held-out items.

    Attributes:
        name: ``image_caption`` or ``visible_infrared``.
        modalities: ``(a, b)``: queries of one side rank candidates of the other, both ways.
        config: ``fusion -> ModalConfig`` of the matcher (a one-logit head).
        train_batch: ``rng -> {a: …, b: …}`` paired training items.
        heldout: ``{a: (N, …), b: (N, …)}``, row i of each is a true pair.

    """

    name: str
    modalities: tuple[str, str]
    config: Callable[[str], ModalConfig]
    train_batch: Callable[[np.random.Generator], Batch]
    heldout: Batch


def caption_task(
    tokenizer: WordTokenizer, count: int = 200, side: int = 64, batch: int = 32, seed: int = 20_000
) -> RetrievalTask:
    """Scenes and their captions; held-out scenes come from seed ``seed`` + 1 (never trained on)."""

    def config(fusion: str) -> ModalConfig:
        return ModalConfig(
            text_dim=64, image_dim=side, fusion_type=fusion, modalities=("text", "image"),
            encoders={
                "text": EncoderSpec("text", options={"depth": 2, "heads": 4, "max_len": CAPTION_TOKENS}),
                "image": EncoderSpec("conv_pyramid", in_channels=IN_CHANNELS, width=16),
            },
            heads=("answer",), head_options={"answer": {"num_answers": 1}}, width=64,
        )  # fmt: skip

    def train_batch(rng: np.random.Generator) -> Batch:
        data = build_set(batch, seed=(2, seed, int(rng.integers(2**31))), side=side, per_type=0)  # not an int seed
        return {"text": _caption_ids(tokenizer, data.captions), "image": to_tensor(data.images)}

    held = build_set(count, seed=seed + 1, side=side, per_type=0)
    heldout = {"text": _caption_ids(tokenizer, held.captions), "image": to_tensor(held.images)}
    return RetrievalTask("image_caption", ("image", "text"), config, train_batch, heldout)


def _caption_ids(tokenizer: WordTokenizer, captions: Sequence[str]) -> Tensor:
    long = WordTokenizer(tokenizer.vocabulary, max_tokens=CAPTION_TOKENS)
    return long.batch(list(captions), strict=False)


def line_task(
    train_dir: Path, heldout_dir: Path, count: int = 200, tile: int = 64, batch: int = 32, limit: int = 24
) -> RetrievalTask:
    """Visible tiles and their IR tiles (native 4× coarser) from ``inspector synth`` folders.

    Half the tiles are centred near a crack, a fifth on a distractor, the rest anywhere; the held-out
    tiles come from ``heldout_dir``, whose parts training never sees.
    """
    from inspector.crack_data import CrackTileSet

    train = CrackTileSet.load(train_dir, limit=limit)
    held = CrackTileSet.load(heldout_dir, limit=limit).batch(
        np.random.default_rng(7), count, tile, crack_fraction=0.5, augment=False, distractor_fraction=0.2
    )

    def config(fusion: str) -> ModalConfig:
        return ModalConfig(
            image_dim=tile, fusion_type=fusion, modalities=("visible", "infrared"),
            encoders={
                "visible": EncoderSpec("conv_pyramid", in_channels=1, width=16),
                "infrared": EncoderSpec("ir_pyramid", in_channels=1, width=8, scale=4),
            },
            heads=("segmentation",), width=32,
        )  # fmt: skip

    def train_batch(rng: np.random.Generator) -> Batch:
        found = train.batch(rng, batch, tile, crack_fraction=0.5, distractor_fraction=0.2)
        return {"visible": torch.from_numpy(found["visible"]), "infrared": torch.from_numpy(found["infrared"])}

    heldout = {"visible": torch.from_numpy(held["visible"]), "infrared": torch.from_numpy(held["infrared"])}
    return RetrievalTask("visible_infrared", ("visible", "infrared"), config, train_batch, heldout)


def _stream(task: RetrievalTask, seed: int) -> Callable[[int], Iterator[Batch]]:
    def epoch(number: int) -> Iterator[Batch]:
        rng = np.random.default_rng([seed, number])
        for _ in range(50):
            yield task.train_batch(rng)

    return epoch


def _train_cfg(steps: int, lr: float, seed: int) -> TrainConfig:
    return TrainConfig(
        lr=lr, total_steps=steps, warmup_steps=min(50, steps // 10), min_lr_ratio=0.05, weight_decay=0.01,
        seed=seed, log_every=25, device="cpu", keep_checkpoints=1,
    )  # fmt: skip


def align(model: MLAModel, task: RetrievalTask, steps: int, out_dir: Path, seed: int = 0) -> AlignmentStage:
    """Stage 2: contrastive alignment of the task's two encoders (in place); returns the stage (with its heads)."""
    a, b = task.modalities
    stage, _ = build_stage(model, "alignment", modalities=[a, b], pairs=[(a, b)], dim=64, positions=64, seed=seed)
    trainer = Trainer(stage, alignment_loss, _train_cfg(steps, 2e-3, seed), out_dir, progress=False)
    trainer.fit(_stream(task, seed), overwrite=True)
    stage.eval()
    return cast(AlignmentStage, stage)


# -- scoring ---------------------------------------------------------------------------------------


def topk(scores: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of a (Q, N) score matrix whose true candidate of query i is i."""
    true = scores.diagonal().unsqueeze(1)
    rank = (scores > true).sum(dim=1) + (scores == true).sum(dim=1) - 1  # above the true one; ties count against
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}


@torch.no_grad()
def encode(model: MLAModel, name: str, items: Tensor, chunk: int = 64) -> ModalFeatures:
    """Features of every item of one modality, in chunks, concatenated."""
    encoder = model.encoder(name)
    parts = [encoder(encoder.prepare(items[i : i + chunk], name)) for i in range(0, len(items), chunk)]
    return _cat(parts)


def _cat(parts: Sequence[ModalFeatures]) -> ModalFeatures:
    def join(values: Sequence[Tensor | None]) -> Tensor | None:
        return None if values[0] is None else torch.cat([v for v in values if v is not None])

    levels = None
    if parts[0].levels is not None:
        levels = tuple(
            torch.cat([p.levels[i] for p in parts if p.levels is not None]) for i in range(len(parts[0].levels))
        )
    return ModalFeatures(
        vector=torch.cat([p.vector for p in parts]), levels=levels,
        tokens=join([p.tokens for p in parts]), token_mask=join([p.token_mask for p in parts]),
    )  # fmt: skip


def _rows(features: ModalFeatures, index: Tensor) -> ModalFeatures:
    levels = tuple(level[index] for level in features.levels) if features.levels is not None else None
    return replace(
        features, vector=features.vector[index], levels=levels,
        tokens=features.tokens[index] if features.tokens is not None else None,
        token_mask=features.token_mask[index] if features.token_mask is not None else None,
    )  # fmt: skip


class PairScorer(nn.Module):
    """The part of a matcher that runs once per scored pair: fusion and head on two items' features."""

    def __init__(self, model: MLAModel, modalities: tuple[str, str]) -> None:
        super().__init__()
        self.model = model
        self.modalities = modalities

    def forward(self, fa: ModalFeatures, fb: ModalFeatures) -> Tensor:
        """Features of B pairs → (B,) match logits (a map's logits are averaged)."""
        a, b = self.modalities
        features = {a: fa, b: fb}
        fused = self.model.fusion(features)
        size = None
        if fused.levels is not None:
            fine = fused.levels[0]
            size = (fine.shape[-2] * 4, fine.shape[-1] * 4)  # the fine level is at stride 4
        head = self.model.heads[self.model.config.heads[0]]
        logits: Tensor = head(HeadInput(fused=fused, features=features, image_size=size))
        return logits.flatten(1).mean(dim=1)


def dual_scores(stage: AlignmentStage, task: RetrievalTask) -> Tensor:
    """(N, N) cosine similarities of the projected a-items (rows) and b-items (columns)."""
    a, b = task.modalities
    with torch.no_grad():
        fa = encode_stage(stage, a, task.heldout[a])
        fb = encode_stage(stage, b, task.heldout[b])
        heads = cast(nn.ModuleDict, stage.heads[stage.key(a, b)])
        za, zb = (F.normalize(_pooled(stage, heads, m, f, a, b), dim=-1) for m, f in ((a, fa), (b, fb)))
    return za @ zb.t()


def encode_stage(stage: AlignmentStage, name: str, items: Tensor) -> ModalFeatures:
    """Features of one modality from the stage's (shared) encoder."""
    encoder = stage.encoder(name)
    parts = [encoder(encoder.prepare(items[i : i + 64], name)) for i in range(0, len(items), 64)]
    return _cat(parts)


def _pooled(stage: AlignmentStage, heads: nn.ModuleDict, name: str, f: ModalFeatures, a: str, b: str) -> Tensor:
    """One embedding per item: the pooled vector's projection, or the mean projection of its cells (dense pairs)."""
    if not stage.dense(a, b):
        return cast(Tensor, heads[name](f.vector))
    assert f.levels is not None
    cells = f.levels[stage.level]  # (N, C, H, W)
    n, c = cells.shape[:2]
    projected = heads[name](cells.reshape(n, c, -1).transpose(1, 2))  # (N, HW, D)
    return F.normalize(projected, dim=-1).mean(dim=1)


def fused_scores(model: MLAModel, task: RetrievalTask, chunk: int = 256) -> Tensor:
    """(N, N) match logits of every (a-item, b-item) pair through fusion and head."""
    a, b = task.modalities
    scorer = PairScorer(model, task.modalities).eval()
    with torch.no_grad():
        fa, fb = encode(model, a, task.heldout[a]), encode(model, b, task.heldout[b])
        n = len(task.heldout[a])
        qi, ci = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        qi, ci = qi.flatten(), ci.flatten()
        out = torch.cat(
            [scorer(_rows(fa, qi[s : s + chunk]), _rows(fb, ci[s : s + chunk])) for s in range(0, n * n, chunk)]
        )
    return out.view(n, n)


def match_loss(negatives: int) -> Callable[[MLAModel, Batch], tuple[Tensor, dict[str, float]]]:
    """BCE of true pairs against ``negatives`` shuffled partners per item."""

    def loss_fn(model: MLAModel, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        a, b = model.modalities
        fa = model.encoder(a)(model.encoder(a).prepare(batch[a], a))
        fb = model.encoder(b)(model.encoder(b).prepare(batch[b], b))
        n = fa.vector.shape[0]
        base = torch.arange(n)
        shifts = [base, *(((base + s) % n) for s in range(1, negatives + 1))]
        ia, ib = base.repeat(len(shifts)), torch.cat(shifts)
        target = (ia == ib).float()
        logits = PairScorer(model, (a, b))(_rows(fa, ia), _rows(fb, ib))
        loss = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=torch.tensor(float(negatives)))
        return loss, {"acc": float(((logits > 0).float() == target).float().mean())}

    return loss_fn


def finetune(
    model: MLAModel, task: RetrievalTask, steps: int, out_dir: Path, seed: int = 0, negatives: int = 3
) -> None:
    """Train the matcher (encoders, fusion, head) on true vs shuffled pairs."""
    trainer = Trainer(model, match_loss(negatives), _train_cfg(steps, 1e-3, seed), out_dir, progress=False)
    trainer.fit(_stream(task, seed + 1), overwrite=True)
    model.eval()


def directions(scores: Tensor, modalities: tuple[str, str]) -> dict[str, dict[str, float]]:
    """Top-1/Top-5 both ways: rows are a-queries, columns b-queries."""
    a, b = modalities
    return {f"{a}_to_{b}": topk(scores), f"{b}_to_{a}": topk(scores.t())}


def pair_macs(model: MLAModel, task: RetrievalTask) -> dict[str, int]:
    """MACs per scored pair (fusion + head), and per item of each encoder."""
    a, b = task.modalities
    model.eval()
    one = {m: task.heldout[m][:1] for m in task.modalities}
    with torch.no_grad():
        fa, fb = encode(model, a, one[a]), encode(model, b, one[b])
        found = {"pair": count_macs(PairScorer(model, task.modalities), fa, fb)}
        for m in task.modalities:
            found[f"encoder_{m}"] = count_macs(model.encoder(m), model.encoder(m).prepare(one[m], m))
    return found


def run_task(
    task: RetrievalTask,
    *,
    align_steps: int,
    match_steps: int,
    fusions: Sequence[str] = ("concat", "dma"),
    seed: int = 0,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Align once, then fine-tune and score one matcher per fusion from the aligned encoders."""
    torch.manual_seed(seed)
    work = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="retrieval-"))
    started = time.monotonic()
    base = MLAModel(task.config(fusions[0]))
    stage = align(base, task, align_steps, work / f"{task.name}-align", seed)
    found: dict[str, Any] = {
        "task": task.name, "items": len(task.heldout[task.modalities[0]]), "align_steps": align_steps,
        "match_steps": match_steps, "dual": directions(dual_scores(stage, task), task.modalities), "fused": {},
    }  # fmt: skip
    aligned = {k: v.clone() for k, v in base.encoders.state_dict().items()}
    for fusion in fusions:
        model = MLAModel(task.config(fusion))
        model.encoders.load_state_dict(aligned)
        finetune(model, task, match_steps, work / f"{task.name}-{fusion}", seed)
        found["fused"][fusion] = directions(fused_scores(model, task), task.modalities) | {
            "macs": pair_macs(model, task),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        logger.info("%s %s: %s", task.name, fusion, found["fused"][fusion])
    found["seconds"] = round(time.monotonic() - started, 1)
    return found


def summary_rows(found: Mapping[str, Any]) -> list[tuple[str, str, str, float, float, int | None]]:
    """``(task, method, direction, top1, top5, pair MACs)`` rows of :func:`run_task`'s result."""
    rows: list[tuple[str, str, str, float, float, int | None]] = []
    for direction, acc in found["dual"].items():
        rows.append((found["task"], "dual encoder", direction, acc["top1"], acc["top5"], None))
    for fusion, result in found["fused"].items():
        for direction, acc in result.items():
            if direction.count("_to_"):
                rows.append(
                    (found["task"], f"fused {fusion}", direction, acc["top1"], acc["top5"], result["macs"]["pair"])
                )
    return rows
