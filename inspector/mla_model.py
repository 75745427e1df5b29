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
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mla
from inspector.model import ModelError, ModelInput, ModelOutput
from inspector.tiles import ir_on_quarter_grid, normalise_ir, normalise_visible, tiled_predict
from inspector.verdict import VerdictRules
from mla.runtime import Backend, create_backend

logger = logging.getLogger(__name__)


class MLACrackModel:
    """An ``mla`` segmentation model (visible and/or infrared) run by overlapping tiles on a runtime backend.

    Args:
        backend: Where the network runs (:mod:`mla.runtime`: torch, onnxruntime, tensorrt).
        name: Model name reported with results.
        version: Version reported with results (carries the file's SHA-256).
        scale: Visible pixels per IR pixel.
        tile: Tile side in visible pixels.
        overlap: Overlap between tiles.
        batch_size: Tiles per backend call.
        metadata: What the model file says about itself (training command, figures, sizes).
        model: The torch module when there is one (for parameter and MAC counts).
        threshold: The model's decision threshold, chosen on validation data (``inspector threshold``);
            its probabilities are shifted in logit space so that this threshold lands at 0.5, where
            every downstream step (masks, measurement, verdicts, the 8-bit maps) decides.
        verdict_rules: The model's operating point for verdicts, chosen on validation data
            (``inspector threshold``); used where the caller gives no rules of its own.

    """

    version: str

    def __init__(
        self,
        backend: Backend,
        *,
        name: str = "mla",
        version: str = "0",
        scale: int = 4,
        tile: int = 576,
        overlap: int = 64,
        batch_size: int = 2,
        metadata: dict[str, Any] | None = None,
        model: mla.MLAModel | None = None,
        threshold: float = 0.5,
        verdict_rules: VerdictRules | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ModelError(f"decision threshold must lie in (0, 1), got {threshold}")
        self.backend, self.model = backend, model
        self.threshold = threshold
        self.verdict_rules = verdict_rules
        self.logit_offset = float(np.log(threshold / (1.0 - threshold)))
        self.name, self.version, self.tile, self.overlap = name, version, tile, overlap
        self.batch_size, self.scale = batch_size, scale
        self.metadata = dict(metadata or {})
        self.modalities = tuple(backend.modalities)

    def _tiles(self, visible: np.ndarray, ir: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        named: dict[str, np.ndarray | None] = {}
        if "visible" in self.modalities:
            named["visible"] = visible[:, None]
        if "infrared" in self.modalities:
            named["infrared"] = ir[:, None] if ir is not None else None
        out = self.backend.run(named)
        logits = out["segmentation"][:, 0].astype(np.float32) - self.logit_offset
        probability = 1.0 / (1.0 + np.exp(-logits))
        return probability.astype(np.float32), out["modal_weights"].astype(np.float32)

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


def sidecar_path(path: Path) -> Path:
    """``crack.onnx`` → ``crack.onnx.json``: what an exported graph is (modalities, scale, name, version)."""
    return path.with_name(path.name + ".json")


def load_crack_model(
    path: str | Path,
    *,
    device: str = "cpu",
    backend: str | None = None,
    amp: bool = False,
    threads: int | None = None,
    tile: int = 576,
    overlap: int = 64,
    batch_size: int = 2,
) -> MLACrackModel:
    """Load a crack model from a ``.pt`` (torch), ``.onnx`` (onnxruntime) or ``.engine`` (tensorrt) file.

    A ``.pt`` comes from ``inspector train`` (read with weights_only=True), an ``.onnx`` from
    ``inspector export``, an ``.engine`` from ``deploy/jetson/build-engine.sh``. An ``.onnx`` or
    ``.engine`` file says its backend; ``backend`` (the configured one) applies to a ``.pt``, which then
    runs as the ``.onnx`` or ``.engine`` exported beside it.
    """
    path = Path(path)
    backend = {".onnx": "onnxruntime", ".engine": "tensorrt"}.get(path.suffix, backend or "torch")
    if backend != "torch" and path.suffix == ".pt":
        path = path.with_suffix(".onnx" if backend == "onnxruntime" else ".engine")
        if not path.is_file():
            raise ModelError(f"{path} does not exist: export the model first (`inspector export --model ...`)")
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist: train one with `inspector train` or use a built-in name")
    if threads:
        torch.set_num_threads(threads)
    sha = file_sha256(path)
    try:
        if backend == "torch":
            model = mla.load_model(path, map_location=device)
            metadata = mla.load_metadata(path)
            if "segmentation" not in model.heads:
                raise ModelError(f"{path} has no segmentation head, so it is not a crack model")
            runner: Backend = create_backend("torch", model=model, device=device, amp=amp)
            scale = int(model.config.encoders["infrared"].scale or 4) if "infrared" in model.modalities else 4
        else:
            model = None
            side = sidecar_path(path)
            if not side.is_file():
                raise ModelError(f"{side} is missing: export with `inspector export`, which writes it beside the graph")
            metadata = json.loads(side.read_text())
            scales = {str(k): int(v) for k, v in metadata["scales"].items()}
            extra = {"device": device, "threads": threads} if backend == "onnxruntime" else {}
            runner = create_backend(backend, path=path, modalities=metadata["modalities"], scales=scales, **extra)
            scale = scales.get("infrared", 4)
    except mla.MLAError as exc:
        raise ModelError(str(exc)) from None
    logger.info("loaded crack model %s on %s (sha256 %s)", path, runner.description, sha)
    return MLACrackModel(
        runner,
        name=str(metadata.get("name", path.stem)),
        version=f"{metadata.get('version', '0')}+sha256:{sha[:12]}",
        scale=scale,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        metadata=metadata | {"sha256": sha, "backend": runner.description},
        model=model,
        threshold=float(metadata.get("threshold", 0.5)),
        verdict_rules=VerdictRules.model_validate(metadata["verdict_rules"]) if metadata.get("verdict_rules") else None,
    )
