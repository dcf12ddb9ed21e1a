"""Tests of the DICOM series writer: geometry and values read back by our reader, per-frame elements, all or nothing."""

import numpy as np
import pydicom
import pytest

from CMRSynthesisLib.errors import InputError, OutputError
from CMRSynthesisLib.io import read_volume
from CMRSynthesisLib.io.dicom_export import write_dicom_series
from CMRSynthesisLib.volume import Volume

OBLIQUE = tuple(np.linalg.qr(np.array([[0.9, 0.3, 0.1], [-0.2, 0.8, 0.4], [0.1, -0.3, 0.9]]))[0].ravel())


def _volume(array: np.ndarray) -> Volume:
    return Volume(array, (1.25, 1.5, 8.0), (10.0, -20.0, 30.0), OBLIQUE, {"slice_thickness_mm": 7.0})


def test_integer_stack_reads_back_with_its_geometry(tmp_path):
    array = np.arange(3 * 6 * 5, dtype=np.int16).reshape(3, 6, 5) - 40
    paths = write_dicom_series(_volume(array), tmp_path / "series", description="test")
    assert [p.name for p in paths] == ["IM_00001.dcm", "IM_00002.dcm", "IM_00003.dcm"]
    back = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.spacing, (1.25, 1.5, 8.0), atol=1e-5)
    np.testing.assert_allclose(back.origin, (10.0, -20.0, 30.0), atol=1e-5)
    np.testing.assert_allclose(back.direction, OBLIQUE, atol=1e-6)
    first = pydicom.dcmread(paths[0])
    assert first.SliceThickness == 7.0 and first.Rows == 6 and first.Columns == 5 and "SYNTHETIC" in first.ImageType


def test_float_frames_are_rescaled_and_carry_their_elements(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.uniform(-5.0, 1500.0, (4, 2, 6, 5)).astype(np.float32)
    elements = [{"InversionTime": 100.0 + 80 * k, "AcquisitionTime": f"1200{k:02d}.000000"} for k in range(4)]
    paths = write_dicom_series(_volume(array), tmp_path / "molli", description="MOLLI", frame_elements=elements)
    assert len(paths) == 8
    datasets = [pydicom.dcmread(path) for path in paths]
    assert [float(d.InversionTime) for d in datasets[:4]] == [100.0, 180.0, 260.0, 340.0]  # slice-major order
    values = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    np.testing.assert_allclose(values.reshape(2, 4, 6, 5).transpose(1, 0, 2, 3), array, atol=0.02)


def test_the_minimum_of_rescaled_values_reads_back_exactly(tmp_path):
    """A synthetic image is 0 outside its crops: the 0 must not come back as -1e-10 (a value outside 0-1)."""
    array = np.zeros((2, 6, 5), np.float32)
    array[:, 2:4, 1:4] = np.random.default_rng(1).uniform(0.0, 1.0, (2, 2, 3))
    paths = write_dicom_series(_volume(array), tmp_path / "synthetic", description="SYNTHETIC test")
    values = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
                       for d in map(pydicom.dcmread, paths)])
    assert values.min() == 0.0 and (values[array == 0] == 0.0).all() and values.max() <= 1.0
    np.testing.assert_allclose(values, array, atol=1.0 / 65535)


def test_refuses_a_used_folder_bad_values_and_leaves_nothing_behind(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_dicom_series(_volume(np.zeros((2, 4, 4), np.int16)), used, description="x")
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    with pytest.raises(OutputError, match="is a file"):
        write_dicom_series(_volume(np.zeros((2, 4, 4), np.int16)), used / "keep.txt", description="x")
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(_volume(np.full((2, 4, 4), np.nan, np.float32)), tmp_path / "nan", description="x")
    with pytest.raises(InputError, match="frame elements"):
        write_dicom_series(_volume(np.zeros((3, 2, 4, 4), np.int16)), tmp_path / "few", description="x",
                           frame_elements=[{}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]
