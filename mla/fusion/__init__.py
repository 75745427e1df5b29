"""Fusions: ``{modality: ModalFeatures}`` → :class:`FusionOutput`, chosen by name.

Every module of this package is imported here, so a new fusion is one new file with
``@register_fusion("name")`` and no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from mla.fusion.base import (
    FUSIONS,
    Fusion,
    FusionOutput,
    ModalProjection,
    create_fusion,
    list_fusions,
    register_fusion,
)

__all__ = ["FUSIONS", "Fusion", "FusionOutput", "ModalProjection", "create_fusion", "list_fusions", "register_fusion"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
