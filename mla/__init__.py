"""MLA, the multi-modal learning architecture: encoders, fusions and heads chosen by name.

Tensors in, tensors out: nothing here talks to Kafka, Redis or HTTP::

    from mla import ModalConfig, MLAModel
    config = ModalConfig(text_dim=512, image_dim=224, fusion_type="dma")   # "dma" | "hffn" | "concat"
    model = MLAModel(config)
    output = model("A red car on the road", torch.randn(1, 3, 224, 224))
    output.outputs["classification"]   # (1, 2) logits
    output.modal_weights               # (1, 2) weights of ("text", "image"), rows sum to 1

See docs/MLA.md for the architecture and the whole API.
"""

from mla.config import DEFAULT_ENCODERS, EncoderSpec, ModalConfig, crack_config
from mla.encoders import Encoder, FeatureSpec, ModalFeatures, create_encoder, list_encoders, register_encoder
from mla.errors import MLACheckpointError, MLAConfigError, MLAError, MLAInputError
from mla.fusion import Fusion, FusionOutput, create_fusion, list_fusions, register_fusion
from mla.heads import Head, HeadInput, create_head, list_heads, register_head
from mla.model import MLAModel, MLAOutput, load_metadata, load_model, save_model
from mla.profile import count_macs, count_parameters, measure_latency
from mla.registry import Registry
from mla.text import ByteTokenizer

__all__ = [
    "DEFAULT_ENCODERS",
    "ByteTokenizer",
    "Encoder",
    "EncoderSpec",
    "FeatureSpec",
    "Fusion",
    "FusionOutput",
    "Head",
    "HeadInput",
    "MLACheckpointError",
    "MLAConfigError",
    "MLAError",
    "MLAInputError",
    "MLAModel",
    "MLAOutput",
    "ModalConfig",
    "ModalFeatures",
    "Registry",
    "count_macs",
    "count_parameters",
    "crack_config",
    "create_encoder",
    "create_fusion",
    "create_head",
    "list_encoders",
    "list_fusions",
    "list_heads",
    "load_metadata",
    "load_model",
    "measure_latency",
    "register_encoder",
    "register_fusion",
    "register_head",
    "save_model",
]
