from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.registration import (
    RegistrationError,
    corner_displacement,
    edge_image,
    project_points,
    refine_homography,
    register,
    valid_mask,
    warp_to_visible,
)

VISIBLE_SHAPE = (1024, 1024)
IR_SHAPE = (256, 256)


def similarity(
    scale: float, degrees: float, tx: float, ty: float, perspective: tuple[float, float] = (0, 0)
) -> np.ndarray:
    theta = np.deg2rad(degrees)
    c, s = scale * np.cos(theta), scale * np.sin(theta)
    return np.array([[c, -s, tx], [s, c, ty], [perspective[0], perspective[1], 1.0]])


# IR -> visible: 4x coarser, rotated 1 degree, shifted, slightly tilted.
TRUE_H = similarity(4.0, 1.0, 20.0, -12.0, (2e-6, -1e-6))


def perturb(h: np.ndarray, dx: float, dy: float, degrees: float) -> np.ndarray:
    """Move a homography by a small rigid motion in visible pixels (about the image centre)."""
    centre = np.array([[1, 0, 511.5], [0, 1, 511.5], [0, 0, 1.0]])
    motion = centre @ similarity(1.0, degrees, 0, 0) @ np.linalg.inv(centre)
    return np.asarray(similarity(1.0, 0, dx, dy) @ motion @ h)


def shapes_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A visible test scene: overlapping discs and rectangles of random grey levels."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, 120, np.uint8)
    for _ in range(round(40 * shape[0] * shape[1] / 1024**2)):
        x, y = int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0]))
        grey = int(rng.integers(20, 235))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(15, 80)), grey, -1, cv2.LINE_AA)
        else:
            w, h = (int(v) for v in rng.integers(20, 120, 2))
            cv2.rectangle(image, (x, y), (x + w, y + h), grey, -1, cv2.LINE_AA)
    return image


