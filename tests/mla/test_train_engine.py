"""The training loop, against small modules of its own: accumulation, AMP, metrics, NaN, callbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mla.errors import MLAError
from mla.train import (
    EarlyStopping,
    NonFiniteLossError,
    StopWhen,
    TrainConfig,
    Trainer,
    TrainError,
    latest_checkpoint,
    move_to_device,
    plot_metrics,
    read_metrics,
    seed_everything,
)

Batch = tuple[torch.Tensor, torch.Tensor]


def mlp(seed: int = 0, hidden: int = 8) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(nn.Linear(3, hidden), nn.LayerNorm(hidden), nn.Tanh(), nn.Linear(hidden, 1))


def regression_batches(count: int, size: int, seed: int = 1) -> list[Batch]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor([[1.5], [-2.0], [0.5]])
    batches = []
    for _ in range(count):
        x = torch.randn(size, 3, generator=gen)
        batches.append((x, x @ w + 0.3))
    return batches


def mse(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    pred = model(x)
    return F.mse_loss(pred.float(), y), {"mae": (pred.float() - y).abs().mean().item()}


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {"lr": 1e-2, "total_steps": 6, "device": "cpu", "log_every": 1, "seed": 3}
    return TrainConfig(**(base | overrides))


# -- batches to the device --------------------------------------------------------------------------------


class Pair(NamedTuple):
    image: torch.Tensor
    label: int


@dataclass
class Sample:
    pixels: torch.Tensor
    name: str


def test_move_to_device_keeps_structure() -> None:
    batch: dict[str, Any] = {
        "pair": Pair(torch.ones(2), 3),
        "list": [torch.zeros(1), "text", None],
        "sample": Sample(torch.ones(1), "a"),
        "nested": {"t": (torch.ones(3), 1.5)},
    }
    moved = move_to_device(batch, "meta")
    assert isinstance(moved["pair"], Pair) and moved["pair"].image.is_meta and moved["pair"].label == 3
    assert moved["list"][0].is_meta and moved["list"][1:] == ["text", None]
    assert isinstance(moved["sample"], Sample) and moved["sample"].pixels.is_meta and moved["sample"].name == "a"
    assert moved["nested"]["t"][0].is_meta and moved["nested"]["t"][1] == 1.5
    assert not batch["list"][0].is_meta  # the input is untouched


# -- accumulation -----------------------------------------------------------------------------------------


def test_accumulated_micro_batches_equal_one_big_batch(tmp_path: Path) -> None:
    micro = regression_batches(12, size=2)
    big = [
        (torch.cat([x for x, _ in micro[i : i + 4]]), torch.cat([y for _, y in micro[i : i + 4]])) for i in (0, 4, 8)
    ]
    model_a, model_b = mlp(), mlp()
    a = Trainer(model_a, mse, config(total_steps=3, accum_steps=4), tmp_path / "a", progress=False)
    b = Trainer(model_b, mse, config(total_steps=3, accum_steps=1), tmp_path / "b", progress=False)
    a.fit(micro)
    b.fit(big)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # Adam is blind to the gradient's scale; the logged gradient norm and loss are not.
    rec_a = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["split"] == "train"]
    rec_b = [r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in rec_a] == [1, 2, 3]
    for ra, rb in zip(rec_a, rec_b, strict=True):
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-5)
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["lr"] == pytest.approx(rb["lr"])


def test_accumulation_carries_over_epoch_ends(tmp_path: Path) -> None:
    seen: list[int] = []

    def counting(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        seen.append(len(batch[0]))
        return mse(model, batch)

    trainer = Trainer(mlp(), counting, config(total_steps=5, accum_steps=3), tmp_path, progress=False)
    result = trainer.fit(regression_batches(4, size=2))  # 4 micro-batches an epoch, 3 a step
    assert len(seen) == 15 and result.step == 5 and result.epoch == 3


# -- mixed precision --------------------------------------------------------------------------------------


def test_bf16_autocast_on_cpu_trains(tmp_path: Path) -> None:
    dtypes: set[torch.dtype] = set()

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        pred = model(x)
        dtypes.add(pred.dtype)
        return F.mse_loss(pred.float(), y), {}

    cfg = config(total_steps=60, amp=True, lr=3e-2, warmup_steps=5, log_every=10)
    trainer = Trainer(mlp(), loss_fn, cfg, tmp_path, progress=False)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    trainer.fit(regression_batches(8, size=16))
    assert dtypes == {torch.bfloat16}
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert losses[-1] < 0.3 * losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32


def test_fp32_without_amp(tmp_path: Path) -> None:
    dtypes: set[torch.dtype] = set()

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        dtypes.add(model(batch[0]).dtype)
        return mse(model, batch)

    Trainer(mlp(), loss_fn, config(total_steps=2), tmp_path, progress=False).fit(regression_batches(2, size=4))
    assert dtypes == {torch.float32}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_grad_scaler_on_cuda(tmp_path: Path) -> None:
    cfg = config(total_steps=60, amp=True, lr=3e-2, warmup_steps=5, log_every=10, device="cuda", checkpoint_every=30)
    dtypes: set[torch.dtype] = set()

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        assert x.is_cuda
        pred = model(x)
        dtypes.add(pred.dtype)
        return F.mse_loss(pred.float(), y), {}

    trainer = Trainer(mlp(), loss_fn, cfg, tmp_path, progress=False)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler is not None
    result = trainer.fit(regression_batches(8, size=16))
    assert dtypes == {torch.float16}
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert losses[-1] < 0.3 * losses[0]
    first = tmp_path / "checkpoints" / "step_00000030.pt"
    saved = torch.load(first, map_location="cpu", weights_only=True)  # the scaler's state is plain types
    assert saved["scaler"]["scale"] > 0
    resumed = Trainer(mlp(), loss_fn, cfg, tmp_path / "again", progress=False)
    resumed.load_checkpoint(first)
    assert resumed.scaler is not None and resumed.scaler.get_scale() == saved["scaler"]["scale"]
    assert resumed.fit(regression_batches(8, size=16)).step == result.step == 60


# -- metrics, evaluation, plots ---------------------------------------------------------------------------


def test_metrics_jsonl_and_png(tmp_path: Path) -> None:
    evaluations: list[bool] = []

    def evaluate(model: nn.Module) -> Mapping[str, float]:
        evaluations.append(model.training or torch.is_grad_enabled())
        x, y = regression_batches(1, size=32, seed=9)[0]
        return {"loss": F.mse_loss(model(x), y).item(), "r2": 0.5}

    cfg = config(total_steps=7, log_every=2, eval_every=3)
    result = Trainer(mlp(), mse, cfg, tmp_path, evaluate=evaluate, progress=False).fit(regression_batches(3, size=4))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == [2, 4, 6, 7]
    assert [r["step"] for r in evals] == [3, 6, 7]  # every eval_every steps and at the end
    assert evaluations == [False, False, False]  # eval mode, no grad
    for r in train:
        assert set(r) == {"split", "step", "epoch", "lr", "loss", "mae", "grad_norm", "wall_s"}
        assert r["wall_s"] >= 0 and r["lr"] > 0
    assert train[-1]["epoch"] == 2
    assert set(evals[0]) == {"split", "step", "epoch", "loss", "r2", "wall_s"}
    assert result.eval == {"loss": evals[-1]["loss"], "r2": 0.5}
    assert result.train["step"] == 7
    png = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000


def test_evaluation_does_not_change_training(tmp_path: Path) -> None:
    def noisy_evaluate(model: nn.Module) -> Mapping[str, float]:
        return {"noise": torch.rand(()).item()}  # draws from the global generator

    def dropout_net() -> nn.Module:
        seed_everything(0)
        return nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.3), nn.Linear(16, 1))

    data = regression_batches(4, size=4)
    plain, evaluated = dropout_net(), dropout_net()
    Trainer(plain, mse, config(), tmp_path / "a", progress=False).fit(data)
    Trainer(evaluated, mse, config(eval_every=1), tmp_path / "b", evaluate=noisy_evaluate, progress=False).fit(data)
    for pa, pb in zip(plain.parameters(), evaluated.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_progress_bar_can_be_shown(tmp_path: Path) -> None:
    result = Trainer(mlp(), mse, config(total_steps=3), tmp_path, progress=True).fit(regression_batches(2, size=4))
    assert result.step == 3


# -- errors -----------------------------------------------------------------------------------------------


def nan_at(step: int) -> Any:
    calls = {"n": 0}

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        calls["n"] += 1
        loss, metrics = mse(model, batch)
        return (loss * float("nan") if calls["n"] == step else loss), metrics

    return loss_fn


def test_nan_loss_raises_naming_the_step(tmp_path: Path) -> None:
    trainer = Trainer(mlp(), nan_at(5), config(accum_steps=2), tmp_path, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"loss nan at step 3 \(epoch 0") as info:
        trainer.fit(regression_batches(8, size=4))  # micro-batch 5 belongs to step 3
    assert isinstance(info.value, MLAError)
    assert "on_nonfinite='skip'" in str(info.value)


def test_nan_loss_can_be_skipped(tmp_path: Path) -> None:
    model = mlp()
    result = Trainer(model, nan_at(3), config(on_nonfinite="skip"), tmp_path, progress=False).fit(
        regression_batches(8, size=4)
    )
    assert result.step == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[2]["step"] == 3 and records[2]["skipped"] == 1 and records[2]["loss"] is None
    assert all(r["loss"] is not None for r in records if r["step"] != 3)


def test_non_scalar_loss_is_an_error(tmp_path: Path) -> None:
    def unreduced(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return (model(batch[0]) - batch[1]) ** 2, {}

    with pytest.raises(TrainError, match=r"\(4, 1\)"):
        Trainer(mlp(), unreduced, config(), tmp_path, progress=False).fit(regression_batches(2, size=4))


def test_metric_named_like_a_trainer_field_is_an_error(tmp_path: Path) -> None:
    def clashing(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return mse(model, batch)[0], {"lr": 1.0}

    with pytest.raises(TrainError, match="rename"):
        Trainer(mlp(), clashing, config(), tmp_path, progress=False).fit(regression_batches(2, size=4))


def test_one_shot_generator_runs_dry_with_a_clear_error(tmp_path: Path) -> None:
    def generator() -> Iterator[Batch]:
        yield from regression_batches(3, size=4)

    with pytest.raises(TrainError, match="re-iterable"):
        Trainer(mlp(), mse, config(), tmp_path, progress=False).fit(generator())


def test_callable_gives_each_epoch_its_batches(tmp_path: Path) -> None:
    epochs: list[int] = []

    def batches_for(epoch: int) -> list[Batch]:
        epochs.append(epoch)
        return regression_batches(2, size=4, seed=epoch)

    result = Trainer(mlp(), mse, config(total_steps=5), tmp_path, progress=False).fit(batches_for)
    assert epochs == [0, 1, 2] and result.step == 5


# -- stopping ---------------------------------------------------------------------------------------------


def test_stop_when_condition_stops_and_checkpoints(tmp_path: Path) -> None:
    stop = StopWhen(lambda step, _metrics: step == 4)
    result = Trainer(mlp(), mse, config(total_steps=50), tmp_path, callbacks=[stop], progress=False).fit(
        regression_batches(3, size=4)
    )
    assert result.stopped_early and result.step == 4 and "step 4" in (result.stop_reason or "")
    assert latest_checkpoint(tmp_path) == result.checkpoint
    assert result.checkpoint is not None and result.checkpoint.name == "step_00000004.pt"


def test_early_stopping_on_a_flat_eval_metric(tmp_path: Path) -> None:
    stopper = EarlyStopping("score", mode="max", patience=2)
    trainer = Trainer(
        mlp(),
        mse,
        config(total_steps=50, eval_every=2),
        tmp_path,
        evaluate=lambda _model: {"score": 1.0},
        callbacks=[stopper],
        progress=False,
    )
    result = trainer.fit(regression_batches(3, size=4))
    assert result.stopped_early and result.step == 6  # best at 2, no better at 4 and 6
    assert stopper.best == 1.0


def test_grad_scaler_path_runs_on_cpu(tmp_path: Path) -> None:
    """The CUDA fp16 branch (scale, unscale, clip, step, update, save, resume) driven by a CPU GradScaler."""
    cfg = config(total_steps=30, lr=3e-2, log_every=5, checkpoint_every=10)
    trainer = Trainer(mlp(), mse, cfg, tmp_path, progress=False)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    result = trainer.fit(regression_batches(8, size=16))
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert result.step == 30 and losses[-1] < 0.5 * losses[0]
    saved = torch.load(tmp_path / "checkpoints" / "step_00000020.pt", weights_only=True)
    assert saved["scaler"]["scale"] > 0
    resumed = Trainer(mlp(), mse, cfg, tmp_path / "again", progress=False)
    resumed.scaler = torch.amp.GradScaler("cpu")
    resumed.load_checkpoint(tmp_path / "checkpoints" / "step_00000020.pt")
    assert resumed.scaler.get_scale() == saved["scaler"]["scale"]
