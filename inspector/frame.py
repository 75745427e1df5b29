"""Frame metadata (:class:`Frame`), its Kafka header form, and the pixel codecs (PNG, JPEG, raw).

A frame travels as two parts: the pixel bytes (the Kafka record value) and its metadata (the record
headers). Any producer, in any language, can publish one: every header value is UTF-8 text and every
number is written in decimal::

    schema         inspector.frame/1
    camera_id      rig-1                 [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters
    modality       visible | infrared
    seq            42                    trigger sequence; 0 = the camera has no trigger counter
    capture_ts_ns  1718000000123456789   capture time in nanoseconds on the camera's clock
    encoding       png | jpeg | raw
    dtype          uint8 | uint16
    shape          480,640  or  480,640,3   (H,W or H,W,C with C in 1, 3; C=3 means RGB)
    mm_per_px      0.05                  optional: absent when the scale is not known
    part_id        P-000123              optional

Integers are non-negative and fit a signed 64-bit integer, so a Java ``long`` can hold them.
Unknown header names are ignored (tracing and broker tooling add their own); a missing, repeated or
malformed known header raises :class:`FrameDecodeError` naming the header.

Pixel layouts: arrays are ``(H, W)`` grey or ``(H, W, 3)`` RGB (OpenCV's BGR order never leaves this
module), ``uint8`` or ``uint16``. ``raw`` is the C-order array as little-endian bytes. JPEG holds
8-bit samples only. :func:`decode_image` checks the declared size against ``max_pixels`` and reads the
PNG ``IHDR`` / JPEG ``SOF`` dimensions before it decompresses anything, so a small file that would
expand to gigabytes is refused without being allocated. :func:`check_image_header` is that header
check alone, for every other place an encoded image enters (VQA requests, dataset files).

``max_pixels`` defaults to the largest frame the line produces, :data:`DEFAULT_MAX_FRAME_SIDE` squared
(``worker.max_frame_side`` in the settings).
"""

from __future__ import annotations

import math
import re
import struct
import sys
from collections.abc import Iterable
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from inspector.errors import InspectorError

__all__ = [
    "DEFAULT_MAX_FRAME_SIDE",
    "DEFAULT_MAX_PIXELS",
    "SCHEMA",
    "DType",
    "Encoding",
    "Frame",
    "FrameDecodeError",
    "FrameEncodeError",
    "ImageArray",
    "ImageTooLargeError",
    "Modality",
    "check_image_header",
    "decode_image",
    "encode_frame",
    "encode_image",
    "viewed_bytes",
]

SCHEMA = "inspector.frame/1"
DEFAULT_MAX_FRAME_SIDE = 4096  # the largest frame side the line's cameras produce (1024 to 4096 px today)
DEFAULT_MAX_PIXELS = DEFAULT_MAX_FRAME_SIDE**2  # 16.8 Mpx: the largest frame, not 60 of the usual ones
_INT64_MAX = 2**63 - 1
_DIM_MAX = 2**31 - 1  # PNG's own limit, and what an int32 can index

ImageArray = npt.NDArray[np.integer[Any]]
"""A decoded image: ``uint8`` or ``uint16``, ``(H, W)`` or ``(H, W, C)``."""
Modality = Literal["visible", "infrared"]
Encoding = Literal["png", "jpeg", "raw"]
DType = Literal["uint8", "uint16"]

_SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_DECIMAL_INT = re.compile(r"[0-9]{1,19}")
_DECIMAL_FLOAT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHAPE = re.compile(r"[0-9]{1,10}(?:,[0-9]{1,10}){1,2}")
_REQUIRED_HEADERS = ("schema", "camera_id", "modality", "seq", "capture_ts_ns", "encoding", "dtype", "shape")
_OPTIONAL_HEADERS = ("mm_per_px", "part_id")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_GREY, _PNG_RGB = 0, 2
_PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range but are not frame headers.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..RST7: markers without a length


