"""Heads: the fused representation → one task's output, chosen by name.

Every module of this package is imported here, so a new head is one new file with
``@register_head("name")`` and no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from mla.heads.base import HEADS, Head, HeadInput, create_head, list_heads, register_head

__all__ = ["HEADS", "Head", "HeadInput", "create_head", "list_heads", "register_head"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
