"""Running the stages: build one, run several through :class:`mla.train.Trainer`, move encoder weights.

Progressive pre-training (PPT) is stage 1 (reconstruction), stage 2 (alignment), then the usual
supervised training of the same :class:`~mla.model.MLAModel`. Domain-adaptive pre-training (DAPT) is
the same stages on unlabelled in-domain data, starting from encoder weights pre-trained elsewhere::

    results = pretrain(model, unlabelled, "runs/ppt", train=TrainConfig(total_steps=2_000))
    Trainer(model, supervised_loss, cfg, "runs/finetune").fit(labelled)        # the model, unchanged in shape

    continue_pretraining(model, in_domain, "runs/dapt", init="runs/ppt/alignment", train=cfg)

Stages share the model's encoder objects, so their training changes the model directly: there is no
copy-back step. :func:`load_pretrained` is for weights held elsewhere (a file, another model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mla.errors import MLACheckpointError, MLAConfigError
from mla.model import CHECKPOINT_FORMAT, MLAModel
from mla.pretrain.alignment import AlignmentStage, alignment_loss, default_pairs
from mla.pretrain.base import LossFn, PretrainStage, has_tokens, is_image_like
from mla.pretrain.reconstruction import ReconstructionStage, reconstruction_loss
from mla.train import FitResult, TrainConfig, Trainer, latest_checkpoint

__all__ = [
    "STAGES",
    "Batches",
    "applicable_stages",
    "build_stage",
    "continue_pretraining",
    "encoder_state_dict",
    "load_pretrained",
    "pretrain",
]

logger = logging.getLogger(__name__)

STAGES = ("reconstruction", "alignment")
"""The pre-training stages, in the order :func:`pretrain` runs them."""

Batches = Iterable[Any] | Callable[[int], Iterable[Any]]
"""What :meth:`mla.train.Trainer.fit` takes: a re-iterable of batches, or ``epoch -> iterable``."""

PREFIX = "encoders."


def build_stage(
    model: MLAModel, stage: str, modalities: Sequence[str] | None = None, **options: Any
) -> tuple[PretrainStage, LossFn]:
    """The module to train for a stage and its loss function, both ready for :class:`mla.train.Trainer`.

    The module holds the model's own encoder objects (``model.encoder(name)``) and throw-away heads;
    training it updates the model's encoders in place.

    Args:
        model: The model whose encoders to pre-train.
        stage: ``"reconstruction"`` or ``"alignment"``.
        modalities: Which encoders take part (all of the model's by default; the stage then picks those
            it can train, see :class:`ReconstructionStage` and :class:`AlignmentStage`).
        options: Keyword arguments of the stage class (``ratio``, ``patch``, ``pairs``, ``positions``, …).

    Returns:
        ``(module, loss_fn)`` with ``loss_fn(module, batch) -> (loss, metrics)``.

    Raises:
        MLAConfigError: An unknown stage or option, or nothing the stage can train.

    """
    names = list(modalities) if modalities is not None else list(model.modalities)
    unknown = sorted(set(names) - set(model.modalities))
    if unknown:
        msg = f"unknown modality {', '.join(unknown)}: the model has {', '.join(model.modalities)}"
        raise MLAConfigError(msg)
    encoders = {name: model.encoder(name) for name in names}
    try:
        if stage == "reconstruction":
            return ReconstructionStage(encoders, **options), reconstruction_loss
        if stage == "alignment":
            return AlignmentStage(encoders, **options), alignment_loss
    except TypeError as err:
        msg = f"bad option for the {stage} stage: {err}"
        raise MLAConfigError(msg) from err
    msg = f"unknown pre-training stage {stage!r}: choose one of {', '.join(STAGES)}"
    raise MLAConfigError(msg)


def applicable_stages(model: MLAModel) -> tuple[str, ...]:
    """The stages that have something to train in ``model`` (alignment needs two image or text modalities)."""
    encoders = {name: model.encoder(name) for name in model.modalities}
    found: list[str] = []
    if any(is_image_like(e) or has_tokens(e) for e in encoders.values()):
        found.append("reconstruction")
    if default_pairs(encoders):
        found.append("alignment")
    return tuple(found)


def pretrain(
    model: MLAModel,
    batches: Batches | Mapping[str, Batches],
    out_dir: str | Path,
    *,
    train: TrainConfig | Mapping[str, TrainConfig],
    stages: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, FitResult]:
    """Run pre-training stages one after the other, each with its own :class:`~mla.train.Trainer`.

    Stage ``s`` writes ``out_dir/s/metrics.jsonl`` and ``out_dir/s/checkpoints/``; its checkpoints hold the
    stage module's state dict (``encoders.*`` as in the model, plus the throw-away heads) and
    ``extra = {"stage": s, "model": model.to_dict()}``.

    Args:
        model: Its encoders are trained in place; fusion and heads are not touched.
        batches: Unlabelled batches for every stage, or ``{stage: batches}`` (e.g. unpaired images for
            reconstruction, paired ones for alignment). Keys other than modality names are ignored.
        out_dir: Folder of the run.
        train: One training configuration for every stage, or ``{stage: config}``.
        stages: Which stages, in order; :func:`applicable_stages` when None.
        options: ``{stage: keyword arguments}`` of :func:`build_stage`.
        resume: Continue each stage from its latest checkpoint when there is one (a finished stage is
            then only reloaded).
        overwrite: Let a fresh stage replace an earlier run's files in its folder.
        progress: Progress bars (see :class:`~mla.train.Trainer`).

    Returns:
        ``{stage: FitResult}`` in the order run.

    Raises:
        MLAConfigError: An unknown stage, or a stage without batches or configuration.

    """
    chosen = tuple(stages) if stages is not None else applicable_stages(model)
    results: dict[str, FitResult] = {}
    for stage in chosen:
        module, loss_fn = build_stage(model, stage, **dict((options or {}).get(stage, {})))
        cfg = _for_stage(train, stage, "train")
        stream = _for_stage(batches, stage, "batches") if isinstance(batches, Mapping) else batches
        folder = Path(out_dir) / stage
        trainer = Trainer(
            module, loss_fn, cfg, folder, progress=progress, extra={"stage": stage, "model": model.to_dict()}
        )
        start = latest_checkpoint(folder) if resume else None
        logger.info("pre-training stage %s for %d steps into %s", stage, cfg.total_steps, folder)
        results[stage] = trainer.fit(stream, resume_from=start, overwrite=overwrite)
    return results


def continue_pretraining(
    model: MLAModel,
    batches: Batches | Mapping[str, Batches],
    out_dir: str | Path,
    *,
    init: str | Path | nn.Module | Mapping[str, Tensor] | None,
    train: TrainConfig | Mapping[str, TrainConfig],
    stages: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, FitResult]:
    """Domain-adaptive pre-training: load pre-trained encoder weights, then :func:`pretrain` on in-domain data.

    Args:
        model: The model to adapt; its encoders are overwritten by ``init`` first.
        batches: Unlabelled in-domain batches (see :func:`pretrain`).
        out_dir: Folder of the run.
        init: Where the pre-trained encoders come from (see :func:`load_pretrained`); None keeps the model's.
        train: Training configuration(s); usually a lower ``lr`` and fewer steps than the first pre-training.
        stages: Which stages; :func:`applicable_stages` when None.
        options: ``{stage: keyword arguments}`` of :func:`build_stage`.
        resume: Continue each stage from its latest checkpoint in ``out_dir``; a stage's checkpoint holds
            the adapted encoders and replaces what ``init`` loaded.
        overwrite: Let a fresh stage replace an earlier run's files.
        progress: Progress bars.

    Returns:
        ``{stage: FitResult}``.

    """
    if init is not None:
        loaded = load_pretrained(model, init)
        logger.info("domain-adaptive pre-training from %s encoders", ", ".join(loaded))
    return pretrain(
        model,
        batches,
        out_dir,
        train=train,
        stages=stages,
        options=options,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )


def encoder_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The ``encoders.*`` entries of a model's or a stage's state dict (the same names in both)."""
    return {k: v for k, v in module.state_dict().items() if k.startswith(PREFIX)}