class FrameDecodeError(InspectorError):
    """Frame headers or pixel bytes are missing, malformed, oversized or disagree with each other."""


class ImageTooLargeError(FrameDecodeError):
    """An image header (or a frame's declared shape) has more pixels than ``max_pixels`` allows."""


class FrameEncodeError(InspectorError):
    """An image or its metadata cannot be encoded as asked."""


class Frame(BaseModel):
    """Metadata of one camera frame; the pixel bytes travel separately.

    Attributes:
        camera_id: The rig the frame comes from; one id covers a visible and an infrared camera.
        modality: ``visible`` or ``infrared``.
        seq: Hardware trigger sequence number. ``0`` means the camera has no trigger counter, and
            frames are then paired by timestamp (counters therefore start at 1).
        capture_ts_ns: Capture time in nanoseconds on the camera's own clock.
        encoding: How the pixel bytes are encoded: ``png``, ``jpeg`` or ``raw``.
        dtype: Pixel type of the decoded array: ``uint8`` or ``uint16``.
        shape: ``(H, W)`` or ``(H, W, C)`` with ``C`` 1 (grey) or 3 (RGB).
        mm_per_px: Millimetres per pixel on the conveyor plane, or ``None`` when the producer does not
            know it (the calibration supplies it downstream). Optional for both modalities so that an
            uncalibrated camera can still publish; measuring cracks in mm needs it.
        part_id: The part in view, when the line tracks parts; ``None`` otherwise.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera_id: str = Field(min_length=1, max_length=64, pattern=_SAFE_ID)
    modality: Modality
    seq: StrictInt = Field(ge=0, le=_INT64_MAX)
    capture_ts_ns: StrictInt = Field(ge=0, le=_INT64_MAX)
    encoding: Encoding
    dtype: DType
    shape: tuple[StrictInt, ...]
    mm_per_px: StrictFloat | None = Field(default=None, gt=0, allow_inf_nan=False)
    part_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=_SAFE_ID)

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) not in (2, 3):
            msg = f"expected (H, W) or (H, W, C), got {len(value)} dimensions {value}"
            raise ValueError(msg)
        if any(not 0 < d <= _DIM_MAX for d in value[:2]):
            msg = f"height and width must be between 1 and {_DIM_MAX}, got {value}"
            raise ValueError(msg)
        if len(value) == 3 and value[2] not in (1, 3):
            msg = f"channels must be 1 (grey) or 3 (RGB), got {value[2]}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _jpeg_is_8_bit(self) -> Frame:
        if self.encoding == "jpeg" and self.dtype != "uint8":
            msg = f"JPEG holds 8-bit samples only, not {self.dtype}: use encoding png or raw"
            raise ValueError(msg)
        return self

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return self.shape[1]

    @property
    def channels(self) -> int:
        """Number of channels (1 for an ``(H, W)`` shape)."""
        return self.shape[2] if len(self.shape) == 3 else 1

    @property
    def pixel_count(self) -> int:
        """``H * W``, the number that ``max_pixels`` limits."""
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Size of the decoded array (and of a ``raw`` payload) in bytes."""
        return self.pixel_count * self.channels * np.dtype(self.dtype).itemsize

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Return the Kafka record headers that carry this frame's metadata (see the module docs)."""
        headers = [
            ("schema", SCHEMA),
            ("camera_id", self.camera_id),
            ("modality", self.modality),
            ("seq", str(self.seq)),
            ("capture_ts_ns", str(self.capture_ts_ns)),
            ("encoding", self.encoding),
            ("dtype", self.dtype),
            ("shape", ",".join(str(d) for d in self.shape)),
        ]
        if self.mm_per_px is not None:
            headers.append(("mm_per_px", repr(self.mm_per_px)))  # shortest text that reads back exactly
        if self.part_id is not None:
            headers.append(("part_id", self.part_id))
        return [(name, value.encode("utf-8")) for name, value in headers]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str | bytes, bytes | bytearray | memoryview | None]]) -> Frame:
        """Read a frame from Kafka record headers.

        Args:
            headers: ``(name, value)`` pairs as a Kafka client returns them. Names other than the
                frame's own are ignored.

        Returns:
            The frame.

        Raises:
            FrameDecodeError: The schema version is unknown, or a header is missing, repeated, not
                UTF-8, or holds a value that is not valid for its field.

        """
        values: dict[str, str] = {}
        known = set(_REQUIRED_HEADERS) | set(_OPTIONAL_HEADERS)
        for raw_name, raw_value in headers:
            name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else raw_name
            if name not in known:
                continue
            if name in values:
                msg = f"frame header {name!r} appears more than once: a producer must send each header once"
                raise FrameDecodeError(msg)
            if raw_value is None:
                msg = f"frame header {name!r} has no value (null)"
                raise FrameDecodeError(msg)
            try:
                values[name] = bytes(raw_value).decode("utf-8")
            except UnicodeDecodeError as exc:
                msg = f"frame header {name!r} is not UTF-8 text: {exc}"
                raise FrameDecodeError(msg) from exc
        missing = [name for name in _REQUIRED_HEADERS if name not in values]
        if missing:
            needed = ", ".join(_REQUIRED_HEADERS)
            msg = f"frame headers missing: {', '.join(missing)} (a {SCHEMA} record needs {needed})"
            raise FrameDecodeError(msg)
        if values["schema"] != SCHEMA:
            msg = f"frame header 'schema' is {values['schema']!r}; this reader understands only {SCHEMA!r}"
            raise FrameDecodeError(msg)
        fields: dict[str, object] = {
            name: values[name] for name in ("camera_id", "modality", "encoding", "dtype", "part_id") if name in values
        }
        fields["seq"] = _parse_int("seq", values["seq"])
        fields["capture_ts_ns"] = _parse_int("capture_ts_ns", values["capture_ts_ns"])
        fields["shape"] = _parse_shape(values["shape"])
        if "mm_per_px" in values:
            fields["mm_per_px"] = _parse_float("mm_per_px", values["mm_per_px"])
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise FrameDecodeError(_describe(exc, "frame header")) from exc


