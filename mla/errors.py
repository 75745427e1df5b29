"""Errors raised by the model library."""

from __future__ import annotations


class MLAError(Exception):
    """Base of every error the ``mla`` package raises on purpose."""
