from __future__ import annotations

import numpy as np
import pytest

from inspector.capture import (
    CaptureRanges,
    CaptureVariation,
    apply_variation,
    draw_variation,
    jpeg_roundtrip,
    vary_infrared,
)


def _bar(width_px: int = 6, side: int = 64) -> np.ndarray:
    image = np.full((side, side), 160, dtype=np.uint8)
    image[:, side // 2 - width_px // 2 : side // 2 - width_px // 2 + width_px] = 40
    return image


def test_identity_returns_the_image_unchanged() -> None:
    image = _bar()
    assert apply_variation(image, CaptureVariation(), np.random.default_rng(0)) is image


def test_blur_keeps_the_dark_mass_and_spreads_it() -> None:
    image = _bar()
    blurred = apply_variation(image, CaptureVariation(blur_sigma_px=1.5), np.random.default_rng(0))
    row, sharp = blurred[32].astype(float), image[32].astype(float)
    assert abs((160 - row).sum() - (160 - sharp).sum()) < 0.01 * (160 - sharp).sum()  # energy kept
    assert (row < 150).sum() > (sharp < 150).sum()  # but wider at a fixed threshold
    assert row.min() > sharp.min()


def test_gain_saturates_and_gamma_keeps_the_ends() -> None:
    image = np.array([[0, 128, 200, 255]], dtype=np.uint8)
    bright = apply_variation(image, CaptureVariation(gain=1.5), np.random.default_rng(0))
    assert bright.tolist() == [[0, 192, 255, 255]]
    curved = apply_variation(image, CaptureVariation(gamma=2.0), np.random.default_rng(0))
    assert curved[0, 0] == 0 and curved[0, 3] == 255 and curved[0, 1] == round(255 * (128 / 255) ** 2)


def test_noise_has_the_stated_spread() -> None:
    image = np.full((200, 200), 100, dtype=np.uint8)
    noisy = apply_variation(image, CaptureVariation(read_noise_dn=4.0), np.random.default_rng(1))
    assert noisy.astype(float).std() == pytest.approx(4.0, rel=0.1)


def test_jpeg_roundtrip_is_lossy_but_close() -> None:
    image = _bar()
    out = jpeg_roundtrip(image, 50)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - image.astype(int)).mean() < 10


def test_draw_respects_ranges_and_probability() -> None:
    rng = np.random.default_rng(2)
    ranges = CaptureRanges(probability=1.0, jpeg_probability=1.0)
    for _ in range(50):
        v = draw_variation(rng, ranges)
        assert ranges.blur_sigma_px[0] <= v.blur_sigma_px <= ranges.blur_sigma_px[1]
        assert ranges.gain[0] <= v.gain <= ranges.gain[1] and ranges.gamma[0] <= v.gamma <= ranges.gamma[1]
        assert v.jpeg_quality is not None and 40 <= v.jpeg_quality <= 95
    never = CaptureRanges(probability=0.0)
    assert all(draw_variation(rng, never).is_identity() for _ in range(20))


def test_rejects_float_images_and_varies_ir() -> None:
    with pytest.raises(ValueError, match="8-bit"):
        apply_variation(np.zeros((4, 4), np.float32), CaptureVariation(gain=2.0), np.random.default_rng(0))
    ir = np.zeros((16, 16), np.float32)
    assert vary_infrared(ir, np.random.default_rng(0), probability=0.0) is ir
    assert vary_infrared(ir, np.random.default_rng(0), probability=1.0).shape == ir.shape