def viewed_bytes(array: np.ndarray) -> bytes | None:
    """The ``bytes`` object ``array`` views from its first to its last byte, in C order, little-endian.

    Such an array (``np.frombuffer(buffer)`` of a camera frame, reshaped) *is* its raw encoding;
    ``None`` for every other array.
    """
    base = array.base
    while isinstance(base, np.ndarray):  # a reshaped or sliced view: the bytes object at the root
        base = base.base
    little = array.dtype.byteorder == "<" or (array.dtype.byteorder in "=|" and sys.byteorder == "little")
    if isinstance(base, bytes) and little and array.flags.c_contiguous and array.nbytes == len(base):
        start = np.frombuffer(base, np.uint8).__array_interface__["data"][0]
        return base if array.__array_interface__["data"][0] == start else None
    return None


def encode_image(image: ImageArray, encoding: Encoding, *, jpeg_quality: int = 95) -> bytes:
    """Encode an image array as PNG, JPEG or raw bytes.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` (RGB) array of ``uint8`` or ``uint16``.
        encoding: ``png`` (lossless, 8 or 16 bit), ``jpeg`` (lossy, 8 bit only) or ``raw``
            (C-order little-endian bytes).
        jpeg_quality: JPEG quality, 0 to 100.

    Returns:
        The encoded bytes.

    Raises:
        FrameEncodeError: The array's type or shape is not supported, the encoding is unknown,
            JPEG was asked for a ``uint16`` image, or the encoder failed.

    """
    dtype = _image_dtype(image)
    array = np.asarray(image, dtype=np.dtype(dtype))  # native byte order for OpenCV
    if encoding == "raw":
        whole = viewed_bytes(array)
        if whole is not None:  # a camera buffer's bytes as they came: sent without another copy
            return whole
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    if encoding == "jpeg":
        if dtype != "uint8":
            msg = f"JPEG holds 8-bit samples only, not {dtype}: encode uint16 images as png or raw"
            raise FrameEncodeError(msg)
        if not 0 <= jpeg_quality <= 100:
            msg = f"jpeg_quality must be between 0 and 100, got {jpeg_quality}"
            raise FrameEncodeError(msg)
        extension, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif encoding == "png":
        extension, params = ".png", []
    else:
        msg = f"unknown encoding {encoding!r}: expected png, jpeg or raw"
        raise FrameEncodeError(msg)
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]  # RGB -> OpenCV's BGR
    ok, buffer = cv2.imencode(extension, np.ascontiguousarray(array), params)
    if not ok:
        msg = f"OpenCV could not encode a {dtype} {array.shape} image as {encoding}"
        raise FrameEncodeError(msg)
    return buffer.tobytes()