def load_pretrained(
    model: MLAModel, source: str | Path | nn.Module | Mapping[str, Tensor], modalities: Sequence[str] | None = None
) -> list[str]:
    """Copy pre-trained encoder weights into ``model``; fusion and heads are left as they are.

    Not needed after :func:`pretrain` on the same model (its stages share the model's encoders).

    Args:
        model: The model to fill.
        source: An ``nn.Module`` (a stage, another ``MLAModel``), a state dict with ``encoders.<name>.*``
            keys, a pre-training run folder (its latest checkpoint, e.g. ``runs/ppt/alignment``), or a
            file: a Trainer checkpoint or an :func:`mla.save_model` checkpoint.
        modalities: Which encoders to load; every one ``source`` has weights for when None.

    Returns:
        The modalities loaded.

    Raises:
        MLACheckpointError: The file cannot be read, holds no encoder of the model, or weights of another shape.

    """
    state = _state_of(source)
    wanted = list(modalities) if modalities is not None else list(model.modalities)
    loaded: list[str] = []
    for name in wanted:
        prefix = f"{PREFIX}{name}."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            if modalities is not None:
                msg = f"{_describe(source)} holds no weights of the {name} encoder"
                raise MLACheckpointError(msg)
            continue
        try:
            model.encoder(name).load_state_dict(weights)
        except RuntimeError as err:
            msg = f"the {name} encoder of {_describe(source)} does not fit the model's: {err}"
            raise MLACheckpointError(msg) from err
        loaded.append(name)
    if not loaded:
        msg = f"{_describe(source)} holds no encoder of {', '.join(wanted)} (keys start with {PREFIX}<modality>.)"
        raise MLACheckpointError(msg)
    logger.info("loaded pre-trained %s encoder(s) from %s", ", ".join(loaded), _describe(source))
    return loaded


def _for_stage(value: Any, stage: str, what: str) -> Any:
    """``value[stage]`` for a per-stage mapping (a missing stage is an error), else ``value``."""
    if isinstance(value, Mapping):
        if stage not in value:
            msg = f"{what} has no entry for the {stage} stage (it has {', '.join(map(str, value))})"
            raise MLAConfigError(msg)
        return value[stage]
    return value


def _state_of(source: str | Path | nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            msg = f"{path} holds no checkpoint (expected {path}/checkpoints/step_*.pt)"
            raise MLACheckpointError(msg)
        path = found
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        msg = f"cannot read {path}: {err}"
        raise MLACheckpointError(msg) from err
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        return dict(data["state_dict"])
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return dict(data["model"])  # a Trainer checkpoint
    msg = f"{path} is neither an mla model checkpoint nor a training checkpoint"
    raise MLACheckpointError(msg)


def _describe(source: object) -> str:
    return str(source) if isinstance(source, str | Path) else type(source).__name__
