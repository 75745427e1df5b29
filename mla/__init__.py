"""MLA, the multi-modal learning architecture: encoders, fusions and heads chosen by name.

Tensors in, tensors out: nothing here talks to Kafka, Redis or HTTP.
"""

from mla.errors import MLAError

__all__ = ["MLAError"]
