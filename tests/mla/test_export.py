"""ONNX export with dynamic shapes, its parity with torch, and the runtime backends behind one interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mla
from mla.export import check_parity, export_onnx, graph_names
from mla.runtime import create_backend, list_backends
from tests.mla.tiny import tiny_crack_model

pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")

pytestmark = pytest.mark.usefixtures("one_thread")


def crack_model(fusion: str = "hffn") -> mla.MLAModel:
    return tiny_crack_model(fusion, width=8)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[mla.MLAModel, Path]:
    model = crack_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "crack.onnx", side=64)
    return model, path


def test_graph_names() -> None:
    assert graph_names(crack_model()) == (["visible", "infrared", "presence"], ["segmentation", "modal_weights"])


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (3, 96, 160)])
def test_parity_at_other_batch_and_sizes_than_traced(exported: tuple[mla.MLAModel, Path], batch: int,
                                                     height: int, width: int) -> None:  # fmt: skip
    model, path = exported
    inputs = {"visible": torch.rand(batch, 1, height, width), "infrared": torch.rand(batch, 1, height // 4, width // 4)}
    report = check_parity(model, path, inputs)
    assert report.worst < 1e-4, report


def test_parity_with_the_ir_image_missing(exported: tuple[mla.MLAModel, Path]) -> None:
    model, path = exported
    report = check_parity(model, path, {"visible": torch.rand(2, 1, 64, 64), "infrared": None})
    assert report.worst < 1e-4, report


def test_backends_agree_and_report_modal_weights(exported: tuple[mla.MLAModel, Path]) -> None:
    model, path = exported
    rng = np.random.default_rng(0)
    inputs = {
        "visible": rng.random((2, 1, 64, 64), dtype=np.float32),
        "infrared": rng.random((2, 1, 16, 16), dtype=np.float32),
    }
    by_torch = create_backend("torch", model=model).run(inputs)
    by_ort = create_backend("onnxruntime", path=path, modalities=("visible", "infrared"),
                            scales={"visible": 1, "infrared": 4}).run(inputs)  # fmt: skip
    np.testing.assert_allclose(by_ort["segmentation"], by_torch["segmentation"], atol=1e-4)
    np.testing.assert_allclose(by_ort["modal_weights"].sum(axis=1), 1.0, atol=1e-6)
    missing = create_backend("onnxruntime", path=path, modalities=("visible", "infrared"),
                             scales={"visible": 1, "infrared": 4}).run(inputs | {"infrared": None})  # fmt: skip
    np.testing.assert_allclose(missing["modal_weights"], [[1.0, 0.0], [1.0, 0.0]], atol=1e-6)
    torch_missing = create_backend("torch", model=model).run(inputs | {"infrared": None})
    np.testing.assert_allclose(missing["segmentation"], torch_missing["segmentation"], atol=1e-4)


def test_presence_input_equals_leaving_the_modality_out() -> None:
    model = crack_model("dma")
    visible, infrared = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        left_out = model(visible=visible)
        masked = model(visible=visible, infrared=infrared, presence=torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        both = model(visible=visible, infrared=infrared)
    torch.testing.assert_close(masked.outputs["segmentation"][0], left_out.outputs["segmentation"][0])
    torch.testing.assert_close(masked.outputs["segmentation"][1], both.outputs["segmentation"][1])
    with pytest.raises(mla.MLAInputError, match="presence"):
        model(visible=visible, presence=torch.ones(2, 3))


def test_pruned_model_exports(tmp_path: Path) -> None:
    from mla.prune import prune

    model = crack_model()
    example = {"visible": torch.rand(1, 1, 64, 64), "infrared": torch.rand(1, 1, 16, 16)}
    prune(model, example, ratio=0.5, criterion="l1", round_to=None)
    path = export_onnx(model, tmp_path / "pruned.onnx", side=64)
    assert (
        check_parity(model, path, {"visible": torch.rand(2, 1, 96, 64), "infrared": torch.rand(2, 1, 24, 16)}).worst
        < 1e-4
    )


def test_space_to_depth_is_folded_into_the_stem_on_export_only(tmp_path: Path) -> None:
    import onnx

    config = mla.crack_config(
        encoders={
            "visible": mla.EncoderSpec("unshuffle_pyramid", in_channels=1, width=8, options={"depths": [1, 1, 1]}),
            "infrared": mla.EncoderSpec("ir_pyramid", in_channels=1, width=8, scale=4, options={"depths": [1, 1, 1]}),
        },
        fusion_type="concat", width=8, head_options={"segmentation": {"decoder": "shuffle", "act": "relu"}},
    )  # fmt: skip
    model = mla.MLAModel(config).eval()
    path = export_onnx(model, tmp_path / "unshuffle.onnx", side=64)
    nodes = onnx.load(str(path)).graph.node
    perms = [len(a.ints) for n in nodes if n.op_type == "Transpose" for a in n.attribute if a.name == "perm"]
    assert max(perms, default=0) <= 2 and "SpaceToDepth" not in {n.op_type for n in nodes}  # no image rearranged
    assert isinstance(model.encoder("visible").unshuffle, torch.nn.PixelUnshuffle)  # the model keeps its form
    inputs = {"visible": torch.rand(2, 1, 96, 64), "infrared": torch.rand(2, 1, 24, 16)}
    assert check_parity(model, path, inputs).worst < 1e-4


def test_backend_errors_are_clear(tmp_path: Path) -> None:
    assert {"torch", "onnxruntime", "tensorrt"} <= set(list_backends())
    with pytest.raises(mla.MLAConfigError, match="onnxruntime, tensorrt, torch"):
        create_backend("openvino")
    with pytest.raises(mla.MLAConfigError, match="cannot load ONNX graph"):
        create_backend("onnxruntime", path=tmp_path / "none.onnx", modalities=("visible",))
    with pytest.raises(mla.MLAConfigError):
        create_backend("tensorrt", path=tmp_path / "none.engine", modalities=("visible",))  # no TensorRT or no GPU here
    if not torch.cuda.is_available():
        with pytest.raises(mla.MLAConfigError, match="no CUDA"):
            create_backend("torch", model=crack_model(), device="cuda")


def test_export_refuses_what_it_cannot_export(tmp_path: Path) -> None:
    text_model = mla.MLAModel(mla.ModalConfig(text_dim=32, image_dim=32, fusion_type="dma"))
    with pytest.raises(mla.MLAConfigError, match="not an image"):
        export_onnx(text_model, tmp_path / "x.onnx")
    with pytest.raises(mla.MLAConfigError, match="opset"):
        export_onnx(crack_model(), tmp_path / "x.onnx", opset=13)


def test_int8_quantisation_runs_and_stays_close(exported: tuple[mla.MLAModel, Path], tmp_path: Path) -> None:
    from mla.export import quantize_int8

    model, path = exported
    rng = np.random.default_rng(1)
    feeds = [
        {
            "visible": rng.random((1, 1, 64, 64), dtype=np.float32),
            "infrared": rng.random((1, 1, 16, 16), dtype=np.float32),
            "presence": np.ones((1, 2), dtype=np.float32),
        }
        for _ in range(4)
    ]
    int8 = quantize_int8(path, tmp_path / "crack.int8.onnx", feeds)
    backend = create_backend("onnxruntime", path=int8, modalities=("visible", "infrared"), scales={"infrared": 4})
    inputs = {"visible": feeds[0]["visible"], "infrared": feeds[0]["infrared"]}
    got = backend.run(inputs)["segmentation"]
    want = create_backend("torch", model=model).run(inputs)["segmentation"]
    assert got.shape == want.shape and np.abs(got - want).max() < 0.5 * (np.abs(want).max() + 1e-6)
    with pytest.raises(mla.MLAConfigError, match="at least one"):
        quantize_int8(path, tmp_path / "x.onnx", [])
