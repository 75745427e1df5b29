from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from inspector.errors import InspectorError
from inspector.frame import (
    DEFAULT_MAX_PIXELS,
    SCHEMA,
    Frame,
    FrameDecodeError,
    FrameEncodeError,
    ImageTooLargeError,
    check_image_header,
    decode_image,
    encode_frame,
    encode_image,
)
from tests.inspector.images import png_header

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_frame(**overrides: Any) -> Frame:
    fields: dict[str, Any] = {
        "camera_id": "rig-1",
        "modality": "visible",
        "seq": 42,
        "capture_ts_ns": 1_718_000_000_123_456_789,
        "encoding": "png",
        "dtype": "uint8",
        "shape": (480, 640, 3),
        "mm_per_px": 0.05,
        "part_id": "P-000123",
    }
    fields.update(overrides)
    return Frame(**fields)


def headers_of(**overrides: bytes | None) -> list[tuple[str, bytes | None]]:
    """Headers as another producer would write them by hand, with some replaced (None value = drop the header)."""
    headers: dict[str, bytes | None] = {
        "schema": b"inspector.frame/1",
        "camera_id": b"rig-1",
        "modality": b"infrared",
        "seq": b"7",
        "capture_ts_ns": b"1000",
        "encoding": b"raw",
        "dtype": b"uint16",
        "shape": b"120,160",
        "mm_per_px": b"0.2",
    }
    headers.update(overrides)
    return [(name, value) for name, value in headers.items() if value is not None]


