"""Training engine for any ``torch.nn.Module``: AdamW, warm-up + cosine, accumulation, AMP, resumable checkpoints.

    from mla.train import TrainConfig, Trainer, latest_checkpoint, plot_metrics

    trainer = Trainer(model, loss_fn, TrainConfig(total_steps=2_000, accum_steps=4, amp=True), "runs/a")
    trainer.fit(loader, resume_from=latest_checkpoint("runs/a"))
    plot_metrics("runs/a/metrics.jsonl", "runs/a/curves.png")

Modules: ``config`` (TrainConfig), ``schedule`` (lr_at), ``optim`` (parameter groups), ``engine`` (Trainer),
``checkpoint`` (weights-only files), ``metrics`` (JSON lines, PNG curves), ``callbacks``, ``progress``.
"""

from mla.seed import seed_everything
from mla.train.callbacks import Callback, EarlyStopping, StopWhen
from mla.train.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints, read_checkpoint
from mla.train.config import TrainConfig, resolve_device, steps_for_epochs
from mla.train.engine import FitResult, Trainer, move_to_device
from mla.train.errors import CheckpointError, DeviceError, NonFiniteLossError, TrainConfigError, TrainError
from mla.train.metrics import plot_metrics, read_metrics
from mla.train.optim import build_optimizer, param_groups
from mla.train.schedule import build_scheduler, lr_at

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "DeviceError",
    "EarlyStopping",
    "FitResult",
    "NonFiniteLossError",
    "StopWhen",
    "TrainConfig",
    "TrainConfigError",
    "TrainError",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "latest_checkpoint",
    "list_checkpoints",
    "lr_at",
    "move_to_device",
    "param_groups",
    "plot_metrics",
    "read_checkpoint",
    "read_metrics",
    "resolve_device",
    "seed_everything",
    "steps_for_epochs",
]
