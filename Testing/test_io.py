"""Image I/O: NIfTI/NRRD round trips, DICOM series and multi-frame reading (checked against SimpleITK), the
real Philips JPEG Lossless LGE study, error messages, and protected atomic writing."""

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_objects import new_dicom
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, generate_uid
from scipy.spatial.transform import Rotation

from CMRSynthesisLib.errors import InputError, OutputError
from CMRSynthesisLib.io import file_sha256, read_dicom_series, read_volume, write_volume, writing
from CMRSynthesisLib.volume import Volume

LGE = Path(__file__).parent / "Data" / "lge_patient_philips"
LGE_SLOPE = 1.45347985347985  # RescaleSlope of every LGE file (folder README)

# A small oblique series: 3 slices of 16 x 20 pixels. Values are rounded as DICOM decimal strings hold them.
ROTATION = np.round(Rotation.from_euler("xyz", [25, -40, 60], degrees=True).as_matrix(), 6)
ROW, COLUMN = ROTATION[:, 0], ROTATION[:, 1]
NORMAL = np.cross(ROW, COLUMN)
ORIGIN = np.array([12.5, -40.25, 33.0])
PIXEL_SPACING = (0.9, 0.8)  # (between rows, between columns): x spacing is 0.8
SLICE_SPACING = 6.5
POSITIONS = [np.round(ORIGIN + k * SLICE_SPACING * NORMAL, 6) for k in range(3)]
STORED = np.random.default_rng(7).integers(0, 1000, size=(3, 16, 20), dtype=np.uint16)
INVERSION_TIMES = [150.0, 170.0, 190.0]
TRIGGER_TIMES = [600.0, 610.0, 620.0]
FILE_ORDER = [2, 0, 1]  # slice written to file 0, 1, 2; InstanceNumbers follow the file order, not the position


def _dataset(sop_class: str, pixels: np.ndarray, series_uid: str) -> Dataset:
    """An MR dataset with file meta, identifiers and 16-bit unsigned pixel data; geometry is left to the caller."""
    ds = new_dicom(sop_class, Modality="MR", SeriesDescription="test series", SeriesInstanceUID=series_uid)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _slice(k: int, instance: int, series_uid: str, *, slope: float = 2.0, intercept: float = -100.0,
           inversion: float | None = None, position: np.ndarray | None = None) -> Dataset:
    """Single-frame MR image of slice k of the test series."""
    ds = _dataset(MRImageStorage, STORED[k], series_uid)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = list(POSITIONS[k] if position is None else position)
    ds.ImageOrientationPatient = list(ROW) + list(COLUMN)
    ds.PixelSpacing, ds.SliceThickness = list(PIXEL_SPACING), 6.0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.InversionTime = INVERSION_TIMES[k] if inversion is None else inversion
    ds.TriggerTime = TRIGGER_TIMES[k]
    return ds


def _write_series(folder: Path, datasets: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IM_{number:04d}.dcm" for number in range(1, len(datasets) + 1)]
    for ds, path in zip(datasets, paths):
        ds.save_as(path, enforce_file_format=True)
    return paths


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """The oblique 3-slice series, files in shuffled order; returns its folder."""
    uid = generate_uid()
    folder = tmp_path / "series"
    _write_series(folder, [_slice(k, instance, uid) for instance, k in zip([3, 1, 2], FILE_ORDER)])
    return folder


def _sitk_series(folder: Path) -> tuple[sitk.Image, list[str]]:
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute(), [Path(name).name for name in names]


def _assert_geometry(volume: Volume, image: sitk.Image) -> None:
    np.testing.assert_allclose(volume.spacing, image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(volume.direction, image.GetDirection(), atol=1e-6)


# --- NIfTI / NRRD ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
def test_itk_round_trip(tmp_path, suffix, dtype, shape):
    array = (np.random.default_rng(0).normal(size=shape) * 50).astype(dtype)
    direction = Rotation.from_euler("zyx", [30, 10, -20], degrees=True).as_matrix().ravel()
    volume = Volume(array, spacing=(0.7, 0.8, 5.5), origin=(1.5, -2.25, 30.125), direction=direction)
    path = write_volume(volume, tmp_path / f"out{suffix}")
    back = read_volume(path)
    assert back.array.dtype == dtype and back.array.shape == shape
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-6)  # NIfTI stores float32
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-6)
    assert back.metadata["source_files"] == [str(path)]


# --- DICOM ----------------------------------------------------------------------------------------------------

def test_dicom_series_order_values_geometry_and_times(series):
    volume = read_volume(series)
    assert volume.array.shape == (3, 16, 20) and volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, STORED * 2.0 - 100.0)  # sorted along the normal, rescaled
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, SLICE_SPACING), atol=1e-5)
    np.testing.assert_allclose(volume.origin, POSITIONS[0], atol=1e-9)
    np.testing.assert_allclose(np.reshape(volume.direction, (3, 3)), np.column_stack([ROW, COLUMN, NORMAL]))
    assert volume.metadata["inversion_times_ms"] == INVERSION_TIMES
    assert volume.metadata["trigger_times_ms"] == TRIGGER_TIMES
    assert volume.metadata["modality"] == "MR" and volume.metadata["series_description"] == "test series"
    # SimpleITK's series reader agrees on order, values and geometry.
    image, names = _sitk_series(series)
    assert [Path(name).name for name in volume.metadata["source_files"]] == names
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(image))
    _assert_geometry(volume, image)


