"""``ModalConfig``: everything needed to build (and rebuild) an ``MLAModel``, as a frozen dataclass.

The published usage keeps working::

    config = ModalConfig(text_dim=512, image_dim=224, fusion_type="dma")   # text + image, classification

and the same class names any modalities, each with an :class:`EncoderSpec`::

    ModalConfig(
        modalities=("visible", "infrared"), fusion_type="hffn", heads=("segmentation",), width=32,
        encoders={"visible": EncoderSpec("conv_pyramid", in_channels=1, width=32),
                  "infrared": EncoderSpec("ir_pyramid", in_channels=1, width=16, scale=4)},
    )

A modality without a spec gets the default of its name (:data:`DEFAULT_ENCODERS`). ``to_dict`` and
``from_dict`` give a plain JSON-able dict, which is what checkpoints store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mla.encoders import list_encoders
from mla.errors import MLAConfigError
from mla.fusion import list_fusions
from mla.heads import list_heads

logger = logging.getLogger(__name__)

FORMAT = "mla.config/1"


def _check_names(kind: str, names: tuple[str, ...]) -> None:
    """Names must be non-empty identifiers (they key module dicts), without repeats."""
    if not names:
        msg = f"give at least one {kind}"
        raise MLAConfigError(msg)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            msg = f"{kind} name {name!r} must be an identifier (letters, digits, underscores)"
            raise MLAConfigError(msg)
    if len(set(names)) != len(names):
        msg = f"{kind} names repeat: {names}"
        raise MLAConfigError(msg)


def _known(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``; an unknown key raises :class:`MLAConfigError`."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        msg = f"unknown {what} key {', '.join(map(repr, unknown))}: valid keys are {', '.join(sorted(names))}"
        raise MLAConfigError(msg)
    return dict(data)


def _json_normal(value: dict[str, Any], what: str) -> dict[str, Any]:
    """``value`` as JSON would give it back (tuples become lists); not JSON-able raises :class:`MLAConfigError`."""
    try:
        normal: dict[str, Any] = json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        msg = f"{what} must be JSON-able (str, int, float, bool, None, lists, dicts): {err}"
        raise MLAConfigError(msg) from None
    return normal


@dataclass(frozen=True)
class EncoderSpec:
    """Which registered encoder a modality uses, and how it is built.

    Attributes:
        name: A registered encoder (``conv_pyramid``, ``ir_pyramid``, ``text``, ``tabular``, …).
        in_channels: Input channels of image encoders, the number of features of ``tabular``; None
            for the encoder's default.
        width: The encoder's base width; None for its default (``text`` takes ``ModalConfig.text_dim``).
        scale: Reference (visible) pixels per input pixel for image encoders (4 for infrared); None
            for the encoder's default.
        options: Further keyword arguments of the encoder (e.g. ``{"depths": [2, 2, 2]}``), JSON-able.

    """

    name: str = "conv_pyramid"
    in_channels: int | None = None
    width: int | None = None
    scale: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _json_normal(dict(self.options), f"encoder {self.name!r} options"))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``create_encoder(self.name, ...)``: the fields that are set, and the options."""
        given = {"in_channels": self.in_channels, "width": self.width, "scale": self.scale}
        return {key: value for key, value in given.items() if value is not None} | dict(self.options)

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "width": self.width,
            "scale": self.scale,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderSpec:
        """Rebuild from :meth:`to_dict`'s output; unknown keys raise :class:`MLAConfigError`."""
        return cls(**_known(cls, data, "encoder spec"))


DEFAULT_ENCODERS: dict[str, EncoderSpec] = {
    "image": EncoderSpec("conv_pyramid", in_channels=3),
    "rgb": EncoderSpec("conv_pyramid", in_channels=3),
    "visible": EncoderSpec("conv_pyramid", in_channels=1),
    "infrared": EncoderSpec("ir_pyramid", in_channels=1, scale=4),
    "ir": EncoderSpec("ir_pyramid", in_channels=1, scale=4),
    "thermal": EncoderSpec("ir_pyramid", in_channels=1, scale=4),
    "text": EncoderSpec("text"),
    "question": EncoderSpec("text"),
    "report": EncoderSpec("text"),
}
"""The encoder a modality gets by its name when ``ModalConfig.encoders`` has no spec for it."""


