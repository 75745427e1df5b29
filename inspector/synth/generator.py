"""Assemble a part: surface, light, cracks, distractors, optics, infrared, timing and ground truth.

:func:`generate_sample` is pure (no I/O, no clock): sample ``index`` of seed ``seed`` is the same
whatever else is generated, because every part draws from its own ``SeedSequence([seed, index])``,
split into one independent stream per concern (surface, light, cracks, ...). Changing, say, the
distractor odds therefore leaves that part's surface and cracks as they were. The capture variation
of the config (extra PSF blur, gain, gamma, noise, JPEG: :mod:`inspector.capture`) is applied last to
the 8-bit visible image with a stream of its own, spawned after the others, so a sweep over it shows
the same parts and leaves the identity's samples byte-identical; the mask and ground truth never
change with it.

:func:`generate_set` writes a folder in the :mod:`inspector.dataset` format, optionally over several
worker processes, and returns a :class:`SetSummary`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.capture import apply_variation
from inspector.dataset import Sample, SampleMeta, write_sample
from inspector.synth import optics, texture
from inspector.synth.config import WIDTH_BIN_LABELS, SynthConfig, SynthError, width_bin
from inspector.synth.crack import draw_crack
from inspector.synth.distractor import draw_distractors
from inspector.synth.infrared import ir_homography, render_infrared
from inspector.synth.presets import get_preset
from inspector.synth.raster import modulate

logger = logging.getLogger(__name__)

EPOCH_NS = 1_735_689_600 * 10**9
"""Line clock origin of every generated set: 2025-01-01T00:00:00Z."""
_STREAMS = (  # append only: SeedSequence.spawn gives child i the same stream whatever comes after it
    "layout", "surface", "light", "cracks", "distractors", "camera", "infrared", "timing", "colour", "capture"
)  # fmt: skip
_METALS = (  # RGB tints of bare metals under white light
    np.array([0.97, 1.0, 1.04]),  # steel
    np.array([1.0, 1.0, 1.0]),  # aluminium
    np.array([1.02, 0.99, 0.95]),  # titanium
    np.array([1.12, 0.98, 0.62]),  # brass
)


def sample_id(preset: str, seed: int, index: int) -> str:
    """The id of sample ``index`` of a set: ``{preset}-{seed}-{index:06d}``."""
    return f"{preset}-{seed}-{index:06d}"


def _resolve(preset: SynthConfig | str) -> SynthConfig:
    return get_preset(preset) if isinstance(preset, str) else preset


def _frame_shape(size: int | tuple[int, int], downscale: int) -> tuple[int, int]:
    """(H, W) from ``size`` (square side, or (width, height)), checked against the IR downscale."""
    width, height = (int(size), int(size)) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))
    if min(width, height) < 16 * downscale or width % downscale or height % downscale:
        raise SynthError(
            f"frame size {width}x{height} must be a multiple of the IR downscale ({downscale}) and at least "
            f"{16 * downscale} px, e.g. {max(16 * downscale, width - width % downscale)}"
        )
    return height, width


def _check(
    index: int, seed: int, mm_per_px: float, fraction: float, size: int | tuple[int, int], config: SynthConfig
) -> tuple[int, int]:
    """Validate the arguments of a sample; return the visible (H, W)."""
    if index < 0 or seed < 0:
        raise SynthError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    if not 0.005 <= mm_per_px <= 1.0:
        raise SynthError(f"mm_per_px must be between 0.005 and 1.0, got {mm_per_px}")
    if not 0.0 <= fraction <= 1.0:
        raise SynthError(f"clean fraction must be between 0 and 1, got {fraction}")
    return _frame_shape(size, config.ir_downscale)


def generate_sample(
    index: int,
    seed: int,
    preset: SynthConfig | str = "default",
    *,
    mm_per_px: float = 0.05,
    size: int | tuple[int, int] = 1024,
    rgb: bool = False,
    clean_fraction: float | None = None,
    camera_id: str = "cam-0",
) -> Sample:
    """Generate one visible + infrared capture of a part with its ground truth (pure, deterministic).

    Args:
        index: sample number within the set (also the capture's ``seq``), >= 0.
        seed: set seed, >= 0.
        preset: a :class:`SynthConfig` or a preset name (``clean``, ``default``, ``hard``); its
            capture-variation fields (``psf_blur_px``, ...) change the visible image only.
        mm_per_px: visible calibration (0.05 by default; 0.1 makes a 0.2 mm crack 2 px wide).
        size: visible frame side in pixels, or (width, height); the IR frame is ``ir_downscale`` coarser.
        rgb: 8-bit RGB visible image instead of grey.
        clean_fraction: share of parts without cracks; default: the preset's.
        camera_id: recorded in the metadata.

    Raises:
        SynthError: a negative index or seed, a bad calibration or frame size, an unknown preset.

    """
    config = _resolve(preset)
    fraction = config.clean_fraction if clean_fraction is None else clean_fraction
    shape = _check(index, seed, mm_per_px, fraction, size, config)
    ir_shape = (shape[0] // config.ir_downscale, shape[1] // config.ir_downscale)
    children = np.random.SeedSequence([seed, index]).spawn(len(_STREAMS))
    rng = {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children, strict=True)}

    layout = rng["layout"]
    is_clean = layout.random() < fraction
    count_odds = np.asarray(config.crack_count_weights, dtype=np.float64)
    n_cracks = 0 if is_clean else 1 + int(layout.choice(len(count_odds), p=count_odds / count_odds.sum()))

    surface = texture.surface(rng["surface"], shape, mm_per_px, config)
    light = optics.illumination(rng["light"], shape, config)
    glints = optics.specular(rng["light"], shape, config, surface.lay_angle)
    if rgb:
        tint = _METALS[int(rng["colour"].integers(len(_METALS)))].astype(np.float32)
        radiance = (surface.albedo * light)[..., None] * tint + glints[..., None]
    else:
        radiance = surface.albedo * light + glints

    homography = ir_homography(rng["infrared"], shape, ir_shape, config)
    cracks = [draw_crack(rng["cracks"], shape, mm_per_px, config) for _ in range(n_cracks)]
    mask = np.zeros(shape, dtype=bool)
    for crack in cracks:
        coverage = crack.coverage(mm_per_px)
        if coverage is None:
            continue
        clipped = coverage.clip_to(shape)
        if clipped is not None:
            (sy, sx), values = clipped
            mask[sy, sx] |= values >= 0.5
        modulate(radiance, coverage, 1.0 - crack.contrast)
    layers = draw_distractors(rng["distractors"], shape, mm_per_px, config, homography, ir_shape)
    for patch, factor in layers.visible:
        modulate(radiance, patch, factor)

    camera = optics.draw_camera(rng["camera"], config)
    visible = optics.sensor(rng["camera"], optics.blur(radiance, camera), camera)
    visible = apply_variation(visible, config.capture_variation, rng["capture"])  # identity: unchanged
    infrared = render_infrared(rng["infrared"], ir_shape, homography, cracks, mm_per_px, layers.infrared, config)

    timing = rng["timing"]
    visible_ts = EPOCH_NS + (seed % 3650) * 86_400 * 10**9 + index * config.line_period_ns
    visible_ts += int(abs(timing.normal(0.0, 50_000)))  # trigger latency, ~50 us
    infrared_ts = visible_ts + int(timing.integers(-config.capture_jitter_ns, config.capture_jitter_ns + 1))
    meta = SampleMeta(
        id=sample_id(config.name, seed, index),
        part_id=f"part-{seed}-{index:06d}",
        camera_id=camera_id,
        seq=index,
        mm_per_px=mm_per_px,
        ir_to_visible=homography.tolist(),
        visible_ts_ns=visible_ts,
        infrared_ts_ns=max(infrared_ts, 0),
        cracks=[c.truth(mm_per_px) for c in cracks],
        distractors=layers.truths,
        preset=config.name,
        seed=seed,
    )
    return Sample(meta=meta, visible=visible, infrared=infrared, mask=mask)


@dataclass(frozen=True)
class SetSummary:
    """What :func:`generate_set` wrote."""

    out: Path
    count: int
    cracks: int
    clean_parts: int
    distractors: int
    width_bins: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def pairs_per_s(self) -> float:
        """Generated (and written) visible + IR pairs per second of wall time."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "out": str(self.out),
            "count": self.count,
            "cracks": self.cracks,
            "clean_parts": self.clean_parts,
            "distractors": self.distractors,
            "width_bins_mm": self.width_bins,
            "seconds": round(self.seconds, 3),
            "pairs_per_s": round(self.pairs_per_s, 2),
        }


