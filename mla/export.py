"""ONNX export of an ``mla`` model with dynamic batch, height and width, and a parity check against torch.

::

    path = export_onnx(model, "crack.onnx")                   # opset 18, torch.export (dynamo) path
    report = check_parity(model, "crack.onnx", inputs)        # max |torch - onnxruntime| per output

The graph takes every image-like modality at its own resolution plus a ``presence`` input (B, M) in
modality order: 0 marks a modality as missing for that sample (feed zeros for its image), exactly as
if it had not been given to the torch model — so one graph serves captures with and without IR.
Outputs: each head's tensor (``segmentation`` logits (B, 1, H, W), ``classification`` (B, K)) and
``modal_weights`` (B, M).

Text and tabular modalities are not exported (their tokenisers live outside the graph).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mla.errors import MLAConfigError
from mla.model import MLAModel

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
EXPORT_REVISION = 2  # bumped whenever export_onnx writes a different graph for the same weights (2: folded stems)
EXPORTABLE_HEADS = ("segmentation", "classification")


class ExportGraph(nn.Module):
    """``MLAModel`` with positional image inputs and tensor outputs, as the exported graph sees it."""

    def __init__(self, model: MLAModel) -> None:
        super().__init__()
        self.model = model
        self.modalities = tuple(model.modalities)
        self.heads = tuple(h for h in model.heads if h in EXPORTABLE_HEADS)

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        """(modality images..., presence (B, M)) → (head outputs..., modal_weights)."""
        *images, presence = args
        out = self.model(**dict(zip(self.modalities, images, strict=True)), presence=presence)
        return (*(out.outputs[h] for h in self.heads), out.modal_weights)


def graph_names(model: MLAModel) -> tuple[list[str], list[str]]:
    """Input and output names of the exported graph."""
    heads = [h for h in model.heads if h in EXPORTABLE_HEADS]
    return [*model.modalities, "presence"], [*heads, "modal_weights"]


def _check_exportable(model: MLAModel) -> None:
    for name in model.modalities:
        if not model.encoder(name).size_multiple:
            msg = f"modality {name!r} is not an image; only image-like modalities export to ONNX"
            raise MLAConfigError(msg)
    if not any(h in EXPORTABLE_HEADS for h in model.heads):
        msg = f"no exportable head among {', '.join(model.heads)} (exportable: {', '.join(EXPORTABLE_HEADS)})"
        raise MLAConfigError(msg)


def example_arguments(model: MLAModel, batch: int = 2, side: int = 256) -> tuple[Tensor, ...]:
    """Random example inputs for tracing: every modality at ``side`` reference pixels, all present."""
    images = [torch.rand(batch, model.encoder(m).in_channels, side // model.encoder(m).scale,
                         side // model.encoder(m).scale) for m in model.modalities]  # fmt: skip
    return (*images, torch.ones(batch, len(model.modalities)))


def export_onnx(model: MLAModel, path: str | Path, *, opset: int = DEFAULT_OPSET, side: int = 256) -> Path:
    """Write ``model`` as an ONNX graph with dynamic batch, height and width.

    Args:
        model: Image-only ``mla`` model (exported in eval mode, on the CPU).
        path: The ``.onnx`` file to write.
        opset: ONNX opset (≥ 17).
        side: Reference side of the tracing example (any multiple of the coarsest stride works later).

    Raises:
        MLAConfigError: A non-image modality, no exportable head, or an opset below 17.

    """
    from torch.export import Dim

    if opset < 17:
        msg = f"opset {opset} is too old: use 17 or later"
        raise MLAConfigError(msg)
    _check_exportable(model)
    model = model.eval().to("cpu")
    graph = ExportGraph(folded(model)).eval()
    stride = max(model.encoder(m).size_multiple * model.encoder(m).scale for m in model.modalities)
    batch = Dim("batch", min=1, max=1024)
    rows, cols = Dim("rows", min=1, max=4096), Dim("cols", min=1, max=4096)
    shapes: list[dict[int, Any]] = []
    for name in model.modalities:
        per = stride // model.encoder(name).scale  # input pixels per row unit
        shapes.append({0: batch, 2: per * rows, 3: per * cols})
    shapes.append({0: batch})
    inputs, outputs = graph_names(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            graph, example_arguments(model, 2, side), str(path), input_names=inputs, output_names=outputs,
            dynamic_shapes=(tuple(shapes),), opset_version=opset, dynamo=True, verbose=False, external_data=False,
        )  # fmt: skip
    logger.info("exported %s to %s (opset %d, inputs %s)", model.config.fusion_type, path, opset, inputs)
    return path


def folded(model: MLAModel) -> MLAModel:
    """A copy of ``model`` with every encoder's space-to-depth folded into its stem (same outputs, fewer operators).

    ``model`` itself is left as it is (pruning and training read the unfolded form).
    """
    if not any(hasattr(model.encoder(m), "fold_stem") for m in model.modalities):
        return model
    model = copy.deepcopy(model)
    for name in model.modalities:
        fold = getattr(model.encoder(name), "fold_stem", None)
        if fold is not None:
            fold()
    return model


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's own chatter (pass-by-pass INFO, optional-op WARNINGs) out of the caller's log."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute differences between torch and onnxruntime on the same inputs."""

    max_abs_diff: dict[str, float]

    @property
    def worst(self) -> float:
        """The largest difference over all outputs."""
        return max(self.max_abs_diff.values())


def check_parity(model: MLAModel, path: str | Path, inputs: Mapping[str, Tensor | None]) -> ParityReport:
    """Run ``model`` (torch, fp32, CPU) and the ONNX file (onnxruntime, CPU) on ``inputs`` and compare.

    A missing modality (None) is left out of the torch call and fed to the graph as zeros with presence 0
    (by :class:`mla.runtime.OnnxRuntimeBackend`).
    """
    from mla.runtime import OnnxRuntimeBackend

    model = model.eval().to("cpu")
    given = {k: v for k, v in inputs.items() if v is not None}
    with torch.no_grad():
        out = model(**given)
    reference = {h: out.outputs[h] for h in graph_names(model)[1] if h in out.outputs}
    reference["modal_weights"] = out.modal_weights
    scales = {m: model.encoder(m).scale for m in model.modalities}
    backend = OnnxRuntimeBackend(path, model.modalities, scales)
    got = backend.run({m: (v.float().numpy() if v is not None else None) for m, v in inputs.items()})
    return ParityReport(max_abs_diff={n: float(np.abs(got[n] - r.numpy()).max()) for n, r in reference.items()})


def quantize_int8(path: str | Path, out: str | Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    """Static INT8 quantisation of an exported graph with onnxruntime (QDQ, per-channel weights).

    Args:
        path: The float graph from :func:`export_onnx`.
        out: The quantised graph to write.
        calibration: Representative feeds by input name (a few dozen held-out-free tiles), for the
            activation ranges.

    A quantised graph is only worth keeping when its accuracy holds: compare it on held-out data
    (``inspector bench model``) before using it.

    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        msg = "INT8 calibration needs at least one feed"
        raise MLAConfigError(msg)

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out = Path(out)
    prepared = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)  # symbolic sizes: ONNX shape inference only
    quantize_static(
        str(prepared), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    prepared.unlink(missing_ok=True)
    logger.info("quantised %s to INT8: %s", path, out)
    return out
