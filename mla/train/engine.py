"""The training loop: any ``nn.Module``, any loss, on CPU or CUDA, resumable bit for bit.

    def loss_fn(model, batch):                       # (model, batch) -> (scalar loss, {name: float})
        x, y = batch
        loss = F.mse_loss(model(x), y)
        return loss, {"mae": (model(x) - y).abs().mean().item()}

    trainer = Trainer(model, loss_fn, TrainConfig(total_steps=1_000, accum_steps=4, amp=True), "runs/a",
                      evaluate=lambda m: {"iou": val_iou(m)}, extra={"model": model_cfg})
    result = trainer.fit(loader)             # or trainer.fit(loader, resume_from=latest_checkpoint("runs/a"))

One optimizer step averages the gradients of ``accum_steps`` micro-batches (accumulation carries over
epoch ends). ``train_batches`` is re-iterated every epoch (a list, a ``DataLoader``), or is a callable
``epoch -> iterable``. On resume the interrupted epoch is re-created from the random state it started
with and the batches already used are skipped (fetched and dropped), so a shuffling ``DataLoader``
delivers the same order as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from mla.seed import rng_state, seed_everything, set_rng_state
from mla.train.batch import move_to_device
from mla.train.callbacks import Callback
from mla.train.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    check_model_fits,
    check_plain,
    checkpoint_path,
    claim_run_dir,
    prune_checkpoints,
    read_checkpoint,
    remove_checkpoints_after,
    write_checkpoint,
)
from mla.train.config import TrainConfig, resolve_device
from mla.train.errors import CheckpointError, NonFiniteLossError, TrainError
from mla.train.metrics import BOOKKEEPING, MetricsLog, MetricsWindow
from mla.train.optim import build_optimizer
from mla.train.progress import StepProgress
from mla.train.schedule import build_scheduler

__all__ = ["FitResult", "Trainer", "move_to_device"]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=nn.Module)
BatchT = TypeVar("BatchT")

_RESERVED = BOOKKEEPING | {"loss", "lr", "grad_norm", "skipped"}


@dataclass(frozen=True)
class FitResult:
    """How a call to :meth:`Trainer.fit` ended.

    Attributes:
        step: optimizer steps done in total (including those before a resume).
        epoch: the epoch the last step belonged to (0-based).
        stopped_early: a callback requested the stop before ``total_steps``.
        stop_reason: the callback's reason, when it stopped early.
        train: the last training record written to ``metrics.jsonl``.
        eval: the last evaluation's metrics (empty without ``evaluate``).
        checkpoint: the last checkpoint written.
        wall_s: seconds of training, including those before a resume.

    """

    step: int
    epoch: int
    stopped_early: bool
    stop_reason: str | None
    train: dict[str, float] = field(default_factory=dict)
    eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    wall_s: float = 0.0


class Trainer(Generic[ModelT, BatchT]):
    """Trains a module with AdamW, warm-up + cosine schedule, accumulation, AMP and checkpoints.

    Args:
        model: any module; it is moved to the configured device.
        loss_fn: ``loss_fn(model, batch) -> (loss, metrics)``: a scalar tensor to minimise and floats
            to log. The batch arrives on the device (see :func:`move_to_device`), inside autocast
            when ``cfg.amp``.
        cfg: the training configuration.
        out_dir: where ``metrics.jsonl`` and ``checkpoints/`` go.
        evaluate: ``evaluate(model) -> {name: float}``, called every ``cfg.eval_every`` steps and at the
            end, with the model in eval mode under ``torch.no_grad()`` and the global random state
            saved and restored around it (evaluating never changes the training trajectory).
        callbacks: hooks into the loop (:class:`~mla.train.callbacks.Callback`).
        progress: show a rich progress bar; ``None`` shows it when stderr is a terminal.
        extra: plain-typed data stored in every checkpoint, e.g. the model's config to rebuild it.

    Raises:
        DeviceError: the configured device is not available.
        CheckpointError: ``extra`` holds something other than plain types and tensors.

    """

    def __init__(
        self,
        model: ModelT,
        loss_fn: Callable[[ModelT, BatchT], tuple[torch.Tensor, Mapping[str, float]]],
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        evaluate: Callable[[ModelT], Mapping[str, float]] | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model: ModelT = model.to(self.device)
        self.loss_fn = loss_fn
        self.evaluate = evaluate
        self.callbacks = list(callbacks)
        self.progress = progress
        self.extra = dict(extra or {})
        check_plain(self.extra, "extra")
        self.out_dir = Path(out_dir)
        self.metrics_log = MetricsLog(self.out_dir / "metrics.jsonl")
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        on_cuda = self.device.type == "cuda"
        self.amp_dtype: torch.dtype | None = (torch.float16 if on_cuda else torch.bfloat16) if cfg.amp else None
        self.scaler: torch.amp.GradScaler | None = torch.amp.GradScaler("cuda") if cfg.amp and on_cuda else None
        self.step = 0
        self.epoch = 0
        self._batches_in_epoch = 0
        self._epoch_rng: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._wall_offset = 0.0
        self._started = time.perf_counter()
        self._stop_reason: str | None = None
        self._last_saved: tuple[int, Path] | None = None
        self._last_eval_step = -1
        self._last_eval: dict[str, float] = {}
        self._last_train: dict[str, float] = {}
        self._window = MetricsWindow()
        self._skipped = 0
        logger.info(
            "training on %s, amp %s, %d parameter group(s)",
            self.device,
            self.amp_dtype,
            len(self.optimizer.param_groups),
        )

    # -- public -------------------------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate of the next optimizer step."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def wall_s(self) -> float:
        """Seconds of training so far, including those before a resume."""
        return self._wall_offset + time.perf_counter() - self._started

    def request_stop(self, reason: str) -> None:
        """Stop after the current step (then evaluate and checkpoint as at the end of a full run)."""
        if self._stop_reason is None:
            self._stop_reason = reason
            logger.info("stopping at step %d: %s", self.step, reason)

    def fit(
        self,
        train_batches: Iterable[BatchT] | Callable[[int], Iterable[BatchT]],
        *,
        resume_from: str | Path | None = None,
        overwrite: bool = False,
    ) -> FitResult:
        """Train until ``cfg.total_steps`` optimizer steps are done or a callback stops it.

        A fresh trainer seeds python, numpy and torch with ``cfg.seed`` first; one resumed from a
        checkpoint restores every state instead, and its next steps equal those of an uninterrupted run.

        Args:
            train_batches: micro-batches, re-iterated each epoch; or ``epoch -> iterable of micro-batches``.
            resume_from: a checkpoint to continue from (e.g. ``latest_checkpoint(out_dir)``).
            overwrite: let a fresh run delete the checkpoints and ``metrics.jsonl`` of an earlier run in
                ``out_dir``; without it a fresh run into such a folder is an error.

        Returns:
            How the run ended.

        Raises:
            NonFiniteLossError: the loss or gradient norm is NaN/inf and ``cfg.on_nonfinite == "raise"``.
            CheckpointError: ``resume_from`` cannot be read or was written for a differently shaped model.
            TrainError: ``out_dir`` holds an earlier run (and neither ``resume_from`` nor ``overwrite``),
                ``loss_fn`` returned something unusable, or an epoch yielded no batches.

        """
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.step == 0:
            claim_run_dir(self.out_dir, [self.metrics_log.path], overwrite=overwrite)
            seed_everything(self.cfg.seed, deterministic=self.cfg.deterministic)
            self._resume_rng = None
        else:
            self._resume_rng = rng_state()
        self._started = time.perf_counter()
        self._stop_reason = None
        self.model.train()
        for callback in self.callbacks:
            callback.on_fit_start(self)
        with StepProgress(self.cfg.total_steps, self.step, self.progress) as bar:
            if self.step < self.cfg.total_steps:
                self._loop(train_batches, bar)
        if self.evaluate is not None and self._last_eval_step != self.step:
            self._run_evaluation()
        if self._last_saved is None or self._last_saved[0] != self.step:
            self.save_checkpoint()
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return FitResult(
            step=self.step,
            epoch=self.epoch,
            stopped_early=self._stop_reason is not None,
            stop_reason=self._stop_reason,
            train=dict(self._last_train),
            eval=dict(self._last_eval),
            checkpoint=self._last_saved[1] if self._last_saved else None,
            wall_s=self.wall_s,
        )

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the whole training state (see :class:`~mla.train.checkpoint.Checkpoint`).

        Args:
            path: where to write; by default ``out_dir/checkpoints/step_{step:08d}.pt``, and then only the
                ``cfg.keep_checkpoints`` most recent ones are kept.

        Returns:
            The path written.

        """
        state: Checkpoint = {
            "format": FORMAT_VERSION,
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self._batches_in_epoch,
            "wall_s": self.wall_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_state(),
            "epoch_rng": self._epoch_rng if self._epoch_rng is not None else rng_state(),
            "config": self.cfg.model_dump(),
            "extra": self.extra,
        }
        target = write_checkpoint(path if path is not None else checkpoint_path(self.out_dir, self.step), state)
        if path is None:
            prune_checkpoints(self.out_dir, self.cfg.keep_checkpoints)
        self._last_saved = (self.step, target)
        logger.info("checkpoint %s", target)
        for callback in self.callbacks:
            callback.on_checkpoint(self, target)
        return target

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the whole training state from a checkpoint, to continue with :meth:`fit`.

        Records of later steps in ``metrics.jsonl`` and, when the checkpoint is one of ``out_dir``'s own, its
        later checkpoints (from a run that went on past this one) are removed: that stretch is trained again.

        Args:
            path: a checkpoint written by :meth:`save_checkpoint`.

        Raises:
            CheckpointError: unreadable, or written for a model or optimizer of another shape.

        """
        ckpt = read_checkpoint(path)
        check_model_fits(ckpt["model"], self.model, path)
        self.model.load_state_dict(ckpt["model"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as exc:
            msg = f"checkpoint {path} holds an optimizer for other parameters ({exc}); was a layer frozen or unfrozen?"
            raise CheckpointError(msg) from exc
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        changed = sorted(k for k, v in self.cfg.model_dump().items() if ckpt["config"].get(k, v) != v)
        if changed:
            logger.warning("resuming %s with a changed config: %s", path, ", ".join(changed))
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self._batches_in_epoch = int(ckpt["batches_in_epoch"])
        self._wall_offset = float(ckpt["wall_s"])
        self._epoch_rng, self._resume_rng = ckpt["epoch_rng"], ckpt["rng"]
        self._last_saved = (self.step, Path(path))
        dropped = self.metrics_log.truncate_after(self.step)
        if Path(path).resolve().parent == checkpoint_path(self.out_dir, 0).resolve().parent:
            remove_checkpoints_after(self.out_dir, self.step)  # the run that wrote them is redone from here
        logger.info(
            "resumed from %s at step %d (epoch %d); dropped %d later metric records",
            path,
            self.step,
            self.epoch,
            dropped,
        )

    # -- loop ---------------------------------------------------------------------------------------------

    def _epoch_iterator(self, train_batches: Iterable[BatchT] | Callable[[int], Iterable[BatchT]]) -> Iterator[BatchT]:
        """The micro-batches of the current epoch, skipping those a resumed epoch already used."""
        skip = self._batches_in_epoch if self._epoch_rng is not None else 0
        if skip and self._epoch_rng is not None:
            set_rng_state(self._epoch_rng)  # the epoch's shuffle order depends on the state it began with
        elif self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        if not skip:
            self._epoch_rng = rng_state()
        source = train_batches if isinstance(train_batches, Iterable) else train_batches(self.epoch)
        iterator = iter(source)
        skipped = sum(1 for _ in zip(range(skip), iterator, strict=False))
        if skip:
            logger.info("epoch %d: skipped %d micro-batch(es) used before the resume", self.epoch, skipped)
            if skipped < skip:
                logger.warning("epoch %d has %d micro-batches now, %d before the resume", self.epoch, skipped, skip)
            if self._resume_rng is not None:
                set_rng_state(self._resume_rng)  # and the steps after it on the state the checkpoint saved
                self._resume_rng = None
        self._batches_in_epoch = skipped
        return iterator

    def _loop(self, train_batches: Iterable[BatchT] | Callable[[int], Iterable[BatchT]], bar: StepProgress) -> None:
        accum = self.cfg.accum_steps
        micro = 0
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, float] = {}
        while True:
            for batch in self._epoch_iterator(train_batches):
                self._batches_in_epoch += 1
                loss, metrics = self._forward_backward(batch)
                loss_sum += loss
                for key, value in metrics.items():
                    metric_sums[key] = metric_sums.get(key, 0.0) + value
                micro += 1
                if micro < accum:
                    continue
                record = self._optimizer_step(loss_sum / accum, {k: v / accum for k, v in metric_sums.items()})
                micro, metric_sums = 0, {}
                loss_sum = torch.zeros((), device=self.device)
                bar.update(self.step, record["loss"], record["lr"])
                if self._after_step(record):
                    return
            if self._batches_in_epoch == 0:
                msg = (
                    f"epoch {self.epoch} yielded no batches: pass a re-iterable (a list, a DataLoader) or a "
                    "callable epoch -> iterable, not a one-shot iterator or generator"
                )
                raise TrainError(msg)
            self.epoch += 1
            self._batches_in_epoch = 0

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _forward_backward(self, batch: BatchT) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch: forward under autocast, backward of ``loss / accum_steps``."""
        batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
        with self._autocast():
            loss, metrics = self.loss_fn(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            msg = f"loss_fn must return (scalar tensor, dict of floats); its loss is {shape} (reduce it, e.g. .mean())"
            raise TrainError(msg)
        clash = _RESERVED.intersection(metrics)
        if clash:
            msg = f"loss_fn returned metrics named {sorted(clash)}, which the trainer writes itself: rename them"
            raise TrainError(msg)
        scaled = loss.float() / self.cfg.accum_steps
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()  # type: ignore[no-untyped-call]
        return loss.detach().float(), {k: float(v) for k, v in metrics.items()}

    def _optimizer_step(self, loss: torch.Tensor, metrics: dict[str, float]) -> dict[str, float]:
        """Unscale, clip, check for NaN/inf, step the optimizer and the schedule; returns the step's record."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip or math.inf)
        loss_value, norm_value = torch.stack([loss, norm.float().to(loss.device)]).tolist()
        lr = self.lr
        # With a GradScaler, inf gradients are routine: the scaler skips the step and lowers its scale.
        bad = not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(norm_value))
        if bad:
            what = f"loss {loss_value}" if not math.isfinite(loss_value) else f"gradient norm {norm_value}"
            where = f"at step {self.step + 1} (epoch {self.epoch}, micro-batch {self._batches_in_epoch} of the epoch)"
            if self.cfg.on_nonfinite == "raise":
                msg = (
                    f"{what} {where}: lower lr, enable grad_clip or amp=False, check the data, "
                    "or set on_nonfinite='skip' to drop such steps"
                )
                raise NonFiniteLossError(msg)
            logger.warning("%s %s: update skipped", what, where)
            self._skipped += 1
            if self.scaler is not None:
                self.scaler.update()
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # a skipped update (non-finite, or the GradScaler's) makes torch warn that step() came first
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        self.step += 1
        return {"loss": loss_value, "lr": lr, "grad_norm": norm_value, **metrics}

    def _after_step(self, record: dict[str, float]) -> bool:
        """Callbacks, logging, evaluation and checkpoint after a step; True when the loop must end."""
        for callback in self.callbacks:
            callback.on_step_end(self, record)
        self._window.add(record)
        if self.evaluate is not None and self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
            self._run_evaluation()
        done = self.step >= self.cfg.total_steps or self._stop_reason is not None
        if self.step % self.cfg.log_every == 0 or done:
            self._write_train_record(record["lr"])
        if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0 and not done:
            self.save_checkpoint()
        return done

    def _write_train_record(self, lr: float) -> None:
        record: dict[str, Any] = {"split": "train", "step": self.step, "epoch": self.epoch, "lr": lr}
        record["loss"] = record["grad_norm"] = math.nan  # NaN (null in the file) if the whole window was skipped
        record.update(self._window.means(exclude={"lr"}))
        if self._skipped:
            record["skipped"] = self._skipped
        record["wall_s"] = round(self.wall_s, 3)
        self.metrics_log.append(record)
        self._last_train = {k: float(v) for k, v in record.items() if k != "split"}
        logger.info("step %d/%d loss %.4g lr %.3g", self.step, self.cfg.total_steps, record["loss"], lr)
        self._window.clear()
        self._skipped = 0

    def _run_evaluation(self) -> None:
        if self.evaluate is None:
            return
        saved_rng = rng_state()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                result = self.evaluate(self.model)
        finally:
            self.model.train(was_training)
            set_rng_state(saved_rng)
        metrics = {k: float(v) for k, v in result.items()}
        record = {"split": "eval", "step": self.step, "epoch": self.epoch, **metrics, "wall_s": round(self.wall_s, 3)}
        self.metrics_log.append(record)
        self._last_eval, self._last_eval_step = metrics, self.step
        logger.info("eval at step %d: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        for callback in self.callbacks:
            callback.on_evaluate(self, metrics)
