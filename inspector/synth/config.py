"""Parameters of the synthetic generator: one frozen, validated model, :class:`SynthConfig`.

Every random quantity is drawn from a ``(low, high)`` range given here, so a preset is a complete,
readable description of a data set's difficulty. Lengths are in millimetres where they describe the
part (crack lengths and widths), in pixels where they describe the camera (blur), and in radiometric
counts for the infrared camera.

The capture-variation fields (``psf_blur_px``, ``gain``, ``gamma``, ``sensor_noise_dn``,
``jpeg_quality``) are fixed values, not ranges: they describe one level of an optics sweep (see
:mod:`inspector.capture`) applied to the finished 8-bit visible image, and default to the identity.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from inspector.capture import CaptureVariation
from inspector.dataset import DistractorKind
from inspector.errors import InspectorError

TextureKind = Literal["brushed", "turned", "milled", "cast"]
TEXTURE_KINDS: tuple[TextureKind, ...] = ("brushed", "turned", "milled", "cast")
DISTRACTOR_KINDS: tuple[DistractorKind, ...] = tuple(k for k in get_args(DistractorKind) if k != "false_call")
"""The kinds the generator draws (``false_call`` comes only from review labels)."""
WIDTH_BIN_EDGES_MM: tuple[float, float, float] = (0.1, 0.2, 0.3)
"""Max-width bins of the crack population: ``<0.1``, ``0.1-0.2``, ``0.2-0.3``, ``>=0.3`` mm."""
WIDTH_BIN_LABELS: tuple[str, str, str, str] = ("<0.1", "0.1-0.2", "0.2-0.3", ">=0.3")
MIN_WIDTH_MM = 0.05
MAX_WIDTH_MM = 0.6


class SynthError(InspectorError):
    """The generator was asked for something it cannot make (unknown preset, bad size or parameter)."""


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"range must be (low, high) with low <= high, got {value}")
    return value


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


def width_bin(max_width_mm: float) -> int:
    """Index (0-3) of the max-width bin a crack falls in, see :data:`WIDTH_BIN_LABELS`."""
    return sum(max_width_mm >= edge for edge in WIDTH_BIN_EDGES_MM)


class SynthConfig(BaseModel):
    """Every knob of the generator. Presets live in :mod:`inspector.synth.presets`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.]+$", description="preset name, used in sample ids")
    clean_fraction: float = Field(0.3, ge=0, le=1, description="share of parts without any crack")

    # cracks
    crack_count_weights: tuple[float, ...] = Field(
        (0.6, 0.3, 0.1), min_length=1, description="relative odds of 1, 2, 3, ... cracks on a cracked part"
    )
    width_bin_weights: tuple[float, float, float, float] = Field(
        (1.0, 1.0, 1.0, 1.0), description="relative odds of a crack's max width bin <0.1, 0.1-0.2, 0.2-0.3, >=0.3 mm"
    )
    crack_length_mm: Range = Field((1.5, 30.0), description="total length (trunk + branches), log-uniform")
    crack_contrast: Range = Field((0.3, 0.85), description="visible darkening of the crack gap, 0-1")
    crack_wander_rad: float = Field(0.22, ge=0, le=1, description="heading noise per 0.2 mm step (random walk)")
    branch_probability: float = Field(0.5, ge=0, le=1, description="chance that a crack has branches")
    max_branches: int = Field(3, ge=0, le=8)
    crack_ir_delta: Range = Field((150.0, 600.0), description="IR warming (counts, before blur) of a 0.3 mm crack")

    # surface
    texture_weights: dict[TextureKind, float] = Field(
        {"brushed": 0.35, "turned": 0.25, "milled": 0.2, "cast": 0.2}, description="odds of each surface finish"
    )
    texture_strength: Range = Field((0.06, 0.18), description="relative albedo modulation of the finish")
    albedo: Range = Field((0.35, 0.6), description="mean diffuse reflectance of the metal")

    # illumination and camera
    exposure: Range = Field((0.75, 1.05), description="illumination gain (1 = the mean surface at ~50% grey)")
    illumination_gradient: Range = Field((0.0, 0.3), description="linear + quadratic light fall-off across the frame")
    vignetting: Range = Field((0.05, 0.3), description="relative corner darkening")
    specular_count: IntRange = Field((0, 2), description="number of specular highlights")
    specular_strength: Range = Field((0.15, 0.8), description="peak highlight radiance (1 = full scale)")
    defocus_px: Range = Field((0.0, 0.9), description="defocus blur radius in visible pixels")
    motion_blur_px: Range = Field((0.0, 1.5), description="motion blur along the conveyor, visible pixels")
    full_well_e: Range = Field((4000.0, 12000.0), description="electrons at full scale (sets shot noise)")
    read_noise_e: Range = Field((4.0, 12.0), description="read noise, electrons r.m.s.")

    # capture variation of the finished visible image (one sweep level; identity by default)
    psf_blur_px: float = Field(
        0.0, ge=0, le=3, description="extra Gaussian point-spread blur (sigma, visible px) on the 8-bit image"
    )
    gain: float = Field(1.0, ge=0.1, le=10, description="exposure gain on the 8-bit image, clipped at 255")
    gamma: float = Field(1.0, ge=0.2, le=5, description="response curve 255 * (x / 255) ** gamma")
    sensor_noise_dn: float = Field(0.0, ge=0, le=50, description="extra Gaussian read noise, DN r.m.s.")
    jpeg_quality: int | None = Field(None, ge=1, le=100, description="JPEG re-encoding quality (None: none)")

    # distractors
    distractor_count: IntRange = Field((1, 6), description="distractors per part")
    distractor_weights: dict[DistractorKind, float] = Field(
        {
            "scratch": 3.0,
            "machining_mark": 1.5,
            "stain": 1.5,
            "oil": 1.0,
            "dust": 1.5,
            "printed_mark": 0.7,
            "ir_emissivity": 1.5,
            "ir_reflection": 1.0,
        },
        description="relative odds of each distractor kind",
    )
    crack_like_scratch: float = Field(0.15, ge=0, le=1, description="chance a scratch is dark, tapered and jagged")
    scratch_contrast: Range = Field((0.15, 0.5), description="darkening or brightening of a scratch")
    ir_distractor_counts: Range = Field((40.0, 300.0), description="IR amplitude of emissivity patches, reflections")
    ir_streak_probability: float = Field(0.2, ge=0, le=1, description="chance an IR reflection is a thin warm line")

    # infrared camera
    ir_downscale: int = Field(4, ge=1, le=16, description="visible pixels per IR pixel (nominal)")
    ir_base_counts: Range = Field((20000.0, 30000.0), description="mean radiometric counts of the heated part")
    ir_gradient_counts: Range = Field((200.0, 1500.0), description="heating non-uniformity across the frame")
    ir_netd_counts: Range = Field((3.0, 6.0), description="temporal noise, counts r.m.s.")
    ir_fpn_counts: Range = Field((1.0, 4.0), description="fixed-pattern column and row offsets, counts r.m.s.")
    ir_gain_sigma: float = Field(2e-4, ge=0, le=0.05, description="per-pixel gain non-uniformity (relative)")
    thermal_blur_mm: Range = Field((0.2, 0.4), description="thermal diffusion length (Gaussian sigma) on the part")
    ir_shift_px: float = Field(4.0, ge=0, description="IR-visible misregistration, visible pixels (max)")
    ir_rotation_deg: float = Field(0.4, ge=0, le=5)
    ir_scale_jitter: float = Field(0.01, ge=0, le=0.1)

    # line timing
    line_period_ns: int = Field(125_000_000, gt=0, description="time between two parts (trigger clock)")
    capture_jitter_ns: int = Field(3_000_000, ge=0, description="max |IR - visible| capture time offset")

    @property
    def capture_variation(self) -> CaptureVariation:
        """The capture variation the generator applies to every finished visible image."""
        return CaptureVariation(
            blur_sigma_px=self.psf_blur_px,
            gain=self.gain,
            gamma=self.gamma,
            read_noise_dn=self.sensor_noise_dn,
            jpeg_quality=self.jpeg_quality,
        )

    @field_validator("texture_weights", "distractor_weights", "crack_count_weights", "width_bin_weights")
    @classmethod
    def _weights(cls, value: object) -> object:
        weights = list(value.values()) if isinstance(value, dict) else list(value)  # type: ignore[call-overload]
        if any(w < 0 for w in weights):
            raise ValueError("weights must be >= 0")
        return value

    @field_validator("texture_weights")
    @classmethod
    def _some_texture(cls, value: dict[TextureKind, float]) -> dict[TextureKind, float]:
        if sum(value.values()) <= 0:
            raise ValueError("at least one texture needs a positive weight")
        return value

    @field_validator("width_bin_weights", "crack_count_weights")
    @classmethod
    def _some_weight(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if sum(value) <= 0:
            raise ValueError("at least one weight must be positive")
        return value
