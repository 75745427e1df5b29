"""The ground-truth operator of ``inspector bench review-loop``: marks and decisions as a reviewer would make them."""

from __future__ import annotations

import numpy as np

from inspector.commands.bench_review import decide, operator_marks


def square(x0: int, y0: int, side: int) -> list[list[int]]:
    return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]]


def test_a_found_crack_is_real_only_where_a_true_crack_lies() -> None:
    truth = np.zeros((100, 100), bool)
    truth[20:30, 20:24] = True  # a true crack
    evidence = {"cracks": [{"index": 0, "outline": square(19, 19, 6)}, {"index": 1, "outline": square(60, 60, 8)}]}
    marks = operator_marks(evidence, truth)
    assert marks == {0: "real", 1: "not_crack"}
    assert decide(marks).kind == "relabel" and decide(marks).cracks == {0: "real", 1: "not_crack"}
    assert decide({0: "not_crack", 1: "not_crack"}).kind == "false_call"
    assert decide({0: "real"}).kind == "confirm"


def test_a_crack_beside_a_true_one_within_three_pixels_counts_as_real() -> None:
    truth = np.zeros((100, 100), bool)
    truth[40:60, 50] = True
    near = {"cracks": [{"index": 0, "outline": [[52, 40], [53, 40], [53, 59], [52, 59]]}]}
    far = {"cracks": [{"index": 0, "outline": [[58, 40], [59, 40], [59, 59], [58, 59]]}]}
    assert operator_marks(near, truth) == {0: "real"} and operator_marks(far, truth) == {0: "not_crack"}
