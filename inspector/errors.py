"""Errors raised by the inspection domain; each message says what was wrong and what to do."""

from __future__ import annotations


class InspectorError(Exception):
    """Base of every error the ``inspector`` package raises on purpose."""


class ConfigError(InspectorError):
    """A configuration file or environment override is missing, malformed or invalid."""