def _write_one(out: Path, index: int, seed: int, config: SynthConfig, options: dict[str, Any]) -> SampleMeta:
    sample = generate_sample(index, seed, config, **options)
    write_sample(out, sample)
    return sample.meta


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core: no oversubscription


def generate_set(
    out: Path,
    count: int,
    seed: int = 0,
    preset: SynthConfig | str = "default",
    *,
    start: int = 0,
    mm_per_px: float = 0.05,
    size: int | tuple[int, int] = 1024,
    rgb: bool = False,
    clean_fraction: float | None = None,
    camera_id: str = "cam-0",
    workers: int = 1,
    progress: Callable[[SampleMeta], None] | None = None,
) -> SetSummary:
    """Generate samples ``start .. start + count - 1`` of a set and write them to ``out``.

    Sample ``i`` is identical whatever ``count``, ``start`` or ``workers`` are.

    Args:
        out: data folder (created if needed).
        count: number of samples.
        seed: set seed.
        preset: a :class:`SynthConfig` or a preset name.
        start: index of the first sample (to extend a set, or to split it over machines).
        mm_per_px: visible calibration.
        size: visible frame side, or (width, height).
        rgb: RGB visible images.
        clean_fraction: share of parts without cracks; default: the preset's.
        camera_id: recorded in the metadata.
        workers: processes; 1 generates in this process.
        progress: called with each sample's metadata once it is written (in completion order).

    Raises:
        SynthError: bad arguments (checked before any file is written).

    """
    config = _resolve(preset)
    if count < 0 or start < 0 or workers < 1:
        raise SynthError(f"count and start must be >= 0 and workers >= 1, got {count}, {start}, {workers}")
    options: dict[str, Any] = {
        "mm_per_px": mm_per_px,
        "size": size,
        "rgb": rgb,
        "clean_fraction": clean_fraction,
        "camera_id": camera_id,
    }
    fraction = config.clean_fraction if clean_fraction is None else clean_fraction
    _check(start, seed, mm_per_px, fraction, size, config)  # fail before writing anything
    began = time.perf_counter()
    metas: list[SampleMeta] = []

    def done(meta: SampleMeta) -> None:
        metas.append(meta)
        if progress is not None:
            progress(meta)

    indices = range(start, start + count)
    if workers == 1 or count <= 1:
        for index in indices:
            done(_write_one(out, index, seed, config, options))
    else:
        logger.info("generating %d samples with %d worker processes", count, workers)
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
        try:
            pending: set[Future[SampleMeta]] = {pool.submit(_write_one, out, i, seed, config, options) for i in indices}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(future.result())  # a worker's error is raised here
        except BaseException:  # an error or Ctrl-C: drop the queued samples instead of waiting for them
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return _summarise(out, metas, time.perf_counter() - began)


def _summarise(out: Path, metas: list[SampleMeta], seconds: float) -> SetSummary:
    bins = dict.fromkeys(WIDTH_BIN_LABELS, 0)
    for crack in (c for m in metas for c in m.cracks):
        bins[WIDTH_BIN_LABELS[width_bin(crack.max_width_mm)]] += 1
    return SetSummary(
        out=out,
        count=len(metas),
        cracks=sum(len(m.cracks) for m in metas),
        clean_parts=sum(m.is_clean for m in metas),
        distractors=sum(len(m.distractors) for m in metas),
        width_bins=bins,
        seconds=seconds,
    )
