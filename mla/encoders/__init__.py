"""Encoders: one modality's input → :class:`ModalFeatures`, chosen by name.

Every module of this package is imported here, so a new encoder is one new file with
``@register_encoder("name")`` and no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from mla.encoders.base import (
    ENCODERS,
    Encoder,
    FeatureSpec,
    ModalFeatures,
    create_encoder,
    list_encoders,
    register_encoder,
)

__all__ = ["ENCODERS", "Encoder", "FeatureSpec", "ModalFeatures", "create_encoder", "list_encoders", "register_encoder"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
