"""Cine input and output (issue 12, part 3): DICOM cine folders as real archives hold them, one small synthetic set
per family (UK Biobank / Data Science Bowl / dcm2niix / SimpleITK / OHIF reports); 4D NIfTI / NRRD files with time
last and a JSON sidecar; the real Sunnybrook end-diastolic and end-systolic frames (a cine with most phases missing).
"""

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_objects import new_dicom
from matplotlib.path import Path as Polygon
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from scipy import ndimage

from CMRSynthesisLib.errors import InputError, OutputError
from CMRSynthesisLib.io import check_cine, read_cine, read_cine_frames, write_cine
from CMRSynthesisLib.io.cine import regular_interval, sidecar_path
from CMRSynthesisLib.volume import Volume

SUNNYBROOK = Path(__file__).parent / "Data" / "sunnybrook"
SUNNYBROOK_IOP = [0.698629, 0.714773, -0.0318918, -0.298901, 0.251078, -0.920661]  # the README's orientation
ROW, COLUMN = np.array([0.5, -np.sqrt(3) / 2, 0.0]), np.array([0.0, 0.0, -1.0])
NORMAL = np.cross(ROW, COLUMN)  # (0.866, 0.5, 0): in the x-y plane, so every slice has the same z
ORIGIN = np.array([-20.0, 35.0, 60.0])
GAP, SPACING, SHAPE = 8.0, 1.5, (8, 8)
TIMES = [0.0, 45.0, 90.0, 135.0, 180.0]
DEFAULT = object()


def pixels(z: int, t: int, shape: tuple[int, int] = SHAPE, offset: int = 0) -> np.ndarray:
    """An int16 image that names its slice and frame: 1000 (z + 1) + 10 t + offset + a small ramp."""
    return (1000 * (z + 1) + 10 * t + offset + np.arange(np.prod(shape)).reshape(shape) % 7).astype(np.int16)


