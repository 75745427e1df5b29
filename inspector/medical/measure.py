"""Lesion maps → findings measured in millimetres and Hounsfield units on the original pixels.

The model says where lesions are and what they look like (per-type and per-organ probability maps on
its input grid); this module measures them on the volume, as ``inspector.measure`` does for cracks:

1. components of ``max(type maps) ≥ threshold``, scaled to the volume grid;
2. for each, the slice where the footprint differs most from a ring around it (the widest cut of a
   sphere-like lesion);
3. on that slice, the pixels on the lesion's side of the half-contrast threshold
   ``(lesion + background) / 2``, grown from the footprint: their area gives the size as the
   equivalent-circle diameter ``2·sqrt(A/π)`` in mm (``PixelSpacing``), their mean the HU;
4. the type is the type map with the most mass in the component, the location the organ map with the
   most mass around the component, the confidence the mean winning type probability. Two definitions
   override the maps: on CT a lesion of mean ≥ 200 HU is a calcification and one below is not; in the
   lungs a solid lesion over 30 mm is a mass, up to 30 mm a nodule (the Fleischner glossary) — applied
   only where the measurement is clear of the boundary by more than its tolerance (±2 mm); in between,
   the maps' choice between nodule and mass stands.

On CT a second source of candidates, a density rule (``calcium_rule``), adds what the type maps miss
and what is a calcification by definition: 3-D components of voxels ≥ :data:`CALCIUM_DETECT_HU`
whose projected footprint is at most :data:`CALCIFICATION_MAX_MM` across (larger dense structures are
bone: the phantom's vertebra) and lies in an organ of the model's organ maps (mean probability of the
most likely organ ≥ 0.5 on a 3-pixel ring around it; bone is in none). They go through the same
measurement; their type is ``calcification`` (mean ≥ 200 HU), their location the organ map, their
confidence the mean probability of that organ on the ring. Components that the type maps already
found, and measured as calcium density, are not added twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage  # type: ignore[import-untyped]

from inspector.medical.vocab import LOCATIONS, TYPES, Finding

MIN_AREA_PX = 1
NODULE_MAX_MM = 30.0
SIZE_TOLERANCE_MM = 2.0
CALCIUM_HU = 200.0
CALCIUM_DETECT_HU = 250.0  # above enhanced kidney (≤ 190 HU) plus 6 σ of the phantom's noise
CALCIFICATION_MAX_MM = 15.0
ORGAN_PROBABILITY = 0.5


@dataclass(frozen=True)
class Candidate:
    """A lesion footprint on the volume grid with the model's type, location and confidence."""

    mask: np.ndarray  # (H, W) bool
    type: str
    location: str
    confidence: float
    ranked: tuple[str, ...] = ()  # every type, most likely first


def _resize(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) float maps → (K, H, W) bilinear."""
    return np.stack(
        [cv2.resize(m.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for m in maps]
    )


def candidates(
    type_prob: np.ndarray, organ_prob: np.ndarray, shape: tuple[int, int], threshold: float = 0.5
) -> list[Candidate]:
    """Lesion components of the model's maps, on a volume grid of ``shape`` (H, W).

    Args:
        type_prob: (4, h, w) probabilities, one map per :data:`TYPES`.
        organ_prob: (6, h, w) probabilities, one map per :data:`LOCATIONS`.
        shape: The volume's (rows, columns).
        threshold: Lesion probability that counts as lesion.

    """
    types = _resize(type_prob, shape)
    organs = _resize(organ_prob, shape)
    lesion = types.max(axis=0) >= threshold
    labels, count = ndimage.label(lesion)
    found: list[Candidate] = []
    for index in range(1, count + 1):
        mask = labels == index
        if mask.sum() < MIN_AREA_PX:
            continue
        type_mass = types[:, mask].sum(axis=1)
        kind = int(type_mass.argmax())
        ranked = tuple(TYPES[i] for i in np.argsort(-type_mass))
        location = LOCATIONS[int(_organ_mass(organs, mask).argmax())]
        found.append(Candidate(mask, TYPES[kind], location, float(types[kind][mask].mean()), ranked))
    return found


def _organ_mass(organs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(K,) organ-map mass around a footprint (the organ shows around a lesion, not inside it)."""
    around = ndimage.binary_dilation(mask, iterations=4)
    mass: np.ndarray = organs[:, around].sum(axis=1)
    return mass


def calcium_candidates(
    hu: np.ndarray,
    spacing_mm: tuple[float, float],
    organ_prob: np.ndarray,
    exclude: np.ndarray | None = None,
    min_hu: float = CALCIUM_DETECT_HU,
) -> list[Candidate]:
    """Calcium-density components inside an organ: the density rule's candidates (CT only).

    Args:
        hu: (Z, H, W) volume in HU.
        spacing_mm: (row, column) pixel spacing in mm.
        organ_prob: (6, h, w) organ probabilities of the model.
        exclude: (H, W) bool: footprints already found by the type maps (not added twice).
        min_hu: Voxels at or above this are dense.

    """
    shape = hu.shape[1:]
    organs = _resize(organ_prob, shape)
    organ_max = organs.max(axis=0)
    labels, _ = ndimage.label(hu >= min_hu)
    pixel_mm2 = spacing_mm[0] * spacing_mm[1]
    found: list[Candidate] = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        footprint = np.zeros(shape, bool)
        footprint[box[1:]] = (labels[box] == index).any(axis=0)
        if 2.0 * np.sqrt(footprint.sum() * pixel_mm2 / np.pi) > CALCIFICATION_MAX_MM:
            continue  # bone
        if exclude is not None and exclude[footprint].any():
            continue
        ring = ndimage.binary_dilation(footprint, iterations=3) & ~footprint  # the maps dip on a lesion itself
        if not ring.any() or organ_max[ring].mean() < ORGAN_PROBABILITY:
            continue  # no organ around it (or a component filling the image: no ring to judge by)
        organ = int(_organ_mass(organs, footprint).argmax())
        confidence = float(organs[organ][ring].mean())
        found.append(Candidate(footprint, "calcification", LOCATIONS[organ], confidence, ("calcification",)))
    return found


