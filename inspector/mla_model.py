"""Learned crack models from ``mla``, behind the crack-model contract of :mod:`inspector.model`.

    model = load_crack_model("models/crack-hffn.pt")      # or: inspector predict ... --model models/crack-hffn.pt
    out = model.predict(ModelInput(...))                   # full resolution, by overlapping tiles

The visible frame is never downscaled: it is cut into overlapping tiles (576 px, at least 64 px of
overlap; a 1024 px frame takes 2x2 tiles) that
are blended back without seams (:mod:`inspector.tiles`). The infrared image is warped straight from its
native pixels onto the visible image's quarter grid, exactly as in training (:mod:`inspector.crack_data`),
so the IR encoder sees IR at its own resolution. A missing IR image is a missing modality: models with
``dma`` or ``hffn`` fusion renormalise their modal weights over what is present.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mla
from inspector.model import ModelError, ModelInput, ModelOutput
from inspector.tiles import ir_on_quarter_grid, normalise_ir, normalise_visible, tiled_predict

logger = logging.getLogger(__name__)


class MLACrackModel:
    """An ``mla`` segmentation model (visible and/or infrared) run by overlapping tiles."""

    version: str

    def __init__(
        self,
        model: mla.MLAModel,
        *,
        name: str = "mla",
        version: str = "0",
        tile: int = 576,
        overlap: int = 64,
        batch_size: int = 2,
        device: str = "cpu",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval().to(device)
        self.name, self.version, self.tile, self.overlap = name, version, tile, overlap
        self.batch_size, self.device = batch_size, torch.device(device)
        self.metadata = dict(metadata or {})
        self.modalities = tuple(model.modalities)
        self.scale = int(model.config.encoders["infrared"].scale or 4) if "infrared" in self.modalities else 4

    def _tiles(self, visible: np.ndarray, ir: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        named: dict[str, torch.Tensor | None] = {}
        if "visible" in self.modalities:
            named["visible"] = torch.from_numpy(visible[:, None]).to(self.device)
        if "infrared" in self.modalities:
            named["infrared"] = torch.from_numpy(ir[:, None]).to(self.device) if ir is not None else None
        with torch.inference_mode():
            out = self.model(**named)
        probability = torch.sigmoid(out.outputs["segmentation"].float())[:, 0]
        return probability.cpu().numpy(), out.modal_weights.float().cpu().numpy()

    def predict(self, inputs: ModelInput) -> ModelOutput:
        """Crack probability at full visible resolution, with the modal weights averaged over tiles."""
        visible = normalise_visible(inputs.visible)
        ir = None
        if inputs.infrared_raw is not None and inputs.ir_to_visible is not None and "infrared" in self.modalities:
            ir = normalise_ir(ir_on_quarter_grid(inputs.infrared_raw, inputs.ir_to_visible, visible.shape, self.scale))
        if "visible" not in self.modalities and ir is None:
            raise ModelError(f"model {self.name} sees only infrared, and this capture has no infrared image")
        weights: list[np.ndarray] = []

        def run(vis_tiles: np.ndarray, ir_tiles: np.ndarray | None) -> np.ndarray:
            probability, w = self._tiles(vis_tiles, ir_tiles)
            weights.append(w)
            return probability

        tile = min(self.tile, max(16, min(visible.shape) // 16 * 16))
        probability = tiled_predict(
            run, visible, ir, tile=tile, overlap=min(self.overlap, tile // 4 // 4 * 4), scale=self.scale,
            batch_size=self.batch_size,
        )  # fmt: skip
        mean = np.concatenate(weights).mean(axis=0)
        return ModelOutput(
            probability=probability,
            modal_weights={m: round(float(w), 4) for m, w in zip(self.modalities, mean, strict=True)},
        )


def file_sha256(path: Path) -> str:
    """SHA-256 of a model file, reported with every result set."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_crack_model(path: str | Path, *, device: str = "cpu", tile: int = 576, overlap: int = 64) -> MLACrackModel:
    """Load a crack model saved by ``inspector train`` (an ``mla`` checkpoint, read with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist: train one with `inspector train` or use a built-in name")
    try:
        model = mla.load_model(path, map_location=device)
        metadata = mla.load_metadata(path)
    except mla.MLAError as exc:
        raise ModelError(str(exc)) from None
    if "segmentation" not in model.heads:
        raise ModelError(f"{path} has no segmentation head, so it is not a crack model")
    sha = file_sha256(path)
    logger.info("loaded crack model %s (sha256 %s)", path, sha)
    return MLACrackModel(
        model,
        name=str(metadata.get("name", path.stem)),
        version=f"{metadata.get('version', '0')}+sha256:{sha[:12]}",
        tile=tile,
        overlap=overlap,
        device=device,
        metadata=metadata,
    )
