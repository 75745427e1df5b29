"""Errors raised by the worker shells."""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the ``workers`` package raises on purpose."""
