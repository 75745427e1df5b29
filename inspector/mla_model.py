"""Learned crack models from ``mla``, behind the crack-model contract of :mod:`inspector.model`.

    model = load_crack_model("models/crack-hffn.pt")      # or: inspector predict ... --model models/crack-hffn.pt
    out = model.predict(ModelInput(...))                   # full resolution, by overlapping tiles

The visible frame is never downscaled: it is cut into the fewest overlapping tiles of at most 576 px
(at least 64 px of overlap; a 1024 px frame takes 2×2 tiles of 544 px) that are blended back without
seams (:mod:`inspector.tiles`). The infrared image is warped straight from its
native pixels onto the visible image's quarter grid, exactly as in training (:mod:`inspector.crack_data`),
so the IR encoder sees IR at its own resolution. A missing IR image is a missing modality: models with
``dma`` or ``hffn`` fusion renormalise their modal weights over what is present.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mla
from inspector.errors import InspectorError
from inspector.export_cache import file_sha256, sidecar_path
from inspector.model import ModelError, ModelInput, ModelOutput
from inspector.tiles import ir_on_quarter_grid, normalise_ir, normalise_visible, tiled_predict
from inspector.verdict import VerdictRules
from mla.runtime import Backend, create_backend

logger = logging.getLogger(__name__)

# Longest tile side. A 1024² frame takes 2×2 tiles of 544 px: whole 1024² frames ran ~5% faster but scored
# lower (pixel F1 0.947 against 0.953 on 80 held-out parts; the networks were trained on 256 px tiles).
DEFAULT_TILE = 576


class MLACrackModel:
    """An ``mla`` segmentation model (visible and/or infrared) run by overlapping tiles on a runtime backend.

    Args:
        backend: Where the network runs (:mod:`mla.runtime`: torch, onnxruntime, tensorrt).
        name: Model name reported with results.
        version: Version reported with results (carries the file's SHA-256).
        scale: Visible pixels per IR pixel.
        tile: Longest tile side in visible pixels; a frame no larger is predicted whole.
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
    needs_registered_ir = False  # IR goes from its native pixels straight onto the quarter grid (inspector.tiles)

    def __init__(
        self,
        backend: Backend,
        *,
        name: str = "mla",
        version: str = "0",
        scale: int = 4,
        tile: int = DEFAULT_TILE,
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
        return sigmoid(out["segmentation"][:, 0], self.logit_offset), out["modal_weights"].astype(np.float32)

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

        probability = tiled_predict(
            run, visible, ir, tile=self.tile, overlap=min(self.overlap, self.tile // 4 // 4 * 4), scale=self.scale,
            batch_size=self.batch_size,
        )  # fmt: skip
        mean = np.concatenate(weights).mean(axis=0)
        return ModelOutput(
            probability=probability,
            modal_weights={m: round(float(w), 4) for m, w in zip(self.modalities, mean, strict=True)},
        )


def sigmoid(logits: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """float32 ``1 / (1 + exp(offset - logits))`` in a new array, as ``(tanh((x - offset) / 2) + 1) / 2``.

    tanh never overflows (a confident background saturates to exactly 0) and is vectorised by numpy:
    5x faster than ``scipy.special.expit`` on a tile batch, within 1e-6 of it.
    """
    x = np.subtract(logits, offset, dtype=np.float32)
    x *= 0.5
    np.tanh(x, out=x)
    x += 1.0
    x *= 0.5
    return np.asarray(x)


DEFAULT_BACKEND = "onnxruntime"  # the fast path on a CPU; a .pt is exported once and cached (inspector.export_cache)


def load_crack_model(
    path: str | Path,
    *,
    device: str = "cpu",
    backend: str | None = None,
    amp: bool | None = None,
    threads: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int = 64,
    batch_size: int = 2,
    cache_dir: str | Path | None = None,
) -> MLACrackModel:
    """Load a crack model from a ``.pt`` (trained), ``.onnx`` (exported) or ``.engine`` (TensorRT) file.

    A ``.pt`` comes from ``inspector train`` (read with weights_only=True) and runs on ``backend``
    (default onnxruntime): for onnxruntime it is exported once to an ONNX graph cached by the file's
    SHA-256, and the graph must match the torch model on a fixed input within
    :data:`~inspector.export_cache.PARITY_BOUND` or the load is refused. An ``.onnx`` (``inspector
    export``) or ``.engine`` (``deploy/jetson/build-engine.sh``) file says its own backend; a ``.pt``
    with ``backend="tensorrt"`` runs as the ``.engine`` built beside it.

    Args:
        path: The model file.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        backend: ``onnxruntime`` (default), ``torch`` or ``tensorrt``, for a ``.pt``.
        amp: Half precision (fp16 on CUDA, bf16 on a CPU) in the torch backend; None: on for CUDA where
            it keeps parity with fp32, off on a CPU.
        threads: CPU threads of the runtime (default: its own choice, all cores).
        tile: Longest tile side in visible pixels; a frame no larger is predicted whole.
        overlap: Overlap between tiles.
        batch_size: Tiles per backend call.
        cache_dir: Where exported graphs are cached (default ``~/.cache/inspector/onnx``).

    Raises:
        ModelError: A missing or foreign file, a failed export, or a graph that breaks parity.

    """
    from inspector.export_cache import cached_export

    path = Path(path)
    backend = {".onnx": "onnxruntime", ".engine": "tensorrt"}.get(path.suffix, backend or DEFAULT_BACKEND)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist: train one with `inspector train` or use a built-in name")
    if backend == "tensorrt" and path.suffix == ".pt" and path.with_suffix(".engine").is_file():
        path = path.with_suffix(".engine")  # a prebuilt engine (Jetson); else onnxruntime's TensorRT provider
    if threads:
        torch.set_num_threads(threads)
    sha = file_sha256(path)
    try:
        model = mla.load_model(path, map_location="cpu") if path.suffix == ".pt" else None
        if model is not None and "segmentation" not in model.heads:
            raise ModelError(f"{path} has no segmentation head, so it is not a crack model")
        if backend == "torch" and model is not None:
            runner, scale = _torch_runner(model, path, device, amp), _ir_scale(model)
            metadata = mla.load_metadata(path)
        else:
            graph = cached_export(path, cache_dir, sha256=sha) if path.suffix == ".pt" else path
            runner, scale, metadata = _graph_runner(graph, backend, device, threads, half=amp is not False)
            if model is not None:
                metadata = mla.load_metadata(path) | {
                    "onnx": str(graph),
                    "parity_max_abs_diff": _check_parity(model, runner, graph, path),
                }
    except ModelError:
        raise
    except (mla.MLAError, InspectorError) as exc:
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


def _ir_scale(model: mla.MLAModel) -> int:
    return int(model.config.encoders["infrared"].scale or 4) if "infrared" in model.modalities else 4


def _torch_runner(model: mla.MLAModel, path: Path, device: str, amp: bool | None) -> Backend:
    """The torch backend; ``amp=None`` turns half precision on for CUDA where it keeps parity with fp32."""
    from inspector.export_cache import PARITY_BOUND, load_parity

    half = amp if amp is not None else device.startswith("cuda")
    runner = create_backend("torch", model=model, device=device, amp=half)
    if half and amp is None and load_parity(model, runner, scale=_ir_scale(model)) > PARITY_BOUND["fp16"]:
        logger.warning("%s breaks parity in half precision on %s: running it in fp32", path, device)
        runner = create_backend("torch", model=model, device=device, amp=False)
    return runner


def _graph_runner(
    graph: Path, backend: str, device: str, threads: int | None, *, half: bool = True
) -> tuple[Backend, int, dict[str, Any]]:
    """An exported graph on onnxruntime or TensorRT, its IR scale and its sidecar.

    ``tensorrt`` with an ``.onnx`` graph runs on onnxruntime's TensorRT provider (fp16 unless ``half``
    is False); with an ``.engine`` file on TensorRT itself.
    """
    side = sidecar_path(graph)
    if not side.is_file():
        raise ModelError(f"{side} is missing: export with `inspector export`, which writes it beside the graph")
    metadata = json.loads(side.read_text())
    scales = {str(k): int(v) for k, v in metadata["scales"].items()}
    extra: dict[str, Any] = {"device": device, "threads": threads} if backend == "onnxruntime" else {}
    if backend == "tensorrt" and graph.suffix == ".onnx":
        backend, extra = "onnxruntime", {"device": device, "threads": threads, "tensorrt": True, "fp16": half}
    runner = create_backend(backend, path=graph, modalities=metadata["modalities"], scales=scales, **extra)
    return runner, scales.get("infrared", 4), metadata


def _check_parity(model: mla.MLAModel, runner: Backend, graph: Path, path: Path) -> float:
    """Max |Δp| of the graph against the torch model it came from; a gap over the bound refuses the graph."""
    from inspector.export_cache import PARITY_BOUND, load_parity

    gap = load_parity(model, runner, scale=_ir_scale(model))
    bound = PARITY_BOUND["fp16" if "fp16" in runner.description else "fp32"]
    if gap > bound:
        raise ModelError(
            f"{graph} on {runner.description} disagrees with {path} by {gap:.2e} in crack probability on the "
            f"parity input (bound {bound:.0e}): delete the cached graph to re-export it, or run with "
            "inference.backend=torch"
        )
    return gap
