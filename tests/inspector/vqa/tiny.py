"""A tiny VQA model for tests: a few training steps (fast, not accurate)."""

from __future__ import annotations

from pathlib import Path

import torch

from inspector.vqa.tokenizer import WordTokenizer
from inspector.vqa.training import TrainOptions, fit_tokenizer, train_vqa

TINY = {"width": 32, "text_dim": 32, "image_width": 8}


def train_tiny(folder: Path, tokenizer: WordTokenizer | None = None, fusion: str = "dma") -> Path:
    """Train for 3 steps and save to ``folder/tiny.pt``."""
    torch.manual_seed(0)
    tokenizer = tokenizer or fit_tokenizer(seed=0, scenes=300)
    options = TrainOptions(fusion=fusion, steps=3, batch=8, model_options=TINY)
    result = train_vqa(options, folder / "run", tokenizer=tokenizer, progress=False)
    path = folder / "tiny.pt"
    result.model.save(path, metadata={"figures": {"overall": 0.0}})
    return path