def _noise(image: np.ndarray, ring: np.ndarray) -> float:
    """Robust pixel-noise estimate on ``ring``: 1.4826 × MAD of the image minus its 3×3 median.

    A plain standard deviation of the ring is inflated by organ edges it straddles (a kidney ring holds
    kidney and fat), which made small high-contrast lesions look low-contrast and get smoothed away.
    """
    residual = (image - ndimage.median_filter(image, size=3))[ring]
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def measure(hu: np.ndarray, spacing_mm: tuple[float, float], footprint: np.ndarray) -> tuple[float, float] | None:
    """Size (mm, equivalent diameter on the widest slice) and mean value of one lesion, or None if not found.

    Args:
        hu: (Z, H, W) volume (HU for CT).
        spacing_mm: (row, column) pixel spacing.
        footprint: (H, W) bool: where the model sees the lesion.

    """
    core = ndimage.binary_erosion(footprint) if footprint.sum() > 8 else footprint
    if not core.any():
        core = footprint
    near = ndimage.binary_dilation(footprint, iterations=3)
    ring = ndimage.binary_dilation(footprint, iterations=6) & ~near
    if not ring.any() or not core.any():
        return None
    raw = hu.astype(np.float32)
    inside = np.array([float(np.median(s[core])) for s in raw])
    background = np.array([float(np.median(s[ring])) for s in raw])
    z = int(np.abs(inside - background).argmax())
    lesion_value, ring_value = inside[z], background[z]
    noise = _noise(raw[z], ring)
    if abs(lesion_value - ring_value) < 10:
        return None
    # low contrast (a liver mass, a cyst) is thresholded on a 3×3 mean; high contrast on the raw pixels
    smooth = raw if abs(lesion_value - ring_value) > 8 * noise else ndimage.uniform_filter(raw, size=(1, 3, 3))
    threshold = (lesion_value + ring_value) / 2
    brighter = lesion_value > ring_value
    best_area, best_region = 0, None
    for k in range(max(0, z - 2), min(hu.shape[0], z + 3)):
        side = smooth[k] > threshold if brighter else smooth[k] < threshold
        labels, _ = ndimage.label(side & near)
        touching = np.unique(labels[core & (labels > 0)])
        if touching.size == 0:
            continue
        region = np.isin(labels, touching)
        area = int(region.sum())
        if area > best_area:
            best_area, best_region = area, (k, region)
    if best_region is None:
        return None
    k, region = best_region
    diameter = 2.0 * np.sqrt(best_area * spacing_mm[0] * spacing_mm[1] / np.pi)
    solid = ndimage.binary_erosion(region) if region.sum() > 12 else region
    value = float(hu[k][solid if solid.any() else region].mean())
    return float(diameter), value


def findings_from_maps(
    hu: np.ndarray,
    spacing_mm: tuple[float, float],
    type_prob: np.ndarray,
    organ_prob: np.ndarray,
    *,
    calibrated: bool = True,
    threshold: float = 0.5,
    calcium_rule: bool = True,
) -> list[Finding]:
    """The findings of one volume: model maps → components → measured size and HU.

    Args:
        hu: (Z, H, W) volume.
        spacing_mm: (row, column) pixel spacing in mm.
        type_prob: (4, h, w) lesion-type probabilities.
        organ_prob: (6, h, w) organ probabilities.
        calibrated: The values are HU (CT); otherwise ``mean_hu`` is None.
        threshold: Lesion probability threshold.
        calcium_rule: On CT, add the density rule's calcifications (:func:`calcium_candidates`).

    """
    found: list[Finding] = []
    dense = np.zeros(hu.shape[1:], bool)  # footprints of what the maps found and measured as calcium density
    for c in candidates(type_prob, organ_prob, hu.shape[1:], threshold):
        finding = _finding(hu, spacing_mm, c, calibrated)
        if finding is not None:
            found.append(finding)
            if finding.type == "calcification":
                dense |= c.mask
    if calibrated and calcium_rule:
        for c in calcium_candidates(hu, spacing_mm, organ_prob, exclude=dense):
            finding = _finding(hu, spacing_mm, c, calibrated)
            if finding is not None:
                found.append(finding)
    return found


def _finding(hu: np.ndarray, spacing_mm: tuple[float, float], c: Candidate, calibrated: bool) -> Finding | None:
    """Measure one candidate and apply the two definitions (calcium density; nodule or mass by size)."""
    measured = measure(hu, spacing_mm, c.mask)
    if measured is None:
        return None
    size, value = measured
    kind = c.type
    if calibrated:  # calcium density is what makes a calcification; nothing below it is one
        if value >= CALCIUM_HU:
            kind = "calcification"
        elif kind == "calcification":
            kind = next((t for t in c.ranked if t != "calcification"), kind)
    solid_lung = kind in ("nodule", "mass") and c.location.endswith("lung")
    if solid_lung and abs(size - NODULE_MAX_MM) > SIZE_TOLERANCE_MM:  # Fleischner glossary: a mass is > 3 cm
        kind = "mass" if size > NODULE_MAX_MM else "nodule"
    return Finding(kind, c.location, round(size, 1), round(value, 1) if calibrated else None, c.confidence)
