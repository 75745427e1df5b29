"""Errors of the visual-question-answering domain; each carries a short ``reason`` for dead letters and metrics."""

from __future__ import annotations

from inspector.errors import InspectorError

REASONS = (
    "bad_headers",
    "empty_question",
    "unknown_words",
    "question_too_long",
    "bad_image",
    "wrong_image",
    "too_large",
    "model_error",
    "reply_to_not_allowed",
    "write_failed",
)
"""Every reason a VQA request can be refused for, as used in ``dlq_reason`` and ``inspector_vqa_dlq_total``.

``write_failed``: the answer could not be stored or sent within the worker's write attempts.
"""


class VQAError(InspectorError):
    """Base of every error ``inspector.vqa`` raises on purpose."""


class VQAInputError(VQAError, ValueError):
    """A question or image the model cannot answer; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