class Study:
    """A synthetic cine study written image by image into one folder (one StudyInstanceUID; a SeriesInstanceUID per
    series number)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.uid = generate_uid()
        self.series_uids: dict[int, str] = {}
        self.count = 0

    def image(self, z: int, t: int, *, series: int = 1, trigger=DEFAULT, array: np.ndarray | None = None,
              position: np.ndarray | None = None, row: np.ndarray = ROW, column: np.ndarray = COLUMN,
              spacing: float = SPACING, **elements) -> Path:
        """Slice z, frame t: pixels(z, t) at ORIGIN + z GAP NORMAL, TriggerTime TIMES[t] (None: absent), MR magnitude."""
        array = pixels(z, t) if array is None else array
        position = ORIGIN + z * GAP * NORMAL if position is None else position
        self.count += 1
        dataset = new_dicom(MRImageStorage, Modality="MR", SeriesDescription="cine sax",
                            StudyInstanceUID=self.uid, SeriesNumber=series,
                            SeriesInstanceUID=self.series_uids.setdefault(series, generate_uid()),
                            ImageType=["ORIGINAL", "PRIMARY", "M"], InstanceNumber=self.count,
                            ImagePositionPatient=[round(float(value), 6) for value in position],
                            ImageOrientationPatient=[round(float(value), 6) for value in (*row, *column)],
                            PixelSpacing=[spacing, spacing], SliceThickness=GAP, Rows=array.shape[0],
                            Columns=array.shape[1], SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                            BitsAllocated=16, BitsStored=16, HighBit=15, PixelRepresentation=1,
                            PixelData=array.astype("<i2").tobytes())
        if trigger is not None:
            dataset.TriggerTime = TIMES[t] if trigger is DEFAULT else trigger
        for keyword, value in elements.items():
            if value is not None:
                setattr(dataset, keyword, value)
        path = self.folder / f"IM_{self.count:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        return path


def assert_frames(cine: Volume, slices: list[int], frames: int = len(TIMES), offset: int = 0) -> None:
    """cine.array[t, z] holds pixels(slices[z], t) for every frame."""
    assert cine.array.shape == (frames, len(slices), *SHAPE)
    for t in range(frames):
        for z, source in enumerate(slices):
            np.testing.assert_array_equal(cine.array[t, z], pixels(source, t, offset=offset), err_msg=f"t={t}, z={z}")


def columns(volume: Volume) -> np.ndarray:
    return np.reshape(volume.direction, (3, 3)).T  # rows: x, y, z axis directions


# ---- DICOM families -----------------------------------------------------------------------------------------------


def test_series_per_slice_are_stacked_along_the_normal_never_by_slice_location(tmp_path):
    """UK Biobank / DSB: every slice its own series, series numbers and SliceLocation in another order (one absent),
    z the same for every slice: the stack follows ImagePositionPatient . normal."""
    study = Study(tmp_path / "sax")
    numbers, locations = {0: 12, 1: 10, 2: 11}, {0: 30.0, 1: None, 2: 10.0}
    for z in (2, 0, 1):
        for t in reversed(range(len(TIMES))):
            study.image(z, t, series=numbers[z], SliceLocation=locations[z], CardiacNumberOfImages=len(TIMES))
    cine = read_cine(study.folder)
    assert_frames(cine, [0, 1, 2])
    assert cine.metadata["trigger_times_ms"] == TIMES
    assert "trigger_times_by_slice_ms" not in cine.metadata
    np.testing.assert_allclose(cine.spacing, (SPACING, SPACING, GAP), atol=1e-4)
    np.testing.assert_allclose(cine.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(columns(cine), [ROW, COLUMN, NORMAL], atol=1e-5)
    assert len(cine.metadata["series_instance_uids"]) == 3
    assert cine.metadata["skipped"] == [] and cine.metadata["notes"] == []
    check_cine(cine, task="strain")


def test_one_series_is_grouped_by_position_and_sorted_by_time(tmp_path):
    """All slices and phases in one series, files in random order, InstanceNumber unrelated to time, each slice timed
    a little differently: per-slice times kept, the nominal times their median."""
    study = Study(tmp_path / "one_series")
    order = np.random.default_rng(3).permutation([(z, t) for z in range(3) for t in range(len(TIMES))])
    for z, t in order:
        study.image(int(z), int(t), trigger=TIMES[t] + 3.0 * z)
    cine = read_cine(study.folder)
    assert_frames(cine, [0, 1, 2])
    assert cine.metadata["trigger_times_by_slice_ms"] == [[time + 3.0 * z for z in range(3)] for time in TIMES]
    assert cine.metadata["trigger_times_ms"] == [time + 3.0 for time in TIMES]
    assert cine.metadata["time_source"].startswith("TriggerTime")


def test_slices_with_missing_phases_are_refused_never_padded(tmp_path):
    study = Study(tmp_path / "uneven")
    for z in range(3):
        for t in range(len(TIMES)):
            if (z, t) != (1, 3):
                study.image(z, t)
    with pytest.raises(InputError, match="different numbers of images") as error:
        read_cine(study.folder)
    assert "slice 2" in str(error.value) and "4 image(s)" in str(error.value) and "never padded" in str(error.value)
    with pytest.raises(InputError, match="different numbers of frames"):
        read_cine_frames(study.folder)


def test_fewer_images_than_cardiac_number_of_images_need_read_cine_frames(tmp_path):
    study = Study(tmp_path / "short")
    for z in range(2):
        for t in range(4):  # the scanner made 5 phases; the archive kept 4
            study.image(z, t, CardiacNumberOfImages=5, NominalInterval=1000)
    with pytest.raises(InputError, match=r"fewer images than CardiacNumberOfImages") as error:
        read_cine(study.folder)
    assert str(error.value).count("4 of 5 image(s)") == 2
    cine = read_cine_frames(study.folder)
    assert_frames(cine, [0, 1], frames=4)
    assert cine.metadata["trigger_times_ms"] == TIMES[:4]
    assert cine.metadata["rr_interval_ms"] == 1000.0
    assert any("4 of the 5 phases" in note for note in cine.metadata["notes"])


@pytest.mark.parametrize("case", ["latest series", "most complete", "acquisition number"])
def test_repeated_stack_keeps_one_and_says_which(tmp_path, case):
    """Two whole stacks of the same slices: the most complete is read, between complete ones the latest series (or
    acquisition); the other is listed in skipped and the note names the one read."""
    study = Study(tmp_path / case.replace(" ", "_"))
    for z in range(3):
        for t in range(len(TIMES)):
            study.image(z, t, series=5, CardiacNumberOfImages=5, AcquisitionNumber=1)
    # the repeat: other timing and pixel spacing; in the same series (same CardiacNumberOfImages) only the
    # AcquisitionNumber tells it apart
    series, acquisition = (5, 2) if case == "acquisition number" else (7, 1)
    later_times = [0.0, 40.0, 80.0, 120.0, 160.0] + ([] if case == "acquisition number" else [200.0])
    for z in range(3):
        for t, time in enumerate(later_times):
            if case == "most complete" and (z, t) == (2, 4):
                continue  # the repeat lacks a frame: the first stack is more complete
            study.image(z, t, series=series, trigger=time, array=pixels(z, t, offset=500), spacing=1.4,
                        CardiacNumberOfImages=len(later_times), AcquisitionNumber=acquisition)
    cine = read_cine(study.folder)
    (skipped,), (note,) = cine.metadata["skipped"], cine.metadata["notes"]
    if case == "most complete":
        assert_frames(cine, [0, 1, 2])
        assert cine.spacing[0] == pytest.approx(SPACING)
        assert skipped.startswith("17 image(s) of series 7 'cine sax' repeat slice positions of series 5 'cine sax'")
        assert "read series 5 'cine sax'" in note
    else:
        assert_frames(cine, [0, 1, 2], frames=len(later_times), offset=500)
        assert cine.metadata["trigger_times_ms"] == later_times
        assert cine.spacing[0] == pytest.approx(1.4)
        left, read = (("series 5 'cine sax' acquisition 1", "series 5 'cine sax' acquisition 2")
                      if case == "acquisition number" else ("series 5 'cine sax'", "series 7 'cine sax'"))
        assert skipped.startswith(f"15 image(s) of {left} repeat slice positions of {read}")
        assert f"read {read}" in note


def test_long_axis_and_localizer_images_are_left_out_and_listed(tmp_path):
    study = Study(tmp_path / "mixed_planes")
    for z in range(3):
        for t in range(len(TIMES)):
            study.image(z, t, series=10)
    for t in range(2):  # a four-chamber cine, perpendicular to the short axis
        study.image(0, t, series=4, row=NORMAL, column=COLUMN)
    tilted = np.array([0.0, np.cos(np.radians(30)), np.sin(np.radians(30))])
    study.image(0, 0, series=1, row=np.array([1.0, 0.0, 0.0]), column=tilted, trigger=None)  # a localizer
    cine = read_cine(study.folder)
    assert_frames(cine, [0, 1, 2])
    skipped = sorted(cine.metadata["skipped"])
    assert len(skipped) == 2
    assert skipped[0].startswith("1 image(s) in another plane (76 degrees")
    assert skipped[1].startswith("2 image(s) in another plane (90 degrees")


def test_parallel_slices_on_other_grids_are_resampled_onto_the_majority_grid(tmp_path):
    """Slice 2 has a finer matrix (16 x 16 at 0.75 mm, shifted half a pixel), slice 3 is rotated 90 degrees in-plane,
    slice 5 is flipped (its normal reversed): all are resampled onto the grid of slices 1 and 4. The images are linear
    in position, so linear interpolation must give exactly the values at the reference grid's pixel centres."""
    study = Study(tmp_path / "grids")
    expected = {t: 12.0 * np.arange(8)[None, :] + 12.0 * np.arange(8)[:, None] + 1000 + 100 * t for t in range(4)}
    for t in range(4):
        for z in (0, 3):
            study.image(z, t, array=expected[t].astype(np.int16))
        plane = ORIGIN + GAP * NORMAL
        fine = 8 * (-0.375 + 0.75 * np.arange(16))
        study.image(1, t, array=(fine[None, :] + fine[:, None] + 1000 + 100 * t).astype(np.int16), spacing=0.75,
                    position=plane - 0.375 * ROW - 0.375 * COLUMN)
        r, c = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
        study.image(2, t, array=(12.0 * (7 - r) + 12.0 * c + 1000 + 100 * t).astype(np.int16), row=COLUMN,
                    column=-ROW, position=ORIGIN + 2 * GAP * NORMAL + 1.5 * 7 * ROW)
        study.image(4, t, array=(12.0 * c + 12.0 * (7 - r) + 1000 + 100 * t).astype(np.int16), row=ROW,
                    column=-COLUMN, position=ORIGIN + 4 * GAP * NORMAL + 1.5 * 7 * COLUMN)
    cine = read_cine(study.folder)
    assert cine.array.dtype == np.float32 and cine.array.shape == (4, 5, 8, 8)
    for t in range(4):
        for z in range(5):
            np.testing.assert_allclose(cine.array[t, z], expected[t], atol=1e-3, err_msg=f"t={t}, z={z}")
    np.testing.assert_allclose(columns(cine), [ROW, COLUMN, NORMAL], atol=1e-5)
    notes = [note for note in cine.metadata["notes"] if "resampled" in note]
    assert len(notes) == 3
    assert notes[0].startswith("slice 2") and "matrix (16, 16) vs (8, 8)" in notes[0] and "pixel spacing" in notes[0]
    assert notes[1].startswith("slice 3") and "in-plane direction" in notes[1]
    assert notes[2].startswith("slice 5") and "in-plane direction" in notes[2]


