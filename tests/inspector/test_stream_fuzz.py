"""Fuzzed frame records through the worker's entry point: never an exception, every refusal with a reason.

10,000 generated records (issue 9): headers drawn from valid values, near-misses and junk, values from
real encoded images, truncated or flipped ones and random bytes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.frame import encode_frame
from inspector.stream import Arrival, Record, Rejection, RejectReason, StreamPolicy, decode_record

WALL = 1_800_000_000 * 10**9
_, PNG = encode_frame(np.full((16, 24), 90, np.uint8), camera_id="rig-1", modality="visible", capture_ts_ns=WALL)
_, RAW = encode_frame(np.zeros((8, 8), np.uint16), camera_id="rig-1", modality="infrared", capture_ts_ns=WALL,
                      encoding="raw")  # fmt: skip

GOOD = {
    "schema": [b"inspector.frame/1"],
    "camera_id": [b"rig-1", b"r"],
    "modality": [b"visible", b"infrared"],
    "seq": [b"0", b"1", b"42"],
    "capture_ts_ns": [str(WALL).encode(), b"0"],
    "encoding": [b"png", b"raw", b"jpeg"],
    "dtype": [b"uint8", b"uint16"],
    "shape": [b"16,24", b"8,8", b"16,24,3"],
    "mm_per_px": [b"0.05"],
    "part_id": [b"P-1"],
}
JUNK = [b"", b"-1", b"nan", b"1e309", b"\xff\xfe", b"99999999999999999999", b"16,24,7", b"inspector.frame/2",
        b"../../etc", b" 1", None]  # fmt: skip


@st.composite
def records(draw: st.DrawFn) -> Record:
    headers: list[tuple[str, bytes | None]] = []
    for name, values in GOOD.items():
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # header missing
        value = draw(st.sampled_from(JUNK)) if choice == 1 else draw(st.sampled_from(values))
        headers.append((name, value))
        if choice == 2:
            headers.append((name, draw(st.sampled_from(values))))  # repeated
    if draw(st.booleans()):
        headers.append((draw(st.text(max_size=8)), draw(st.binary(max_size=8))))  # an unknown header
    base = draw(st.sampled_from([PNG, RAW, b""]))
    how = draw(st.integers(0, 3))
    if how == 1 and base:
        base = base[: draw(st.integers(0, len(base) - 1))]  # truncated
    elif how == 2 and base:
        at = draw(st.integers(0, len(base) - 1))
        base = base[:at] + bytes([base[at] ^ 0xFF]) + base[at + 1 :]  # one byte flipped
    elif how == 3:
        base = draw(st.binary(max_size=256))  # random bytes
    modality = draw(st.sampled_from(["visible", "infrared"]))
    key = draw(st.sampled_from([b"rig-1", b"rig-2", None]))
    return Record(modality, key, base, headers, 0)  # type: ignore[arg-type]


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_no_record_crashes_the_decoder(record: Record) -> None:
    outcome = decode_record(record, StreamPolicy(max_record_bytes=10_000, max_pixels=1_000), wall_ns=WALL)
    if isinstance(outcome, Rejection):
        assert outcome.reason in set(RejectReason) and outcome.detail
    else:
        assert isinstance(outcome, Arrival)
        assert outcome.image.shape[:2] == outcome.frame.shape[:2]