def decode_image(
    data: bytes | bytearray | memoryview, frame: Frame, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageArray:
    """Decode pixel bytes into the array that ``frame`` declares, refusing anything else.

    Args:
        data: The encoded pixels (the Kafka record value).
        frame: The frame's metadata; ``encoding``, ``dtype`` and ``shape`` must describe ``data``.
        max_pixels: Largest ``H * W`` accepted. The declared shape and the dimensions in the PNG
            ``IHDR`` or JPEG ``SOF`` header are checked before anything is decompressed.

    Returns:
        A writable array of ``frame.shape`` and ``frame.dtype`` (RGB channel order).

    Raises:
        FrameDecodeError: ``data`` is empty, truncated, not the declared encoding, larger than
            ``max_pixels``, or decodes to a different dtype or shape than declared.

    """
    where = f"frame {frame.camera_id}/{frame.modality} seq={frame.seq}"
    if frame.pixel_count > max_pixels:
        msg = f"{where}: declared shape {frame.shape} has {frame.pixel_count} pixels, more than max_pixels={max_pixels}"
        raise ImageTooLargeError(msg)
    buffer = data if isinstance(data, bytes) else bytes(data)
    if not buffer:
        msg = f"{where}: the pixel data is empty"
        raise FrameDecodeError(msg)
    if frame.encoding == "raw":
        return _decode_raw(buffer, frame, where)
    if frame.encoding == "png":
        _check_png(buffer, frame, max_pixels, where)
    else:
        _check_jpeg(buffer, frame, max_pixels, where)
    decoded = cv2.imdecode(np.frombuffer(buffer, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        msg = f"{where}: the {frame.encoding} data is corrupt (OpenCV could not decode it)"
        raise FrameDecodeError(msg)
    image: ImageArray = np.asarray(decoded)
    if image.dtype != np.dtype(frame.dtype):
        msg = f"{where}: decoded {image.dtype} pixels but the frame declares {frame.dtype}"
        raise FrameDecodeError(msg)
    if image.ndim == 3 and image.shape[2] == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])  # OpenCV's BGR -> RGB
    if image.ndim == 2 and len(frame.shape) == 3 and frame.shape[2] == 1:
        image = image[:, :, np.newaxis]
    if image.shape != frame.shape:
        msg = f"{where}: decoded shape {image.shape} but the frame declares {frame.shape}"
        raise FrameDecodeError(msg)
    return image


def encode_frame(
    image: ImageArray,
    *,
    camera_id: str,
    modality: Modality,
    capture_ts_ns: int,
    encoding: Encoding = "png",
    seq: int = 0,
    mm_per_px: float | None = None,
    part_id: str | None = None,
    jpeg_quality: int = 95,
) -> tuple[Frame, bytes]:
    """Build a frame's metadata from an image (dtype and shape come from the array) and encode its pixels.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB array of ``uint8`` or ``uint16``.
        camera_id: See :class:`Frame`.
        modality: See :class:`Frame`.
        capture_ts_ns: See :class:`Frame`.
        encoding: See :func:`encode_image`.
        seq: Trigger sequence number, ``0`` when the camera has none.
        mm_per_px: See :class:`Frame`.
        part_id: See :class:`Frame`.
        jpeg_quality: See :func:`encode_image`.

    Returns:
        ``(frame, data)``: the metadata and the encoded pixel bytes.

    Raises:
        FrameEncodeError: The image or a metadata value is not valid.

    """
    dtype = _image_dtype(image)
    try:
        frame = Frame(
            camera_id=camera_id,
            modality=modality,
            seq=seq,
            capture_ts_ns=capture_ts_ns,
            encoding=encoding,
            dtype=dtype,
            shape=tuple(int(d) for d in image.shape),
            mm_per_px=mm_per_px,
            part_id=part_id,
        )
    except ValidationError as exc:
        raise FrameEncodeError(_describe(exc, "frame field")) from exc
    return frame, encode_image(image, encoding, jpeg_quality=jpeg_quality)


def _image_dtype(image: ImageArray) -> DType:
    """Return the frame dtype name of ``image``, or raise if its type or shape cannot be encoded."""
    if not isinstance(image, np.ndarray):
        msg = f"expected a numpy array, got {type(image).__name__}"
        raise FrameEncodeError(msg)
    if image.dtype.kind != "u" or image.dtype.itemsize not in (1, 2):
        msg = f"images must be uint8 or uint16, got {image.dtype}"
        raise FrameEncodeError(msg)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)) or 0 in image.shape:
        msg = f"images must be (H, W), (H, W, 1) or (H, W, 3) with H, W > 0, got shape {image.shape}"
        raise FrameEncodeError(msg)
    return "uint8" if image.dtype.itemsize == 1 else "uint16"