def test_dicom_series_from_file_list_and_single_file(series):
    files = sorted(series.glob("*.dcm"))
    np.testing.assert_array_equal(read_dicom_series(files).array, read_volume(series).array)
    one = read_volume(files[1])  # slice 0 (FILE_ORDER): spacing from SliceThickness
    np.testing.assert_array_equal(one.array, STORED[:1] * 2.0 - 100.0)
    assert one.spacing[2] == 6.0 and one.metadata["inversion_times_ms"] == [INVERSION_TIMES[0]]


def test_dicom_images_at_one_position_become_4d_ordered_by_inversion_time(tmp_path):
    uid = generate_uid()
    times = [300.0, 100.0, 200.0]
    datasets = [_slice(k, 1, uid, slope=1.0, intercept=0.0, inversion=time, position=POSITIONS[z])
                for z in (1, 0) for k, time in enumerate(times)]
    volume = read_volume(_write_series(tmp_path / "molli", datasets)[0].parent)
    assert volume.array.shape == (3, 2, 16, 20) and volume.array.dtype == np.uint16  # no rescale: dtype kept
    order = np.argsort(times)
    np.testing.assert_array_equal(volume.array, np.stack([STORED[order]] * 2, axis=1))
    assert volume.metadata["inversion_times_ms"] == [[100.0, 100.0], [200.0, 200.0], [300.0, 300.0]]
    np.testing.assert_allclose(volume.origin, POSITIONS[0])

    same_times = [_slice(k, 1, uid, inversion=100.0, position=POSITIONS[0]) for k in range(2)]
    for ds in same_times:
        ds.TriggerTime = 600.0
    folder = _write_series(tmp_path / "duplicates", same_times)[0].parent
    with pytest.raises(InputError, match=r"IM_0001\.dcm and .*IM_0002\.dcm lie at one slice position with the same InversionTime \(0018,0082\) 100 ms"):
        read_volume(folder)


def test_enhanced_multiframe_matches_single_frame_series(tmp_path, series):
    ds = _dataset(EnhancedMRImageStorage, STORED[FILE_ORDER], generate_uid())
    ds.NumberOfFrames = 3
    shared = Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = list(PIXEL_SPACING)
    shared.PixelMeasuresSequence[0].SliceThickness = 6.0
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(ROW) + list(COLUMN)
    shared.PixelValueTransformationSequence = [Dataset()]
    transform = shared.PixelValueTransformationSequence[0]
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 2.0, -100.0, "US"
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in FILE_ORDER:
        frame = Dataset()
        frame.PlanePositionSequence = [Dataset()]
        frame.PlanePositionSequence[0].ImagePositionPatient = list(POSITIONS[k])
        frame.MRModifierSequence = [Dataset()]
        frame.MRModifierSequence[0].InversionTimes = [INVERSION_TIMES[k]]
        frame.CardiacSynchronizationSequence = [Dataset()]
        frame.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime = TRIGGER_TIMES[k]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)

    volume, reference = read_volume(path), read_volume(series)
    np.testing.assert_array_equal(volume.array, reference.array)
    reference.require_same_geometry(volume, "multi-frame and single-frame readings")
    for key in ("inversion_times_ms", "trigger_times_ms"):
        assert volume.metadata[key] == reference.metadata[key]
    assert volume.metadata["source_files"] == [str(path)] and "units" not in volume.metadata


def test_real_philips_lge_jpeg_lossless():
    volume = read_volume(LGE)
    assert volume.array.shape == (3, 384, 384) and volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.spacing, (0.78125, 0.78125, 16.0), atol=1e-5)
    assert volume.metadata["trigger_times_ms"] == [670.0] * 3 and volume.metadata["inversion_times_ms"] is None
    image, names = _sitk_series(LGE)
    files = [Path(name).name for name in volume.metadata["source_files"]]
    assert files == names
    _assert_geometry(volume, image)
    stored = np.rint(volume.array.astype(np.float64) / LGE_SLOPE)
    with open(LGE / "manifest.tsv", newline="") as stream:
        sums = {row["file"]: int(row["decoded_stored_pixel_sum"]) for row in csv.DictReader(stream, delimiter="\t")}
    assert [int(stored[z].sum()) for z in range(3)] == [sums[name] for name in files]
    # README reference box: LV blood pool of IM_0001, rows 197-206, cols 206-215, median 1212.5 (stored values).
    assert np.median(stored[files.index("IM_0001.dcm"), 197:207, 206:216]) == 1212.5


# --- errors ---------------------------------------------------------------------------------------------------

