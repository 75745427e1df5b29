"""Checkpoints: weights-only files, bit-exact resume, and clear errors for the wrong model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mla.errors import MLAError
from mla.seed import rng_state, seed_everything, set_rng_state
from mla.train import (
    CheckpointError,
    StopWhen,
    TrainConfig,
    Trainer,
    TrainError,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    read_metrics,
)
from mla.train.checkpoint import checkpoint_path

Batch = list[torch.Tensor]


class Net(nn.Module):
    """Dropout makes the run depend on the torch RNG; LayerNorm adds undecayed parameters."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(0.2))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


def build(seed: int, hidden: int = 16) -> Net:
    seed_everything(seed)
    return Net(hidden)


def loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(20, 4, generator=gen)
    y = x.sum(dim=1, keepdim=True).sin()
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)  # 5 micro-batches an epoch


def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    noise = float(np.random.rand()) * 1e-3 + torch.rand(()).item() * 1e-3  # numpy and torch RNGs in the loss
    return F.mse_loss(model(x), y) + noise, {"noise": noise}


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "lr": 5e-3,
        "total_steps": 9,
        "warmup_steps": 2,
        "accum_steps": 2,
        "device": "cpu",
        "log_every": 1,
        "seed": 11,
        "min_lr_ratio": 0.1,
    }
    return TrainConfig(**(base | overrides))


def train_records(run: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(run / "metrics.jsonl")]


@pytest.mark.parametrize("stop_at", [4, 5])  # step 4 stops mid-epoch, step 5 on the last batch of epoch 1
def test_resume_gives_the_same_parameters_as_a_straight_run(tmp_path: Path, stop_at: int) -> None:
    straight = build(0)
    Trainer(straight, loss_fn, config(), tmp_path / "straight", progress=False).fit(loader())

    # Interrupted: checkpoint at stop_at, goes on two more steps, then "crashes".
    run = tmp_path / "resumed"
    stop = StopWhen(lambda step, _m: step == stop_at + 2)
    first = Trainer(build(0), loss_fn, config(checkpoint_every=stop_at), run, callbacks=[stop], progress=False)
    first.fit(loader())
    assert first.step == stop_at + 2

    resumed = build(123)  # other initial weights and global RNG states: all of them come from the checkpoint
    trainer = Trainer(resumed, loss_fn, config(), run, progress=False)
    result = trainer.fit(loader(), resume_from=checkpoint_path(run, stop_at))
    assert result.step == 9

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # The records of steps after the checkpoint were dropped and written again, identically.
    assert train_records(run) == train_records(tmp_path / "straight")
    assert [p.name for p in list_checkpoints(run)] == [f"step_{stop_at:08d}.pt", "step_00000009.pt"]


def test_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    extra = {"model": {"name": "net", "hidden": 16, "widths": (8, 16)}, "classes": ["crack"], "note": None}
    result = Trainer(build(0), loss_fn, config(total_steps=3), tmp_path, progress=False, extra=extra).fit(loader())
    assert result.checkpoint is not None
    ckpt = torch.load(result.checkpoint, weights_only=True)  # no pickled classes inside
    assert ckpt["step"] == 3 and ckpt["extra"] == extra
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "epoch_rng", "config", "extra"}
    assert TrainConfig.from_dict(ckpt["config"]) == config(total_steps=3)
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}
    fresh = build(1)
    fresh.load_state_dict(ckpt["model"])  # what an inference loader does
    assert read_checkpoint(result.checkpoint)["scheduler"]["last_epoch"] == 3


def test_extra_must_be_plain(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"extra\['data'\] is a pathlib.*str\(path\)"):
        Trainer(build(0), loss_fn, config(), tmp_path, extra={"data": Path("/data")})


def test_resume_into_a_differently_shaped_model_is_a_clear_error(tmp_path: Path) -> None:
    result = Trainer(build(0, hidden=16), loss_fn, config(total_steps=2), tmp_path, progress=False).fit(loader())
    assert result.checkpoint is not None
    other = Trainer(build(0, hidden=8), loss_fn, config(), tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match="different model") as info:
        other.fit(loader(), resume_from=result.checkpoint)
    assert "body.0.weight (checkpoint (16, 4), model (8, 4))" in str(info.value)
    assert isinstance(info.value, MLAError)


def test_unreadable_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")
    pickled = tmp_path / "pickled.pt"
    torch.save({"config": TrainConfig(total_steps=1)}, pickled)  # a pickled class: weights_only refuses it
    with pytest.raises(CheckpointError, match="weights-only"):
        read_checkpoint(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save(build(0).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(foreign)


def test_only_the_most_recent_checkpoints_are_kept(tmp_path: Path) -> None:
    cfg = config(total_steps=9, checkpoint_every=2, keep_checkpoints=2)
    Trainer(build(0), loss_fn, cfg, tmp_path, progress=False).fit(loader())
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000008.pt", "step_00000009.pt"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_00000009.pt"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_resume_past_total_steps_does_nothing(tmp_path: Path) -> None:
    result = Trainer(build(0), loss_fn, config(total_steps=3), tmp_path, progress=False).fit(loader())
    again = Trainer(build(0), loss_fn, config(total_steps=3), tmp_path, progress=False)
    assert again.fit(loader(), resume_from=result.checkpoint).step == 3
    assert len(list_checkpoints(tmp_path)) == 1


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    seed_everything(4)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (np.random.rand(3), torch.rand(3), random.random())
    seed_everything(77)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert np.array_equal(np.random.rand(3), expected[0])
    assert torch.equal(torch.rand(3), expected[1])
    assert random.random() == expected[2]


def test_fresh_run_into_an_earlier_runs_folder(tmp_path: Path) -> None:
    Trainer(build(0), loss_fn, config(total_steps=4, checkpoint_every=2), tmp_path, progress=False).fit(loader())
    again = Trainer(build(0), loss_fn, config(total_steps=3), tmp_path, progress=False)
    with pytest.raises(TrainError, match="resume_from=latest_checkpoint"):
        again.fit(loader())
    again.fit(loader(), overwrite=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt"]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
