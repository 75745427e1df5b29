"""Errors raised by the model library.

One base, :class:`MLAError`, and one-line subclasses that say which part of a call was wrong. The
subclasses also derive from the matching built-in (``ValueError``) so generic handlers keep working.
"""

from __future__ import annotations


class MLAError(Exception):
    """Base of every error the ``mla`` package raises on purpose."""


class MLAConfigError(MLAError, ValueError):
    """A configuration is invalid: an unknown registry name, a bad width, an option a part does not take."""


class MLAInputError(MLAError, ValueError):
    """A model input has the wrong type, shape, size or values, or names a modality the model lacks."""


class MLACheckpointError(MLAError):
    """A checkpoint cannot be read or does not match the model its configuration builds."""
