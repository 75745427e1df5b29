"""The report model: image + patient information fused by DMA, lesion maps, and a text decoder.

::

    image    (B, 4, S, S)  soft-tissue MIP | soft-tissue MinIP | lung MIP | calcium MIP  ──conv_pyramid──┐
    patient  (B, 12)       age, sex, indication                                          ──tabular──────┤ dma
                                                                                                        ▼
    segmentation head  (B, 10, S, S): 4 lesion-type maps + 6 organ maps  ──measure──▶ findings (mm, HU)
                                                                       ──organ coverage──▶ domain gate
    sequence head      [BOS] findings prompt [SEP] candidate ──causal decoder, cross-attending──▶ phrasing

The projections (maximum and minimum intensity over the slices, S = 192) let one 2-D pass see every
lesion of the slab; sizes and HU are then measured on the original slices (:mod:`.measure`). The
calcium window (200-1000 HU) shows the 4-8 mm calcifications, which the soft-tissue window clips to the
same white as the vertebra, as isolated bright dots on black (version-1 models had only the first 3).

The narrative is written from the measured findings (:mod:`.narrative`), so it cannot contradict
them: the decoder only chooses the phrasing, by scoring each templated candidate given the findings
prompt (:func:`choose_style`, one batched teacher-forced pass). The input gate (:mod:`.domain`) checks
the study against the validated domain; one outside it is still measured and its report says so.

    model, tokenizer = load_report_model(path)
    report = draft_report(model, tokenizer, volume, profile=load_profile(path))   # StructuredReport
    report.to_dict()                                          # findings, impression, narrative, domain, …
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import torch
from torch import Tensor

import mla
from inspector.medical.dicom import PatientInfo, Volume, normalise_mr, window
from inspector.medical.domain import DomainProfile, domain_verdict, profile_path, sample_of
from inspector.medical.errors import ReportModelError
from inspector.medical.measure import findings_from_maps
from inspector.medical.narrative import ReportContext, narratives
from inspector.medical.vocab import (
    INDICATIONS,
    LOCATIONS,
    TYPES,
    Finding,
    ReportTokenizer,
    findings_prompt,
    impression_of,
)
from mla.heads.base import HeadInput
from mla.heads.sequence import SequenceHead
from mla.text import PAD

logger = logging.getLogger(__name__)

INPUT_SIZE = 192
IN_CHANNELS = 4  # models of version 1 had 3 (no calcium window); the model's own count is used
FEATURES = 2 + 3 + len(INDICATIONS) + 1
CLASSES = len(TYPES) + len(LOCATIONS)
MAX_LEN = 320
FORMAT = "inspector.medical.report/1"


# -- inputs -------------------------------------------------------------------------------------------


def _square(image: np.ndarray, size: int) -> np.ndarray:
    interpolation = cv2.INTER_AREA if min(image.shape) > size else cv2.INTER_LINEAR
    return cv2.resize(image.astype(np.float32), (size, size), interpolation=interpolation)


def image_channels(pixels: np.ndarray, is_ct: bool, size: int = INPUT_SIZE, channels: int = IN_CHANNELS) -> np.ndarray:
    """(Z, H, W) volume → (channels, size, size) float32 model input in [0, 1].

    CT: soft-tissue window of the maximum and of the minimum intensity projection, lung window of the
    maximum, and (``channels`` = 4) calcium window (200-1000 HU) of the maximum. Other modalities: the
    same projections of the percentile-normalised volume, its mean, and zeros for the calcium plane
    (there is no calcium density without calibrated HU).

    Args:
        pixels: The volume (HU for CT).
        is_ct: Whether the values are Hounsfield units.
        size: Side of the square model input.
        channels: 3 (version-1 models) or 4.

    """
    if channels not in (3, 4):
        raise ValueError(f"a report model takes 3 or 4 image channels, not {channels}")
    if is_ct:
        mip, minip = pixels.max(axis=0), pixels.min(axis=0)
        planes = [window(mip, "soft_tissue"), window(minip, "soft_tissue"), window(mip, "lung")]
        if channels == 4:
            planes.append(window(mip, "calcium"))
    else:
        norm = normalise_mr(pixels)
        planes = [norm.max(axis=0), norm.min(axis=0), norm.mean(axis=0)]
        if channels == 4:
            planes.append(np.zeros_like(planes[0]))
    return np.stack([_square(p, size) for p in planes]).astype(np.float32)


def input_channels(model: mla.MLAModel) -> int:
    """How many image channels a report model takes (3 for version-1 models, 4 since the calcium window)."""
    return int(model.config.encoders["image"].in_channels or 3)


def patient_features(patient: PatientInfo) -> np.ndarray:
    """(12,) float32: age/100, age known, sex M/F/other-or-unknown, indication one-hot (+ unknown)."""
    x = np.zeros(FEATURES, np.float32)
    if patient.age_years is not None:
        x[0], x[1] = min(patient.age_years, 110.0) / 100.0, 1.0
    x[2 + {"M": 0, "F": 1}.get(patient.sex or "", 2)] = 1.0
    indication = (patient.indication or "").strip().lower()
    x[5 + (INDICATIONS.index(indication) if indication in INDICATIONS else len(INDICATIONS))] = 1.0
    return x


def model_config(
    vocab_size: int, width: int = 64, image_width: int = 16, decoder_depth: int = 2, in_channels: int = IN_CHANNELS
) -> mla.ModalConfig:
    """The ``mla`` configuration of a report model."""
    return mla.ModalConfig(
        modalities=("image", "patient"),
        encoders={
            "image": mla.EncoderSpec("conv_pyramid", in_channels=in_channels, width=image_width),
            "patient": mla.EncoderSpec("tabular", in_channels=FEATURES, width=32),
        },
        fusion_type="dma",
        heads=("segmentation", "sequence"),
        width=width,
        image_dim=INPUT_SIZE,
        head_options={
            "segmentation": {"classes": CLASSES, "prior": 0.05},
            "sequence": {"vocab_size": vocab_size, "max_len": MAX_LEN, "depth": decoder_depth, "heads": 4},
        },
    )


# -- running the model --------------------------------------------------------------------------------


def fuse(model: mla.MLAModel, image: Tensor, patient: Tensor) -> HeadInput:
    """Encode and fuse a batch once; the heads are run from the returned input."""
    features, fused, size = model.fuse(image=image, patient=patient)
    return HeadInput(fused=fused, features=features, image_size=size)


def sequence_head(model: mla.MLAModel) -> SequenceHead:
    """The decoder."""
    return cast(SequenceHead, model.heads["sequence"])


def maps(model: mla.MLAModel, inputs: HeadInput) -> Tensor:
    """(B, 10, S, S) probabilities: 4 lesion types, 6 organs."""
    return torch.sigmoid(model.heads["segmentation"](inputs).float())


@torch.no_grad()
def choose_style(
    model: mla.MLAModel, inputs: HeadInput, tokenizer: ReportTokenizer, prompt: str, candidates: list[str]
) -> tuple[int, list[float]]:
    """The candidate the decoder finds likeliest after ``[BOS] prompt [SEP]``: its index and every mean log-probability.

    One batched teacher-forced pass over the candidates (each cut to the decoder's length); the mean
    over a candidate's own tokens, so a longer phrasing is not penalised for its length.
    """
    head = sequence_head(model)
    rows = [tokenizer.sequence(prompt, text)[0][: head.max_len] for text in candidates]
    starts = [tokenizer.sequence(prompt)[1] for _ in candidates]  # index of SEP: the first target follows it
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    memory, padding = head.memory(inputs)  # (1, S, W), (1, S)
    memory, padding = memory.expand(len(rows), -1, -1), padding.expand(len(rows), -1)
    logits = head.decode(ids[:, :-1].to(memory.device), memory, padding).float()  # (N, T-1, V)
    logp = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:, None].to(memory.device))[..., 0]  # (N, T-1)
    scores = []
    for i, row in enumerate(rows):
        scores.append(float(logp[i, starts[i] : len(row) - 1].mean()))
    return int(np.argmax(scores)), [round(x, 4) for x in scores]


def organ_coverage(prob: np.ndarray) -> float:
    """The share of the model input the organ maps (probability > 0.5) cover: the gate's model-based score."""
    return float((prob[len(TYPES) :].max(axis=0) > 0.5).mean())


@dataclass
class StructuredReport:
    """A drafted report: structured findings, impression, narrative, and how it was made."""

    study_uid: str
    modality: str
    findings: list[Finding]
    impression: str
    narrative: str
    geometry: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    domain: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without patient identifiers."""
        return {
            "format": FORMAT,
            "study_uid": self.study_uid,
            "modality": self.modality,
            "findings": [f.to_dict() for f in self.findings],
            "impression": self.impression,
            "narrative": self.narrative,
            "geometry": self.geometry,
            "model": self.model,
            "timings_ms": self.timings_ms,
            "warnings": self.warnings,
            "domain": self.domain,
            "draft": True,
        }


def draft_report(
    model: mla.MLAModel,
    tokenizer: ReportTokenizer,
    volume: Volume,
    patient: PatientInfo | None = None,
    *,
    info: dict[str, Any] | None = None,
    threshold: float = 0.5,
    calcium_rule: bool = True,
    profile: DomainProfile | None = None,
) -> StructuredReport:
    """Draft the report of one volume: lesion maps → measured findings → domain gate → narrative.

    Args:
        model: A report model (:func:`load_report_model`).
        tokenizer: Its tokenizer.
        volume: The series (CT in HU; other modalities are measured and flagged out of domain).
        patient: Overrides the volume's patient information (e.g. from the request's metadata).
        info: Model name/version/sha256 copied into the report.
        threshold: Lesion probability threshold.
        calcium_rule: On CT, add calcium-density components inside an organ as calcifications
            (:func:`~inspector.medical.measure.calcium_candidates`); off only to measure the maps alone.
        profile: The model's validated domain (:func:`load_profile`); without one the gate checks the
            modality and body part only.

    """
    start = time.perf_counter()
    who = patient or volume.patient
    device = next(model.parameters()).device
    image = torch.from_numpy(image_channels(volume.pixels, volume.is_ct, channels=input_channels(model)))[None]
    image = image.to(device)
    tabular = torch.from_numpy(patient_features(who))[None].to(device)
    with torch.no_grad():
        inputs = fuse(model, image, tabular)
        prob = maps(model, inputs)[0].cpu().numpy()
    mapped = time.perf_counter()
    findings = findings_from_maps(
        volume.pixels, volume.spacing_mm, prob[: len(TYPES)], prob[len(TYPES) :],
        calibrated=volume.is_ct, threshold=threshold, calcium_rule=calcium_rule,
    )  # fmt: skip
    verdict = domain_verdict(sample_of(volume, organ_coverage(prob)), profile)
    measured = time.perf_counter()
    candidates = narratives(findings, ReportContext.of(volume, who, caveat=verdict.caveat()))
    style, scores = choose_style(model, inputs, tokenizer, findings_prompt(findings), candidates)
    text = candidates[style]
    done = time.perf_counter()
    warnings = [f"outside the validated domain: {verdict.caveat()}"] if verdict.out_of_domain else []
    return StructuredReport(
        study_uid=volume.study_uid,
        modality=volume.modality,
        findings=findings,
        impression=impression_of(text),
        narrative=text,
        geometry=volume.summary(),
        model=dict(info or {}) | {"phrasing": style, "phrasing_scores": scores},
        timings_ms={
            "maps": round(1e3 * (mapped - start), 1),
            "measure": round(1e3 * (measured - mapped), 1),
            "decode": round(1e3 * (done - measured), 1),
            "total": round(1e3 * (done - start), 1),
        },
        warnings=warnings,
        domain=verdict.to_dict(),
    )


# -- files --------------------------------------------------------------------------------------------


def load_profile(model_path: str | Path) -> DomainProfile | None:
    """The domain profile saved beside a report model (``<model>.domain.json``), or None (with a warning)."""
    path = profile_path(Path(model_path))
    if not path.is_file():
        logger.warning("no domain profile at %s: the input gate checks modality and body part only", path)
        return None
    return DomainProfile.load(path)


def save_report_model(
    model: mla.MLAModel, tokenizer: ReportTokenizer, path: Path, metadata: dict[str, Any] | None = None
) -> None:
    """An ``mla`` checkpoint whose metadata holds the vocabulary."""
    meta = {"kind": FORMAT, "vocab": tokenizer.vocab[5:], **(metadata or {})}
    mla.save_model(model, path, metadata=meta)


def load_report_model(path: str | Path, device: str = "cpu") -> tuple[mla.MLAModel, ReportTokenizer, dict[str, Any]]:
    """Model (eval mode), tokenizer and info (name, sha256, metadata) of a report model file.

    Raises:
        ReportModelError: Missing, unreadable, or not a report model.

    """
    file = Path(path)
    if not file.is_file():
        raise ReportModelError(f"report model {file} not found: train one with `inspector medical train`")
    try:
        metadata = mla.load_metadata(file)
        model = mla.load_model(file, map_location=device)
    except mla.MLAError as exc:
        raise ReportModelError(f"cannot load report model {file}: {exc}") from None
    if metadata.get("kind") != FORMAT or "vocab" not in metadata:
        raise ReportModelError(f"{file} is an mla checkpoint but not a report model (no {FORMAT} metadata)")
    tokenizer = ReportTokenizer(metadata["vocab"])
    info = {
        "name": file.stem,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "version": str(metadata.get("version", "1")),
    }
    return model.eval(), tokenizer, info | {"metadata": {k: v for k, v in metadata.items() if k != "vocab"}}