def test_constant_trigger_time_falls_back_to_the_clock_order_and_nominal_interval(tmp_path):
    """TriggerTime 0 in every image: ordered by ContentTime (InstanceNumber runs backwards and must not win), spaced
    by NominalInterval / CardiacNumberOfImages, with a warning."""
    study = Study(tmp_path / "constant")
    for z in range(2):
        for t in reversed(range(len(TIMES))):
            study.image(z, t, trigger=0, ContentTime=f"1015{10 * z + t:02d}.250000", NominalInterval=1000,
                        CardiacNumberOfImages=len(TIMES))
    cine = read_cine(study.folder)
    assert_frames(cine, [0, 1])
    assert cine.metadata["trigger_times_ms"] == [0.0, 200.0, 400.0, 600.0, 800.0]
    (note,) = cine.metadata["notes"]
    assert "TriggerTime (0018,1060) is 0 ms in every image" in note
    assert "ContentTime" in note and "NominalInterval" in note


def test_trigger_time_holding_instance_numbers_needs_a_frame_interval(tmp_path):
    """TriggerTime equal to InstanceNumber (steps of 1 ms), no clock, no NominalInterval: refused with a request for
    frame_interval_ms; given it, the frames are ordered by InstanceNumber, the last resort, with a warning."""
    study = Study(tmp_path / "instance")
    for z in range(2):
        for t in range(len(TIMES)):
            study.image(z, t, trigger=study.count + 1)
    with pytest.raises(InputError, match="frame_interval_ms"):
        read_cine(study.folder)
    for reader in (read_cine, read_cine_frames):  # every phase is there: the reason is the timing, not a partial cine
        with pytest.raises(InputError, match="no NominalInterval .* and no acquisition clock") as refused:
            reader(study.folder)
        assert "partial" not in str(refused.value) and "--frame-interval-ms" in str(refused.value)
    cine = read_cine(study.folder, frame_interval_ms=40)
    assert_frames(cine, [0, 1])
    assert cine.metadata["trigger_times_ms"] == [0.0, 40.0, 80.0, 120.0, 160.0]
    (note,) = cine.metadata["notes"]
    assert "steps by only 1 ms" in note and "ordered by InstanceNumber" in note and "40 ms apart" in note


