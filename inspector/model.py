"""The crack-model contract and its registry.

Every model the CLI can run (``--model NAME``) takes a registered visible + infrared pair and returns a
crack-probability map at visible resolution. Classical baselines and learned ``mla`` models alike::

    model = create_model("baseline")              # or a trained model file: create_model("models/crack.pt")
    out = model.predict(ModelInput(visible=grey, infrared=ir_on_visible_grid, mm_per_px=0.05))
    out.probability        # (H, W) float32 in [0, 1]
    out.modal_weights      # {"visible": 0.7, "infrared": 0.3} when the model has them, else None
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from inspector.errors import InspectorError


class ModelError(InspectorError):
    """A model name is unknown or a model cannot run on its input."""


@dataclass(frozen=True)
class ModelInput:
    """One capture, ready for a model."""

    visible: np.ndarray  # (H, W) uint8 grey
    infrared: np.ndarray | None  # (H, W) float32 IR counts warped onto the visible grid, NaN outside; None if absent
    mm_per_px: float
    infrared_raw: np.ndarray | None = None  # (h, w) IR at its native resolution, for models that warp it themselves
    ir_to_visible: np.ndarray | None = None  # (3, 3) homography IR pixel -> visible pixel


@dataclass(frozen=True)
class ModelOutput:
    """What a model says about one capture."""

    probability: np.ndarray  # (H, W) float32 crack probability in [0, 1]
    modal_weights: dict[str, float] | None = None


class CrackModel(Protocol):
    """Anything with a name, a version and ``predict``.

    A model that reads only ``infrared_raw`` and ``ir_to_visible`` (it registers IR itself) may say so
    with a class attribute ``needs_registered_ir = False``; ``ModelInput.infrared`` is then None and
    the full-resolution warp is skipped.
    """

    name: str
    version: str

    def predict(self, inputs: ModelInput) -> ModelOutput:
        """Crack probability for one capture."""
        ...


_MODELS: dict[str, Callable[..., CrackModel]] = {}


def register_model(name: str) -> Callable[[Callable[..., CrackModel]], Callable[..., CrackModel]]:
    """Register a model factory under ``name`` (a decorator)."""

    def add(factory: Callable[..., CrackModel]) -> Callable[..., CrackModel]:
        if name in _MODELS:
            raise ModelError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return add


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    _load_builtin()
    return sorted(_MODELS)


LEARNED_SUFFIXES = (".pt", ".onnx", ".engine")


def create_model(name: str, inference: Mapping[str, Any] | None = None, **kwargs: Any) -> CrackModel:
    """Build a registered model by name, or load a trained one from a file (``.pt``, ``.onnx``, ``.engine``).

    Args:
        name: A registered name (see :func:`list_models`) or a model file.
        inference: For learned models only: backend, device, amp, threads, lanes, tile, overlap,
            batch_size, cache_dir (the ``inference`` section of the settings). ``threads`` is the whole
            CPU budget; with ``lanes`` pairs in flight at once each runtime call, and OpenCV, get
            ``threads // lanes`` of it (:func:`lane_threads`), so the lanes do not oversubscribe the cores.
        kwargs: Passed to the model's factory.

    An unknown name lists the valid ones.

    """
    _load_builtin()
    learned = dict(inference or {})
    lanes = int(learned.pop("lanes", 1) or 1)
    if lanes > 1:
        learned["threads"] = lane_threads(learned.get("threads"), lanes)
        cv2.setNumThreads(learned["threads"])
    if name in _MODELS:
        return _MODELS[name](**(learned if name in SHIPPED_MODELS else {}), **kwargs)
    if name.endswith(LEARNED_SUFFIXES) or "/" in name:
        from inspector.mla_model import load_crack_model

        return load_crack_model(name, **learned, **kwargs)
    raise ModelError(
        f"unknown model {name!r}: choose one of {', '.join(sorted(_MODELS))}, or a model file (.pt, .onnx, .engine)"
    )


def lane_threads(threads: int | None, lanes: int) -> int:
    """Runtime threads per lane: the CPU budget (default: every core) shared by ``lanes`` pairs in flight."""
    return max(1, (threads or os.cpu_count() or 1) // max(lanes, 1))


# trained here on synthetic data; files and model cards in inspector/models/. crack-concat-w65 is the default
# model's pruned width (configs/default.yaml worker.widths).
SHIPPED_MODELS = ("crack-hffn", "crack-concat", "crack-concat-w65")


def shipped_model_path(name: str) -> Any:
    """Path of a model file that ships inside the package (``inspector/models/{name}.pt``)."""
    from importlib.resources import files

    return files("inspector") / "models" / f"{name}.pt"


def _load_builtin() -> None:
    import inspector.baseline  # noqa: F401  (registers the classical baselines)

    for name in SHIPPED_MODELS:
        if name not in _MODELS:

            def load(_name: str = name, **kwargs: Any) -> CrackModel:
                from inspector.mla_model import load_crack_model

                return load_crack_model(str(shipped_model_path(_name)), **kwargs)

            _MODELS[name] = load