def _decode_raw(buffer: bytes, frame: Frame, where: str) -> ImageArray:
    if len(buffer) != frame.nbytes:
        problem = "truncated" if len(buffer) < frame.nbytes else "too long"
        msg = (
            f"{where}: raw data is {problem}: {len(buffer)} bytes, but shape {frame.shape} of {frame.dtype} "
            f"needs exactly {frame.nbytes}"
        )
        raise FrameDecodeError(msg)
    little = np.dtype(frame.dtype).newbyteorder("<")
    return np.frombuffer(buffer, dtype=little).reshape(frame.shape).astype(frame.dtype)  # copy: writable, native


def _not_encoding(buffer: bytes, frame: Frame, where: str) -> FrameDecodeError:
    magic = _PNG_MAGIC if frame.encoding == "png" else _JPEG_MAGIC
    if len(buffer) < len(magic) and magic.startswith(buffer):
        return FrameDecodeError(f"{where}: {frame.encoding} data is truncated: only {len(buffer)} bytes")
    if buffer.startswith(_PNG_MAGIC):
        actual = "PNG"
    elif buffer.startswith(_JPEG_MAGIC):
        actual = "JPEG"
    else:
        actual = f"neither PNG nor JPEG (it starts {buffer[:8].hex(' ')})"
    return FrameDecodeError(f"{where}: declared {frame.encoding} but the data is {actual}")


def check_image_header(data: bytes, *, max_pixels: int, where: str = "image") -> tuple[int, int]:
    """Read a PNG or JPEG header's width and height and check them against ``max_pixels``, decompressing nothing.

    Call it before ``cv2.imdecode`` wherever encoded bytes from outside enter: a small file whose
    header declares 100000x100000 would otherwise be allocated in full by the decoder.

    Args:
        data: The encoded image.
        max_pixels: Largest ``width * height`` accepted.
        where: What the image is, for the messages (``VQA request r-1``).

    Returns:
        ``(width, height)`` as the header declares them.

    Raises:
        FrameDecodeError: ``data`` is neither PNG nor JPEG, its header is truncated or malformed, or
            it declares a zero size; :class:`ImageTooLargeError` when it declares more than ``max_pixels``.

    """
    if data.startswith(_PNG_MAGIC):
        width, height, _, _ = _png_ihdr(data, where)
        header = "PNG IHDR"
    elif data.startswith(_JPEG_MAGIC):
        _, height, width, _ = _jpeg_sof(data, where)
        header = "JPEG SOF"
    else:
        start = data[:8].hex(" ") or "empty"
        msg = f"{where}: the data is neither PNG nor JPEG (it starts {start}): send a PNG or JPEG file's bytes"
        raise FrameDecodeError(msg)
    _check_pixels(width, height, max_pixels=max_pixels, where=where, header=header)
    return width, height


