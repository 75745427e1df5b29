"""Bad medical and VQA requests, generated: every one is refused with a known reason, none crashes.

The workers dead-letter exactly what these functions refuse (``RequestError.reason`` /
``VQAInputError.reason`` become the ``dlq_reason`` header), so a request that raised anything else
would stop a worker's batch instead of reaching the dead-letter topic.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.medical.request import REASONS as MEDICAL_REASONS
from inspector.medical.request import RequestError, load_volume, parse_request
from inspector.vqa.data import decode_image, encode_png
from inspector.vqa.errors import REASONS as VQA_REASONS
from inspector.vqa.errors import VQAInputError
from inspector.vqa.requests import parse_request as parse_vqa_request
from inspector.vqa.scenes import random_scene, render
from inspector.vqa.tokenizer import WordTokenizer

CT_PATH = Path(os.path.dirname(pydicom.data.__file__)) / "test_files" / "CT_small.dcm"
CT_SMALL = CT_PATH.read_bytes()
CT_STUDY = str(pydicom.dcmread(CT_PATH, stop_before_pixels=True).StudyInstanceUID).encode()
PIXELS_END = CT_SMALL.rfind(b"\xfc\xff\xfc\xff")  # the file ends with trailing padding (FFFC,FFFC) after the pixels
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def medical(headers: Sequence[tuple[str, bytes | None]], value: bytes) -> str | None:
    """The dead-letter reason of a medical request, or None when it would be reported."""
    try:
        load_volume(parse_request(headers, value, max_inline_bytes=1 << 20))
    except RequestError as exc:
        assert exc.reason in MEDICAL_REASONS and str(exc)
        return exc.reason
    return None


def study(value_kind: str = "dicom") -> list[tuple[str, bytes | None]]:
    return [("schema", b"medical.study/1"), ("study_uid", CT_STUDY), ("content", value_kind.encode())]


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_as_dicom_are_refused_as_not_dicom(value: bytes) -> None:
    assert medical(study(), value) in {"not_dicom", "no_pixel_data", "bad_geometry"}


@pytest.mark.parametrize("cut", [0, 1, 127, 128, 132, 200, 400, 800, 1600, 3200, PIXELS_END // 2, PIXELS_END - 1])
def test_truncated_dicom_is_refused_with_a_reason(cut: int) -> None:
    assert medical(study(), CT_SMALL[:cut]) is not None


def test_the_whole_file_is_read() -> None:  # the control: the truncations above fail because of the cut
    assert PIXELS_END > 30_000
    assert medical(study(), CT_SMALL) is None
    assert medical(study(), CT_SMALL[:PIXELS_END]) is None  # only the padding cut: the pixels are whole


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_as_a_zip_are_refused(value: bytes) -> None:
    assert medical(study("zip"), value) is not None


def test_a_zip_of_rubbish_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.dcm", b"\0" * 300)
        archive.writestr("b.dcm", CT_SMALL[:500])
    assert medical(study("zip"), buffer.getvalue()) == "not_dicom"


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["schema", "study_uid", "content", "age", "sex", "indication", "x"]),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
        max_size=8,
    )
)
def test_random_headers_are_refused_or_read(headers: list[tuple[str, bytes | None]]) -> None:
    medical(headers, CT_SMALL)  # any refusal must carry a known reason (checked inside)


SCENE = encode_png(render(random_scene(np.random.default_rng(0))))
TOKENIZER = WordTokenizer.fit(["what colour is the large circle?", "how many squares are there?"])


def vqa(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The dead-letter reason of a VQA request (the worker's checks, in its order), or None."""
    try:
        request = parse_vqa_request(key, value, headers)
        TOKENIZER.encode(request.question)
        decode_image(request.image, 64)
    except VQAInputError as exc:
        assert exc.reason in VQA_REASONS and str(exc)
        return exc.reason
    return None


@FUZZ
@given(
    key=st.one_of(st.none(), st.binary(max_size=200)),
    value=st.one_of(st.none(), st.binary(max_size=2048), st.just(SCENE), st.just(SCENE[: len(SCENE) // 2])),
    question=st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=300).map(str.encode)),
    request_id=st.one_of(st.none(), st.binary(max_size=200), st.just(b"r-1")),
)
def test_malformed_vqa_requests_are_refused_with_a_reason(
    key: bytes | None, value: bytes | None, question: bytes | None, request_id: bytes | None
) -> None:
    headers = [(name, v) for name, v in (("question", question), ("request_id", request_id)) if v is not None]
    vqa(key, value, headers)


def test_a_good_vqa_request_passes_and_its_broken_twins_do_not() -> None:
    good = [("request_id", b"r-1"), ("question", b"how many squares are there?")]
    assert vqa(None, SCENE, good) is None
    assert vqa(None, SCENE[:100], good) == "bad_image"
    assert vqa(None, os.urandom(500), good) == "bad_image"
    assert vqa(None, SCENE, [("request_id", b"r-1"), ("question", b"")]) == "empty_question"
    assert vqa(None, SCENE, [("request_id", b"r-1"), ("question", b"how many dragons are there?")]) == "unknown_words"
    assert vqa(None, SCENE, [("question", b"how many squares are there?")]) == "bad_headers"