def test_missing_trigger_time_falls_back_to_the_acquisition_clock(tmp_path):
    """No TriggerTime (a real-time cine), AcquisitionTime 50 ms apart: timed by the clock, with a warning."""
    study = Study(tmp_path / "clock")
    for z in range(2):
        for t in reversed(range(len(TIMES))):
            study.image(z, t, trigger=None, AcquisitionTime=f"0930{z:02d}.{50000 * t:06d}")
    cine = read_cine(study.folder)
    assert_frames(cine, [0, 1])
    np.testing.assert_allclose(cine.metadata["trigger_times_ms"], [0, 50, 100, 150, 200], atol=1e-6)
    (note,) = cine.metadata["notes"]
    assert "TriggerTime (0018,1060) is missing in every image" in note and "AcquisitionTime" in note


@pytest.mark.parametrize("trigger", [None, DEFAULT], ids=["no TriggerTime (MOLLI)", "with TriggerTime"])
def test_an_inversion_recovery_series_given_as_cine_is_refused(tmp_path, trigger):
    """A T1-mapping series (MOLLI: images heartbeats apart at other inversion times) is no cine, whatever its
    TriggerTime says; a cine whose images all state one inversion time reads."""
    study = Study(tmp_path / "molli")
    for z in range(2):
        for t in range(len(TIMES)):
            study.image(z, t, trigger=trigger, InversionTime=100.0 + 80.0 * t,
                        AcquisitionTime=f"0930{z:02d}.{50000 * t:06d}")
    with pytest.raises(InputError, match=r"differ in inversion time \(InversionTime .*: 100, 180, 260, .* not a cine"):
        read_cine(study.folder)
    same = Study(tmp_path / "one ti")
    for z in range(2):
        for t in range(len(TIMES)):
            same.image(z, t, InversionTime=250.0)
    assert_frames(read_cine(same.folder), [0, 1])


def test_trigger_time_missing_in_some_images_says_how_many(tmp_path):
    study = Study(tmp_path / "some")
    for z in range(2):
        for t in range(len(TIMES)):
            study.image(z, t, trigger=None if (z, t) == (1, 3) else DEFAULT, AcquisitionTime=f"0930{z:02d}.{50000 * t:06d}")
    (note,) = read_cine(study.folder).metadata["notes"]
    assert "is missing in 1 of the 10 images (" in note and "IM_0009.dcm" in note


