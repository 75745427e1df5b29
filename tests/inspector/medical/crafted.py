"""Crafted DICOM files and zip archives for the limit tests and the fuzzing: small, bombs and liars::

tiny_dicom(rows=8, columns=8)              # a valid 8x8 CT slice, Part 10 bytes
tiny_dicom(rows=65535, columns=65535)      # declares 4.3 Gpx, holds 128 bytes of pixels
deflated_dicom(inflated=64 * 2**20)        # a deflated dataset: ~64 KiB on the wire, 64 MiB inflated
zipped({"a.dcm": data}, ...)               # a zip archive of named members
understated(archive, "a.dcm", 1000)        # the same archive, declaring that member 1000 bytes long
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"


def tiny_dicom(
    *, rows: int = 8, columns: int = 8, frames: int | None = None, samples: int = 1, bits: int = 16,
    position: float = 0.0, pixels: bytes | None = None, syntax: str = ExplicitVRLittleEndian,
) -> bytes:  # fmt: skip
    """One CT slice as Part 10 bytes; its pixels are ``rows * columns`` 16-bit values (64 past 4096) unless given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{SERIES_UID}.{int(position * 10) + 5000}"
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("tiny.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, SERIES_UID
    ds.Modality = "CT"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, position]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = rows, columns
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    if pixels is None:
        pixels = np.arange(rows * columns if rows * columns <= 4096 else 64, dtype="<u2").tobytes()
    ds.PixelData = pixels + b"\0" * (len(pixels) % 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def deflated_dicom(*, inflated: int, rows: int = 8, columns: int = 8) -> bytes:
    """A deflated-syntax CT slice whose dataset inflates to about ``inflated`` bytes (zeros: a bomb when large).

    The meta group is pydicom's; the body is an Explicit VR Little Endian dataset (the tiny slice's
    elements, then its pixel data padded with zeros to ``inflated`` bytes). Each piece is deflated to
    a byte boundary with no reference to the one before (``Z_FULL_FLUSH``), so one megabyte of zeros
    is compressed once and repeated: a 1 GiB bomb costs nothing to build.
    """
    plain = tiny_dicom(rows=rows, columns=columns)
    body = plain[_meta_end(plain) :]
    pixel_tag = body.index(b"\xe0\x7f\x10\x00OW")  # tag, VR, two reserved bytes, then the 4-byte length
    pixels = body[pixel_tag + 12 :]
    length = max(len(pixels), inflated - pixel_tag - 12) & ~1
    stream = [_deflated(body[: pixel_tag + 8] + struct.pack("<I", length) + pixels)]
    megabytes, rest = divmod(length - len(pixels), 1 << 20)
    stream += [_deflated(bytes(1 << 20))] * megabytes + [_deflated(bytes(rest)), b"\x03\x00"]  # then a final block
    meta = tiny_dicom(syntax=DeflatedExplicitVRLittleEndian, rows=rows, columns=columns)
    return meta[: _meta_end(meta)] + b"".join(stream)


def _meta_end(data: bytes) -> int:
    """Where the dataset starts: after the (0002,0000) group length element at byte 132 and the group it counts."""
    return 144 + int(struct.unpack_from("<I", data, 140)[0])


def _deflated(data: bytes) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush(zlib.Z_FULL_FLUSH)


def zipped(members: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive of ``members`` (name → bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def understated(archive: bytes, name: str, file_size: int) -> bytes:
    """``archive`` with ``name``'s uncompressed size rewritten to ``file_size`` in both of its headers."""
    data = bytearray(archive)
    encoded = name.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            if data[start + name_at : start + name_at + len(encoded)] == encoded:
                struct.pack_into("<I", data, start + size_at, file_size)
            start += 4
    return bytes(data)