def _check_pixels(width: int, height: int, *, max_pixels: int, where: str, header: str) -> None:
    if width == 0 or height == 0:
        msg = f"{where}: the {header} header declares {width}x{height}; a size defined later (DNL) is not supported"
        raise FrameDecodeError(msg)
    if width * height > max_pixels:
        msg = f"{where}: the {header} header says {width}x{height} = {width * height} pixels, more than {max_pixels=}"
        raise ImageTooLargeError(msg)


def _check_size(width: int, height: int, frame: Frame, *, max_pixels: int, where: str, header: str) -> None:
    _check_pixels(width, height, max_pixels=max_pixels, where=where, header=header)
    if (height, width) != frame.shape[:2]:
        msg = f"{where}: the {header} header says {height}x{width} (HxW) but the frame declares {frame.shape}"
        raise FrameDecodeError(msg)


def _png_ihdr(buffer: bytes, where: str) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from the IHDR chunk that must follow the PNG signature."""
    if len(buffer) < 33 or buffer[8:16] != b"\x00\x00\x00\x0dIHDR":
        msg = f"{where}: PNG is truncated or malformed: it does not start with a 13-byte IHDR chunk"
        raise FrameDecodeError(msg)
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", buffer[16:26])
    return width, height, bit_depth, colour_type


def _jpeg_sof(buffer: bytes, where: str) -> tuple[int, int, int, int]:
    """``(precision, height, width, components)`` from the JPEG frame header (SOF)."""
    sof = _find_jpeg_sof(buffer, where)
    precision, height, width, components = struct.unpack(">BHHB", buffer[sof + 4 : sof + 10])
    return precision, height, width, components


def _check_png(buffer: bytes, frame: Frame, max_pixels: int, where: str) -> None:
    """Check the PNG signature, IHDR and chunk layout without decompressing anything."""
    if not buffer.startswith(_PNG_MAGIC):
        raise _not_encoding(buffer, frame, where)
    width, height, bit_depth, colour_type = _png_ihdr(buffer, where)
    _check_size(width, height, frame, max_pixels=max_pixels, where=where, header="PNG IHDR")
    want_depth = 8 if frame.dtype == "uint8" else 16
    want_colour = _PNG_RGB if frame.channels == 3 else _PNG_GREY
    if bit_depth != want_depth or colour_type != want_colour:
        msg = (
            f"{where}: PNG is {bit_depth}-bit {_PNG_COLOUR_TYPES.get(colour_type, f'colour type {colour_type}')} "
            f"but the frame declares {frame.dtype} {frame.shape}: expected {want_depth}-bit "
            f"{_PNG_COLOUR_TYPES[want_colour]}"
        )
        raise FrameDecodeError(msg)
    position = 8
    while position < len(buffer):
        if position + 12 > len(buffer):
            msg = f"{where}: PNG is truncated: {len(buffer) - position} stray bytes where a chunk should start"
            raise FrameDecodeError(msg)
        length, kind = struct.unpack(">I4s", buffer[position : position + 8])
        end = position + 12 + length
        if end > len(buffer):
            msg = (
                f"{where}: PNG is truncated: chunk {kind.decode('latin-1')!r} needs {length} bytes, "
                f"{len(buffer) - position - 12} remain"
            )
            raise FrameDecodeError(msg)
        if kind == b"IEND":
            if end != len(buffer):
                msg = f"{where}: PNG has {len(buffer) - end} bytes after its IEND chunk"
                raise FrameDecodeError(msg)
            return
        position = end
    msg = f"{where}: PNG is truncated: no IEND chunk"
    raise FrameDecodeError(msg)


def _check_jpeg(buffer: bytes, frame: Frame, max_pixels: int, where: str) -> None:
    """Check the JPEG signature, frame header (SOF) and end marker without decompressing anything."""
    if not buffer.startswith(_JPEG_MAGIC):
        raise _not_encoding(buffer, frame, where)
    precision, height, width, components = _jpeg_sof(buffer, where)
    if precision != 8:
        msg = f"{where}: JPEG has {precision}-bit samples; only 8-bit JPEG is supported (use png for 16-bit)"
        raise FrameDecodeError(msg)
    _check_size(width, height, frame, max_pixels=max_pixels, where=where, header="JPEG SOF")
    if components != frame.channels:
        msg = f"{where}: JPEG has {components} colour components but the frame declares {frame.shape}"
        raise FrameDecodeError(msg)
    if not buffer.endswith(b"\xff\xd9"):
        msg = f"{where}: JPEG is truncated: it does not end with the end-of-image marker (FF D9)"
        raise FrameDecodeError(msg)


def _find_jpeg_sof(buffer: bytes, where: str) -> int:
    """Walk the marker segments after SOI and return the offset of the SOF marker (at least 8 bytes long)."""
    position, size = 2, len(buffer)
    while True:
        if position + 4 > size:
            msg = f"{where}: JPEG is truncated before its frame header (SOF)"
            raise FrameDecodeError(msg)
        if buffer[position] != 0xFF:
            msg = f"{where}: JPEG is malformed: expected a marker at byte {position}, found 0x{buffer[position]:02x}"
            raise FrameDecodeError(msg)
        marker = buffer[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            msg = f"{where}: JPEG is malformed: marker 0x{marker:02x} before the frame header (SOF)"
            raise FrameDecodeError(msg)
        (length,) = struct.unpack(">H", buffer[position + 2 : position + 4])
        if length < 2 or position + 2 + length > size:
            msg = f"{where}: JPEG is truncated or malformed: segment 0x{marker:02x} at byte {position} is {length} long"
            raise FrameDecodeError(msg)
        if marker in _JPEG_SOF:
            if length < 8:
                msg = f"{where}: JPEG frame header (SOF) is too short ({length} bytes)"
                raise FrameDecodeError(msg)
            return position
        position += 2 + length


def _parse_int(name: str, text: str) -> int:
    if not _DECIMAL_INT.fullmatch(text) or int(text) > _INT64_MAX:
        msg = f"frame header {name!r} must be a decimal integer between 0 and {_INT64_MAX}, got {text!r}"
        raise FrameDecodeError(msg)
    return int(text)


def _parse_float(name: str, text: str) -> float:
    value = float(text) if len(text) <= 64 and _DECIMAL_FLOAT.fullmatch(text) else math.nan
    if not math.isfinite(value):
        msg = f"frame header {name!r} must be a finite decimal number such as 0.05 or 5e-2, got {text!r}"
        raise FrameDecodeError(msg)
    return value


def _parse_shape(text: str) -> tuple[int, ...]:
    if not _SHAPE.fullmatch(text):
        msg = f"frame header 'shape' must be H,W or H,W,C in decimal without spaces (e.g. 480,640,3), got {text!r}"
        raise FrameDecodeError(msg)
    return tuple(int(part) for part in text.split(","))


def _describe(exc: ValidationError, what: str) -> str:
    """One line per problem, naming the field (or header) it is about."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"{what} {name!r}: {error['msg']}" if name else f"frame: {error['msg']}")
    return "; ".join(problems)
