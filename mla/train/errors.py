"""Errors of the training engine; all derive from :class:`mla.errors.MLAError`."""

from __future__ import annotations

from mla.errors import MLAError

__all__ = ["CheckpointError", "DeviceError", "NonFiniteLossError", "TrainConfigError", "TrainError"]


class TrainError(MLAError):
    """Base of every error the training engine raises on purpose."""


class TrainConfigError(TrainError, ValueError):
    """A training configuration that cannot be used (unknown key, bad value)."""


class DeviceError(TrainError):
    """The configured device is not available on this machine."""


class NonFiniteLossError(TrainError):
    """The loss (or the gradient norm) became NaN or infinite."""


class CheckpointError(TrainError):
    """A checkpoint that cannot be written, read, or does not fit the model being trained."""
