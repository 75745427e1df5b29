from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inspector.vqa.retrieval import caption_task, line_task, run_task, summary_rows, topk
from inspector.vqa.tokenizer import WordTokenizer


def test_topk_counts_ties_against_the_query() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    assert topk(scores, (1, 2)) == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}
    assert topk(torch.eye(4))["top1"] == 1.0


def _check(found: dict, pair_cost_lower: str) -> None:
    assert set(found["fused"]) == {"concat", "dma"}
    for result in [found["dual"], *found["fused"].values()]:
        for direction, acc in result.items():
            if "_to_" in direction:
                assert 0.0 <= acc["top1"] <= acc["top5"] <= 1.0
    assert found["fused"][pair_cost_lower]["macs"]["pair"] < found["fused"]["concat"]["macs"]["pair"]
    assert len(summary_rows(found)) == 6


def test_caption_retrieval_runs_end_to_end(tokenizer: WordTokenizer, tmp_path: Path) -> None:
    task = caption_task(tokenizer, count=6, batch=4)
    assert task.heldout["text"].shape[0] == 6 and task.heldout["image"].shape == (6, 5, 64, 64)
    _check(run_task(task, align_steps=2, match_steps=2, out_dir=tmp_path), "dma")


def test_line_retrieval_runs_end_to_end(small_line: Path, tmp_path: Path) -> None:
    task = line_task(small_line, small_line, count=6, batch=4, limit=2)
    assert task.heldout["visible"].shape == (6, 1, 64, 64) and task.heldout["infrared"].shape == (6, 1, 16, 16)
    _check(run_task(task, align_steps=2, match_steps=2, out_dir=tmp_path), "dma")