def _enhanced_cine(order: list[tuple[int, int]]) -> Dataset:
    """One Enhanced MR file with the frames (z, t) in `order`: per-frame position, trigger delay and rescale."""
    dataset = new_dicom(EnhancedMRImageStorage, Modality="MR", SeriesInstanceUID=generate_uid(),
                        StudyInstanceUID=generate_uid(), ImageType=["ORIGINAL", "PRIMARY", "M", "NONE"],
                        InstanceNumber=1, NumberOfFrames=len(order), Rows=SHAPE[0], Columns=SHAPE[1],
                        SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", BitsAllocated=16,
                        BitsStored=16, HighBit=15, PixelRepresentation=1)
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [*ROW, *COLUMN]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [SPACING, SPACING]
    shared.PixelMeasuresSequence[0].SliceThickness = GAP
    dataset.SharedFunctionalGroupsSequence = [shared]
    groups, stored = [], []
    for index, (z, t) in enumerate(order):
        slope, intercept = (1.0, 0.0) if index % 2 else (0.5, 100.0)
        group = Dataset()
        group.PlanePositionSequence = [Dataset()]
        group.PlanePositionSequence[0].ImagePositionPatient = [round(float(v), 6) for v in ORIGIN + z * GAP * NORMAL]
        group.CardiacSynchronizationSequence = [Dataset()]
        group.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime = TIMES[t]
        group.PixelValueTransformationSequence = [Dataset()]
        transform = group.PixelValueTransformationSequence[0]
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "US"
        groups.append(group)
        stored.append(((pixels(z, t).astype(float) - intercept) / slope).astype("<i2"))
    dataset.PerFrameFunctionalGroupsSequence = groups
    dataset.PixelData = np.stack(stored).tobytes()
    return dataset


def test_enhanced_multiframe_cine_is_ordered_by_frame_position_and_trigger_delay(tmp_path):
    order = [tuple(pair) for pair in np.random.default_rng(5).permutation([(z, t) for z in range(2) for t in range(4)])]
    folder = tmp_path / "enhanced"
    folder.mkdir()
    _enhanced_cine(order).save_as(folder / "cine.dcm", enforce_file_format=True)
    cine = read_cine(folder)
    assert cine.array.dtype == np.float32
    assert_frames(cine, [0, 1], frames=4)
    assert cine.metadata["trigger_times_ms"] == TIMES[:4]
    assert cine.metadata["time_source"].startswith("NominalCardiacTriggerDelayTime")


def test_frames_of_one_slice_changing_geometry_are_refused(tmp_path):
    study = Study(tmp_path / "changing")
    for z in range(2):
        for t in range(len(TIMES)):
            changed = study.image(z, t, spacing=1.4 if (z, t) == (1, 2) else SPACING)
            if (z, t) == (1, 2):
                name = changed.name
    with pytest.raises(InputError, match="change geometry") as error:
        read_cine(study.folder)
    assert "PixelSpacing (0028,0030)" in str(error.value) and name in str(error.value)


def test_images_of_two_studies_are_refused(tmp_path):
    first, second = Study(tmp_path / "both"), Study(tmp_path / "both")
    second.count = 50  # its files IM_0051.dcm, ...
    for t in range(2):
        first.image(0, t)
        second.image(1, t)
    with pytest.raises(InputError, match="2 studies"):
        read_cine(first.folder)


def test_dicom_helpers_apply_as_for_other_series(tmp_path):
    """Exact duplicates are dropped, phase images beside the magnitudes and a screen capture are left out, all listed."""
    study = Study(tmp_path / "quirks")
    for z in range(2):
        for t in range(len(TIMES)):
            first = study.image(z, t)
            study.image(z, t, ImageType=["ORIGINAL", "PRIMARY", "P"], array=np.zeros(SHAPE, np.int16))
    shutil.copy(first, study.folder / "copy_of_last.dcm")
    capture = new_dicom(SecondaryCaptureImageStorage, Modality="OT", StudyInstanceUID=study.uid, Rows=4, Columns=4,
                        SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", BitsAllocated=8, BitsStored=8,
                        HighBit=7, PixelRepresentation=0, PixelData=bytes(16), SeriesInstanceUID=generate_uid())
    capture.save_as(study.folder / "screen.dcm", enforce_file_format=True)
    cine = read_cine(study.folder)
    assert_frames(cine, [0, 1])
    skipped = " | ".join(cine.metadata["skipped"])
    assert "secondary capture" in skipped and "1 duplicate image(s)" in skipped and "10 phase image(s)" in skipped


# ---- 4D files -----------------------------------------------------------------------------------------------------


def _nifti(path: Path, data_xyzt: np.ndarray, units: str = "msec", step: float = 40.0, offset: float = 0.0) -> Path:
    image = nib.Nifti1Image(data_xyzt, np.diag([1.5, 1.5, 8.0, 1.0]))
    image.header.set_xyzt_units("mm", units)
    image.header["pixdim"][4], image.header["toffset"] = step, offset
    nib.save(image, path)
    return path


@pytest.fixture
def data_xyzt() -> np.ndarray:
    return np.arange(5 * 4 * 2 * 3, dtype=np.int16).reshape(5, 4, 2, 3)  # x, y, z, t


