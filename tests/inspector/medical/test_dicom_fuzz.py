"""Zip archives and DICOM headers, mutated 10,000 times each, through :func:`read_study` (issue 20).

Every case must end in volumes within the limits or a :class:`DicomError` (which the worker turns into
a dead letter); anything else would stop the worker's turn. The limits are small here, so that a
mutated size field that escaped them would show up as a limit exceeded, not as a slow test.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from inspector.medical.dicom import DicomLimits, read_study
from inspector.medical.errors import DicomError
from tests.inspector.medical.crafted import deflated_dicom, tiny_dicom, understated, zipped

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every damaged element

CASES = 10_000
LIMITS = DicomLimits(max_members=4, max_unpacked_bytes=400_000, max_ratio=50.0, max_pixels=4 * 64)
BOUNDARY = [0, 1, 2, 3, 255, 256, 4095, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]

Mutation = Callable[[np.random.Generator, bytes], bytes]


def outcome(source: bytes) -> str:
    """``read`` (volumes within the limits) or the name of the DicomError; anything else fails the test."""
    try:
        volumes = read_study(source, limits=LIMITS)
    except DicomError as exc:
        assert str(exc)
        return type(exc).__name__
    assert sum(v.pixels.size for v in volumes) <= LIMITS.max_pixels
    return "read"


def tally(rng: np.random.Generator, make: Callable[[np.random.Generator], bytes]) -> Counter[str]:
    """The outcomes of :data:`CASES` inputs from ``make``; fails at the first one that raises anything else."""
    seen: Counter[str] = Counter()
    for case in range(CASES):
        data = make(rng)
        try:
            seen[outcome(data)] += 1
        except Exception as exc:
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} escaped read_study ({data[:64].hex()})")
    assert sum(seen.values()) == CASES
    return seen


def flip(rng: np.random.Generator, data: bytes) -> bytes:
    at = int(rng.integers(0, len(data)))
    return data[:at] + bytes([data[at] ^ int(rng.integers(1, 256))]) + data[at + 1 :]


def truncate(rng: np.random.Generator, data: bytes) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def junk(rng: np.random.Generator, data: bytes) -> bytes:
    at = int(rng.integers(0, len(data)))
    return data[:at] + rng.bytes(int(rng.integers(1, 32))) + data[at:]


def number(rng: np.random.Generator, width: int) -> int:
    return (
        int(rng.choice(BOUNDARY)) % 2 ** (8 * width) if rng.random() < 0.6 else int(rng.integers(0, 2 ** (8 * width)))
    )


def field_writer(fields: dict[bytes, list[tuple[int, int]]]) -> Mutation:
    """A mutation that rewrites one (offset, width) field after one occurrence of a signature."""

    def write(rng: np.random.Generator, data: bytes) -> bytes:
        signature = list(fields)[int(rng.integers(0, len(fields)))]
        starts = [match.start() for match in re.finditer(re.escape(signature), data)]
        if not starts:
            return flip(rng, data)
        start = starts[int(rng.integers(0, len(starts)))]
        offset, width = fields[signature][int(rng.integers(0, len(fields[signature])))]
        if start + offset + width > len(data):
            return data
        value = number(rng, width).to_bytes(width, "little")
        return data[: start + offset] + value + data[start + offset + width :]

    return write


# -- zip archives ---------------------------------------------------------------------------------------------

SLICES = [tiny_dicom(position=float(i)) for i in range(3)]
ARCHIVES = [
    zipped({"a.dcm": SLICES[0]}),
    zipped({"a.dcm": SLICES[0], "b.dcm": SLICES[1]}, zipfile.ZIP_STORED),
    zipped({f"{i}.dcm": s for i, s in enumerate(SLICES)}),
    zipped({"a.dcm": SLICES[0], "zeros": bytes(60_000)}),  # ratio ~60: over 50
    zipped({f"{i}": b"" for i in range(6)}),  # more members than allowed
    zipped({"a.dcm": deflated_dicom(inflated=300_000)}),  # a deflated dataset inside
    understated(zipped({"a.dcm": SLICES[0], "big": bytes(300_000)}), "big", 100),
]
ZIP_FIELDS = field_writer(
    {
        b"PK\x03\x04": [(18, 4), (22, 4), (26, 2), (28, 2)],  # local: compressed, uncompressed, name and extra lengths
        b"PK\x01\x02": [(20, 4), (24, 4), (28, 2), (42, 4)],  # central: sizes, name length, local header offset
        b"PK\x05\x06": [(8, 2), (10, 2), (12, 4), (16, 4)],  # end: entries here and in all, directory size, offset
    }
)
ZIP_MUTATIONS: list[Mutation] = [ZIP_FIELDS, ZIP_FIELDS, ZIP_FIELDS, flip, truncate, junk]


def mutated_zip(rng: np.random.Generator) -> bytes:
    data = ARCHIVES[int(rng.integers(0, len(ARCHIVES)))]
    for _ in range(int(rng.integers(0, 3))):
        data = ZIP_MUTATIONS[int(rng.integers(0, len(ZIP_MUTATIONS)))](rng, data) or data
    return data


def test_mutated_zip_archives_end_in_volumes_or_a_dicom_error() -> None:
    seen = tally(np.random.default_rng(2026_12_07), mutated_zip)
    assert seen["read"] > 100 and seen["DicomLimitError"] > 100 and seen["DicomError"] > 100, seen


# -- DICOM headers --------------------------------------------------------------------------------------------


def value_at(data: bytes, tag: bytes) -> tuple[int, int]:
    """(offset, length) of an explicit-VR element's value with a 2-byte length (US, IS, UI)."""
    at = data.index(tag)
    (length,) = struct.unpack_from("<H", data, at + 6)
    return at + 8, length


