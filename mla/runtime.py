"""Runtime backends: one interface over torch, onnxruntime and TensorRT, chosen by name.

::

    backend = create_backend("onnxruntime", path="crack.onnx", modalities=("visible", "infrared"))
    out = backend.run({"visible": vis, "infrared": None})   # numpy in, numpy out
    out["segmentation"]    # (B, 1, H, W) logits
    out["modal_weights"]   # (B, M)

Every backend takes float32 numpy arrays by modality name (None for a missing one: an IR camera down)
and returns the graph's outputs by name. ``torch`` runs an :class:`~mla.MLAModel` on the CPU or a CUDA
device, optionally in mixed precision; ``onnxruntime`` runs an exported graph (CUDA provider when
present, else CPU); ``tensorrt`` runs a serialised engine built from the ONNX file and is imported only
when chosen (it ships with JetPack on Jetson; it is not installed on the CI machine and is untested here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from mla.errors import MLAConfigError, MLAInputError
from mla.model import MLAModel, load_model
from mla.registry import Registry

logger = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray | None]
B = TypeVar("B", bound=Callable[..., Any])


class Backend:
    """Base of the registered backends.

    Attributes:
        name: The registry name.
        modalities: Input names in graph order.
        description: Where it runs (device, provider, precision), for logs and results.

    """

    name = "backend"
    modalities: tuple[str, ...] = ()
    description = ""

    def run(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of float32 inputs by modality (None: missing)."""
        raise NotImplementedError

    def _graph_feed(self, inputs: Arrays, scales: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Every modality as an array (zeros where missing) and the (B, M) presence mask."""
        given = {k: v for k, v in inputs.items() if v is not None}
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            msg = f"unknown modality {', '.join(unknown)}: this {self.name} backend takes {', '.join(self.modalities)}"
            raise MLAInputError(msg)
        if not given:
            msg = f"all modalities are missing: give at least one of {', '.join(self.modalities)}"
            raise MLAInputError(msg)
        anchor_name, anchor = next(iter(given.items()))
        batch = anchor.shape[0]
        height, width = anchor.shape[-2] * scales[anchor_name], anchor.shape[-1] * scales[anchor_name]
        feed: dict[str, np.ndarray] = {}
        presence = np.zeros((batch, len(self.modalities)), dtype=np.float32)
        for i, name in enumerate(self.modalities):
            if name in given:
                feed[name] = np.ascontiguousarray(given[name], dtype=np.float32)
                presence[:, i] = 1.0
            else:
                shape = (batch, anchor.shape[1], height // scales[name], width // scales[name])
                feed[name] = np.zeros(shape, dtype=np.float32)
        feed["presence"] = presence
        return feed


BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(name: str) -> Callable[[B], B]:
    """Register a backend class under ``name`` (a decorator)."""
    return BACKENDS.register(name)


def create_backend(name: str, **kwargs: Any) -> Backend:
    """Build a registered backend; an unknown name lists the valid ones."""
    return BACKENDS.create(name, **kwargs)


def list_backends() -> list[str]:
    """Names accepted by :func:`create_backend`, sorted."""
    return BACKENDS.names()


@register_backend("torch")
class TorchBackend(Backend):
    """An :class:`MLAModel` in eval mode on ``cpu``, ``cuda`` or ``cuda:N``; ``amp``: bf16 on CPU, fp16 on CUDA."""

    name = "torch"

    def __init__(
        self, model: MLAModel | None = None, path: str | Path | None = None, device: str = "cpu", amp: bool = False
    ) -> None:
        if model is None and path is None:
            msg = "the torch backend needs a model or a checkpoint path"
            raise MLAConfigError(msg)
        if device.startswith("cuda") and not torch.cuda.is_available():
            msg = f"device {device!r} asked for, but this torch build sees no CUDA device: use device='cpu'"
            raise MLAConfigError(msg)
        self.device = torch.device(device)
        self.model = (model if model is not None else load_model(str(path))).eval().to(self.device)
        self.modalities = tuple(self.model.modalities)
        self.amp = amp
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.description = f"torch {self.device}" + (f" amp {str(self.dtype).split('.')[-1]}" if amp else " fp32")

    def run(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Outputs of the model's heads and its modal weights."""
        named = {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in inputs.items() if v is not None
        }
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            out = self.model(**named)
        result = {k: v.float().cpu().numpy() for k, v in out.outputs.items()}
        result["modal_weights"] = out.modal_weights.float().cpu().numpy()
        return result


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """An exported graph (:func:`mla.export.export_onnx`) in onnxruntime.

    Args:
        path: The ``.onnx`` file.
        modalities: Its image inputs in order (the graph's input names are checked against them).
        scales: Reference pixels per input pixel of each modality (1 visible, 4 infrared).
        device: ``cpu`` or ``cuda`` (the CUDA provider must be installed: onnxruntime-gpu).
        threads: Intra-op threads (default: onnxruntime's choice).
        tensorrt: Run on onnxruntime's TensorRT execution provider (CUDA only; TensorRT libraries must be
            installed), with the CUDA provider for whatever TensorRT does not take. Engines are cached
            beside the graph (``<graph>.trt/``), so only the first load builds them.
        fp16: Let TensorRT use fp16 kernels.

    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        modalities: Sequence[str],
        scales: Mapping[str, int] | None = None,
        device: str = "cpu",
        threads: int | None = None,
        tensorrt: bool = False,
        fp16: bool = False,
    ) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers: list[Any]
        if tensorrt:
            if not device.startswith("cuda") or "TensorrtExecutionProvider" not in available:
                have = ", ".join(available)
                msg = f"TensorRT through onnxruntime needs device cuda and onnxruntime-gpu with TensorRT (have: {have})"
                raise MLAConfigError(msg)
            cache = str(path) + ".trt"
            trt_options = {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}
            providers = [("TensorrtExecutionProvider", trt_options), "CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                have = ", ".join(available)
                msg = f"device {device!r}: onnxruntime has no CUDA provider here ({have}); install onnxruntime-gpu"
                raise MLAConfigError(msg)
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            msg = f"cannot load ONNX graph {path}: {exc}"
            raise MLAConfigError(msg) from exc
        self.modalities = tuple(modalities)
        names = [i.name for i in self.session.get_inputs()]
        if names != [*self.modalities, "presence"]:
            msg = f"{path} takes inputs {names}, expected {[*self.modalities, 'presence']}: export it with mla.export"
            raise MLAConfigError(msg)
        self.scales = {m: int((scales or {}).get(m, 1)) for m in self.modalities}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.description = f"onnxruntime {self.session.get_providers()[0]}" + (" fp16" if tensorrt and fp16 else "")

    def run(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """The graph's outputs by name."""
        values = self.session.run(self.outputs, self._graph_feed(inputs, self.scales))
        return {name: np.asarray(v) for name, v in zip(self.outputs, values, strict=True)}


@register_backend("tensorrt")
class TensorRTBackend(Backend):  # pragma: no cover - needs TensorRT and a CUDA device; untested here
    """A serialised TensorRT engine built from the ONNX graph (``deploy/jetson/build-engine.sh``).

    Untested on the CI machine (no GPU, no TensorRT): it follows the TensorRT 10 tensor API.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, modalities: Sequence[str], scales: Mapping[str, int] | None = None) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            msg = "the tensorrt backend needs TensorRT (JetPack on Jetson, or pip install tensorrt on a GPU server)"
            raise MLAConfigError(msg) from exc
        if not torch.cuda.is_available():
            msg = "the tensorrt backend needs a CUDA device"
            raise MLAConfigError(msg)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            msg = f"cannot deserialise TensorRT engine {path} (built for another TensorRT version or GPU?)"
            raise MLAConfigError(msg)
        self.context = self.engine.create_execution_context()
        self.modalities = tuple(modalities)
        self.scales = {m: int((scales or {}).get(m, 1)) for m in self.modalities}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.description = "tensorrt cuda"

    def run(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """The engine's outputs by name (inputs and outputs staged through torch CUDA tensors)."""
        feed = {k: torch.from_numpy(v).cuda() for k, v in self._graph_feed(inputs, self.scales).items()}
        for name, tensor in feed.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in results.items()}