def test_4d_nifti_time_from_the_header(tmp_path, data_xyzt):
    cine = read_cine(_nifti(tmp_path / "cine.nii.gz", data_xyzt, "msec", 40.0, 10.0))
    np.testing.assert_array_equal(cine.array, data_xyzt.T)
    assert cine.metadata["trigger_times_ms"] == [10.0, 50.0, 90.0]
    seconds = read_cine(_nifti(tmp_path / "seconds.nii", data_xyzt, "sec", 0.035))
    np.testing.assert_allclose(seconds.metadata["trigger_times_ms"], [0.0, 35.0, 70.0], atol=1e-4)


def test_4d_nifti_with_one_frame_stays_a_cine(tmp_path, data_xyzt):
    cine = read_cine(_nifti(tmp_path / "one.nii.gz", data_xyzt[..., :1]))
    assert cine.array.shape == (1, 2, 4, 5)
    assert cine.metadata["trigger_times_ms"] == [0.0]
    with pytest.raises(InputError, match="has 1 frame; strain needs at least 2"):
        check_cine(cine, task="strain")


def test_3d_image_given_as_cine_is_refused(tmp_path, data_xyzt):
    path = tmp_path / "stack.nii.gz"
    nib.save(nib.Nifti1Image(data_xyzt[..., 0], np.eye(4)), path)
    with pytest.raises(InputError, match=r"stack.nii.gz: a 3D image, not a cine \(shape \(2, 4, 5\)"):
        read_cine(path)


def test_4d_file_without_timing_needs_a_sidecar_or_a_frame_interval(tmp_path, data_xyzt):
    path = _nifti(tmp_path / "plain.nii.gz", data_xyzt, "unknown", 1.0)
    with pytest.raises(InputError, match="plain.json.*frame_interval_ms"):
        read_cine(path)
    assert read_cine(path, frame_interval_ms=30).metadata["trigger_times_ms"] == [0.0, 30.0, 60.0]
    (tmp_path / "plain.json").write_text(json.dumps({"frame_interval_ms": 25}))
    assert read_cine(path).metadata["trigger_times_ms"] == [0.0, 25.0, 50.0]
    (tmp_path / "plain.json").write_text(json.dumps({"trigger_times_ms": [5, 33, 70], "rr_interval_ms": 900}))
    cine = read_cine(path, frame_interval_ms=30)
    assert cine.metadata["trigger_times_ms"] == [5.0, 33.0, 70.0] and cine.metadata["rr_interval_ms"] == 900.0
    assert "was not used" in cine.metadata["notes"][0]
    (tmp_path / "plain.json").write_text(json.dumps({"trigger_times_ms": [5, 33]}))
    with pytest.raises(InputError, match="2 trigger time"):
        read_cine(path)


def _nrrd(path: Path, header: str, array: np.ndarray) -> Path:
    path.write_bytes(("NRRD0004\n" + header.strip() + "\n\n").encode() + array.astype("<i2").tobytes())
    return path


def test_slicer_sequence_nrrd_and_time_space_nrrd(tmp_path, data_xyzt):
    array = data_xyzt.T  # (t, z, y, x), x fastest on disk
    sequence = _nrrd(tmp_path / "cine.seq.nrrd", """
type: short
dimension: 4
space: left-posterior-superior
sizes: 5 4 2 3
space directions: (1.5,0,0) (0,1.5,0) (0,0,8) none
kinds: domain domain domain list
labels: "" "" "" "time"
units: "" "" "" "ms"
endian: little
encoding: raw
space origin: (1,2,3)
axis 3 index type:=numeric
axis 3 index values:=0 40.5 80""", array)
    cine = read_cine(sequence)
    np.testing.assert_array_equal(cine.array, array)
    assert cine.metadata["trigger_times_ms"] == [0.0, 40.5, 80.0]
    assert cine.spacing == (1.5, 1.5, 8.0) and cine.origin == (1.0, 2.0, 3.0)
    timed = _nrrd(tmp_path / "timed.nrrd", """
type: short
dimension: 4
space: left-posterior-superior-time
sizes: 5 4 2 3
space directions: (1.5,0,0,0) (0,1.5,0,0) (0,0,8,0) (0,0,0,0.045)
space units: "mm" "mm" "mm" "s"
kinds: domain domain domain domain
endian: little
encoding: raw
space origin: (1,2,3,0.01)""", array)
    np.testing.assert_allclose(read_cine(timed).metadata["trigger_times_ms"], [10.0, 55.0, 100.0])


def _cine(times: list[float], **metadata) -> Volume:
    rotation = np.column_stack([ROW, COLUMN, NORMAL])
    array = np.random.default_rng(1).integers(-500, 3000, (len(times), 3, 6, 5)).astype(np.int16)
    return Volume(array, (1.3, 1.4, 8.0), (10.5, -20.25, 33.0), rotation.ravel(),
                  {"trigger_times_ms": times, **metadata})


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("times", [[0.0, 40.0, 80.0, 120.0], [12.5, 40.0, 95.25, 130.0], [929.0]],
                         ids=["regular", "irregular", "one frame"])
