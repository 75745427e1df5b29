from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.vqa.data import (
    MAX_IMAGE_PIXELS,
    build_set,
    check_image,
    decode_image,
    encode_png,
    to_tensor,
    type_counts,
)
from inspector.vqa.errors import VQAInputError
from inspector.vqa.scenes import ANSWERS
from tests.inspector.images import png_header


def test_build_set_is_seeded_and_balanced() -> None:
    a, b = build_set(30, seed=5), build_set(30, seed=5)
    assert a.questions == b.questions and np.array_equal(a.images, b.images)
    assert len(a.captions) == 30 and a.images.shape == (30, 64, 64, 3)
    assert all(n > 30 for n in type_counts(a).values())
    assert a.answers.max() < len(ANSWERS) and a.scene_index.max() == 29
    assert build_set(5, seed=6).questions != a.questions[: len(build_set(5, seed=6).questions)]


def test_to_tensor_adds_coordinates() -> None:
    x = to_tensor(np.full((2, 16, 16, 3), 255, np.uint8))
    assert x.shape == (2, 5, 16, 16) and float(x[:, :3].min()) == 1.0
    assert float(x[0, 3, 0, 0]) == -1.0 and float(x[0, 3, 0, -1]) == 1.0 and float(x[0, 4, -1, 0]) == 1.0


def test_decode_round_trip_and_resize() -> None:
    image = build_set(1, seed=1, side=128).images[0]
    back = decode_image(encode_png(image), 64)
    assert back.shape == (64, 64, 3)
    assert np.array_equal(decode_image(encode_png(image[:64, :64]), 64), image[:64, :64])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_image"),
        (bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)), "bad_image"),
        (encode_png(np.zeros((32, 48, 3), np.uint8)), "wrong_image"),
        (encode_png(np.zeros((8, 8, 3), np.uint8)), "wrong_image"),
        (cv2.imencode(".bmp", np.zeros((64, 64, 3), np.uint8))[1].tobytes(), "bad_image"),  # PNG or JPEG only
    ],
)
def test_bad_images_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(VQAInputError) as err:
        decode_image(data, 64)
    assert err.value.reason == reason


def test_grey_images_are_refused() -> None:
    with pytest.raises(VQAInputError, match="colour") as err:
        check_image(np.zeros((64, 64), np.uint8), 64)
    assert err.value.reason == "wrong_image"


def test_a_png_bomb_is_refused_from_its_header_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("decode_image decompressed an image whose header is over the limit")

    monkeypatch.setattr("inspector.vqa.data.cv2.imdecode", refuse)
    with pytest.raises(VQAInputError, match="PNG IHDR header says 100000x100000 = 10000000000 pixels") as err:
        decode_image(png_header(100_000, 100_000), 64)
    assert err.value.reason == "too_large"
    side = int(MAX_IMAGE_PIXELS**0.5)
    with pytest.raises(VQAInputError, match=f"{side}x{side + 1}") as err:
        decode_image(png_header(side, side + 1), 64)
    assert err.value.reason == "too_large"


def test_an_image_at_the_pixel_limit_is_decoded() -> None:
    image = build_set(1, seed=2, side=128).images[0]
    assert decode_image(encode_png(image), 64, max_pixels=128 * 128).shape == (64, 64, 3)
    with pytest.raises(VQAInputError) as err:
        decode_image(encode_png(image), 64, max_pixels=128 * 128 - 1)
    assert err.value.reason == "too_large"
