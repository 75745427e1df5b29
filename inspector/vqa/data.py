"""Question sets held in memory, and images turned into model input.

A :class:`VQASet` holds rendered scenes (uint8), questions, their answers as indices into
:data:`~inspector.vqa.scenes.ANSWERS`, their types, and one caption per scene. Training and
held-out sets differ only by seed (their scenes never coincide in practice: positions are floats).

Model input is the RGB image in [0, 1] plus two coordinate channels (x and y from -1 to 1), as the
Relation Network appends coordinates to its CNN cells: (B, 5, S, S).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from inspector.frame import FrameDecodeError, ImageTooLargeError, check_image_header
from inspector.vqa.errors import VQAInputError
from inspector.vqa.scenes import ANSWERS, QUESTION_TYPES, Scene, caption, questions, random_scene, render

IN_CHANNELS = 5
MAX_IMAGE_BYTES = 4 * 2**20
MAX_IMAGE_PIXELS = 2048 * 2048  # the header's width x height, checked before decoding (scenes are 64 px native)


@dataclass
class VQASet:
    """Scenes and their questions, in memory."""

    images: np.ndarray  # (N, S, S, 3) uint8
    captions: list[str] = field(default_factory=list)  # N
    questions: list[str] = field(default_factory=list)  # Q
    answers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (Q,) index into ANSWERS
    kinds: list[str] = field(default_factory=list)  # Q, each in QUESTION_TYPES
    scene_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (Q,) row of images
    scenes: list[Scene] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def side(self) -> int:
        """Image side in pixels."""
        return int(self.images.shape[1])


def build_set(count: int, seed: int | Sequence[int], side: int = 64, per_type: int = 2) -> VQASet:
    """``count`` random scenes rendered at ``side`` px with up to ``per_type`` questions of each type.

    ``seed`` is an int (held-out sets) or a sequence of ints (training streams), whose scenes never
    coincide with an int seed's.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((count, side, side, 3), np.uint8)
    found = VQASet(images)
    answers, index = [], []
    for row in range(count):
        scene = random_scene(rng)
        images[row] = render(scene, side)
        found.scenes.append(scene)
        found.captions.append(caption(scene))
        for question in questions(scene, rng, per_type):
            found.questions.append(question.text)
            found.kinds.append(question.kind)
            answers.append(ANSWERS.index(question.answer))
            index.append(row)
    found.answers = np.asarray(answers, np.int64)
    found.scene_index = np.asarray(index, np.int64)
    return found


def type_counts(data: VQASet) -> dict[str, int]:
    """Questions per type."""
    return {kind: data.kinds.count(kind) for kind in QUESTION_TYPES}


def to_tensor(images: np.ndarray) -> Tensor:
    """(B, S, S, 3) uint8 → (B, 5, S, S) float: RGB in [0, 1], then x and y in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([x, xs, ys], dim=1)


def check_image(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB scene image the model can read, resized to ``side`` × ``side`` (uint8, (side, side, 3)).

    Raises:
        VQAInputError: ``wrong_image``: not 2-D colour (grey or 4-channel images are refused, the
            questions are about colours), not square, or smaller than 16 px.

    """
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        shape = "×".join(map(str, image.shape))
        msg = f"the model answers questions about colour scene images (H, W, 3); got an image of shape {shape}"
        raise VQAInputError("wrong_image", msg)
    height, width = image.shape[:2]
    if height != width or height < 16:
        msg = f"scene images are square and at least 16 px ({side}×{side} is native); got {width}×{height}"
        raise VQAInputError("wrong_image", msg)
    if image.dtype != np.uint8:
        msg = f"scene images are 8-bit per channel; got {image.dtype}"
        raise VQAInputError("wrong_image", msg)
    rgb = np.ascontiguousarray(image[..., :3])
    if height != side:
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA if height > side else cv2.INTER_LINEAR)
    return rgb


def decode_image(data: bytes, side: int, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes → (side, side, 3) RGB uint8 (see :func:`check_image`).

    The PNG ``IHDR`` / JPEG ``SOF`` size is checked against ``max_pixels`` before anything is
    decompressed (:func:`inspector.frame.check_image_header`), so a small file declaring a huge
    image is refused without being allocated; other formats are refused unread.

    Raises:
        VQAInputError: ``too_large`` (over 4 MiB, or a header declaring more than ``max_pixels``),
            ``bad_image`` (empty, not PNG or JPEG, or not decodable), ``wrong_image``.

    """
    if len(data) > MAX_IMAGE_BYTES:
        msg = f"the image is {len(data)} bytes; at most {MAX_IMAGE_BYTES} are read"
        raise VQAInputError("too_large", msg)
    if not data:
        raise VQAInputError("bad_image", "the image is empty: send the PNG or JPEG file's bytes")
    try:
        check_image_header(data, max_pixels=max_pixels, where=f"the image ({len(data)} bytes)")
    except FrameDecodeError as exc:
        raise VQAInputError("too_large" if isinstance(exc, ImageTooLargeError) else "bad_image", str(exc)) from None
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        msg = f"the image ({len(data)} bytes) is not a PNG or JPEG image: send the encoded file's bytes"
        raise VQAInputError("bad_image", msg)
    if decoded.ndim == 3:  # OpenCV decodes to BGR(A)
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return check_image(decoded, side)


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) RGB uint8 → PNG bytes."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        msg = "OpenCV could not encode the image as PNG"
        raise ValueError(msg)
    return bytes(buffer)
