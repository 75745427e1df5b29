from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from inspector.medical.dicom import WINDOWS, normalise_mr, read_series, read_study, series_volume, window
from inspector.medical.errors import (
    DicomError,
    NoPixelDataError,
    SeriesGeometryError,
    UnsupportedTransferSyntaxError,
)


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
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"JPEG-LS.*pip install pyjpegls"):
        read_study(testdata / "MR_small_jpeg_ls_lossless.dcm")


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