@dataclass(frozen=True)
class ModalConfig:
    """The architecture of an ``MLAModel``: modalities and their encoders, the fusion, the heads.

    Attributes:
        text_dim: Width of every ``text`` encoder that does not set its own.
        image_dim: Nominal side of the reference image (the ``image``/``visible`` input) in pixels; a
            multiple of 16. The model takes any size that is a multiple of 16; this one is used by
            ``MLAModel.example_inputs`` and for profiling.
        fusion_type: A registered fusion: ``dma``, ``hffn`` or ``concat``.
        modalities: Modality names in order; this order is the order of positional inputs and of
            the modal weights.
        encoders: Encoder spec per modality (an :class:`EncoderSpec` or its dict); missing ones come
            from :data:`DEFAULT_ENCODERS`.
        heads: Registered heads, each giving one output: ``classification``, ``segmentation``,
            ``answer``, ``sequence``.
        width: Shared width W of the fusion (and the heads).
        num_classes: Classes of the ``classification`` head.
        modality_dropout: Per-sample probability of dropping a modality in training mode.
        fusion_options: Further keyword arguments of the fusion (e.g. ``{"hidden": 64}``).
        head_options: Further keyword arguments per head (e.g. ``{"answer": {"num_answers": 100}}``).

    """

    text_dim: int = 256
    image_dim: int = 224
    fusion_type: str = "dma"
    modalities: tuple[str, ...] = ("text", "image")
    encoders: dict[str, EncoderSpec] = field(default_factory=dict)
    heads: tuple[str, ...] = ("classification",)
    width: int = 64
    num_classes: int = 2
    modality_dropout: float = 0.0
    fusion_options: dict[str, Any] = field(default_factory=dict)
    head_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        modalities = (self.modalities,) if isinstance(self.modalities, str) else tuple(self.modalities)
        heads = (self.heads,) if isinstance(self.heads, str) else tuple(self.heads)
        _check_names("modality", modalities)
        _check_names("head", heads)
        for key, value in (("text_dim", self.text_dim), ("width", self.width), ("num_classes", self.num_classes)):
            if not isinstance(value, int) or value < 1:
                msg = f"{key} must be a positive integer, got {value!r}"
                raise MLAConfigError(msg)
        if not isinstance(self.image_dim, int) or self.image_dim < 16 or self.image_dim % 16:
            msg = f"image_dim must be a positive multiple of 16 (the pyramid's coarsest stride), got {self.image_dim!r}"
            raise MLAConfigError(msg)
        if not 0.0 <= self.modality_dropout < 1.0:
            msg = f"modality_dropout must lie in [0, 1), got {self.modality_dropout}"
            raise MLAConfigError(msg)
        if self.fusion_type not in list_fusions():
            msg = f"unknown fusion_type {self.fusion_type!r}: choose one of {', '.join(list_fusions())}"
            raise MLAConfigError(msg)
        unknown_heads = [name for name in heads if name not in list_heads()]
        if unknown_heads:
            msg = f"unknown head {unknown_heads[0]!r}: choose from {', '.join(list_heads())}"
            raise MLAConfigError(msg)
        stray = sorted(set(self.head_options) - set(heads))
        if stray:
            msg = f"head_options for {', '.join(stray)}, which is not among heads {heads}"
            raise MLAConfigError(msg)
        object.__setattr__(self, "modalities", modalities)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "encoders", self._resolve_encoders(modalities))
        object.__setattr__(self, "fusion_options", _json_normal(dict(self.fusion_options), "fusion_options"))
        options = {
            name: _json_normal(dict(value), f"head_options[{name!r}]") for name, value in self.head_options.items()
        }
        object.__setattr__(self, "head_options", options)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def _resolve_encoders(self, modalities: tuple[str, ...]) -> dict[str, EncoderSpec]:
        """One :class:`EncoderSpec` per modality, in modality order, defaults filled in."""
        given = dict(self.encoders)
        stray = sorted(set(given) - set(modalities))
        if stray:
            msg = f"encoders given for {', '.join(stray)}, which is not among modalities {modalities}"
            raise MLAConfigError(msg)
        resolved: dict[str, EncoderSpec] = {}
        for name in modalities:
            spec = given.get(name, DEFAULT_ENCODERS.get(name))
            if spec is None:
                msg = (
                    f"modality {name!r} has no default encoder: give encoders={{{name!r}: EncoderSpec(...)}} "
                    f"(defaults exist for {', '.join(DEFAULT_ENCODERS)})"
                )
                raise MLAConfigError(msg)
            if isinstance(spec, Mapping):
                spec = EncoderSpec.from_dict(spec)
            if not isinstance(spec, EncoderSpec):
                msg = f"encoders[{name!r}] must be an EncoderSpec or a dict, got {type(spec).__name__}"
                raise MLAConfigError(msg)
            if spec.name not in list_encoders():
                msg = f"unknown encoder {spec.name!r} for {name!r}: choose one of {', '.join(list_encoders())}"
                raise MLAConfigError(msg)
            if spec.name == "text" and spec.width is None:
                spec = replace(spec, width=self.text_dim)
            resolved[name] = spec
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict that :meth:`from_dict` turns back into an equal config."""
        return {
            "format": FORMAT,
            "text_dim": self.text_dim,
            "image_dim": self.image_dim,
            "fusion_type": self.fusion_type,
            "modalities": list(self.modalities),
            "encoders": {name: spec.to_dict() for name, spec in self.encoders.items()},
            "heads": list(self.heads),
            "width": self.width,
            "num_classes": self.num_classes,
            "modality_dropout": self.modality_dropout,
            "fusion_options": dict(self.fusion_options),
            "head_options": {name: dict(value) for name, value in self.head_options.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalConfig:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            MLAConfigError: Another format, an unknown key, or an invalid value.

        """
        data = dict(data)
        found = data.pop("format", FORMAT)
        if found != FORMAT:
            msg = f"config format {found!r} is not {FORMAT!r}: it was written by another version of mla"
            raise MLAConfigError(msg)
        values = _known(cls, data, "ModalConfig")
        for key in ("modalities", "heads"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def crack_config(**overrides: Any) -> ModalConfig:
    """The suggested visible + infrared crack-segmentation configuration.

    Grey visible (1 channel, ``conv_pyramid`` width 32) and infrared at a 4× coarser grid (1
    channel, ``ir_pyramid`` width 16), ``hffn`` fusion at width 32, a ``segmentation`` head, 512 px
    nominal tiles. About 90 k parameters (0.4 MB in fp32) and 0.38 GMAC per 512×512 tile; see docs/MLA.md.

    Args:
        overrides: Any :class:`ModalConfig` field.

    """
    values: dict[str, Any] = {
        "modalities": ("visible", "infrared"),
        "encoders": {
            "visible": EncoderSpec("conv_pyramid", in_channels=1, width=32),
            "infrared": EncoderSpec("ir_pyramid", in_channels=1, width=16, scale=4),
        },
        "fusion_type": "hffn",
        "heads": ("segmentation",),
        "width": 32,
        "image_dim": 512,
    }
    return ModalConfig(**(values | overrides))
