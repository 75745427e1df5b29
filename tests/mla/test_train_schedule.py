"""The learning-rate schedule, the training configuration and the optimizer's parameter groups."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from mla.errors import MLAError
from mla.train import (
    DeviceError,
    TrainConfig,
    TrainConfigError,
    build_optimizer,
    build_scheduler,
    lr_at,
    param_groups,
    resolve_device,
    steps_for_epochs,
)


def test_lr_at_warmup_then_cosine_to_floor() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, cfg) == pytest.approx(1.0)  # decay starts at the peak
    assert lr_at(9, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert lr_at(14, cfg) == pytest.approx(0.1)
    assert lr_at(1_000, cfg) == pytest.approx(0.1)  # the floor holds after total_steps
    decay = [lr_at(s, cfg) for s in range(4, 15)]
    assert all(a >= b for a, b in itertools.pairwise(decay))


def test_lr_at_without_warmup_starts_at_peak_and_decays_to_zero() -> None:
    cfg = TrainConfig(lr=3e-4, total_steps=10)
    assert lr_at(0, cfg) == pytest.approx(3e-4)
    assert lr_at(5, cfg) == pytest.approx(3e-4 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(10, cfg) == pytest.approx(0.0)


def test_scheduler_applies_lr_at_to_every_group() -> None:
    cfg = TrainConfig(lr=0.01, warmup_steps=3, total_steps=10, min_lr_ratio=0.2)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    for step in range(12):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(lr_at(step, cfg))
        optimizer.step()
        scheduler.step()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(2)
        self.pos = nn.Parameter(torch.zeros(1, 3, 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.alias = self.fc  # a shared module appears once

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


def test_param_groups_decay_weights_only() -> None:
    groups = param_groups(_Net(), weight_decay=0.1)
    decayed, undecayed = groups
    assert decayed["weight_decay"] == 0.1 and undecayed["weight_decay"] == 0.0
    assert sorted(decayed["names"]) == ["conv.weight", "embed.weight", "fc.weight"]
    assert sorted(undecayed["names"]) == [
        "bn.bias",
        "bn.weight",
        "conv.bias",
        "fc.bias",
        "norm.bias",
        "norm.weight",
        "pos",
    ]
    assert sum(len(g["params"]) for g in groups) == 10  # frozen ones left out


def test_build_optimizer_is_adamw_with_config() -> None:
    cfg = TrainConfig(lr=0.02, betas=(0.8, 0.95), weight_decay=0.3, total_steps=5)
    optimizer = build_optimizer(_Net(), cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.3, 0.0]
    assert all(g["betas"] == (0.8, 0.95) and g["lr"] == 0.02 for g in optimizer.param_groups)


def test_model_without_trainable_parameters_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(MLAError, match="no trainable parameters"):
        build_optimizer(model, TrainConfig(total_steps=1))


def test_config_is_frozen_and_rejects_unknown_keys() -> None:
    cfg = TrainConfig(total_steps=10)
    assert cfg.accum_steps == 1 and cfg.amp is False and cfg.device == "auto"
    with pytest.raises(ValidationError):
        cfg.lr = 0.1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(total_steps=10, learning_rate=0.1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"total_steps": 10, "lrate": 1.0}, "lrate"),
        ({"total_steps": 10, "device": "gpu"}, "device"),
        ({"total_steps": 10, "warmup_steps": 11}, "warmup_steps"),
        ({"total_steps": 10, "accum_steps": 0}, "accum_steps"),
        ({"total_steps": 10, "betas": (0.9, 1.5)}, "betas"),
        ({"lr": 0.1}, "total_steps"),
    ],
)
def test_from_dict_names_the_bad_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(TrainConfigError, match=field) as info:
        TrainConfig.from_dict(data)
    assert isinstance(info.value, MLAError)


def test_config_round_trips_through_plain_dict() -> None:
    cfg = TrainConfig(lr=0.1, total_steps=7, accum_steps=4, amp=True, device="cuda:0", grad_clip=None)
    assert TrainConfig.from_dict(cfg.model_dump()) == cfg


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_steps_for_epochs() -> None:
    assert steps_for_epochs(3, 10, accum_steps=4) == 8
    assert steps_for_epochs(1, 8) == 8
    assert steps_for_epochs(0, 8) == 1
