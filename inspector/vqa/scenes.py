"""Sort-of-CLEVR-style scenes: coloured shapes on a white square, questions about them, captions.

After Santoro et al. 2017 ("A simple neural network module for relational reasoning"): each scene
holds 3 to 6 objects, each of its own colour, with a shape (circle, square, triangle), a size
(small, large) and a position. Objects never overlap and keep clear of the image's centre lines,
so "left or right" always has one answer. Questions come in five types, each with several
phrasings, and every answer is one word of the fixed :data:`ANSWERS`::

    colour      what colour is the large circle?                       (asked only when one exists)
    shape       what shape is the red object?
    count       how many squares are there? / how many objects are there?
    position    is the red object on the left or the right?
    relational  what colour is the object closest to the red object?   (closest, furthest, same shape)

Relational questions whose answer is nearly tied (two candidates within 1.5 px) are not asked.
Captions describe every object ("a large red circle at the top left"), for retrieval.

Everything is pure and seeded: ``random_scene(rng)`` then ``render(scene, side)``; geometry is in
unit coordinates, so one scene renders at any side (64 px for the shipped model, 75 as the paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 170, 40),
    "blue": (30, 60, 230),
    "orange": (250, 140, 0),
    "grey": (128, 128, 128),
    "yellow": (240, 220, 20),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.07, "large": 0.11}  # half-size as a share of the side
QUESTION_TYPES = ("colour", "shape", "count", "position", "relational")
NUMBERS = tuple(str(n) for n in range(7))
ANSWERS: tuple[str, ...] = (*COLOURS, *SHAPES, "left", "right", "top", "bottom", *NUMBERS)
"""The fixed answer vocabulary (20 words); a model's logits are in this order."""

MIN_OBJECTS, MAX_OBJECTS = 3, 6
_CENTRE_GAP = 0.05  # objects' centres keep this far from the centre lines
_TIE = 1.5 / 64  # relational answers closer than this (1.5 px at 64 px) are ambiguous: not asked


@dataclass(frozen=True)
class SceneObject:
    """One object: colour, shape, size and centre ``(x, y)`` in [0, 1] (y grows downwards)."""

    colour: str
    shape: str
    size: str
    x: float
    y: float

    @property
    def radius(self) -> float:
        """Half-size as a share of the side."""
        return SIZES[self.size]

    def distance(self, other: SceneObject) -> float:
        """Distance between centres, in sides."""
        return math.hypot(self.x - other.x, self.y - other.y)

    @property
    def horizontal(self) -> str:
        """``left`` or ``right``."""
        return "left" if self.x < 0.5 else "right"

    @property
    def vertical(self) -> str:
        """``top`` or ``bottom``."""
        return "top" if self.y < 0.5 else "bottom"


@dataclass(frozen=True)
class Scene:
    """Objects in drawing order; colours are unique within a scene."""

    objects: tuple[SceneObject, ...]

    def by_colour(self, colour: str) -> SceneObject:
        """The object of ``colour``."""
        return next(o for o in self.objects if o.colour == colour)


@dataclass(frozen=True)
class Question:
    """A question, its answer (a word of :data:`ANSWERS`) and its type (one of :data:`QUESTION_TYPES`)."""

    text: str
    answer: str
    kind: str


def random_scene(rng: np.random.Generator, count: int | None = None) -> Scene:
    """A scene of ``count`` objects (default 3 to 6 at random), placed without overlap."""
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)) if count is None else count
    colours = rng.permutation(list(COLOURS))[:n]
    objects: list[SceneObject] = []
    for colour in colours:
        size = str(rng.choice(list(SIZES)))
        radius = SIZES[size]
        for _ in range(200):
            x, y = rng.uniform(radius + 0.02, 0.98 - radius, size=2)
            if min(abs(x - 0.5), abs(y - 0.5)) < _CENTRE_GAP:
                continue
            if all(math.hypot(x - o.x, y - o.y) > radius + o.radius + 0.03 for o in objects):
                break
        else:  # very crowded: start again
            return random_scene(rng, count)
        objects.append(SceneObject(str(colour), str(rng.choice(SHAPES)), size, float(x), float(y)))
    return Scene(tuple(objects))


