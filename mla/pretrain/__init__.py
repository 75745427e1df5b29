"""Progressive pre-training of an :class:`~mla.model.MLAModel`'s encoders, and its domain-adaptive variant.

Three stages; the first two train only ``model.encoder(name)`` modules (plus throw-away heads), so the
third starts from the same model object:

1. **reconstruction**: hide random patches (one mask on the reference grid, the same places in every
   camera) and reconstruct the hidden pixels from each encoder's pyramid; masked tokens for text.
2. **alignment**: symmetric InfoNCE with a learnable temperature between co-located cells of two
   image modalities (visible ↔ infrared at the fine level), and between pooled image and text vectors.
3. **fine-tuning**: the normal supervised :class:`mla.train.Trainer` run on the model.

::

    from mla.pretrain import build_stage, pretrain, continue_pretraining
    from mla.train import TrainConfig, Trainer

    module, loss_fn = build_stage(model, "reconstruction", ratio=0.6)    # any stage by hand
    Trainer(module, loss_fn, TrainConfig(total_steps=1_000), "runs/rec").fit(batches)

    pretrain(model, batches, "runs/ppt", train=TrainConfig(total_steps=1_000))      # stages 1-2
    Trainer(model, supervised_loss, cfg, "runs/fine").fit(labelled)                 # stage 3

    continue_pretraining(model, in_domain, "runs/dapt", init="runs/ppt/alignment", train=cfg)  # DAPT

Batches are ``{"visible": (B, 1, T, T), "infrared": (B, 1, T/4, T/4)}`` or ``{"image": (B, 3, H, W),
"text": list[str]}`` (mappings or attribute objects; other keys such as ``mask`` are ignored).
"""

from mla.pretrain.alignment import (
    AlignmentStage,
    LearnableTemperature,
    ProjectionHead,
    alignment_loss,
    default_pairs,
    gather_positions,
    info_nce,
    sample_positions,
)
from mla.pretrain.base import Batch, LossFn, PretrainStage, stage_loss
from mla.pretrain.masking import PatchMask, fill_masked, mask_tokens, patchify, random_patch_mask
from mla.pretrain.reconstruction import PixelDecoder, ReconstructionStage, masked_patch_loss, reconstruction_loss
from mla.pretrain.stages import (
    STAGES,
    applicable_stages,
    build_stage,
    continue_pretraining,
    encoder_state_dict,
    load_pretrained,
    pretrain,
)

__all__ = [
    "STAGES",
    "AlignmentStage",
    "Batch",
    "LearnableTemperature",
    "LossFn",
    "PatchMask",
    "PixelDecoder",
    "PretrainStage",
    "ProjectionHead",
    "ReconstructionStage",
    "alignment_loss",
    "applicable_stages",
    "build_stage",
    "continue_pretraining",
    "default_pairs",
    "encoder_state_dict",
    "fill_masked",
    "gather_positions",
    "info_nce",
    "load_pretrained",
    "mask_tokens",
    "masked_patch_loss",
    "patchify",
    "pretrain",
    "random_patch_mask",
    "reconstruction_loss",
    "sample_positions",
    "stage_loss",
]
