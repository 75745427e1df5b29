from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inspector.synth.optics import CameraDraw, blur_kernel, sensor


@settings(max_examples=200, deadline=None)
@given(defocus=st.floats(0.0, 3.0), motion=st.floats(0.0, 4.0), angle=st.floats(-0.2, 0.2))
@example(defocus=0.16, motion=0.0, angle=0.0)  # a pillbox smaller than the supersampling grid
def test_blur_kernel_is_normalised_and_finite(defocus: float, motion: float, angle: float) -> None:
    kernel = blur_kernel(defocus, motion, angle)
    if kernel is None:
        assert defocus < 0.15 and motion < 0.25
        return
    assert np.isfinite(kernel).all() and kernel.min() >= 0
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-5)
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1


def test_motion_blur_spreads_along_the_conveyor() -> None:
    kernel = blur_kernel(0.0, 3.0)
    assert kernel is not None
    rows, cols = np.nonzero(kernel > 0.01)
    assert np.ptp(cols) > np.ptp(rows)


def test_sensor_noise_grows_with_signal_and_quantises() -> None:
    camera = CameraDraw(defocus_px=0, motion_px=0, motion_angle=0, full_well_e=5000.0, read_noise_e=5.0)
    rng = np.random.default_rng(0)
    dark = sensor(rng, np.full((200, 200), 0.1, dtype=np.float32), camera)
    bright = sensor(rng, np.full((200, 200), 0.8, dtype=np.float32), camera)
    saturated = sensor(rng, np.full((10, 10), 3.0, dtype=np.float32), camera)
    assert dark.dtype == np.uint8 and abs(float(dark.mean()) - 25.5) < 0.5
    # shot noise: sigma = 255 * sqrt(s / FW) -> 1.14 DN at 0.1, 3.2 DN at 0.8
    assert 0.9 < float(dark.std()) < 1.4 and 2.9 < float(bright.std()) < 3.5
    assert (saturated == 255).all()