def render(scene: Scene, side: int = 64) -> np.ndarray:
    """The scene as an RGB image (side, side, 3) uint8 on white."""
    image = np.full((side, side, 3), 255, dtype=np.uint8)
    rows, cols = np.mgrid[0:side, 0:side] + 0.5  # pixel centres
    for o in scene.objects:
        cx, cy, r = o.x * side, o.y * side, o.radius * side
        if o.shape == "circle":
            inside = (cols - cx) ** 2 + (rows - cy) ** 2 <= r * r
        elif o.shape == "square":
            inside = (np.abs(cols - cx) <= r) & (np.abs(rows - cy) <= r)
        else:  # triangle pointing up, in the same box
            top, bottom = cy - r, cy + r
            half = (rows - top) / (2 * r) * r  # half-width grows from 0 at the apex to r at the base
            inside = (rows >= top) & (rows <= bottom) & (np.abs(cols - cx) <= half)
        image[inside] = COLOURS[o.colour]
    return image


# -- questions -------------------------------------------------------------------------------------

_COLOUR_Q = (
    "what colour is the {size} {shape}?",
    "what color is the {size} {shape}?",
    "the {size} {shape} is what colour?",
)
_SHAPE_Q = (
    "what shape is the {colour} object?",
    "what is the shape of the {colour} object?",
    "which shape is {colour}?",
)
_POSITION_Q = {
    "horizontal": ("is the {colour} object on the left or the right?", "is the {colour} shape left or right?"),
    "vertical": ("is the {colour} object at the top or the bottom?", "is the {colour} shape top or bottom?"),
}
_COUNT_Q = {
    "all": ("how many objects are there?", "how many shapes are in the picture?"),
    "shape": ("how many {shape}s are there?", "count the {shape}s."),
    "size": ("how many {size} objects are there?", "how many {size} shapes are there?"),
}
_REL_Q = {
    ("closest", "colour"): (
        "what colour is the object closest to the {colour} object?",
        "what color is the object nearest to the {colour} object?",
    ),
    ("closest", "shape"): (
        "what shape is the object closest to the {colour} object?",
        "what is the shape of the object nearest to the {colour} object?",
    ),
    ("furthest", "colour"): (
        "what colour is the object furthest from the {colour} object?",
        "what color is the object farthest from the {colour} object?",
    ),
    ("furthest", "shape"): (
        "what shape is the object furthest from the {colour} object?",
        "what is the shape of the object farthest from the {colour} object?",
    ),
    ("same", "count"): (
        "how many objects have the same shape as the {colour} object?",
        "how many objects share the shape of the {colour} object?",
    ),
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _colour_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for o in scene.objects:
        groups.setdefault((o.size, o.shape), []).append(o)
    unique = [(key, found[0]) for key, found in groups.items() if len(found) == 1]
    if not unique:
        return None
    (size, shape), target = unique[int(rng.integers(len(unique)))]
    return Question(_pick(rng, _COLOUR_Q).format(size=size, shape=shape), target.colour, "colour")


def _shape_question(scene: Scene, rng: np.random.Generator) -> Question:
    target = scene.objects[int(rng.integers(len(scene.objects)))]
    return Question(_pick(rng, _SHAPE_Q).format(colour=target.colour), target.shape, "shape")


def _count_question(scene: Scene, rng: np.random.Generator) -> Question:
    kind = _pick(rng, tuple(_COUNT_Q))
    if kind == "all":
        return Question(_pick(rng, _COUNT_Q["all"]), str(len(scene.objects)), "count")
    if kind == "shape":
        shape = _pick(rng, SHAPES)
        n = sum(o.shape == shape for o in scene.objects)
        return Question(_pick(rng, _COUNT_Q["shape"]).format(shape=shape), str(n), "count")
    size = _pick(rng, tuple(SIZES))
    n = sum(o.size == size for o in scene.objects)
    return Question(_pick(rng, _COUNT_Q["size"]).format(size=size), str(n), "count")


def _position_question(scene: Scene, rng: np.random.Generator) -> Question:
    target = scene.objects[int(rng.integers(len(scene.objects)))]
    axis = _pick(rng, ("horizontal", "vertical"))
    answer = target.horizontal if axis == "horizontal" else target.vertical
    return Question(_pick(rng, _POSITION_Q[axis]).format(colour=target.colour), answer, "position")


def _relational_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    target = scene.objects[int(rng.integers(len(scene.objects)))]
    relation, asked = list(_REL_Q)[int(rng.integers(len(_REL_Q)))]
    text = _pick(rng, _REL_Q[(relation, asked)]).format(colour=target.colour)
    if relation == "same":
        return Question(text, str(sum(o.shape == target.shape for o in scene.objects)), "relational")
    others = sorted((o for o in scene.objects if o is not target), key=target.distance)
    if relation == "furthest":
        others.reverse()
    if len(others) > 1 and abs(target.distance(others[0]) - target.distance(others[1])) < _TIE:
        return None
    chosen = others[0]
    return Question(text, chosen.colour if asked == "colour" else chosen.shape, "relational")


def relational_kind(text: str) -> str | None:
    """``closest-colour``, ``furthest-shape``, ``same-count``, … for a relational question's text; else None."""
    for (relation, asked), templates in _REL_Q.items():
        if any(_matches(template, text) for template in templates):
            return f"{relation}-{asked}"
    return None


def referents(scene: Scene, text: str) -> tuple[SceneObject | None, SceneObject | None]:
    """The object a question names by its colour, and for closest/furthest questions the one it asks about.

    Ground truth for training attention (the generator knows where each object is); ``None`` where a
    question names no colour of the scene or asks about no second object.
    """
    words = set(text.replace("?", " ").split())
    named = next((o for o in scene.objects if o.colour in words), None)
    kind = relational_kind(text)
    if named is None or kind is None or kind.startswith("same"):
        return named, None
    others = sorted((o for o in scene.objects if o is not named), key=named.distance)
    if not others:
        return named, None
    return named, others[-1] if kind.startswith("furthest") else others[0]


def cells_covered(obj: SceneObject, side: int, grid: int) -> np.ndarray:
    """(grid · grid,) float32, row-major: 1 where a cell of a ``grid`` × ``grid`` raster is ≥ ¼ covered by ``obj``."""
    drawn = (render(Scene((obj,)), side) != 255).any(axis=2)  # (side, side)
    step = side // grid
    share = drawn[: grid * step, : grid * step].reshape(grid, step, grid, step).mean(axis=(1, 3))  # (grid, grid)
    covered: np.ndarray = (share >= 0.25).astype(np.float32).reshape(-1)
    return covered


def _matches(template: str, text: str) -> bool:
    head, _, tail = template.partition("{colour}")
    return text.startswith(head) and text.endswith(tail) and text[len(head) : len(text) - len(tail)] in COLOURS


_ASKERS: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = {
    "colour": _colour_question,
    "shape": _shape_question,
    "count": _count_question,
    "position": _position_question,
    "relational": _relational_question,
}


def ask(scene: Scene, kind: str, rng: np.random.Generator) -> Question | None:
    """A random question of ``kind`` about ``scene``; None when the scene has none with a clear answer."""
    if kind not in _ASKERS:
        msg = f"unknown question type {kind!r}: choose one of {', '.join(QUESTION_TYPES)}"
        raise ValueError(msg)
    for _ in range(8):
        found = _ASKERS[kind](scene, rng)
        if found is not None:
            return found
    return None


def questions(scene: Scene, rng: np.random.Generator, per_type: int = 2) -> list[Question]:
    """Up to ``per_type`` questions of each type about ``scene`` (types in :data:`QUESTION_TYPES` order)."""
    found: list[Question] = []
    for kind in QUESTION_TYPES:
        for _ in range(per_type):
            question = ask(scene, kind, rng)
            if question is not None:
                found.append(question)
    return found


# -- captions ------------------------------------------------------------------------------------


def _place(o: SceneObject) -> str:
    row = "top" if o.y < 1 / 3 else "bottom" if o.y > 2 / 3 else "middle"
    col = "left" if o.x < 1 / 3 else "right" if o.x > 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def caption(scene: Scene) -> str:
    """Every object in words, left to right: ``"a large red circle at the top left. a small …"``."""
    ordered = sorted(scene.objects, key=lambda o: (o.x, o.y))
    return " ".join(f"a {o.size} {o.colour} {o.shape} at the {_place(o)}." for o in ordered)