def test_write_cine_round_trip(tmp_path, suffix, times):
    by_slice = [[time + z for z in range(3)] for time in times]
    cine = _cine(times, rr_interval_ms=950.0, trigger_times_by_slice_ms=by_slice)
    path = write_cine(cine, tmp_path / f"out{suffix}")
    assert sorted(item.name for item in tmp_path.iterdir()) == sorted([path.name, "out.json"])
    back = read_cine(path)
    np.testing.assert_array_equal(back.array, cine.array)
    assert back.array.dtype == cine.array.dtype
    assert not back.grid_differences(cine)
    assert back.metadata["trigger_times_ms"] == times
    assert back.metadata["trigger_times_by_slice_ms"] == by_slice and back.metadata["rr_interval_ms"] == 950.0
    sidecar_path(path).unlink()  # the header alone: the interval when regular, never a wrong one
    irregular = len(set(np.diff(times))) > 1
    if suffix == ".nrrd" or not irregular:
        np.testing.assert_allclose(read_cine(path).metadata["trigger_times_ms"], times, atol=1e-3)
    else:
        with pytest.raises(InputError, match="frame_interval_ms"):
            read_cine(path)
    if suffix != ".nrrd":
        header = nib.load(path).header
        assert header.get_xyzt_units()[1] == ("unknown" if irregular else "sec")
        assert header["toffset"] == pytest.approx(times[0] / 1000)
        if len(times) > 1 and not irregular:
            assert header["pixdim"][4] == pytest.approx(0.04)


def test_write_cine_never_overwrites_inputs(tmp_path):
    cine = _cine([0.0, 40.0])
    source = write_cine(cine, tmp_path / "input.nii.gz")
    before = {item.name: item.read_bytes() for item in tmp_path.iterdir()}
    with pytest.raises(OutputError, match="refusing to overwrite the input"):
        write_cine(cine, source, protected=[source])
    with pytest.raises(OutputError, match="input.json"):  # another image beside it would replace its sidecar
        write_cine(cine, tmp_path / "input.nrrd", protected=[source])
    with pytest.raises(OutputError, match="NRRD"):
        write_cine(cine, tmp_path / "out.mha")
    with pytest.raises(InputError, match="3D image"):
        write_cine(Volume(cine.array[0]), tmp_path / "out.nrrd")
    assert {item.name: item.read_bytes() for item in tmp_path.iterdir()} == before


def test_check_cine_names_what_is_wrong():
    cine = _cine([0.0, 40.0, 80.0])
    check_cine(cine)
    for metadata, message in (({"trigger_times_ms": [0.0, 40.0]}, "holds 2 value"),
                              ({"trigger_times_ms": [0.0, 80.0, 40.0]}, "must increase"),
                              ({"trigger_times_ms": [0.0, 40.0, 80.0], "trigger_times_by_slice_ms": [[0.0]]},
                               r"shape \(1, 1\)"),
                              ({}, "no trigger times")):
        with pytest.raises(InputError, match=message):
            check_cine(Volume(cine.array, metadata=metadata))
    broken = cine.array.astype(np.float32)
    broken[1, 2, 3, 4] = np.nan
    with pytest.raises(InputError, match=r"1 NaN or infinite voxel\(s\), the first at index \(1, 2, 3, 4\)"):
        check_cine(cine.with_array(broken))


# ---- the real Sunnybrook frames -----------------------------------------------------------------------------------


def test_sunnybrook_folder_is_refused_listing_each_slice(tmp_path):
    """10 images of a 20-phase cine: every slice holds 1 or 2 of its phases. Never padded."""
    with pytest.raises(InputError, match=r"fewer images than CardiacNumberOfImages \(0018,1090\) states \(20\)") as error:
        read_cine(SUNNYBROOK / "images")
    message = str(error.value)
    assert message.count("1 of 20 image(s)") == 2 and message.count("2 of 20 image(s)") == 4
    assert "read_cine_frames" in message
    with pytest.raises(InputError, match="different numbers of frames") as error:
        read_cine_frames(SUNNYBROOK / "images")
    assert "929 ms" in str(error.value) and "348 ms" in str(error.value)


@pytest.mark.parametrize(("phase", "instances", "trigger"), [("ED", [20, 40, 60, 80, 100], 929.0),
                                                            ("ES", [28, 48, 68, 88, 108], 348.0)])
