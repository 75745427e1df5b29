from __future__ import annotations

import pytest

from mla import MLAConfigError, MLAError, Registry, list_encoders, list_fusions, list_heads


class Widget:
    def __init__(self, size: int, colour: str = "red") -> None:
        self.size = size
        self.colour = colour


def test_register_create_list() -> None:
    reg: Registry[Widget] = Registry("widget")
    reg.register("small")(Widget)
    widget = reg.create("small", size=3)
    assert isinstance(widget, Widget)
    assert widget.size == 3
    assert reg.names() == ["small"]
    assert "small" in reg
    assert len(reg) == 1


def test_unknown_name_lists_valid_names() -> None:
    reg: Registry[Widget] = Registry("widget")
    reg.register("small")(Widget)
    reg.register("large")(Widget)
    with pytest.raises(MLAError, match=r"unknown widget 'huge': choose one of large, small"):
        reg.create("huge", size=1)


def test_duplicate_and_bad_names_are_refused() -> None:
    reg: Registry[Widget] = Registry("widget")
    reg.register("small")(Widget)
    with pytest.raises(MLAConfigError, match="registered twice"):
        reg.register("small")(Widget)
    with pytest.raises(MLAConfigError, match="identifier"):
        reg.register("not a name")


def test_wrong_keywords_list_accepted_ones() -> None:
    reg: Registry[Widget] = Registry("widget")
    reg.register("small")(Widget)
    with pytest.raises(MLAConfigError, match=r"cannot take shape.*it takes: size, colour"):
        reg.create("small", shape=3)


def test_builtin_registries() -> None:
    assert {"conv_pyramid", "ir_pyramid", "text", "tabular"} <= set(list_encoders())
    assert {"concat", "dma", "hffn"} <= set(list_fusions())
    assert {"segmentation", "classification", "answer", "sequence"} <= set(list_heads())
