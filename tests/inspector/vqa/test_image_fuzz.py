"""VQA request images with mutated PNG and JPEG headers, 10,000 of them (issue 20).

Every image must decode to the model's input or be refused with a known reason, and OpenCV must never
be handed an image whose pixels exceed the limit: the decoder is wrapped to fail the test if it ever
returns more pixels than :func:`decode_image` allows.
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from inspector.vqa.data import build_set, decode_image, encode_png
from inspector.vqa.errors import REASONS, VQAInputError
from tests.inspector.images import png_header

CASES = 10_000
LIMIT = 96 * 96
SCENE = build_set(1, seed=11, side=64).images[0]
JPEG = cv2.imencode(".jpg", cv2.cvtColor(SCENE, cv2.COLOR_RGB2BGR))[1].tobytes()
IMAGES = [encode_png(SCENE), JPEG, png_header(64, 64), encode_png(np.zeros((96, 96, 3), np.uint8))]
SIZES = [0, 1, 15, 16, 64, 96, 97, 255, 4096, 65535, 65536, 100_000, 2**31 - 1, 2**32 - 1]


def resize_png(rng: np.random.Generator, data: bytes) -> bytes:
    """New IHDR width and height (the CRC left stale, as a forger might)."""
    width, height = (int(rng.choice(SIZES)) if rng.random() < 0.7 else int(rng.integers(0, 2**32)) for _ in "wh")
    return data[:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[24:]


def resize_jpeg(rng: np.random.Generator, data: bytes) -> bytes:
    """New SOF0 height and width."""
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        return data
    height, width = (
        int(rng.choice(SIZES)) % 65536 if rng.random() < 0.7 else int(rng.integers(0, 65536)) for _ in "hw"
    )
    return data[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[sof + 9 :]


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    kind = int(rng.integers(0, 6))
    if kind <= 1:
        return resize_png(rng, data) if data.startswith(b"\x89PNG") else resize_jpeg(rng, data)
    at = int(rng.integers(0, len(data))) if data else 0
    if kind == 2:
        return data[:at]
    if kind == 3:
        return data[:at] + bytes([int(rng.integers(0, 256))]) + data[at + 1 :]
    if kind == 4:
        return data[:at] + rng.bytes(int(rng.integers(1, 16))) + data[at:]
    return rng.bytes(int(rng.integers(0, 64)))


def test_mutated_image_headers_decode_within_the_limit_or_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cv2.imdecode

    def bounded(buffer: np.ndarray, flags: int) -> np.ndarray | None:
        image = real(buffer, flags)
        assert image is None or image.shape[0] * image.shape[1] <= LIMIT, f"decoded {image.shape}"
        return image

    monkeypatch.setattr("inspector.vqa.data.cv2.imdecode", bounded)
    rng = np.random.default_rng(100_000)
    seen: Counter[str] = Counter()
    for case in range(CASES):
        data = IMAGES[int(rng.integers(0, len(IMAGES)))]
        for _ in range(int(rng.integers(1, 3))):
            data = mutate(rng, data)
        try:
            image = decode_image(data, 64, max_pixels=LIMIT)
        except VQAInputError as exc:
            assert exc.reason in REASONS and str(exc)
            seen[exc.reason] += 1
            continue
        except Exception as exc:
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} escaped decode_image ({data[:32].hex()})")
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        seen["decoded"] += 1
    assert sum(seen.values()) == CASES
    assert seen["decoded"] > 100 and seen["too_large"] > 100 and seen["bad_image"] > 100, seen
