"""The VQA model: ``mla.MLAModel`` with a text and an image modality, a fusion by name, the ``answer`` head.

::

    question ─WordTokenizer─► ids (B, T) ─┐
                                          ├─ model(ids, image) ─► answer logits (B, 20)
    scene RGB + x, y ─────► (B, 5, S, S) ─┘   (the published API: MLAModel(ModalConfig(...))(question, image))

:class:`VQAModel` carries the tokenizer and the answer list with the network and saves all three in
one ``mla`` checkpoint (tokenizer and answers as JSON metadata; ``weights_only`` loading).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inspector.vqa.data import IN_CHANNELS, check_image, to_tensor
from inspector.vqa.errors import VQAError
from inspector.vqa.scenes import ANSWERS
from inspector.vqa.tokenizer import MAX_TOKENS, WordTokenizer
from mla import EncoderSpec, MLAModel, ModalConfig, load_model, save_model
from mla.errors import MLACheckpointError
from mla.model import load_metadata

FORMAT = "inspector.vqa/1"
FUSIONS = ("concat", "dma", "hffn")


def vqa_config(
    fusion: str,
    side: int = 64,
    width: int = 64,
    text_dim: int = 64,
    image_width: int = 24,
    num_answers: int = 20,
    reasoning: str = "relation",
    relation_hidden: int = 128,
    input_skip: bool = False,
    level: int = 1,
    text_pool: str = "mean",
    relation_source: str = "fused",
    anchor: bool = False,
    pointer: bool = False,
    glimpse: int = 0,
) -> ModalConfig:
    """The VQA architecture: ``text`` (2 Transformer layers) + ``image`` (``conv_pyramid`` on 5 channels).

    The ``answer`` head reasons over pairs of the fused mid-level cells (``reasoning="relation"``, a
    Relation Network) or over the fused vector alone (``"attention"``, the models before 2026-11-30).
    ``input_skip`` gives each image level the input averaged over its cells (colour, which the
    encoder otherwise learns to discard). ``level`` is the pyramid level the relation head pairs:
    1 (mid, 8 × 8 cells at 64 px: 4,096 pairs) or 2 (coarse, 4 × 4: 256 pairs, 16 px cells, close to
    the Relation Network's 5 × 5 grid of 15 px cells on 75 px scenes). ``text_pool`` makes the
    question vector by ``mean`` or ``max`` over its words. ``relation_source`` is ``fused`` (the
    relation pairs cells of the fused level) or ``image`` (the image encoder's own cells, as the
    Relation Network pairs its CNN's cells; the question still joins every pair). ``anchor`` lets
    the question pick the object it names and weight that object's pairs (see ``mla.heads.relation``).
    ``pointer`` adds a pointer over the image encoder's levels: the named object, then the closest or
    furthest other one (``relation_source="image"``; see ``mla.heads.pointer``); ``glimpse`` > 0 has it
    also read a ``glimpse`` × ``glimpse`` window of cells around the object it finds (its shape).
    """
    relation = {"reasoning": reasoning, "relation_hidden": relation_hidden}
    text = {"depth": 2, "heads": 4, "max_len": MAX_TOKENS} | ({"pool": text_pool} if text_pool != "mean" else {})
    if level != 1:
        relation["level"] = level
    if relation_source != "fused":
        relation["relation_source"] = relation_source
    if anchor:
        relation["relation_anchor"] = True
    if pointer:
        relation["relation_pointer"] = True
    if glimpse:
        relation["pointer_glimpse"] = glimpse
    skip = {"input_skip": True} if input_skip else {}
    return ModalConfig(
        text_dim=text_dim,
        image_dim=side,
        fusion_type=fusion,
        modalities=("text", "image"),
        encoders={
            "text": EncoderSpec("text", options=text),
            "image": EncoderSpec("conv_pyramid", in_channels=IN_CHANNELS, width=image_width, options=skip),
        },
        heads=("answer",),
        width=width,
        head_options={"answer": {"num_answers": num_answers, "heads": 4} | relation},
    )


@dataclass(frozen=True)
class Answer:
    """One answer: the word, its softmax probability, and the three most likely words with theirs."""

    answer: str
    confidence: float
    top: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "answer": self.answer,
            "confidence": round(self.confidence, 4),
            "top": [{"answer": a, "p": round(p, 4)} for a, p in self.top],
        }


class VQAModel:
    """An ``MLAModel`` with its tokenizer and answer list.

    Args:
        network: The ``MLAModel`` (modalities ``text``, ``image``; head ``answer``).
        tokenizer: Words → ids.
        answers: Answer words in logit order.
        metadata: Figures and provenance stored with the checkpoint.

    """

    def __init__(
        self,
        network: MLAModel,
        tokenizer: WordTokenizer,
        answers: Sequence[str] = ANSWERS,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.tokenizer = tokenizer
        self.answers = tuple(answers)
        self.metadata = dict(metadata or {})
        self.sha256 = str(self.metadata.get("sha256", ""))

    @classmethod
    def create(cls, fusion: str, tokenizer: WordTokenizer, side: int = 64, **options: Any) -> VQAModel:
        """A fresh model (see :func:`vqa_config` for ``options``)."""
        return cls(MLAModel(vqa_config(fusion, side, num_answers=len(ANSWERS), **options)), tokenizer)

    @property
    def side(self) -> int:
        """Image side the model was trained at."""
        return self.network.config.image_dim

    @property
    def fusion(self) -> str:
        """The fusion's name."""
        return self.network.config.fusion_type

    def logits(self, ids: Tensor, images: Tensor) -> Tensor:
        """(B, T) ids and (B, 5, S, S) images → (B, A) logits, through ``model(question, image)``."""
        return self.network(ids, images).outputs["answer"]

    @torch.no_grad()
    def answer(self, images: Sequence[np.ndarray] | np.ndarray, questions: Sequence[str]) -> list[Answer]:
        """Answer each question about its image (RGB uint8, square; resized to :attr:`side`).

        Raises:
            VQAInputError: An empty question, unknown words, or an image the model cannot read.

        """
        if len(images) != len(questions):
            msg = f"{len(images)} images but {len(questions)} questions: give one image per question"
            raise VQAError(msg)
        ids = self.tokenizer.batch(list(questions))
        batch = np.stack([check_image(np.asarray(image), self.side) for image in images])
        self.network.eval()
        probs = self.logits(ids, to_tensor(batch)).float().softmax(dim=1)
        found = []
        for row in probs:
            top_p, top_i = row.topk(3)
            top = tuple((self.answers[int(i)], float(p)) for p, i in zip(top_p, top_i, strict=True))
            found.append(Answer(top[0][0], top[0][1], top))
        return found

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """One ``mla`` checkpoint with the tokenizer and answers in its metadata."""
        extra = {k: v for k, v in self.metadata.items() if k != "sha256"} | dict(metadata or {})
        data = extra | {"format": FORMAT, "tokenizer": self.tokenizer.to_dict(), "answers": list(self.answers)}
        save_model(self.network, path, metadata=data)

    @classmethod
    def load(cls, path: str | Path) -> VQAModel:
        """Read a checkpoint written by :meth:`save` (``weights_only``), in eval mode on the CPU.

        Raises:
            VQAError: The file is missing, unreadable, or not a VQA model.

        """
        path = Path(path)
        try:
            metadata = load_metadata(path)
            if metadata.get("format") != FORMAT:
                found = metadata.get("format")
                msg = f"{path} is not a VQA model (metadata format {found!r}); train one with `inspector vqa train`"
                raise VQAError(msg)
            network = load_model(path, map_location="cpu")
        except MLACheckpointError as err:
            raise VQAError(str(err)) from err
        metadata["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(network, WordTokenizer.from_dict(metadata["tokenizer"]), metadata["answers"], metadata)