def ir_from_visible(visible: np.ndarray, h: np.ndarray, ir_shape: tuple[int, int], seed: int) -> np.ndarray:
    """What the IR camera would see of ``visible``: each IR pixel averages its footprint (4x4 supersampling),
    the contrast is inverted (dark = warm) and scaled to counts, with heat blur and noise."""
    k = 4
    ih, iw = ir_shape
    fine_to_ir = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1]])
    fine = cv2.warpPerspective(
        visible.astype(np.float32), h @ fine_to_ir, (iw * k, ih * k), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    ir = cv2.GaussianBlur(cv2.resize(fine, (iw, ih), interpolation=cv2.INTER_AREA), (0, 0), 0.8)
    noise = np.random.default_rng(seed).normal(0, 20, ir.shape)
    return np.clip(30000 - 40 * ir + noise, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A visible image and the IR image of the same scene; the IR field reaches past the visible one."""
    margin = 100
    world = shapes_image((VISIBLE_SHAPE[0] + 2 * margin, VISIBLE_SHAPE[1] + 2 * margin), seed=1)
    visible = world[margin:-margin, margin:-margin]
    return visible, ir_from_visible(world, similarity(1.0, 0, margin, margin) @ TRUE_H, IR_SHAPE, seed=2)


def blob_centroids(image: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Intensity-weighted centroid of the blob near each point (background = window median)."""
    out = []
    for x, y in np.round(points).astype(int):
        window = image[y - radius : y + radius + 1, x - radius : x + radius + 1].astype(np.float64)
        weight = np.clip(window - np.median(window), 0, None)
        ys, xs = np.mgrid[y - radius : y + radius + 1, x - radius : x + radius + 1]
        out.append([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])
    return np.array(out)


def test_warp_aligns_ir_made_from_a_known_visible_pattern() -> None:
    # Gaussian hot spots at known visible positions, rendered at native IR resolution through TRUE_H.
    spots = np.array([[x, y] for x in np.linspace(120, 900, 6) for y in np.linspace(120, 900, 6)])
    sigma = 10.0
    ih, iw = IR_SHAPE
    ys, xs = np.mgrid[0:ih, 0:iw]
    at = project_points(TRUE_H, np.column_stack([xs.ravel(), ys.ravel()]))
    d2 = ((at[:, None, :] - spots[None, :, :]) ** 2).sum(axis=2)
    infrared = (20000 + 4000 * np.exp(-d2 / (2 * sigma**2)).sum(axis=1)).reshape(ih, iw).astype(np.uint16)

    warped = warp_to_visible(infrared, TRUE_H, VISIBLE_SHAPE)
    assert warped.dtype == np.float32 and warped.shape == VISIBLE_SHAPE
    error = np.linalg.norm(blob_centroids(warped, spots, 30) - spots, axis=1)
    assert error.max() < 1.0, error.max()  # measured ~0.1 px

    # The same measurement sees a calibration that is 3 px off.
    wrong = warp_to_visible(infrared, perturb(TRUE_H, 3, 0, 0), VISIBLE_SHAPE)
    assert np.linalg.norm(blob_centroids(wrong, spots, 30) - spots, axis=1).min() > 2.5


def test_outside_the_ir_field_is_nan_and_matches_the_mask() -> None:
    h = similarity(2.0, 0, 100.0, 50.0)  # a 64x64 IR field covers visible x in [99, 227], y in [49, 177]
    infrared = np.tile(np.arange(64, dtype=np.uint16) * 10, (64, 1))
    warped = warp_to_visible(infrared, h, (300, 400))
    mask = valid_mask((64, 64), h, (300, 400))
    assert np.array_equal(np.isfinite(warped), mask)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    assert (cols[0], cols[-1], rows[0], rows[-1]) == (99, 227, 49, 177)
    assert mask.sum() == 129 * 129
    # Inside the field: the ramp, edge pixels replicated rather than blended with the fill value.
    expected = np.clip((np.arange(99, 228) - 100) / 2, 0, 63) * 10
    np.testing.assert_allclose(warped[100, 99:228], expected, atol=0.2)
    assert np.all(warp_to_visible(infrared, h, (300, 400), fill_value=0.0)[~mask] == 0.0)


def test_valid_mask_agrees_with_mapping_every_pixel() -> None:
    """Rotations, perspective up to the extreme (the IR horizon line crossing the IR image), negated matrices."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:120, 0:160].astype(float)
    for _ in range(40):
        tilt = tuple(rng.normal(0, 3e-3 if rng.random() < 0.5 else 0.05, 2))
        h = similarity(rng.uniform(0.5, 4), rng.uniform(-180, 180), *rng.uniform(-60, 160, 2), tilt)
        h = -h if rng.random() < 0.3 else h
        # Brute force: map every visible pixel centre into the IR image.
        p = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.linalg.inv(h).T
        centre = h @ np.array([15.5, 11.5, 1.0])
        same_side = p[..., 2] * (np.linalg.inv(h)[2] @ (centre / centre[2])) > 0
        u, v = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
        expected = same_side & (u >= -0.5) & (u <= 31.5) & (v >= -0.5) & (v <= 23.5)
        mask = valid_mask((24, 32), h, (120, 160))
        edge = np.minimum.reduce([abs(u + 0.5), abs(u - 31.5), abs(v + 0.5), abs(v - 23.5)])
        assert np.all((mask == expected) | (edge < 1e-6))


def test_register_without_refinement_uses_the_calibration(scene: tuple[np.ndarray, np.ndarray]) -> None:
    visible, infrared = scene
    pair = register(visible, infrared, TRUE_H)
    assert pair.refinement is None
    np.testing.assert_allclose(pair.homography, TRUE_H)
    assert pair.infrared.shape == visible.shape and pair.valid.dtype == bool
    assert np.array_equal(pair.valid, np.isfinite(pair.infrared))
    # Registered IR (warm = dark) anti-correlates with the visible image over the valid area.
    corr = np.corrcoef(visible[pair.valid].astype(float), pair.infrared[pair.valid])[0, 1]
    assert corr < -0.9


def test_edge_image_is_the_same_for_inverted_contrast() -> None:
    image = shapes_image((128, 128), seed=3).astype(np.float32)
    np.testing.assert_allclose(edge_image(image), edge_image(1000 - 3 * image), atol=1e-4)
    assert not edge_image(np.full((16, 16), 7.0)).any()


@pytest.mark.parametrize(
    ("dx", "dy", "degrees"),
    [(4.0, -3.0, 0.0), (-2.0, 5.0, 0.3), (6.0, 2.0, -0.4)],
)
def test_ecc_recovers_a_small_perturbation(
    scene: tuple[np.ndarray, np.ndarray], dx: float, dy: float, degrees: float
) -> None:
    visible, infrared = scene
    initial = perturb(TRUE_H, dx, dy, degrees)
    before = corner_displacement(initial, TRUE_H, IR_SHAPE)
    assert before > 3.0

    result = refine_homography(visible, infrared, initial)

    assert result.refined and result.converged and result.reason is None
    assert result.correlation > result.initial_correlation
    after = corner_displacement(result.homography, TRUE_H, IR_SHAPE)
    assert after < 0.5, (before, after)  # measured ~0.1 px from 4-7 px
    assert result.corner_shift_px == pytest.approx(corner_displacement(result.homography, initial, IR_SHAPE))

    pair = register(visible, infrared, initial, refine=True)
    assert pair.refinement is not None and pair.refinement.refined
    assert corner_displacement(pair.homography, TRUE_H, IR_SHAPE) < 0.5


def test_ecc_falls_back_on_noise(scene: tuple[np.ndarray, np.ndarray]) -> None:
    _, infrared = scene
    noise = np.random.default_rng(5).integers(0, 256, VISIBLE_SHAPE).astype(np.uint8)
    initial = perturb(TRUE_H, 3, 3, 0)
    result = refine_homography(noise, infrared, initial)
    assert not result.refined and result.reason
    np.testing.assert_array_equal(result.homography, initial / initial[2, 2])
    # Without the drift bound, the correlation check still refuses it.
    unbounded = refine_homography(noise, infrared, initial, max_corner_shift_px=1e9)
    assert not unbounded.refined and unbounded.correlation < 0.3
    np.testing.assert_array_equal(unbounded.homography, result.homography)


def test_ecc_falls_back_when_it_raises(scene: tuple[np.ndarray, np.ndarray]) -> None:
    _, infrared = scene
    flat = np.full(VISIBLE_SHAPE, 128, np.uint8)  # no gradient at all: ECC has nothing to correlate
    result = refine_homography(flat, infrared, TRUE_H)
    assert not result.refined and not result.converged
    assert result.reason is not None and result.reason.startswith("ECC failed") and "function" not in result.reason
    np.testing.assert_allclose(result.homography, TRUE_H)


def test_ecc_falls_back_when_not_converged_or_implausible(scene: tuple[np.ndarray, np.ndarray]) -> None:
    visible, infrared = scene
    initial = perturb(TRUE_H, 4, -3, 0)
    capped = refine_homography(visible, infrared, initial, max_iterations=2, epsilon=1e-12)
    assert not capped.refined and not capped.converged and capped.iterations == 2
    assert capped.reason is not None and "converge" in capped.reason
    bounded = refine_homography(visible, infrared, initial, max_corner_shift_px=1.0)
    assert not bounded.refined and bounded.corner_shift_px > 1.0
    assert bounded.reason is not None and "implausible" in bounded.reason
    np.testing.assert_allclose(bounded.homography, initial)


@pytest.mark.parametrize(
    ("infrared", "h", "message"),
    [
        (np.zeros((4, 4, 3)), np.eye(3), "2-D"),
        (np.zeros((4, 4)), np.zeros((3, 3)), "not invertible"),
        (np.zeros((4, 4)), np.eye(2), "3x3"),
        (np.zeros((4, 4)), np.full((3, 3), np.nan), "non-finite"),
    ],
)
def test_bad_inputs_raise(infrared: np.ndarray, h: np.ndarray, message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        warp_to_visible(infrared, h, (8, 8))
