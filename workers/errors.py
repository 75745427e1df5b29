"""Errors raised by the worker shells."""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the ``workers`` package raises on purpose."""


class ClientError(WorkerError):
    """A Kafka or Redis client could not be made: unreachable, or the login was refused."""