def test_non_image_and_corrupt_files_name_the_file(tmp_path, series):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    fake_dicom = tmp_path / "fake.dcm"
    fake_dicom.write_text("not an image either\n")
    fake_nifti = tmp_path / "fake.nii.gz"
    fake_nifti.write_bytes(b"\x00" * 400)
    for path in (text, fake_dicom, fake_nifti, tmp_path / "missing.nrrd"):
        with pytest.raises(InputError, match=path.name):
            read_volume(path)
    dicom_bytes = (series / "IM_0001.dcm").read_bytes()
    for cut in (300, len(dicom_bytes) - 100):  # inside the header, inside the pixel data
        truncated = tmp_path / f"truncated_{cut}.dcm"
        truncated.write_bytes(dicom_bytes[:cut])
        with pytest.raises(InputError, match=truncated.name):
            read_volume(truncated)


def test_mixed_series_are_refused(tmp_path):
    two_series = [_slice(0, 1, generate_uid()), _slice(1, 2, generate_uid())]
    with pytest.raises(InputError, match=r"SeriesInstanceUID: .*IM_0001\.dcm.*IM_0002\.dcm"):
        read_volume(_write_series(tmp_path / "two", two_series)[0].parent)
    uid = generate_uid()
    other_size = _dataset(MRImageStorage, STORED[1, :8], uid)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        setattr(other_size, keyword, getattr(_slice(1, 2, uid), keyword))
    sizes = r"Rows x Columns: .*IM_0001\.dcm has \(16, 20\), .*IM_0002\.dcm has \(8, 20\)"
    with pytest.raises(InputError, match=sizes):
        read_volume(_write_series(tmp_path / "sizes", [_slice(0, 1, uid), other_size])[0].parent)
    uneven = [_slice(k, k, uid, position=ORIGIN + distance * NORMAL) for k, distance in enumerate([0.0, 6.5, 20.0])]
    with pytest.raises(InputError, match="off a regular grid"):
        read_volume(_write_series(tmp_path / "uneven", uneven)[0].parent)


@pytest.mark.parametrize("keyword", ["PixelSpacing", "ImagePositionPatient", "PixelData"])
def test_missing_tag_is_named(tmp_path, keyword):
    uid = generate_uid()
    datasets = [_slice(0, 1, uid), _slice(1, 2, uid)]
    delattr(datasets[1], keyword)
    paths = _write_series(tmp_path, datasets)
    with pytest.raises(InputError, match=rf"{paths[1].name}: {keyword} \("):
        read_volume(tmp_path)


# --- writing --------------------------------------------------------------------------------------------------

def test_write_refuses_protected_inputs_and_existing_files(tmp_path):
    volume = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    source = write_volume(volume, tmp_path / "input.nrrd")
    digest = file_sha256(source)
    link = tmp_path / "link.nrrd"
    link.symlink_to(source)
    for target in (source, link, tmp_path / "." / "input.nrrd"):
        with pytest.raises(OutputError, match="refusing to overwrite the input"):
            write_volume(volume.with_array(volume.array * 2), target, protected=[source])
    with pytest.raises(OutputError, match="already exists"):
        write_volume(volume, source, overwrite=False)
    with pytest.raises(OutputError, match="unknown output type"):
        write_volume(volume, tmp_path / "output.png")
    assert file_sha256(source) == digest
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.nrrd", "link.nrrd"]
    nested = write_volume(volume, tmp_path / "a" / "b" / "out.nii", protected=[source])
    np.testing.assert_array_equal(read_volume(nested).array, volume.array)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    volume = Volume(np.ones((2, 3, 4), np.float32))
    target = write_volume(volume, tmp_path / "result.nii.gz")
    digest = file_sha256(target)

    def write_half_then_fail(image, filename, useCompression):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(writing.sitk, "WriteImage", write_half_then_fail)
    with pytest.raises(OutputError, match="result.nii.gz: could not be written \\(disk full\\)"):
        write_volume(volume.with_array(volume.array * 3), target)
    assert [path.name for path in tmp_path.iterdir()] == ["result.nii.gz"]
    assert file_sha256(target) == digest


def test_single_slice_grids_compare_in_plane_spacing_only():
    image = Volume(np.zeros((1, 4, 5)), spacing=(0.9, 0.9, 8.0))
    itk_written = Volume(np.zeros((1, 4, 5)), spacing=(0.9, 0.9, 1.0))  # ITK's slice spacing for one slice
    assert image.same_geometry(itk_written)
    assert image.grid_differences(Volume(np.zeros((1, 4, 5)), spacing=(0.8, 0.9, 8.0))) == ["spacing"]
    stack = Volume(np.zeros((2, 4, 5)), spacing=(0.9, 0.9, 8.0))
    assert stack.grid_differences(stack.with_array(np.zeros((2, 4, 5)))) == []
    assert stack.grid_differences(Volume(np.zeros((2, 4, 5)), spacing=(0.9, 0.9, 1.0))) == ["spacing"]
    with pytest.raises(InputError, match=r"the images and the mask differ in spacing: \(0.9, 0.9, 8.0\) vs "):
        stack.mask_on_grid(Volume(np.ones((2, 4, 5)), spacing=(0.9, 0.9, 1.0)), "the mask", "the images")
