"""``MLAModel``: per-modality encoders → a fusion → one or more heads, built from a ``ModalConfig``.

::

    inputs {modality: tensor | str | None}
      │ encoders[m].prepare   checks: type, channels, size multiple, NaN/Inf; grids meet at their scale
      ▼
    features {m: ModalFeatures}     levels (B, C_l, H/4·2^l, W/4·2^l), vector (B, C), tokens (B, T, C)
      │ fusion
      ▼
    FusionOutput                    vector (B, W), weights (B, M), levels (B, W, H_l, W_l) × 3 or None
      │ heads[h]
      ▼
    MLAOutput                       fused, levels, modal_weights, outputs {head: tensor}, modalities

A checkpoint is the config dict plus the state dict (:func:`save_model`, :func:`load_model`); it loads
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from mla.config import ModalConfig
from mla.encoders import Encoder, ModalFeatures, create_encoder
from mla.errors import MLACheckpointError, MLAConfigError, MLAInputError
from mla.fusion import Fusion, FusionOutput, create_fusion
from mla.heads import Head, HeadInput, create_head
from mla.heads.sequence import SequenceHead
from mla.shapes import apply_structure, structure

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mla.checkpoint/1"


@dataclass(frozen=True)
class MLAOutput:
    """What :class:`MLAModel` returns for a batch.

    Attributes:
        fused: (B, W) fused vector.
        modal_weights: (B, M) modal weights in the order of :attr:`modalities`; each row sums to 1
            over the present modalities and is 0 for missing ones.
        outputs: One tensor per head name, e.g. ``classification`` (B, K), ``segmentation``
            (B, 1, H, W) logits at the reference (visible) input size, ``answer`` (B, A),
            ``sequence`` (B, T, V).
        modalities: The model's modality names, in weight order.
        levels: The fused pyramid (fine, mid, coarse), each (B, W, H_l, W_l), or None without a
            spatial modality.
        level_weights: (B, 3, M) per-level modal weights for fusions that have them (``hffn``), else None.

    """

    fused: Tensor
    modal_weights: Tensor
    outputs: dict[str, Tensor] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()
    levels: tuple[Tensor, ...] | None = None
    level_weights: Tensor | None = None

    @property
    def logits(self) -> Tensor:
        """The output of the only head; an error when the model has several."""
        if len(self.outputs) != 1:
            msg = f"the model has heads {', '.join(self.outputs)}: read output.outputs[name]"
            raise MLAInputError(msg)
        return next(iter(self.outputs.values()))

    def weights_of(self, index: int = 0) -> dict[str, float]:
        """Modal weights of sample ``index`` by modality name, e.g. ``{"visible": 0.7, "infrared": 0.3}``."""
        row = self.modal_weights[index].detach().float().cpu().tolist()
        return dict(zip(self.modalities, row, strict=True))


class MLAModel(nn.Module):
    """Encoders per modality, a fusion and heads, as configured.

    Call it with inputs in modality order, by name, or as one dict; ``None`` (or leaving one out)
    marks a missing modality::

        model("A red car on the road", torch.randn(1, 3, 224, 224))
        model(visible=v, infrared=ir)
        model({"visible": v, "infrared": None})

    Args:
        config: The architecture; ``ModalConfig()`` when None.

    """

    def __init__(self, config: ModalConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModalConfig()
        self.modalities = self.config.modalities
        self.encoders = nn.ModuleDict(
            {name: create_encoder(spec.name, **spec.kwargs()) for name, spec in self.config.encoders.items()}
        )
        specs = {name: self.encoder(name).spec for name in self.modalities}
        self.fusion: Fusion = create_fusion(
            self.config.fusion_type,
            modalities=specs,
            width=self.config.width,
            modality_dropout=self.config.modality_dropout,
            **self.config.fusion_options,
        )
        self.heads = nn.ModuleDict()
        for name in self.config.heads:
            options = dict(self.config.head_options.get(name, {}))
            if name == "classification":
                options.setdefault("num_classes", self.config.num_classes)
            self.heads[name] = create_head(name, width=self.config.width, modalities=specs, **options)
        if any(cast(Head, head).needs_levels for head in self.heads.values()) and not self.fusion.spatial:
            msg = f"heads {self.config.heads} need an image-like modality, but {self.modalities} has none"
            raise MLAConfigError(msg)
        logger.debug(
            "built MLAModel %s with %d parameters", self.config.fusion_type, sum(p.numel() for p in self.parameters())
        )

    def encoder(self, name: str) -> Encoder:
        """The encoder of modality ``name``."""
        return cast(Encoder, self.encoders[name])

    def __call__(self, *inputs: Any, **named: Any) -> MLAOutput:
        """Run :meth:`forward` with the module hooks (typed for callers)."""
        return cast(MLAOutput, super().__call__(*inputs, **named))

    def forward(
        self,
        *inputs: Any,
        head_inputs: Mapping[str, Tensor] | None = None,
        presence: Tensor | None = None,
        **named: Any,
    ) -> MLAOutput:
        """Run the model.

        Args:
            inputs: Modality inputs in configured order, or one ``{name: input}`` dict.
            head_inputs: Extra inputs per head: ``{"sequence": ids (B, T)}`` for teacher forcing.
            presence: Optional (B, M) mask in modality order: 0 marks a given input as absent for that
                sample (its weight becomes 0, exactly as if it were not given). Lets a fixed-input graph
                (ONNX, TensorRT) serve captures whose IR image is missing: feed zeros and presence 0.
            named: Modality inputs by name.

        Raises:
            MLAInputError: Unknown modality, all modalities missing, wrong type/channels/size, NaN or
                Inf, grids that do not meet at their scale, unequal batch sizes.

        """
        features, fused, image_size = self.fuse(*inputs, presence=presence, **named)
        extra = dict(head_inputs or {})
        unknown = sorted(set(extra) - set(self.heads))
        if unknown:
            msg = f"head_inputs for {', '.join(unknown)}, which is not among heads {', '.join(self.heads)}"
            raise MLAInputError(msg)
        outputs: dict[str, Tensor] = {}
        for name, head in self.heads.items():
            if cast(Head, head).needs_levels and fused.levels is None:
                spatial = [m for m in self.modalities if self.encoder(m).size_multiple]
                msg = f"the {name} head needs an image-like modality: give at least one of {', '.join(spatial)}"
                raise MLAInputError(msg)
            head_input = HeadInput(fused=fused, features=features, image_size=image_size, tokens=extra.get(name))
            outputs[name] = head(head_input)
        return MLAOutput(
            fused=fused.vector,
            modal_weights=fused.weights,
            outputs=outputs,
            modalities=self.modalities,
            levels=fused.levels,
            level_weights=fused.level_weights,
        )

    def fuse(
        self, *inputs: Any, presence: Tensor | None = None, **named: Any
    ) -> tuple[dict[str, ModalFeatures], FusionOutput, tuple[int, int] | None]:
        """Check and encode the inputs and fuse them: (features, fusion output, reference (H, W) or None)."""
        prepared = self._prepare(self._gather(inputs, named))
        image_size = self._reference_size(prepared)
        features = {name: self.encoder(name)(x) for name, x in prepared.items()}
        if presence is not None:
            if presence.dim() != 2 or presence.shape[1] != len(self.modalities):
                msg = f"presence must have shape (B, {len(self.modalities)}), got {tuple(presence.shape)}"
                raise MLAInputError(msg)
            index = {name: i for i, name in enumerate(self.modalities)}
            features = {n: replace(f, present=presence[:, index[n]] > 0.5) for n, f in features.items()}
        return features, self.fusion(features), image_size

    @torch.no_grad()
    def generate(self, *inputs: Any, max_len: int | None = None, **named: Any) -> Tensor:
        """Greedy token ids (B, T) from the ``sequence`` head; decode with ``mla.ByteTokenizer().decode``."""
        if "sequence" not in self.heads:
            msg = f"generate needs a sequence head; this model has {', '.join(self.heads)}"
            raise MLAConfigError(msg)
        features, fused, image_size = self.fuse(*inputs, **named)
        head = cast(SequenceHead, self.heads["sequence"])
        ids: Tensor = head.generate(HeadInput(fused=fused, features=features, image_size=image_size), max_len)
        return ids

    def example_inputs(self, batch: int = 1, image_size: int | None = None) -> dict[str, Any]:
        """Valid inputs for every modality: ``image_size`` (default ``config.image_dim``) is the reference side."""
        side = image_size or self.config.image_dim
        return {name: self.encoder(name).example(batch, side) for name in self.modalities}

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain JSON-able dict (see :meth:`from_dict`)."""
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MLAModel:
        """A freshly initialised model from :meth:`to_dict`'s output."""
        return cls(ModalConfig.from_dict(data))

    def _gather(self, inputs: tuple[Any, ...], named: Mapping[str, Any]) -> dict[str, Any]:
        """Positional, dict and keyword inputs as one ``{modality: value}`` dict."""
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            values = dict(inputs[0])
        elif len(inputs) > len(self.modalities):
            names = ", ".join(self.modalities)
            msg = f"got {len(inputs)} positional inputs but the model has {len(self.modalities)} modalities: {names}"
            raise MLAInputError(msg)
        else:
            values = dict(zip(self.modalities, inputs, strict=False))
        for name, value in named.items():
            if name in values:
                msg = f"modality {name!r} is given twice (positionally or in the dict, and by name)"
                raise MLAInputError(msg)
            values[name] = value
        unknown = sorted(set(values) - set(self.modalities))
        if unknown:
            msg = f"unknown modality {', '.join(map(repr, unknown))}: this model takes {', '.join(self.modalities)}"
            raise MLAInputError(msg)
        return values

    def _prepare(self, values: Mapping[str, Any]) -> dict[str, Tensor]:
        """Each present input checked and converted by its encoder; at least one, equal batch sizes."""
        prepared = {
            name: self.encoder(name).prepare(values[name], name)
            for name in self.modalities
            if values.get(name) is not None
        }
        if not prepared:
            msg = f"all modalities are missing: give at least one of {', '.join(self.modalities)}"
            raise MLAInputError(msg)
        batches = {name: x.shape[0] for name, x in prepared.items()}
        if not torch.compiler.is_compiling() and len({int(b) for b in batches.values()}) > 1:
            msg = f"modalities have different batch sizes: {batches}"
            raise MLAInputError(msg)
        return prepared

    def _reference_size(self, prepared: Mapping[str, Tensor]) -> tuple[int, int] | None:
        """The reference (visible) grid size implied by the spatial inputs; they must all agree."""
        reference: tuple[str, tuple[int, int]] | None = None
        for name, x in prepared.items():
            encoder = self.encoder(name)
            if not encoder.size_multiple:
                continue
            size = (x.shape[-2] * encoder.scale, x.shape[-1] * encoder.scale)  # symbolic under export
            if reference is None:
                reference = (name, size)
            elif size != reference[1]:
                first, (height, width) = reference
                first_scale = self.encoder(first).scale
                need = f"{height // encoder.scale}×{width // encoder.scale}"
                msg = (
                    f"{name} is {x.shape[-2]}×{x.shape[-1]} at scale {encoder.scale}, which does not meet {first} "
                    f"{height // first_scale}×{width // first_scale} at scale {first_scale}: {name} must be {need}"
                )
                raise MLAInputError(msg)
        return reference[1] if reference is not None else None


