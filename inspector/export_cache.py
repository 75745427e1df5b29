"""The fast path for a ``.pt`` model: exported to ONNX once, cached by the file's SHA-256, checked at load.

``inference.backend: onnxruntime`` (the default) runs a trained ``.pt`` as an ONNX graph without any
manual step::

    graph = cached_export(Path("crack.pt"), cache_dir)   # ~/.cache/inspector/onnx/crack-<sha16>.onnx
    gap = load_parity(torch_model, backend)              # max |p_torch - p_backend| on a fixed input

The cache key is the content of the model file, so a retrained model at the same path gets a new graph
and an old graph is never used for a new model. Two processes exporting the same model at once each
write a private temporary file and rename it into place, so readers never see half a graph.

At every load the graph and the torch model it came from run on the same fixed input (a seeded
256×256 visible tile with a synthetic crack and its 64×64 IR tile); a probability gap above
:data:`PARITY_BOUND` refuses the graph. That catches a corrupt cache file, an exporter bug or a
runtime whose kernels disagree, before a single part is judged on it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from inspector.errors import InspectorError
from mla.export import EXPORT_REVISION

logger = logging.getLogger(__name__)

# Largest |p_torch - p_backend| accepted at load, in probability, per precision. fp32 onnxruntime on a
# CPU agrees with torch to ~1e-6 (kernel order); fp16 rounds activations to 11 significant bits.
PARITY_BOUND = {"fp32": 1e-3, "fp16": 2e-2}
PARITY_SIDE = 256  # visible pixels of the fixed parity input (IR: a quarter of it)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/inspector/onnx``, else ``~/.cache/inspector/onnx``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "inspector" / "onnx"


def file_sha256(path: Path) -> str:
    """SHA-256 of a model file: the cache key, and reported with every result."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(graph: Path) -> Path:
    """``crack.onnx`` → ``crack.onnx.json``: what an exported graph is (modalities, scales, source, rules)."""
    return graph.with_name(graph.name + ".json")


def export_model(model: Path, target: Path, opset: int = 18) -> dict[str, Any]:
    """Export a ``.pt`` crack model to ``target`` (ONNX) and write its sidecar; return the sidecar.

    Raises:
        InspectorError: The file is not a trained model or cannot be exported.

    """
    import mla
    from mla.export import export_onnx

    if model.suffix != ".pt" or not model.is_file():
        raise InspectorError(f"--model {model}: give a trained .pt file (from `inspector train` or inspector/models/)")
    try:
        net = mla.load_model(model, map_location="cpu")
        metadata = mla.load_metadata(model)
        export_onnx(net, target, opset=opset)
    except mla.MLAError as exc:
        raise InspectorError(str(exc)) from exc
    sidecar: dict[str, Any] = {
        "name": metadata.get("name", model.stem),
        "version": metadata.get("version", "0"),
        "variant": metadata.get("variant"),
        "arch": metadata.get("arch", "pyramid"),
        "modalities": list(net.modalities),
        "scales": {m: int(net.encoder(m).scale) for m in net.modalities},
        "opset": opset,
        "source": {"file": model.name, "sha256": file_sha256(model)},
        "parameters": mla.count_parameters(net),
        "macs_per_512_tile": metadata.get("macs_per_512_tile"),
        "width": metadata.get("width", 1.0),
        "pruning": metadata.get("pruning"),
        "threshold": metadata.get("threshold", 0.5),
        "verdict_rules": metadata.get("verdict_rules"),
    }
    sidecar_path(target).write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def cached_export(model: Path, cache_dir: str | Path | None = None, *, sha256: str | None = None) -> Path:
    """The ONNX graph of ``model`` (a ``.pt``) from the cache, exporting it first when it is not there.

    Args:
        model: A trained ``.pt`` crack model.
        cache_dir: Where graphs are kept (default :func:`default_cache_dir`).
        sha256: The file's SHA-256 when the caller already has it.

    Raises:
        InspectorError: The cache folder cannot be written, or the model cannot be exported.

    """
    sha = sha256 or file_sha256(model)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    graph = folder / f"{model.stem}-{sha[:16]}-x{EXPORT_REVISION}.onnx"  # a new exporter writes a new graph
    if graph.is_file() and sidecar_path(graph).is_file():
        source = json.loads(sidecar_path(graph).read_text()).get("source", {})
        if source.get("sha256") == sha:
            return graph
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(prefix=f".{graph.stem}-", suffix=".onnx", dir=folder)
        os.close(handle)
    except OSError as exc:
        raise InspectorError(
            f"cannot write the ONNX cache {folder} ({exc.strerror}): set inference.cache_dir "
            "(INSPECTOR__INFERENCE__CACHE_DIR) to a writable folder, or export once with `inspector export`"
        ) from None
    temporary = Path(scratch)
    try:
        logger.info("exporting %s to ONNX once (cached by SHA-256 in %s)", model, folder)
        sidecar = export_model(model, temporary)
        sidecar_path(temporary).replace(sidecar_path(graph))
        temporary.replace(graph)  # the graph last: a graph in place always has its sidecar
    finally:
        temporary.unlink(missing_ok=True)
        sidecar_path(temporary).unlink(missing_ok=True)
    logger.info("cached %s (%s, source sha256 %s)", graph, sidecar["name"], sha[:12])
    return graph


def parity_input(side: int = PARITY_SIDE, scale: int = 4) -> dict[str, np.ndarray]:
    """The fixed parity input: a textured grey tile with a dark diagonal crack, and a warm IR trace of it."""
    rng = np.random.default_rng(20261207)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    visible = 0.55 + 0.08 * rng.standard_normal((side, side)).astype(np.float32)
    distance = np.abs(rows - 0.7 * cols - side * 0.15) / np.hypot(1.0, 0.7)
    visible -= 0.35 * np.exp(-0.5 * (distance / 1.5) ** 2)
    ir = 0.2 * rng.standard_normal((side // scale, side // scale)).astype(np.float32)
    ir += np.exp(-0.5 * (distance[::scale, ::scale] / 3.0) ** 2)
    return {
        "visible": np.clip(visible, 0.0, 1.0)[None, None].astype(np.float32),
        "infrared": ir[None, None].astype(np.float32),
    }


def load_parity(model: Any, backend: Any, *, scale: int = 4) -> float:
    """Max |p_torch - p_backend| of the crack probability on :func:`parity_input`.

    Args:
        model: The ``mla.MLAModel`` the graph came from (run in fp32 on the CPU).
        backend: An :class:`mla.runtime.Backend` running its export.
        scale: Visible pixels per IR pixel.

    """
    import torch

    from mla.runtime import TorchBackend

    feed = {m: v for m, v in parity_input(scale=scale).items() if m in backend.modalities}
    # a CPU fp32 copy: the model itself may be the one a CUDA backend runs, and must stay where it is
    reference = TorchBackend(copy.deepcopy(model).to("cpu").float().eval(), device="cpu")
    with torch.no_grad():
        expected = reference.run(feed)["segmentation"]
    got = backend.run(feed)["segmentation"]
    return float(np.abs(_sigmoid(got) - _sigmoid(expected)).max())


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64))), dtype=np.float64)