def test_sunnybrook_frames_read_as_a_one_frame_cine(phase, instances, trigger):
    files = [SUNNYBROOK / "images" / f"IM-0009-{number:04d}.dcm" for number in instances]
    cine = read_cine_frames(files)
    assert cine.array.shape == (1, 5, 256, 256) and cine.array.dtype == np.int16
    assert cine.metadata["trigger_times_ms"] == [trigger] and cine.metadata["rr_interval_ms"] == 967.0
    assert any("1 of the 20 phases" in note for note in cine.metadata["notes"])
    np.testing.assert_allclose(cine.spacing, (1.3672, 1.3672, 8.0), atol=1e-3)
    np.testing.assert_allclose(columns(cine)[:2].ravel(), SUNNYBROOK_IOP, atol=1e-6)
    np.testing.assert_allclose(cine.metadata["slice_positions_mm"], [0, 8, 16, 24, 32], atol=1e-3)
    first = pydicom.dcmread(cine.metadata["source_files"][0], stop_before_pixels=True)
    np.testing.assert_allclose(cine.origin, [float(value) for value in first.ImagePositionPatient], atol=1e-4)
    with open(SUNNYBROOK / "manifest.tsv") as stream:
        sums = {row["file"]: int(row["decoded_stored_pixel_sum"]) for row in csv.DictReader(stream, delimiter="\t")}
    for z, file in enumerate(cine.metadata["source_files"]):
        assert int(cine.array[0, z].sum(dtype=np.int64)) == sums[f"images/{Path(file).name}"]
    with pytest.raises(InputError, match="has 1 frame; strain needs at least 2"):
        check_cine(cine, task="strain")


def test_sunnybrook_contour_lies_on_the_blood_pool_of_its_cine_slice():
    """The expert endocardial contour of image 0040 (x = column, y = row) encloses the bright LV blood pool of its
    slice of the end-diastolic cine: the array keeps the stored rows and columns."""
    files = [SUNNYBROOK / "images" / f"IM-0009-{number:04d}.dcm" for number in (20, 40, 60, 80, 100)]
    cine = read_cine_frames(files)
    z = [Path(file).name for file in cine.metadata["source_files"]].index("IM-0009-0040.dcm")
    points = np.loadtxt(SUNNYBROOK / "contours" / "IM-0001-0040-icontour-manual.txt")
    rows, cols = np.mgrid[:256, :256]
    inside = Polygon(points).contains_points(np.column_stack([cols.ravel(), rows.ravel()])).reshape(256, 256)
    ring = ndimage.binary_dilation(inside, iterations=3) & ~inside
    image = cine.array[0, z].astype(float)
    assert image[inside].mean() > image[ring].mean() + 10


@pytest.mark.parametrize("times, interval", [
    ([round(34.0255 * t, 2) for t in range(26)], 34.0256),  # rounded to 0.01 ms, as the phantom and scanners store
    ([round(34.0255 * t) for t in range(26)], 34.04),  # rounded to whole ms (steps of 34 and 35)
    ([0.0, 40.0, 80.0, 120.0], 40.0),
    ([12.5, 40.0, 95.25, 130.0], None),  # irregular
    ([929.0], None),  # one frame
])
def test_frames_evenly_spaced_up_to_rounding_count_as_regular(tmp_path, times, interval):
    found = regular_interval(times)
    assert found == pytest.approx(interval, abs=0.01) if interval else found is None
    path = write_cine(_cine(times), tmp_path / "cine.nii.gz")
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar.get("frame_interval_ms") == (pytest.approx(interval, abs=0.01) if interval else None)
    back = read_cine(path)
    assert back.metadata["trigger_times_ms"] == pytest.approx(times)  # the sidecar's exact times
    assert back.metadata["notes"] == []  # the header's mean interval agrees with them: nothing to say


def test_the_frame_of_reference_is_recorded_when_every_image_shares_it(tmp_path):
    study, frame = Study(tmp_path / "one"), generate_uid()
    for z in range(2):
        for t in range(len(TIMES)):
            study.image(z, t, FrameOfReferenceUID=frame)
    assert read_cine(study.folder).metadata["frame_of_reference_uid"] == frame
    plain = Study(tmp_path / "none")
    for z in range(2):
        for t in range(len(TIMES)):
            plain.image(z, t)
    assert "frame_of_reference_uid" not in read_cine(plain.folder).metadata


def test_the_slice_thickness_is_recorded_when_every_image_states_the_same(tmp_path):
    study = Study(tmp_path / "cine")
    for z in range(2):
        for t in range(len(TIMES)):
            study.image(z, t, SliceThickness=6.0)  # 6 mm slices 8 mm apart
    cine = read_cine(study.folder)
    assert cine.metadata["slice_thickness_mm"] == 6.0 and cine.spacing[2] == pytest.approx(GAP)
    mixed = Study(tmp_path / "mixed")
    for z in range(2):
        for t in range(len(TIMES)):
            mixed.image(z, t, SliceThickness=6.0 + z)
    assert "slice_thickness_mm" not in read_cine(mixed.folder).metadata
