"""The learned crack model's numeric helpers (loading and backends are in test_export_cache)."""

from __future__ import annotations

import warnings

import numpy as np

from inspector.mla_model import sigmoid


def test_sigmoid_matches_the_logistic_with_offset_and_never_overflows() -> None:
    logits = np.linspace(-200, 200, 4001, dtype=np.float32).reshape(1, 1, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = sigmoid(logits, 1.5)
    reference = 1.0 / (1.0 + np.exp(-(logits.astype(np.float64) - 1.5)))
    assert p.dtype == np.float32 and p.shape == logits.shape
    np.testing.assert_allclose(p, reference, atol=1e-6)
    assert p.min() == 0.0 and p.max() == 1.0
    assert not np.shares_memory(p, logits)
