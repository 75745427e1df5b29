from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.vqa.scenes import (
    ANSWERS,
    COLOURS,
    MAX_OBJECTS,
    MIN_OBJECTS,
    QUESTION_TYPES,
    Scene,
    SceneObject,
    ask,
    caption,
    questions,
    random_scene,
    relational_kind,
    render,
)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_scenes_are_valid_and_questions_have_answers_in_the_vocabulary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    assert MIN_OBJECTS <= len(scene.objects) <= MAX_OBJECTS
    assert len({o.colour for o in scene.objects}) == len(scene.objects)
    for a in scene.objects:
        assert abs(a.x - 0.5) >= 0.05 and abs(a.y - 0.5) >= 0.05
        for b in scene.objects:
            if a is not b:
                assert a.distance(b) > a.radius + b.radius
    for question in questions(scene, rng, per_type=3):
        assert question.answer in ANSWERS and question.kind in QUESTION_TYPES
        assert question.text.endswith(("?", "."))


def test_answers_follow_the_scene() -> None:
    scene = Scene(
        (
            SceneObject("red", "circle", "large", 0.2, 0.2),
            SceneObject("blue", "square", "small", 0.3, 0.25),
            SceneObject("green", "circle", "small", 0.85, 0.85),
        )
    )
    rng = np.random.default_rng(0)
    seen: dict[str, str] = {}
    for _ in range(300):
        for kind in QUESTION_TYPES:
            q = ask(scene, kind, rng)
            if q is not None:
                seen[q.text] = q.answer
    assert seen["what shape is the red object?"] == "circle"
    assert seen["what colour is the object closest to the red object?"] == "blue"
    assert seen["what colour is the object furthest from the red object?"] == "green"
    assert seen["how many objects have the same shape as the green object?"] == "2"
    assert seen["how many objects are there?"] == "3"
    assert seen["how many circles are there?"] == "2"
    assert seen["is the green object on the left or the right?"] == "right"
    assert seen["is the blue object at the top or the bottom?"] == "top"
    assert seen["what colour is the small square?"] == "blue"


def test_render_draws_each_object_in_its_colour() -> None:
    scene = Scene(
        (SceneObject("red", "square", "large", 0.25, 0.25), SceneObject("blue", "triangle", "large", 0.75, 0.75))
    )
    image = render(scene, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[16, 16]) == COLOURS["red"]
    assert tuple(image[50, 48]) == COLOURS["blue"]
    assert tuple(image[2, 60]) == (255, 255, 255)
    assert render(scene, 75).shape == (75, 75, 3)


def test_caption_names_every_object_left_to_right() -> None:
    scene = Scene((SceneObject("red", "square", "large", 0.8, 0.1), SceneObject("blue", "circle", "small", 0.1, 0.9)))
    assert caption(scene) == "a small blue circle at the bottom left. a large red square at the top right."


def test_unknown_question_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown question type"):
        ask(random_scene(np.random.default_rng(0)), "weather", np.random.default_rng(0))


def test_relational_kind_names_every_relational_question_and_nothing_else() -> None:
    rng = np.random.default_rng(4)
    kinds = set()
    for _ in range(200):
        scene = random_scene(rng)
        for question in questions(scene, rng):
            kind = relational_kind(question.text)
            assert (kind is not None) == (question.kind == "relational"), question.text
            kinds.add(kind)
    assert kinds - {None} == {f"{r}-{a}" for r in ("closest", "furthest") for a in ("colour", "shape")} | {"same-count"}
    assert relational_kind("what colour is the object closest to the purple object?") is None  # not a colour here