def ramp(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A deterministic image with distinct values per pixel and channel."""
    top = np.iinfo(dtype).max
    return (np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape) * 7919 % top).astype(dtype)


# --- the schema ---------------------------------------------------------------------------------------------


def test_frame_is_frozen_and_rejects_unknown_fields() -> None:
    frame = make_frame()
    with pytest.raises(ValidationError):
        frame.seq = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        make_frame(exposure_us=100)


def test_frame_properties() -> None:
    frame = make_frame(shape=(4, 5, 3), dtype="uint16", encoding="raw")
    assert (frame.height, frame.width, frame.channels, frame.pixel_count, frame.nbytes) == (4, 5, 3, 20, 120)
    assert make_frame(shape=(4, 5)).channels == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("camera_id", ""),
        ("camera_id", "rig 1"),
        ("camera_id", "rig/1"),
        ("camera_id", "-rig"),
        ("camera_id", "kamera-ü"),
        ("camera_id", "r" * 65),
        ("modality", "thermal"),
        ("seq", -1),
        ("seq", True),
        ("seq", 1.0),
        ("seq", "3"),
        ("seq", 2**63),
        ("capture_ts_ns", -5),
        ("encoding", "bmp"),
        ("dtype", "float32"),
        ("shape", (480,)),
        ("shape", (480, 640, 3, 1)),
        ("shape", (480, 640, 2)),
        ("shape", (480, 640, 4)),
        ("shape", (0, 640)),
        ("shape", (480, -1)),
        ("shape", (480.0, 640)),
        ("mm_per_px", 0.0),
        ("mm_per_px", -0.1),
        ("mm_per_px", float("nan")),
        ("mm_per_px", float("inf")),
        ("mm_per_px", "0.1"),
        ("part_id", ""),
        ("part_id", "part id"),
    ],
)
def test_frame_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        make_frame(**{field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_frame_optional_fields_and_int_scale() -> None:
    frame = make_frame(mm_per_px=None, part_id=None, seq=0)
    assert frame.mm_per_px is None and frame.part_id is None
    assert make_frame(mm_per_px=1).mm_per_px == 1.0


def test_jpeg_frame_must_be_8_bit() -> None:
    with pytest.raises(ValidationError, match="8-bit"):
        make_frame(encoding="jpeg", dtype="uint16")


# --- headers ------------------------------------------------------------------------------------------------


def test_to_headers_is_the_documented_wire_format() -> None:
    assert make_frame().to_headers() == [
        ("schema", b"inspector.frame/1"),
        ("camera_id", b"rig-1"),
        ("modality", b"visible"),
        ("seq", b"42"),
        ("capture_ts_ns", b"1718000000123456789"),
        ("encoding", b"png"),
        ("dtype", b"uint8"),
        ("shape", b"480,640,3"),
        ("mm_per_px", b"0.05"),
        ("part_id", b"P-000123"),
    ]


def test_optional_headers_are_left_out_when_unknown() -> None:
    names = [name for name, _ in make_frame(mm_per_px=None, part_id=None, shape=(2, 3)).to_headers()]
    assert "mm_per_px" not in names and "part_id" not in names
    assert dict(make_frame(shape=(2, 3)).to_headers())["shape"] == b"2,3"


def test_from_headers_reads_a_foreign_producer() -> None:
    # any order, bytearray values, and headers of other tools (tracing) next to ours
    headers: list[tuple[str, bytes | bytearray | None]] = [
        ("traceparent", b"00-abc-def-01"),
        *reversed(headers_of(seq=b"0007", mm_per_px=b"2E-1")),
    ]
    headers.append(("part_id", bytearray(b"P-9")))
    frame = Frame.from_headers(headers)
    assert frame == Frame(
        camera_id="rig-1",
        modality="infrared",
        seq=7,
        capture_ts_ns=1000,
        encoding="raw",
        dtype="uint16",
        shape=(120, 160),
        mm_per_px=0.2,
        part_id="P-9",
    )


positive_floats = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
safe_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)
frames = st.builds(
    Frame,
    camera_id=safe_ids,
    modality=st.sampled_from(["visible", "infrared"]),
    seq=st.integers(0, 2**63 - 1),
    capture_ts_ns=st.integers(0, 2**63 - 1),
    encoding=st.sampled_from(["png", "raw"]),
    dtype=st.sampled_from(["uint8", "uint16"]),
    shape=st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
    | st.tuples(st.integers(1, 10**5), st.integers(1, 10**5), st.sampled_from([1, 3])),
    mm_per_px=st.none() | positive_floats,
    part_id=st.none() | safe_ids,
)


@FAST
@given(frames)
def test_headers_round_trip(frame: Frame) -> None:
    headers = frame.to_headers()
    assert all(isinstance(name, str) and isinstance(value, bytes) for name, value in headers)
    assert all(value.decode("ascii") for _, value in headers)  # plain text any client can write
    assert Frame.from_headers(headers) == frame


@pytest.mark.parametrize("missing", ["schema", "camera_id", "modality", "seq", "capture_ts_ns", "encoding", "dtype"])
def test_missing_header_is_named(missing: str) -> None:
    with pytest.raises(FrameDecodeError, match=f"missing: {missing}"):
        Frame.from_headers(headers_of(**{missing: None}))


def test_duplicate_header_is_refused() -> None:
    with pytest.raises(FrameDecodeError, match="'seq' appears more than once"):
        Frame.from_headers([*headers_of(), ("seq", b"8")])


@pytest.mark.parametrize("version", [b"inspector.frame/2", b"inspector.frame/0", b"", b"INSPECTOR.FRAME/1"])
def test_unknown_schema_version_is_refused(version: bytes) -> None:
    with pytest.raises(FrameDecodeError, match=r"'schema'.*understands only 'inspector\.frame/1'"):
        Frame.from_headers(headers_of(schema=version))


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("seq", b"-1"),
        ("seq", b"+1"),
        ("seq", b" 1"),
        ("seq", b"1 "),
        ("seq", b"1_000"),
        ("seq", b"1.0"),
        ("seq", b"1e3"),
        ("seq", b"0x10"),
        ("seq", "\u0663".encode()),  # ARABIC-INDIC DIGIT THREE: int() would accept it
        ("seq", b""),
        ("seq", b"9223372036854775808"),
        ("capture_ts_ns", b"soon"),
        ("shape", b"120x160"),
        ("shape", b"120, 160"),
        ("shape", b"120"),
        ("shape", b"120,160,3,1"),
        ("shape", b"120,160,2"),
        ("shape", b"0,160"),
        ("shape", b"120,160,"),
        ("mm_per_px", b"nan"),
        ("mm_per_px", b"inf"),
        ("mm_per_px", b"1e400"),
        ("mm_per_px", b"-0.2"),
        ("mm_per_px", b"0"),
        ("mm_per_px", b"0x1p-3"),
        ("mm_per_px", b"0,2"),
        ("mm_per_px", b""),
        ("modality", b"thermal"),
        ("encoding", b"bmp"),
        ("dtype", b"float32"),
        ("camera_id", b"rig 1"),
        ("camera_id", b""),
        ("camera_id", b"rig-\xff"),
        ("part_id", b"a/b"),
    ],
)
def test_malformed_header_is_named(header: str, value: bytes) -> None:
    with pytest.raises(FrameDecodeError, match=f"'{header}'"):
        Frame.from_headers(headers_of(**{header: value}))


def test_null_header_value_is_refused() -> None:
    with pytest.raises(FrameDecodeError, match="'dtype' has no value"):
        Frame.from_headers([(n, None if n == "dtype" else v) for n, v in headers_of()])


def test_header_combination_checked_like_the_model() -> None:
    with pytest.raises(FrameDecodeError, match="JPEG holds 8-bit samples only"):
        Frame.from_headers(headers_of(encoding=b"jpeg", dtype=b"uint16"))


def test_decode_errors_are_inspector_errors() -> None:
    assert issubclass(FrameDecodeError, InspectorError) and issubclass(FrameEncodeError, InspectorError)


# --- pixel codecs -------------------------------------------------------------------------------------------

LOSSLESS_CASES = [
    ("png", (6, 9), "uint8"),
    ("png", (6, 9), "uint16"),
    ("png", (6, 9, 1), "uint8"),
    ("png", (6, 9, 3), "uint8"),
    ("png", (6, 9, 3), "uint16"),
    ("raw", (6, 9), "uint16"),
    ("raw", (6, 9, 3), "uint8"),
    ("raw", (6, 9, 1), "uint16"),
]


@pytest.mark.parametrize(("encoding", "shape", "dtype"), LOSSLESS_CASES)
def test_lossless_round_trip(encoding: str, shape: tuple[int, ...], dtype: str) -> None:
    image = ramp(shape, dtype)
    frame, data = encode_frame(image, camera_id="rig-1", modality="visible", capture_ts_ns=5, encoding=encoding)  # type: ignore[arg-type]
    assert (frame.shape, frame.dtype, frame.encoding) == (shape, dtype, encoding)
    decoded = decode_image(data, frame)
    assert decoded.dtype == image.dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)
    assert decoded.flags.writeable


@FAST
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16]),
        shape=st.tuples(st.integers(1, 12), st.integers(1, 12))
        | st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3])),
    ),
    st.sampled_from(["png", "raw"]),
)
def test_lossless_round_trip_any_image(image: np.ndarray, encoding: str) -> None:
    frame, data = encode_frame(image, camera_id="c", modality="infrared", capture_ts_ns=0, encoding=encoding)  # type: ignore[arg-type]
    np.testing.assert_array_equal(decode_image(data, frame), image)


def test_png_stores_rgb_for_other_readers() -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    png = encode_image(red, "png")
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)  # what any PNG reader sees, in BGR
    assert bgr is not None and bgr[0, 0].tolist() == [0, 0, 255]


def test_jpeg_round_trip_is_close_and_keeps_colour_order() -> None:
    image = np.zeros((32, 48, 3), np.uint8)
    image[..., 0] = 200  # red
    image[..., 2] = np.linspace(0, 100, 48, dtype=np.uint8)  # a blue ramp
    frame, data = encode_frame(image, camera_id="c", modality="visible", capture_ts_ns=0, encoding="jpeg")
    assert data[:3] == b"\xff\xd8\xff"
    decoded = decode_image(data, frame)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3


def test_jpeg_grey_round_trip() -> None:
    image = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    for shape in [(30, 40), (30, 40, 1)]:
        frame, data = encode_frame(
            image.reshape(shape), camera_id="c", modality="visible", capture_ts_ns=0, encoding="jpeg"
        )
        decoded = decode_image(data, frame)
        assert decoded.shape == shape
        assert np.abs(decoded.astype(int) - image.reshape(shape).astype(int)).max() < 8


def test_jpeg_refuses_uint16_with_a_clear_message() -> None:
    with pytest.raises(FrameEncodeError, match=r"JPEG holds 8-bit samples only.*png or raw"):
        encode_image(np.zeros((4, 4), np.uint16), "jpeg")
    with pytest.raises(FrameEncodeError, match="JPEG holds 8-bit samples only"):
        encode_frame(np.zeros((4, 4), np.uint16), camera_id="c", modality="infrared", capture_ts_ns=0, encoding="jpeg")


def test_jpeg_quality_is_checked_and_used() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    assert len(encode_image(image, "jpeg", jpeg_quality=20)) < len(encode_image(image, "jpeg", jpeg_quality=95))
    with pytest.raises(FrameEncodeError, match="jpeg_quality"):
        encode_image(image, "jpeg", jpeg_quality=101)


def test_raw_is_little_endian_c_order() -> None:
    image = np.array([[0x0102, 0x0304]], dtype=np.uint16)
    assert encode_image(image, "raw") == b"\x02\x01\x04\x03"
    assert encode_image(image.astype(">u2"), "raw") == b"\x02\x01\x04\x03"
    assert encode_image(np.asfortranarray(np.array([[1, 2], [3, 4]], np.uint8)), "raw") == b"\x01\x02\x03\x04"
    frame = make_frame(encoding="raw", dtype="uint16", shape=(1, 2))
    np.testing.assert_array_equal(decode_image(b"\x02\x01\x04\x03", frame), image)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.int16),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros(4, np.uint8),
    ],
)
def test_encode_refuses_unsupported_arrays(image: np.ndarray) -> None:
    with pytest.raises(FrameEncodeError, match="images must be"):
        encode_image(image, "png")
    with pytest.raises(FrameEncodeError):
        encode_frame(image, camera_id="c", modality="visible", capture_ts_ns=0)


def test_encode_frame_reports_bad_metadata_by_field() -> None:
    with pytest.raises(FrameEncodeError, match="'camera_id'"):
        encode_frame(np.zeros((2, 2), np.uint8), camera_id="no spaces", modality="visible", capture_ts_ns=0)
    with pytest.raises(FrameEncodeError, match="'mm_per_px'"):
        encode_frame(np.zeros((2, 2), np.uint8), camera_id="c", modality="visible", capture_ts_ns=0, mm_per_px=-1.0)


def test_encode_refuses_an_unknown_encoding() -> None:
    with pytest.raises(FrameEncodeError, match="unknown encoding 'bmp'"):
        encode_image(np.zeros((2, 2), np.uint8), "bmp")  # type: ignore[arg-type]


# --- decoding refuses what does not match ---------------------------------------------------------------------


def encoded(encoding: str, shape: tuple[int, ...] = (10, 20, 3), dtype: str = "uint8") -> tuple[Frame, bytes]:
    return encode_frame(ramp(shape, dtype), camera_id="rig-1", modality="visible", capture_ts_ns=0, encoding=encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["png", "jpeg", "raw"])
def test_empty_data_is_refused(encoding: str) -> None:
    frame, _ = encoded(encoding)
    with pytest.raises(FrameDecodeError, match="empty"):
        decode_image(b"", frame)


@pytest.mark.parametrize("encoding", ["png", "jpeg", "raw"])
@pytest.mark.parametrize("keep", [0.01, 0.3, 0.5, 0.9, 0.99])
def test_truncated_data_is_refused(encoding: str, keep: float) -> None:
    frame, data = encoded(encoding)
    with pytest.raises(FrameDecodeError, match="truncated"):
        decode_image(data[: max(1, int(len(data) * keep))], frame)


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_data_cut_by_one_byte_is_refused(encoding: str) -> None:
    frame, data = encoded(encoding)
    with pytest.raises(FrameDecodeError, match="truncated"):
        decode_image(data[:-1], frame)


def test_raw_too_long_is_refused() -> None:
    frame, data = encoded("raw")
    with pytest.raises(FrameDecodeError, match=r"too long.*needs exactly 600"):
        decode_image(data + b"\x00", frame)


@pytest.mark.parametrize(
    ("declared", "actual", "said"),
    [
        ("png", "jpeg", "the data is JPEG"),
        ("jpeg", "png", "the data is PNG"),
        ("png", "raw", "the data is neither PNG nor JPEG"),
    ],
)
def test_wrong_encoding_is_refused(declared: str, actual: str, said: str) -> None:
    frame, _ = encoded(declared)
    _, data = encoded(actual)
    with pytest.raises(FrameDecodeError, match=f"declared {declared} but {said}"):
        decode_image(data, frame)


def test_png_with_trailing_bytes_is_refused() -> None:
    frame, data = encoded("png")
    with pytest.raises(FrameDecodeError, match="after its IEND"):
        decode_image(data + b"junk", frame)


def test_corrupt_png_body_is_refused() -> None:
    frame, data = encoded("png", shape=(64, 64), dtype="uint8")
    idat = data.index(b"IDAT") + 8
    corrupt = data[:idat] + bytes(b ^ 0x5A for b in data[idat : idat + 16]) + data[idat + 16 :]
    with pytest.raises(FrameDecodeError, match="corrupt"):
        decode_image(corrupt, frame)


@pytest.mark.parametrize(
    ("encoding", "shape", "dtype", "declared", "said"),
    [
        ("png", (10, 20), "uint16", {"dtype": "uint8"}, "16-bit grey.*expected 8-bit grey"),
        ("png", (10, 20), "uint8", {"dtype": "uint16"}, "8-bit grey.*expected 16-bit grey"),
        ("png", (10, 20, 3), "uint8", {"shape": (10, 20)}, "8-bit RGB.*expected 8-bit grey"),
        ("png", (10, 20), "uint8", {"shape": (10, 20, 3)}, "8-bit grey.*expected 8-bit RGB"),
        ("png", (10, 20), "uint8", {"shape": (20, 10)}, r"IHDR header says 10x20 \(HxW\)"),
        ("jpeg", (16, 24), "uint8", {"shape": (24, 16)}, r"SOF header says 16x24 \(HxW\)"),
        ("jpeg", (16, 24, 3), "uint8", {"shape": (16, 24)}, "3 colour components"),
        ("jpeg", (16, 24), "uint8", {"shape": (16, 24, 3)}, "1 colour components"),
        ("raw", (10, 20), "uint8", {"dtype": "uint16"}, "truncated"),
    ],
)
def test_declared_type_or_shape_mismatch_is_refused(
    encoding: str, shape: tuple[int, ...], dtype: str, declared: dict[str, Any], said: str
) -> None:
    frame, data = encoded(encoding, shape, dtype)
    with pytest.raises(FrameDecodeError, match=said):
        decode_image(data, frame.model_copy(update=declared))


def test_png_palette_is_refused() -> None:
    # hand-built 1x1 palette PNG: valid, but not a layout this schema uses
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", b"\xff\x00\x00")
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(FrameDecodeError, match="8-bit palette"):
        decode_image(png, make_frame(shape=(1, 1, 3)))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of zeros: about 1000x smaller on the wire than in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = png_bomb(20_000, 20_000)
    assert len(data) < 1_000_000  # tiny on the wire, 400 MB decoded
    return data


@pytest.fixture
def no_decompression(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decode_image decompressed an image it should have refused from its header")

    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.usefixtures("no_decompression")
def test_png_bomb_refused_by_declared_shape(bomb: bytes) -> None:
    with pytest.raises(ImageTooLargeError, match=f"400000000 pixels, more than max_pixels={DEFAULT_MAX_PIXELS}"):
        decode_image(bomb, make_frame(shape=(20_000, 20_000), encoding="png", dtype="uint8"))


@pytest.mark.usefixtures("no_decompression")
def test_png_bomb_refused_by_ihdr_when_the_declared_shape_lies(bomb: bytes) -> None:
    with pytest.raises(FrameDecodeError, match="IHDR header says 20000x20000 = 400000000 pixels"):
        decode_image(bomb, make_frame(shape=(100, 100), encoding="png", dtype="uint8"))


@pytest.mark.usefixtures("no_decompression")
def test_png_bomb_refused_when_the_caller_raises_the_limit_but_the_shape_lies(bomb: bytes) -> None:
    with pytest.raises(FrameDecodeError, match=r"IHDR header says 20000x20000 \(HxW\)"):
        decode_image(bomb, make_frame(shape=(100, 100), encoding="png", dtype="uint8"), max_pixels=10**9)


@pytest.mark.usefixtures("no_decompression")
def test_jpeg_sof_dimensions_checked_before_decoding() -> None:
    frame, data = encoded("jpeg", (16, 24), "uint8")
    sof = data.index(b"\xff\xc0")
    huge = data[: sof + 5] + struct.pack(">HH", 30_000, 30_000) + data[sof + 9 :]
    with pytest.raises(FrameDecodeError, match="SOF header says 30000x30000 = 900000000 pixels"):
        decode_image(huge, frame)
    twelve_bit = data[: sof + 4] + b"\x0c" + data[sof + 5 :]
    with pytest.raises(FrameDecodeError, match="12-bit samples; only 8-bit JPEG"):
        decode_image(twelve_bit, frame)


def test_the_default_pixel_limit_is_the_largest_frame_the_line_makes() -> None:
    assert DEFAULT_MAX_PIXELS == 4096 * 4096


@pytest.mark.usefixtures("no_decompression")
def test_check_image_header_reads_the_size_and_refuses_a_bomb_unread() -> None:
    assert check_image_header(png_header(640, 480), max_pixels=640 * 480) == (640, 480)
    with pytest.raises(
        ImageTooLargeError, match="request r-1: the PNG IHDR header says 100000x100000 = 10000000000 pixels"
    ):
        check_image_header(png_header(100_000, 100_000), max_pixels=DEFAULT_MAX_PIXELS, where="request r-1")
    _, jpeg = encoded("jpeg", (16, 24), "uint8")
    assert check_image_header(jpeg, max_pixels=16 * 24) == (24, 16)
    with pytest.raises(ImageTooLargeError, match="JPEG SOF header says 24x16 = 384 pixels, more than max_pixels=383"):
        check_image_header(jpeg, max_pixels=383)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"BM" + bytes(60), "neither PNG nor JPEG"),  # a BMP: other formats are refused unread
        (b"", "neither PNG nor JPEG (it starts empty)"),
        (png_header(8, 8)[:20], "PNG is truncated or malformed"),
        (png_header(0, 8), "declares 0x8"),
        (b"\xff\xd8\xff\xd9", "JPEG is truncated before its frame header"),
    ],
)
def test_check_image_header_refuses_what_it_cannot_read(data: bytes, said: str) -> None:
    with pytest.raises(FrameDecodeError, match=re.escape(said)):
        check_image_header(data, max_pixels=DEFAULT_MAX_PIXELS)


def test_max_pixels_applies_to_every_encoding() -> None:
    for encoding in ["png", "jpeg", "raw"]:
        frame, data = encoded(encoding, (10, 20), "uint8")
        assert decode_image(data, frame, max_pixels=200).shape == (10, 20)
        with pytest.raises(FrameDecodeError, match="more than max_pixels=199"):
            decode_image(data, frame, max_pixels=199)


def test_garbage_after_a_valid_signature_is_refused() -> None:
    rng = np.random.default_rng(1)
    frame, _ = encoded("jpeg")
    with pytest.raises(FrameDecodeError, match="JPEG"):
        decode_image(b"\xff\xd8\xff" + rng.bytes(200), frame)
    frame, _ = encoded("png")
    with pytest.raises(FrameDecodeError, match="PNG"):
        decode_image(b"\x89PNG\r\n\x1a\n" + rng.bytes(200), frame)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame, data = encoded("raw")
    for buffer in (bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(decode_image(buffer, frame), ramp((10, 20, 3), "uint8"))


def test_schema_constant() -> None:
    assert SCHEMA == "inspector.frame/1"
    assert dict(make_frame().to_headers())["schema"] == SCHEMA.encode()


def test_an_image_that_views_a_whole_bytes_buffer_is_sent_raw_without_a_copy() -> None:
    buffer = np.arange(16, dtype="<u2").tobytes()  # a Mono16 camera buffer, 4 x 4
    image = np.frombuffer(buffer, dtype=np.uint16).reshape(4, 4)
    assert encode_image(image, "raw") is buffer
    part = np.frombuffer(buffer, dtype=np.uint16)[:8].reshape(2, 4)  # a region of it: copied
    encoded = encode_image(part, "raw")
    assert encoded is not buffer and encoded == buffer[:16]
    assert encode_image(np.frombuffer(buffer, np.uint16)[4:].reshape(3, 4), "raw") == buffer[8:]
    swapped = np.frombuffer(buffer, dtype=">u2").reshape(4, 4)  # big-endian view: converted, never sent as is
    assert encode_image(swapped, "raw") == swapped.astype("<u2").tobytes()