def save_model(model: MLAModel, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write a checkpoint: ``{"format", "config", "state_dict", "metadata"}`` with ``torch.save``.

    ``metadata`` holds plain JSON-like values (how the model was made, its figures); read it back with
    :func:`load_metadata`.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": model.to_dict(),
        "state_dict": model.state_dict(),
        "metadata": dict(metadata or {}),
    }
    if getattr(model, "pruned", False):
        checkpoint["structure"] = structure(model)  # the pruned layer sizes, rebuilt by load_model
    torch.save(checkpoint, Path(path))
    logger.info("saved %s model to %s", model.config.fusion_type, path)


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata`` a checkpoint was saved with (``{}`` if none)."""
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        msg = f"cannot read checkpoint {path}: {err}"
        raise MLACheckpointError(msg) from err
    metadata = checkpoint.get("metadata", {}) if isinstance(checkpoint, dict) else {}
    return dict(metadata) if isinstance(metadata, dict) else {}


def load_model(path: str | Path, map_location: str | torch.device | None = None) -> MLAModel:
    """Rebuild a model from :func:`save_model`'s checkpoint (read with ``weights_only=True``), in eval mode.

    Args:
        path: The checkpoint file.
        map_location: Device for the weights and the model (default: where they were saved).

    Raises:
        MLACheckpointError: The file cannot be read, is not an mla checkpoint, or its weights do not
            match its configuration.

    """
    try:
        checkpoint = torch.load(Path(path), map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        msg = f"cannot read checkpoint {path}: {err}"
        raise MLACheckpointError(msg) from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        msg = f"{path} is not an {CHECKPOINT_FORMAT} checkpoint (found {found!r}); write it with mla.save_model"
        raise MLACheckpointError(msg)
    model = MLAModel.from_dict(checkpoint["config"])
    if "structure" in checkpoint:
        apply_structure(model, checkpoint["structure"], checkpoint["state_dict"])
        setattr(model, "pruned", True)  # noqa: B010
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        msg = f"{path}: the weights do not match the configuration they were saved with: {err}"
        raise MLACheckpointError(msg) from err
    if map_location is not None:
        model.to(map_location)
    else:
        devices = {t.device for t in checkpoint["state_dict"].values()}
        if len(devices) == 1:
            model.to(devices.pop())
    return model.eval()