PLAIN = tiny_dicom(frames=1)
DEFLATED = [deflated_dicom(inflated=size) for size in (0, 100_000, 350_000, 2 * 2**20)]
# Rows, Columns, SamplesPerPixel, BitsAllocated
US_TAGS = [b"\x28\x00\x10\x00US", b"\x28\x00\x11\x00US", b"\x28\x00\x02\x00US", b"\x28\x00\x00\x01US"]
SYNTAXES = [b"1.2.840.10008.1.2\0\0\0", b"1.2.840.10008.1.2.2\0", b"1.2.840.10008.1.2.5\0", b"1.2.840.10008.1.2.1\0"]


def header_mutation(rng: np.random.Generator, data: bytes) -> bytes:
    """Rewrite a size field (those above, NumberOfFrames, pixel data length) or the syntax; or flip, cut, insert."""
    kind = int(rng.integers(0, 9))
    if kind <= 3 and US_TAGS[kind] in data:
        offset, _ = value_at(data, US_TAGS[kind])
        return data[:offset] + number(rng, 2).to_bytes(2, "little") + data[offset + 2 :]
    if kind == 4 and b"\x28\x00\x08\x00IS" in data:
        offset, length = value_at(data, b"\x28\x00\x08\x00IS")
        text = "".join(rng.choice(list("0123456789-+. e"), size=length))
        return data[:offset] + text.encode() + data[offset + length :]
    if kind == 5 and b"\xe0\x7f\x10\x00OW" in data:
        at = data.index(b"\xe0\x7f\x10\x00OW") + 8
        return data[:at] + number(rng, 4).to_bytes(4, "little") + data[at + 4 :]
    if kind == 6 and b"1.2.840.10008.1.2.1\0" in data:
        return data.replace(b"1.2.840.10008.1.2.1\0", SYNTAXES[int(rng.integers(0, len(SYNTAXES)))], 1)
    return [flip, truncate, junk][int(rng.integers(0, 3))](rng, data) or data


def mutated_dicom(rng: np.random.Generator) -> bytes:
    data = PLAIN if rng.random() < 0.7 else DEFLATED[int(rng.integers(0, len(DEFLATED)))]
    for _ in range(int(rng.integers(1, 3))):
        data = header_mutation(rng, data)
    return data


def test_mutated_dicom_headers_end_in_volumes_or_a_dicom_error() -> None:
    seen = tally(np.random.default_rng(7_677), mutated_dicom)
    assert seen["read"] > 100 and seen["DicomLimitError"] > 100 and seen["DicomError"] > 100, seen
