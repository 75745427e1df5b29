"""Checkpoints that ``torch.load(path, weights_only=True)`` reads: tensors and plain python types only.

A checkpoint is one dict (:class:`Checkpoint`): the model's ``state_dict``, the optimizer's, the
scheduler's and the grad scaler's, the step, where the data loop stood, every RNG state, the training
config as a plain dict and a caller's ``extra`` dict (e.g. the model's own config, to rebuild it).
Files are ``out_dir/checkpoints/step_00001000.pt``, written atomically (temporary file, then rename).

    ckpt = read_checkpoint(latest_checkpoint("runs/a"))       # for inference: ckpt["model"], ckpt["extra"]
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import nn

from mla.train.errors import CheckpointError, TrainError

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "check_model_fits",
    "check_plain",
    "checkpoint_path",
    "checkpoint_step",
    "claim_run_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "read_checkpoint",
    "remove_checkpoints_after",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")
_PLAIN_LEAVES = (type(None), bool, int, float, str, torch.Tensor)


class Checkpoint(TypedDict):
    """What a checkpoint file holds (all tensors and plain types)."""

    format: int
    step: int
    epoch: int
    batches_in_epoch: int
    wall_s: float
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    epoch_rng: dict[str, Any]
    config: dict[str, Any]
    extra: dict[str, Any]


def check_plain(value: object, where: str = "extra") -> None:
    """Check that a value is made of what a weights-only load accepts.

    Args:
        value: ``None``, bool, int, float, str, tensors, and lists, tuples and dicts of them
            (dict keys: str or int).
        where: the name used in the error message.

    Raises:
        CheckpointError: something else is inside; the message names where it is and its type.

    """
    if isinstance(value, _PLAIN_LEAVES):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                msg = f"{where} has a key of type {type(key).__name__}: checkpoint dict keys must be str or int"
                raise CheckpointError(msg)
            check_plain(item, f"{where}[{key!r}]")
        return
    msg = (
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}: checkpoints hold only None, bool, "
        "int, float, str, tensors and lists/tuples/dicts of them (convert it, e.g. str(path) or obj.model_dump())"
    )
    raise CheckpointError(msg)


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of a step lives: ``out_dir/checkpoints/step_{step:08d}.pt``."""
    return Path(out_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The checkpoints of a run directory, oldest step first (empty when there are none)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a checkpoint's file name (``step_00001000.pt`` -> 1000), or ``None`` for other names."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in a run directory, or ``None``."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def prune_checkpoints(out_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent checkpoints of a run directory."""
    for path in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)
        logger.debug("removed old checkpoint %s", path)


def remove_checkpoints_after(out_dir: str | Path, step: int) -> None:
    """Delete the checkpoints of a run directory whose step is after ``step``."""
    for path in list_checkpoints(out_dir):
        if (checkpoint_step(path) or 0) > step:
            path.unlink(missing_ok=True)
            logger.info("removed %s, later than step %d", path, step)


def claim_run_dir(out_dir: str | Path, run_files: list[Path], *, overwrite: bool) -> None:
    """Make sure a fresh run does not mix with an earlier run's files (a stale checkpoint would win a resume).

    Args:
        out_dir: the run directory.
        run_files: other files a run writes there (``metrics.jsonl``).
        overwrite: delete the earlier run's checkpoints and files instead of refusing.

    Raises:
        TrainError: ``out_dir`` holds checkpoints or run files and ``overwrite`` is false.

    """
    earlier = [*list_checkpoints(out_dir), *(p for p in run_files if p.exists())]
    if not earlier:
        return
    if not overwrite:
        msg = (
            f"{out_dir} already holds a run ({', '.join(p.name for p in earlier[-2:])}): continue it with "
            "fit(..., resume_from=latest_checkpoint(out_dir)), start over with fit(..., overwrite=True), "
            "or choose another out_dir"
        )
        raise TrainError(msg)
    for path in earlier:
        path.unlink()
    logger.warning("removed %d file(s) of an earlier run in %s", len(earlier), out_dir)


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write a checkpoint atomically (a temporary file in the same folder, then a rename).

    Args:
        path: the file to write; its folder is created.
        checkpoint: the state; ``extra`` and ``config`` are checked to be plain types first.

    Returns:
        The path written.

    Raises:
        CheckpointError: ``extra`` or ``config`` holds something a weights-only load would refuse.

    """
    check_plain(checkpoint["extra"], "extra")
    check_plain(checkpoint["config"], "config")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, target)
    return target


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True`` onto the CPU.

    Args:
        path: a file written by :func:`write_checkpoint`.

    Returns:
        The checkpoint dict; tensors are on the CPU.

    Raises:
        CheckpointError: the file is missing, is not a weights-only checkpoint, or lacks fields.

    """
    source = Path(path)
    if not source.is_file():
        msg = f"no checkpoint at {source}"
        raise CheckpointError(msg)
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        msg = f"cannot read checkpoint {source} as weights-only (was it written by mla.train?): {exc}"
        raise CheckpointError(msg) from exc
    if not isinstance(loaded, dict):
        msg = f"{source} is not an mla.train checkpoint (it holds a {type(loaded).__name__}, not a dict)"
        raise CheckpointError(msg)
    missing = sorted(set(Checkpoint.__annotations__) - set(loaded))
    if missing:
        msg = f"{source} is not an mla.train checkpoint: missing {', '.join(missing)}"
        raise CheckpointError(msg)
    if loaded["format"] != FORMAT_VERSION:
        msg = f"{source} has checkpoint format {loaded['format']}; this version reads format {FORMAT_VERSION}"
        raise CheckpointError(msg)
    return loaded  # type: ignore[return-value]


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_model_fits(saved: Mapping[str, Any], model: nn.Module, source: str | Path) -> None:
    """Check that a saved ``state_dict`` has exactly the model's tensors, with the same shapes.

    Args:
        saved: the checkpoint's ``model`` entry.
        model: the model to load it into.
        source: the checkpoint's path, for the message.

    Raises:
        CheckpointError: names the tensors whose shapes differ, the missing ones and the unexpected ones.

    """
    current = model.state_dict()
    problems: list[str] = []
    shapes = [
        f"{k} (checkpoint {tuple(saved[k].shape)}, model {tuple(v.shape)})"
        for k, v in current.items()
        if k in saved and isinstance(v, torch.Tensor) and tuple(saved[k].shape) != tuple(v.shape)
    ]
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) differ in shape: {_listing(shapes)}")
    if missing:
        problems.append(f"missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_listing(unexpected)}")
    if problems:
        msg = (
            f"checkpoint {source} was written for a different model ({'; '.join(problems)}): "
            "build the model with the configuration the checkpoint was trained with (see its 'extra' entry)"
        )
        raise CheckpointError(msg)
