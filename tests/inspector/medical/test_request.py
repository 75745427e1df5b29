from __future__ import annotations

from pathlib import Path

import pytest

from inspector.medical.dicom import DicomLimits
from inspector.medical.request import RequestError, load_volume, parse_request, study_tag
from tests.inspector.medical.crafted import STUDY_UID, tiny_dicom, zipped
from workers.medical import study_headers

UID = "1.2.826.0.1.3680043.8.498.1"


def parse(headers, value=b"x" * 100, **kw):
    return parse_request(headers, value, max_inline_bytes=kw.pop("max_inline_bytes", 1000), **kw)


def test_headers_are_checked() -> None:
    assert parse(study_headers(UID, age=64, sex="m", indication="cough")).patient.sex == "M"
    with pytest.raises(RequestError, match="bad_headers: header schema"):
        parse([("study_uid", UID.encode())])
    with pytest.raises(RequestError, match="study_uid must be a DICOM UID"):
        parse(study_headers("Smith^John"))
    with pytest.raises(RequestError, match="bad_headers: header age"):
        parse(study_headers(UID, age="old"))
    with pytest.raises(RequestError, match="content must be one of"):
        parse(study_headers(UID, content="png"))


def test_inline_size_is_limited() -> None:
    with pytest.raises(RequestError) as err:
        parse(study_headers(UID), b"x" * 2000)
    assert err.value.reason == "too_large" and "claim-check" in err.value.detail


def test_claim_checks_must_point_inside_the_roots(tmp_path: Path) -> None:
    inside = tmp_path / "claims" / "s1"
    inside.mkdir(parents=True)
    ok = parse(study_headers(UID, content="claim"), f"file://{inside}".encode(), claim_roots=[tmp_path / "claims"])
    assert ok.payload == inside
    for value in (b"/etc/passwd", b"relative/path", b"s3://bucket/key", f"{tmp_path}/claims/none".encode()):
        with pytest.raises(RequestError) as err:
            parse(study_headers(UID, content="claim"), value, claim_roots=[tmp_path / "claims"])
        assert err.value.reason == "bad_reference"


def test_payload_errors_get_their_reason(testdata: Path) -> None:
    cases = {
        b"random bytes, not dicom": "not_dicom",
        (testdata / "rtplan.dcm").read_bytes(): "no_pixel_data",
        (testdata / "SC_rgb_jpeg_gdcm.dcm").read_bytes(): "unsupported_transfer_syntax",  # JPEG lossless: no codec
    }
    for payload, reason in cases.items():
        with pytest.raises(RequestError) as err:
            load_volume(parse(study_headers(UID), payload, max_inline_bytes=10**7))
        assert err.value.reason == reason


def test_bombs_are_refused_as_too_large() -> None:
    bombs = {
        "zip members": (zipped({f"{i}.dcm": tiny_dicom() for i in range(3)}), DicomLimits(max_members=2)),
        "zip ratio": (zipped({"a.dcm": tiny_dicom(), "z": bytes(2**20)}), DicomLimits()),
        "pixels": (tiny_dicom(rows=65535, columns=65535), DicomLimits()),
    }
    for what, (payload, limits) in bombs.items():
        request = parse(study_headers(STUDY_UID, "zip"), payload, max_inline_bytes=10**7)
        with pytest.raises(RequestError) as err:
            load_volume(request, limits)
        assert err.value.reason == "too_large", what
    assert load_volume(parse(study_headers(STUDY_UID), tiny_dicom(), max_inline_bytes=10**7)).pixels.shape == (1, 8, 8)


def test_the_study_uid_must_match_the_files(testdata: Path) -> None:
    with pytest.raises(RequestError, match="differs"):
        load_volume(parse(study_headers(UID), (testdata / "CT_small.dcm").read_bytes(), max_inline_bytes=10**7))


def test_logs_use_a_tag_not_the_uid() -> None:
    assert len(study_tag(UID)) == 12 and UID not in study_tag(UID)
