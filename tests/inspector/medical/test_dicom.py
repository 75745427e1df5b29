from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from inspector.medical.dicom import (
    WINDOWS,
    DicomLimits,
    UnpackBudget,
    normalise_mr,
    pixels_of,
    read_series,
    read_study,
    series_volume,
    window,
)
from inspector.medical.errors import (
    DicomError,
    DicomLimitError,
    NoPixelDataError,
    SeriesGeometryError,
    UnsupportedTransferSyntaxError,
)
from tests.inspector.medical.crafted import deflated_dicom, tiny_dicom, understated, zipped


def test_ct_small_is_rescaled_to_hounsfield_units(testdata: Path) -> None:
    volume = read_series(testdata / "CT_small.dcm")
    ds = pydicom.dcmread(testdata / "CT_small.dcm")
    assert volume.modality == "CT" and volume.pixels.shape == (1, 128, 128)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.pixels[0], expected)
    assert volume.spacing_mm == pytest.approx((0.661468, 0.661468)) and volume.slice_thickness_mm == 5.0


def test_mr_small_reads_and_normalises(testdata: Path) -> None:
    volume = read_series(testdata / "MR_small.dcm")
    assert volume.modality == "MR" and volume.pixels.shape == (1, 64, 64) and volume.patient.sex == "F"
    norm = normalise_mr(volume.pixels)
    assert norm.min() == 0.0 and norm.max() == 1.0


@pytest.mark.parametrize("series", ["77654033/CT2", "98892001/CT5N", "98892003/MR700", "98892003/MR2", "98892001/CT2N"])
def test_shipped_series_read_without_error(testdata: Path, series: str) -> None:
    volumes = read_study(testdata / "dicomdirtests" / series)
    assert volumes and all(v.pixels.ndim == 3 and np.isfinite(v.pixels).all() for v in volumes)


def test_a_series_is_sorted_along_the_normal_not_by_file_order(testdata: Path) -> None:
    volume = read_series(testdata / "dicomdirtests" / "98892001" / "CT5N")
    assert list(volume.positions_mm) == sorted(volume.positions_mm) and volume.slice_spacing_mm == pytest.approx(2.5)


def test_phantom_study_reads_back_exactly(phantom) -> None:
    study, folder = phantom
    volume = read_series(folder)
    np.testing.assert_array_equal(volume.pixels[::-1], study.hu)  # files are written feet first
    assert volume.spacing_mm == (study.spacing_mm, study.spacing_mm) and volume.slice_thickness_mm == 2.5
    assert volume.patient.age_years == study.age and volume.patient.indication == study.indication
    assert volume.study_uid == study.study_uid


def test_zip_payload_reads_like_the_folder(phantom) -> None:
    _, folder = phantom
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.glob("*.dcm")):
            archive.write(path, path.name)
    from_zip = read_series(buffer.getvalue())
    np.testing.assert_array_equal(from_zip.pixels, read_series(folder).pixels)


def test_no_pixel_data_is_a_clear_error(testdata: Path) -> None:
    with pytest.raises(NoPixelDataError, match=r"no pixel data .*RT Plan"):
        read_study(testdata / "rtplan.dcm")


def test_unsupported_transfer_syntax_names_the_package(testdata: Path) -> None:
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"JPEG Lossless.*pip install pylibjpeg pylibjpeg-libjpeg"):
        read_study(testdata / "SC_rgb_jpeg_gdcm.dcm")  # JPEG lossless (pyjpegls, a highdicom dependency, reads JPEG-LS)


def test_random_bytes_are_not_dicom() -> None:
    with pytest.raises(DicomError, match="not a DICOM file"):
        read_study(np.random.default_rng(0).bytes(4096))


def test_inconsistent_geometry_is_a_clear_error(phantom) -> None:
    _, folder = phantom
    items = [(str(p), pydicom.dcmread(p)) for p in sorted(folder.glob("*.dcm"))[:3]]
    items[1][1].PixelSpacing = [0.5, 0.5]
    with pytest.raises(SeriesGeometryError, match="different pixel spacings"):
        series_volume(items)
    items[1][1].PixelSpacing = items[0][1].PixelSpacing
    items[2][1].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(SeriesGeometryError, match="different orientations"):
        series_volume(items)


@pytest.mark.parametrize("preset", list(WINDOWS))
def test_window_presets_map_their_range_to_0_1(preset: str) -> None:
    centre, width = WINDOWS[preset]
    values = window(np.array([centre - width / 2, centre, centre + width / 2, -5000.0, 5000.0]), preset)
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.0, 1.0])


# -- limits: zip, deflate and pixel bombs ---------------------------------------------------------------


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Dataset) -> None:
        raise AssertionError("pixel data was decoded although its declared size is over the limit")

    monkeypatch.setattr(Dataset, "pixel_array", property(refuse))


def test_a_zip_of_more_members_than_allowed_is_refused_before_reading_one() -> None:
    archive = zipped({f"{i:03d}.dcm": tiny_dicom(position=float(i)) for i in range(6)})
    assert len(read_series(archive, limits=DicomLimits(max_members=6)).pixels) == 6  # the control
    with pytest.raises(DicomLimitError, match="the zip archive holds 6 files, more than 5"):
        read_study(archive, limits=DicomLimits(max_members=5))


def test_a_zip_declaring_more_unpacked_bytes_than_allowed_is_refused() -> None:
    archive = zipped({"a.dcm": tiny_dicom(), "b.bin": bytes(300_000)})
    with pytest.raises(DicomLimitError, match=r"declares \d+ bytes unpacked, more than 200000"):
        read_study(archive, limits=DicomLimits(max_unpacked_bytes=200_000, max_ratio=10_000))


def test_a_zip_member_compressed_more_than_the_ratio_is_refused() -> None:
    archive = zipped({"a.dcm": tiny_dicom(), "zeros.bin": bytes(2**20)})  # 1 MiB of zeros: ratio ~1000
    with pytest.raises(DicomLimitError, match="zip member 2 of 2 unpacks to more than 200 times"):
        read_study(archive)
    with pytest.raises(DicomError, match=r"zeros\.bin .* is not a DICOM file"):  # allowed that ratio, it is read
        read_study(archive, limits=DicomLimits(max_ratio=2_000))
    assert read_series(zipped({"a.dcm": tiny_dicom(), "b.dcm": tiny_dicom(position=1.0)})).pixels.shape == (2, 8, 8)


def test_a_zip_that_understates_a_member_is_refused_having_inflated_only_what_it_declared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lying = understated(zipped({"a.dcm": tiny_dicom(), "bomb.bin": bytes(64 * 2**20)}), "bomb.bin", 1000)
    assert len(lying) < 200_000  # 64 MiB inside, declared 1000 bytes
    taken: list[int] = []
    original = UnpackBudget.take
    monkeypatch.setattr(UnpackBudget, "take", lambda self, size, what: taken.append(size) or original(self, size, what))
    with pytest.raises(DicomError, match="cannot be opened"):  # zipfile stops at the declared size: bad CRC
        read_study(lying)
    assert sum(taken) < 10_000  # the DICOM file and the 1000 declared bytes, never the 64 MiB


def test_deflated_datasets_count_against_the_studys_unpacked_bytes() -> None:
    one = deflated_dicom(inflated=400_000)
    assert len(one) < 5_000
    archive = zipped({f"{i}.dcm": one for i in range(3)}, zipfile.ZIP_STORED)
    with pytest.raises(DicomLimitError, match=r"\(a deflated dataset\): the study unpacks to more than 1000000 bytes"):
        read_study(archive, limits=DicomLimits(max_unpacked_bytes=1_000_000))


def test_a_deflate_bomb_is_refused_without_being_inflated_in_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = deflated_dicom(inflated=1 << 30)  # 1 GiB of zeros
    assert len(bomb) < 1_200_000

    def whole(*args: object) -> None:
        raise AssertionError("pydicom inflated the deflate bomb")

    monkeypatch.setattr("pydicom.filereader.zlib.decompress", whole)
    with pytest.raises(
        DicomLimitError, match=r"\(a deflated dataset\): the study unpacks to more than 536870912 bytes"
    ):
        read_study(bomb)


def test_a_small_deflated_dataset_reads_like_its_plain_twin() -> None:
    assert read_series(deflated_dicom(inflated=0)).pixels.shape == (1, 8, 8)
    with pytest.raises(DicomError, match="cannot be read as DICOM"):  # a corrupt deflate stream is a DicomError
        read_study(deflated_dicom(inflated=0)[:-40] + bytes(range(40)))


@pytest.mark.usefixtures("no_pixel_decoding")
def test_a_huge_declared_image_is_refused_before_its_pixels_are_decoded() -> None:
    huge = tiny_dicom(rows=65535, columns=65535, frames=1000)  # 4.3e12 pixels declared, 128 bytes held
    assert len(huge) < 2_000
    with pytest.raises(DicomLimitError, match=r"declare 4294836225000 pixels .* more than 268435456"):
        read_study(huge)
    with pytest.raises(DicomLimitError, match="more than 268435456"):
        pixels_of(pydicom.dcmread(io.BytesIO(huge)))


def test_the_pixel_limit_counts_the_whole_study() -> None:
    slices = {f"{i}.dcm": tiny_dicom(position=float(i)) for i in range(3)}  # 64 pixels each
    assert read_series(zipped(slices), limits=DicomLimits(max_pixels=192)).pixels.shape == (3, 8, 8)
    with pytest.raises(DicomLimitError, match=r"declare 192 pixels .* more than 191"):
        read_study(zipped(slices), limits=DicomLimits(max_pixels=191))


@pytest.mark.parametrize(("frames", "bits"), [(-5, 16), (1, 12), (1, 0)])
def test_an_implausible_image_size_is_refused(frames: int, bits: int) -> None:
    ds = pydicom.dcmread(io.BytesIO(tiny_dicom()))
    ds.NumberOfFrames, ds.BitsAllocated = frames, bits
    with pytest.raises(DicomError, match="implausible image size"):
        pixels_of(ds)


def test_a_folder_of_more_files_than_allowed_is_refused(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.dcm").write_bytes(tiny_dicom(position=float(i)))
    assert read_series(tmp_path, limits=DicomLimits(max_members=3)).pixels.shape == (3, 8, 8)
    with pytest.raises(DicomLimitError, match="holds 3 files, more than 2"):
        read_study(tmp_path, limits=DicomLimits(max_members=2))
