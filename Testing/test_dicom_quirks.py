"""DICOM as scanners, PACS and anonymisers really write it (issue 11): each kind of quirk as a family, one small
input per member, built in the test from the real Siemens ShMOLLI phantom and Philips MOLLI / LGE files.

Where the data stay valid, the T1 map must agree with the scanner's map as on the unmodified files (ShMOLLI tubes:
the README's reference medians); where they cannot be used, the refusal must say exactly what is missing.
"""

import copy
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_objects import new_dicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    EnhancedMRImageStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from scanner_references import reference_boxes

from CMRSynthesisLib.analysis.t1mapping import t1_maps
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import read_dicom_series, read_volume, write_volume
from CMRSynthesisLib.io.t1_series import read_t1_series
from CMRSynthesisLib.volume import Volume

DATA = Path(__file__).parent / "Data"
SHMOLLI_FILES = sorted((DATA / "shmolli_phantom_siemens" / "magnitude_series12").glob("*.dcm"))  # acquisition order
NATIVE = DATA / "molli_patient_philips" / "native"
NATIVE_SLICE = [NATIVE / f"IM_{number:04d}.dcm" for number in range(1, 11)]  # one slice, 10 TIs
NATIVE_ALL = [NATIVE / f"IM_{number:04d}.dcm" for number in range(1, 31)]  # three slices
LGE = DATA / "lge_patient_philips"
TUBES = [box for box in reference_boxes() if box.study == "shmolli"]
SCANNER_AGREEMENT = 3.0  # % per tube, as in test_t1_real


def _datasets(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(file) for file in files]


def _save(datasets: list[pydicom.Dataset], folder: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, dataset in enumerate(datasets):
        dataset.save_as(folder / (names[index] if names else f"IM_{index + 1:04d}.dcm"))
    return folder


def _tube_mask(series) -> np.ndarray:
    mask = np.zeros(series.reference().spatial_shape, dtype=np.uint8)
    for box in TUBES:
        mask[0][box.mask(mask.shape[1:])] = 1
    return mask


def _assert_tubes_match_scanner(series, scheme: str = "auto") -> dict:
    """Fit the ShMOLLI series inside the tube boxes; every tube's median within 3 % of the scanner's map."""
    maps = t1_maps(series, series.reference().with_array(_tube_mask(series)), scheme=scheme)
    t1 = maps["t1"].array[0]
    for box in TUBES:
        inside = box.mask(t1.shape) & (t1 > 0)
        difference = 100 * (np.median(t1[inside]) - box.scanner_median_ms) / box.scanner_median_ms
        assert abs(difference) < SCANNER_AGREEMENT, (box.region, difference)
    return maps


def _native_slice_t1(folder: Path) -> np.ndarray:
    """T1 of the native Philips slices in a central 40 x 40 box (fast), per slice."""
    series = read_t1_series(folder)
    mask = np.zeros(series.reference().spatial_shape, dtype=np.uint8)
    mask[:, 108:148, 108:148] = 1
    return t1_maps(series, series.reference().with_array(mask))["t1"].array


@pytest.fixture(scope="module")
def native_reference(tmp_path_factory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("native")
    for file in NATIVE_ALL:
        shutil.copy(file, folder / file.name)
    return _native_slice_t1(folder)


# --- 1. acquisition order -----------------------------------------------------------------------------------------

def _enhanced_shmolli(order: list[int], *, frame_times: bool) -> pydicom.Dataset:
    """The 7 ShMOLLI magnitudes packed into one Enhanced MR file, frames in `order` (indices into acquisition
    order), TIs in the per-frame MR modifier groups, optionally the frame acquisition date-times."""
    sources = _datasets(SHMOLLI_FILES)
    first = sources[0]
    ds = new_dicom(EnhancedMRImageStorage)
    for keyword in ("Modality", "SeriesDescription", "SeriesInstanceUID", "StudyInstanceUID", "Rows", "Columns",
                    "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation"):
        setattr(ds, keyword, getattr(first, keyword))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(order)
    ds.InstanceNumber = 1
    shared = Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = first.PixelSpacing
    shared.PixelMeasuresSequence[0].SliceThickness = first.SliceThickness
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = first.ImageOrientationPatient
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for index in order:
        source = sources[index]
        frame = Dataset()
        frame.PlanePositionSequence = [Dataset()]
        frame.PlanePositionSequence[0].ImagePositionPatient = source.ImagePositionPatient
        frame.MRModifierSequence = [Dataset()]
        frame.MRModifierSequence[0].InversionTimes = [float(source.InversionTime)]
        frame.FrameContentSequence = [Dataset()]
        if frame_times:
            frame.FrameContentSequence[0].FrameAcquisitionDateTime = f"{source.AcquisitionDate}{source.AcquisitionTime}"
        frame.FrameContentSequence[0].FrameAcquisitionNumber = 1
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack([sources[index].pixel_array for index in order]).astype("<u2").tobytes()
    return ds


def test_enhanced_multiframe_in_acquisition_order_is_fitted_as_shmolli(tmp_path):
    folder = _save([_enhanced_shmolli(list(range(7)), frame_times=False)], tmp_path / "frame_order")
    series = read_t1_series(folder)
    assert series.order_source == "frame order in the multi-frame file"
    assert series.acquisition_rank[:, 0].tolist() == [0, 5, 6, 1, 2, 3, 4]
    maps = _assert_tubes_match_scanner(series)
    assert maps["t1"].metadata["t1_scheme_per_slice"] == ["shmolli"]


def test_frame_acquisition_datetime_orders_shuffled_frames(tmp_path):
    shuffled = [3, 6, 0, 5, 1, 4, 2]
    folder = _save([_enhanced_shmolli(shuffled, frame_times=True)], tmp_path / "shuffled")
    series = read_t1_series(folder)
    assert series.order_source == "acquisition date and time"
    assert series.acquisition_rank[:, 0].tolist() == [0, 5, 6, 1, 2, 3, 4]
    _assert_tubes_match_scanner(series)


@pytest.mark.parametrize(("remove", "expected"), [
    (("InstanceNumber",), "acquisition date and time"),
    (("InstanceNumber", "AcquisitionDate"), "AcquisitionTime (0008,0032)"),
    (("AcquisitionTime", "AcquisitionDate"), "InstanceNumber (0020,0013)"),
])
def test_single_frame_order_from_each_source_in_precedence(tmp_path, remove, expected):
    datasets = _datasets(SHMOLLI_FILES)
    for dataset in datasets:
        for keyword in remove:
            delattr(dataset, keyword)
    names = [f"{name}.dcm" for name in ("q", "c", "x", "a", "m", "z", "b")]  # file names tell nothing
    series = read_t1_series(_save(datasets, tmp_path / "series", names))
    assert series.order_source == expected
    assert series.acquisition_rank[:, 0].tolist() == [0, 5, 6, 1, 2, 3, 4]
    _assert_tubes_match_scanner(series)


def test_unknown_order_is_said_and_shmolli_is_not_guessed(tmp_path):
    datasets = _datasets(NATIVE_SLICE)  # MOLLI: its times alone do not tell the acquisition order
    names = [f"{name}.dcm" for name in "qwertyuiop"]
    for dataset in datasets:
        del dataset.InstanceNumber
    series = read_t1_series(_save(datasets, tmp_path / "unordered", names))
    assert series.order_source is None
    assert any("acquisition order of the images is unknown" in note for note in series.notes)
    mask = series.reference().with_array(np.pad(np.ones((1, 4, 4), np.uint8), ((0, 0), (126, 126), (126, 126))))
    assert t1_maps(series, mask)["t1"].metadata["t1_scheme_per_slice"] == ["molli"]
    with pytest.raises(InputError, match="ShMOLLI needs the acquisition order"):
        t1_maps(series, scheme="shmolli")


@pytest.mark.parametrize("renumber", ["none", "by inversion time"])
def test_shmolli_is_recognised_from_its_inversion_times_when_the_order_is_missing_or_wrong(tmp_path, renumber):
    datasets = _datasets(SHMOLLI_FILES)
    by_time = sorted(range(7), key=lambda index: float(datasets[index].InversionTime))
    for index, dataset in enumerate(datasets):
        for keyword in ("AcquisitionTime", "AcquisitionDate", "ContentTime", "ContentDate"):
            if keyword in dataset:
                delattr(dataset, keyword)
        if renumber == "none":
            del dataset.InstanceNumber
        else:  # an anonymiser or PACS renumbered the images in TI order
            dataset.InstanceNumber = by_time.index(index) + 1
    series = read_t1_series(_save(datasets, tmp_path / "shmolli", [f"{n}.dcm" for n in "qcxamzb"]))
    assert series.acquisition_rank[:, 0].tolist() == [0, 5, 6, 1, 2, 3, 4]
    assert any("ShMOLLI pattern" in note for note in series.notes)
    maps = _assert_tubes_match_scanner(series)
    assert maps["t1"].metadata["t1_scheme_per_slice"] == ["shmolli"]


def test_shmolli_multiframe_in_inversion_time_order_is_fitted_as_shmolli(tmp_path):
    folder = _save([_enhanced_shmolli([0, 5, 6, 1, 2, 3, 4], frame_times=False)], tmp_path / "sorted_frames")
    series = read_t1_series(folder)
    assert series.order_source == "frame order in the multi-frame file"
    assert any("orders the images of slice(s) 1 as no ShMOLLI acquisition does" in note for note in series.notes)
    assert _assert_tubes_match_scanner(series)["t1"].metadata["t1_scheme_per_slice"] == ["shmolli"]


def test_the_shmolli_pattern_is_recognised_from_the_times_alone():
    from CMRSynthesisLib.io.t1_series import shmolli_pattern

    assert shmolli_pattern(np.array([100, 180, 260, 1100, 2100, 3100, 4100])).tolist() == [0, 5, 6, 1, 2, 3, 4]
    assert shmolli_pattern(np.array([120, 190, 275, 990, 1930, 2950, 3900])) is not None  # a varying RR
    for molli in ([100, 180, 1100, 1180, 2100, 2180, 3100, 4100],  # 5(3)3
                  [100, 180, 260, 1100, 1180, 1260, 2100, 2180, 2260, 3100, 4100],  # 3(3)3(3)5
                  [100, 1100, 2100, 3100, 4100, 5100, 6100]):  # one inversion, 7 samples
        assert shmolli_pattern(np.array(molli)) is None


# --- 2. implausible inversion-time values -------------------------------------------------------------------------

@pytest.mark.parametrize("edit", [
    lambda ds: setattr(ds, "InversionTimes", [0, 1.7976931348623157e308]),  # beside a valid InversionTime
    lambda ds: setattr(ds, "InversionTimes", [-1]),
    lambda ds: setattr(ds, "InversionTimes", [float("inf")]),
])
def test_implausible_time_elements_fall_through_to_the_next_source(tmp_path, edit):
    datasets = _datasets(SHMOLLI_FILES)
    for dataset in datasets:
        edit(dataset)
    series = read_t1_series(_save(datasets, tmp_path / "times"))
    assert series.time_source == "InversionTime (0018,0082)"
    assert sorted(series.inversion_times_ms[:, 0].tolist()) == [100, 180, 260, 1100, 2100, 3100, 4100]
    assert any("InversionTimes (0018,9079) holds" in note for note in series.notes)
    _assert_tubes_match_scanner(series)


@pytest.mark.parametrize("value", [99999.0, -200.0, 0.0])
def test_implausible_inversion_time_falls_through_to_the_philips_private_element(tmp_path, value):
    datasets = _datasets(NATIVE_SLICE)
    for dataset in datasets:
        dataset.InversionTime = value
    series = read_t1_series(_save(datasets, tmp_path / "philips"))
    assert series.time_source == "Philips private (2005,1572)"
    assert series.inversion_times_ms[:, 0].tolist()[:3] == [231, 350, 1184]
    noted = any("InversionTime (0018,0082) holds" in note for note in series.notes)
    assert noted == (value != 0)  # 0 is what a non-IR header holds: passed over quietly


# --- 3. TriggerTime that is not an inversion time -----------------------------------------------------------------

def _without_times(trigger_times: list[float]) -> list[pydicom.Dataset]:
    datasets = _datasets(NATIVE_SLICE)
    for dataset, trigger in zip(datasets, trigger_times):
        del dataset[dataset.private_block(0x2005, "Philips MR Imaging DD 006").get_tag(0x72)]
        dataset.TriggerTime = trigger
    return datasets


@pytest.mark.parametrize(("triggers", "said"), [
    ([587 + k for k in range(10)], "spans only 587-596 ms"),  # jitter of a trigger delay
    ([591] * 10, "is 591 ms in every image"),
])
def test_trigger_delay_is_not_taken_for_inversion_times(tmp_path, triggers, said):
    with pytest.raises(InputError, match=rf"no inversion times .*TriggerTime \(0018,1060\) {said}.*--ti"):
        read_t1_series(_save(_without_times(triggers), tmp_path / "jitter"))


def test_look_locker_trigger_times_spanning_the_recovery_are_used(tmp_path):
    series = read_t1_series(_save(_without_times([100.0 * k for k in range(1, 11)]), tmp_path / "look_locker"))
    assert series.time_source == "TriggerTime (0018,1060) (Look-Locker)"


# --- 4. files without preamble / file meta ------------------------------------------------------------------------

def _raw(dataset: pydicom.Dataset, path: Path, implicit: bool) -> None:
    """Write a data set as a bare stream: no preamble, no DICM, no file meta group."""
    dataset = copy.deepcopy(dataset)
    dataset.file_meta = FileMetaDataset()
    dataset.preamble = None
    pydicom.dcmwrite(path, dataset, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("raw_count", [7, 3])
def test_raw_files_without_preamble_are_read(tmp_path, implicit, raw_count):
    folder = tmp_path / "raw"
    folder.mkdir()
    for index, (file, dataset) in enumerate(zip(SHMOLLI_FILES, _datasets(SHMOLLI_FILES))):
        target = folder / f"{index:08d}"  # as exports name them: no extension
        if index < raw_count:
            _raw(dataset, target, implicit)
        else:
            shutil.copy(file, target)
    series = read_t1_series(folder)
    assert series.images.array.shape[0] == 7  # never a silently shrunken set
    _assert_tubes_match_scanner(series)


# --- 5. image types of every vendor -------------------------------------------------------------------------------

def _component_copies(files: list[Path], edit) -> list[pydicom.Dataset]:
    """Copies of `files` in the same series, each a new SOP instance edited into another complex component."""
    copies = []
    for dataset in _datasets(files):
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        edit(dataset)
        copies.append(dataset)
    return copies


def _ge_phase(dataset: pydicom.Dataset) -> None:
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    dataset.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "SS", 1)


COMPONENT_EDITS = {
    "philips phase P_FFE": lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"]),
    "philips real R_FFE": lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "R_FFE", "R", "FFE"]),
    "philips imaginary I_FFE": lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "I_FFE", "I", "FFE"]),
    "siemens phase P": lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "P", "DIS2D"]),
    "word PHASE": lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "PHASE"]),
    "GE private image type": _ge_phase,
    "ComplexImageComponent": lambda ds: setattr(ds, "ComplexImageComponent", "PHASE"),
}


@pytest.mark.parametrize("vendor", COMPONENT_EDITS)
def test_other_components_beside_magnitude_molli_are_skipped(tmp_path, vendor, native_reference):
    folder = _save(_datasets(NATIVE_SLICE) + _component_copies(NATIVE_SLICE, COMPONENT_EDITS[vendor]),
                   tmp_path / "molli")
    series = read_t1_series(folder)
    assert series.images.array.shape[0] == 10
    component = next(word for word in ("phase", "real", "imaginary") if word in vendor.lower()
                     or vendor in ("GE private image type", "ComplexImageComponent"))
    assert any(f"10 image(s) of series 'T1_native' ({component} image)" in line for line in series.skipped)
    t1 = _native_slice_t1(folder)
    np.testing.assert_allclose(t1[0], native_reference[0], rtol=1e-5)  # the first slice, as unmodified


def test_psir_lge_magnitude_is_read_and_the_real_images_listed(tmp_path):
    files = sorted(LGE.glob("*.dcm"))
    magnitude = _datasets(files)
    for dataset in magnitude:
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]
    real = _component_copies(files, COMPONENT_EDITS["philips real R_FFE"])
    folder = _save(magnitude + real, tmp_path / "psir")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, read_volume(LGE).array)
    assert any(line.startswith("3 real image(s) beside the magnitude images") for line in volume.metadata["skipped"])


# --- 6. other objects in a series folder --------------------------------------------------------------------------

def _object(sop_class: str, **elements) -> pydicom.Dataset:
    return new_dicom(sop_class, **{"Modality": "OT", **elements})


def _clutter(folder: Path, series_uid: str) -> None:
    """What PACS exports and workstations leave beside a series (each recognised by content, names misleading)."""
    _object(BasicTextSRStorage, Modality="SR", SeriesInstanceUID=series_uid).save_as(folder / "IM_9001.dcm")
    _object(GrayscaleSoftcopyPresentationStateStorage, Modality="PR").save_as(folder / "IM_9002.dcm")
    _object(KeyObjectSelectionDocumentStorage, Modality="KO").save_as(folder / "IM_9003.dcm")
    capture = _object(SecondaryCaptureImageStorage, SeriesInstanceUID=series_uid, Rows=8, Columns=8,
                      SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0, BitsAllocated=8,
                      BitsStored=8, HighBit=7, PixelRepresentation=0, PixelData=bytes(8 * 8 * 3))
    capture.save_as(folder / "IM_9004.dcm")
    directory = _object("1.2.840.10008.1.3.10")
    directory.DirectoryRecordSequence = []
    directory.save_as(folder / "DICOMDIR")
    (folder / "IM_9005.dcm").write_bytes(b"\xff\xd8\xff\xe0" + bytes(300))  # a JPEG named .dcm
    for index in range(300):
        (folder / f"notes_{index}.txt").write_text("not DICOM\n")
    (folder / "IM_9006").write_bytes(b"\x08\x00\x05\x00" + b"\xff" * 200)  # DICOM-like start, then garbage


def test_other_objects_in_a_molli_folder_are_skipped_and_listed(tmp_path, native_reference):
    folder = tmp_path / "export"
    folder.mkdir()
    for file in NATIVE_ALL:
        shutil.copy(file, folder / file.name)
    _clutter(folder, str(pydicom.dcmread(NATIVE_ALL[0]).SeriesInstanceUID))
    series = read_t1_series(folder)
    skipped = "\n".join(series.skipped)
    for said in ("Basic Text SR Storage: not an image", "Grayscale Softcopy Presentation State Storage: not an image",
                 "Key Object Selection Document Storage: not an image", "colour image (RGB)",
                 "media directory (DICOMDIR)", "non-DICOM file(s) (300 .txt, 1 .dcm"):
        assert said in skipped, said
    np.testing.assert_allclose(_native_slice_t1(folder), native_reference, rtol=1e-5)


def test_other_objects_in_an_lge_folder_are_skipped_and_listed(tmp_path):
    folder = tmp_path / "lge"
    folder.mkdir()
    for file in LGE.glob("*.dcm"):
        shutil.copy(file, folder / file.name)
    _clutter(folder, str(pydicom.dcmread(next(LGE.glob("*.dcm"))).SeriesInstanceUID))
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, read_volume(LGE).array)
    assert len(volume.metadata["skipped"]) == 6


def test_grey_screen_capture_beside_images_is_skipped_but_read_alone(tmp_path):
    files = sorted(LGE.glob("*.dcm"))
    capture = _datasets(files[:1])[0]
    capture.SOPClassUID = capture.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    capture.SOPInstanceUID = capture.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    folder = _save(_datasets(files) + [capture], tmp_path / "with_capture")
    volume = read_volume(folder)
    assert volume.array.shape[0] == 3 and "secondary capture" in " ".join(volume.metadata["skipped"])
    alone = _save([capture], tmp_path / "alone")
    assert read_volume(alone).array.shape[0] == 1


# --- 7. uneven slice gaps -----------------------------------------------------------------------------------------

def test_uneven_slice_gaps_are_fitted_per_slice_and_said(tmp_path, native_reference):
    datasets = _datasets(NATIVE_ALL)
    positions = {round(float(ds.SliceLocation)): np.asarray(ds.ImagePositionPatient, float) for ds in datasets}
    towards_mid = (positions[7] - positions[-9]) / np.linalg.norm(positions[7] - positions[-9])
    for dataset in datasets:  # the apical slice moves 3 mm towards the mid slice: gaps 16 then 13 mm
        if round(float(dataset.SliceLocation)) == -9:
            dataset.ImagePositionPatient = [round(value, 4) for value in positions[-9] + 3.0 * towards_mid]
    folder = _save(datasets, tmp_path / "uneven")
    series = read_t1_series(folder)
    gaps = np.diff(series.images.metadata["slice_positions_mm"])
    np.testing.assert_allclose(sorted(gaps), [13.0, 16.0], atol=0.01)
    assert any("unevenly spaced" in note and "14.50 mm" in note for note in series.notes)
    np.testing.assert_allclose(_native_slice_t1(folder), native_reference, rtol=1e-5)
    volume_files = [folder / f"IM_{number:04d}.dcm" for number in (1, 11, 21)]  # a volume needs a regular grid
    with pytest.raises(InputError, match=r"off a regular grid .*gaps between slices: (16.00, 13.00|13.00, 16.00) mm"):
        read_dicom_series(volume_files)


# --- 12. truncated pixel data -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "said"), [
    (SHMOLLI_FILES[0], r"pixel data truncated: expected 221184 bytes for 1 frame\(s\) of 288 x 384 pixels, found"),
    (LGE / "IM_0001.dcm", "the file ends before its data do"),
])
def test_truncated_pixel_data_are_named_without_library_noise(tmp_path, capfd, source, said):
    data = source.read_bytes()
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError, match=rf"cut\.dcm: {said}"):
        read_volume(truncated)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# --- 13. two images with one time, duplicate files ----------------------------------------------------------------

def test_two_images_with_one_inversion_time_name_the_element_and_files(tmp_path):
    datasets = _datasets(NATIVE_SLICE)
    block = datasets[3].private_block(0x2005, "Philips MR Imaging DD 006")
    block[0x72].value = datasets[2].private_block(0x2005, "Philips MR Imaging DD 006")[0x72].value
    folder = _save(datasets, tmp_path / "clash")
    with pytest.raises(InputError, match=r"IM_0003\.dcm and .*IM_0004\.dcm lie at one slice position with the same "
                                         r"Philips private \(2005,1572\) 1184 ms"):
        read_t1_series(folder)


def test_exact_duplicate_file_is_dropped_and_listed(tmp_path, native_reference):
    folder = tmp_path / "duplicate"
    folder.mkdir()
    for file in NATIVE_ALL:
        shutil.copy(file, folder / file.name)
    shutil.copy(NATIVE_ALL[4], folder / "copy_of_IM_0005.dcm")
    series = read_t1_series(folder)
    assert any("1 duplicate image(s)" in line and "copy_of_IM_0005.dcm" in line for line in series.skipped)
    np.testing.assert_allclose(_native_slice_t1(folder), native_reference, rtol=1e-5)


def test_one_uid_for_two_different_images_is_refused(tmp_path):
    datasets = _datasets(NATIVE_SLICE)
    datasets[5].SOPInstanceUID = datasets[4].SOPInstanceUID
    with pytest.raises(InputError, match=r"IM_0005\.dcm and .*IM_0006\.dcm carry the same SOPInstanceUID"):
        read_t1_series(_save(datasets, tmp_path / "uid"))



# --- 8. non-finite voxels, whatever the format --------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_molli_file_with_a_nan_voxel_is_refused_naming_the_file(tmp_path, suffix):
    images = np.random.default_rng(1).uniform(10, 100, (4, 2, 6, 6)).astype(np.float32)
    images[2, 1, 3, 4] = np.nan
    path = write_volume(Volume(images), tmp_path / f"molli{suffix}")
    with pytest.raises(InputError, match=re.escape(f"{path}) has 1 NaN or infinite voxel(s), the first at index "
                                                   "(2, 1, 3, 4)")):
        read_t1_series(path, [100, 200, 300, 400])


# --- a damaged file in a folder is refused, never skipped (families the reader fuzz found) --------------------------

def _damage_marker(data: bytes) -> bytes:
    return data[:128] + b"DXCM" + data[132:]


def _garble_sop_class(data: bytes) -> bytes:
    start = data.index(b"1.2.840.10008.5.1.4.1.1.4", 200)  # the data set's SOP Class UID, after the file meta
    return data[:start] + b"1.2.840.100z8.5.1.4.1.1.4" + data[start + 25:]


def _cut_after_sop_class(data: bytes) -> bytes:
    return data[: data.index(b"1.2.840.10008.5.1.4.1.1.4", 200) + 23]


def _bad_transfer_syntax(data: bytes) -> bytes:
    return data.replace(b"1.2.840.10008.1.2.4.70", b"1.2.840.10008.1.2.4.7x", 1)


@pytest.mark.parametrize(("damage", "said"), [
    (_damage_marker, "a damaged DICOM file: file meta information follows the 128-byte preamble"),
    (_garble_sop_class, "contradicts the file meta's MediaStorageSOPClassUID"),
    (_cut_after_sop_class, "contradicts the file meta's MediaStorageSOPClassUID"),
    (_bad_transfer_syntax, r"TransferSyntaxUID \(0002,0010\) 1.2.840.10008.1.2.4.7x is not a known transfer syntax"),
])
def test_a_damaged_file_in_an_lge_folder_is_refused_by_name(tmp_path, capfd, damage, said):
    folder = tmp_path / "lge"
    folder.mkdir()
    for file in LGE.glob("*.dcm"):
        shutil.copy(file, folder / file.name)
    (folder / "IM_0002.dcm").write_bytes(damage((LGE / "IM_0002.dcm").read_bytes()))
    with pytest.raises(InputError, match=rf"IM_0002\.dcm: .*{said}"):
        read_volume(folder)
    assert capfd.readouterr().err == ""


def test_a_source_image_without_series_uid_is_refused_not_left_out(tmp_path):
    datasets = _datasets(NATIVE_SLICE)
    del datasets[4].SeriesInstanceUID
    with pytest.raises(InputError, match=r"IM_0005\.dcm: SeriesInstanceUID \(0020,000E\) is missing"):
        read_t1_series(_save(datasets, tmp_path / "no_uid"))


def test_t1map_summary_says_how_uneven_slices_and_skipped_objects_were_handled(tmp_path, capsys):
    import json

    from CMRSynthesisLib.cli import main

    datasets = _datasets(NATIVE_ALL)
    positions = {round(float(ds.SliceLocation)): np.asarray(ds.ImagePositionPatient, float) for ds in datasets}
    for dataset in datasets:
        if round(float(dataset.SliceLocation)) == -9:
            dataset.ImagePositionPatient = [round(value, 4) for value in positions[-9] + 0.2 * (positions[7] - positions[-9])]
    folder = _save(datasets, tmp_path / "uneven")
    _clutter(folder, str(datasets[0].SeriesInstanceUID))
    mask = read_t1_series(folder).reference()
    box = np.zeros(mask.spatial_shape, np.uint8)
    box[:, 128:132, 128:132] = 1
    mask_path = write_volume(mask.with_array(box), tmp_path / "box.nrrd")
    assert main(["t1map", "--molli", str(folder), "--mask", str(mask_path), "--out", str(tmp_path / "t1.nrrd"),
                 "--progress", "none"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["inversion_time_source"] == "Philips private (2005,1572)"
    assert summary["acquisition_order_source"] == "InstanceNumber (0020,0013)"
    assert np.allclose(np.diff(summary["slice_positions_mm"]), [12.8, 16.0], atol=0.01) or np.allclose(
        np.diff(summary["slice_positions_mm"]), [16.0, 12.8], atol=0.01)
    assert any("unevenly spaced" in note for note in summary["notes"])
    assert any("Basic Text SR" in line for line in summary["skipped"])


def test_philips_private_time_survives_implicit_vr_re_encoding(tmp_path, native_reference):
    """A PACS that stores the series as Implicit VR Little Endian drops the private element's VR (it reads as UN)."""
    folder = tmp_path / "implicit"
    folder.mkdir()
    for file in NATIVE_ALL:
        dataset = pydicom.dcmread(file)
        dataset.PixelData = dataset.pixel_array.tobytes()  # decompressed, as implicit VR requires
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        dataset.save_as(folder / file.name)
    block = pydicom.dcmread(folder / "IM_0001.dcm").private_block(0x2005, "Philips MR Imaging DD 006")
    assert block[0x72].VR == "UN"
    series = read_t1_series(folder)
    assert series.time_source == "Philips private (2005,1572)"
    np.testing.assert_allclose(_native_slice_t1(folder), native_reference, rtol=1e-5)


def test_an_lge_series_in_nested_sub_folders_is_found_beside_a_screen_capture(tmp_path):
    folder = tmp_path / "export"
    (folder / "study" / "series").mkdir(parents=True)
    for file in LGE.glob("*.dcm"):
        shutil.copy(file, folder / "study" / "series" / file.name)
    capture = _object(SecondaryCaptureImageStorage, Modality="MR", ConversionType="WSD", Rows=8, Columns=8,
                      SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", BitsAllocated=8, BitsStored=8,
                      HighBit=7, PixelRepresentation=0, PixelData=bytes(64))  # no geometry, as screenshots have
    capture.save_as(folder / "screenshot.dcm")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, read_volume(LGE).array)
    assert any("secondary capture" in line and "screenshot.dcm" in line for line in volume.metadata["skipped"])


def test_a_volume_sequence_nrrd_as_slicer_writes_it_is_a_t1_series(tmp_path):
    """Slicer saves a volume sequence as one NRRD whose first axis is a list (kinds: list domain domain domain)."""
    import SimpleITK as sitk

    images = np.random.default_rng(2).uniform(10, 100, (4, 2, 6, 5)).astype(np.float32)  # (t, z, y, x)
    image = sitk.GetImageFromArray(np.moveaxis(images, 0, -1), isVector=True)
    image.SetSpacing((1.5, 1.5, 8.0))
    path = tmp_path / "molli.seq.nrrd"
    sitk.WriteImage(image, str(path))
    series = read_t1_series(path, [100, 200, 300, 400])
    np.testing.assert_array_equal(series.images.array, images)
    assert series.images.spacing == (1.5, 1.5, 8.0)
    with pytest.raises(InputError, match="has 4 values per voxel"):
        read_volume(path)  # as an image to enhance, several values per voxel stay refused


def test_one_series_uid_per_file_is_named_as_the_likely_cause(tmp_path):
    datasets = _datasets(SHMOLLI_FILES)
    for dataset in datasets:
        dataset.SeriesInstanceUID = generate_uid()
    with pytest.raises(InputError, match="several one-image-per-slice series share one description.*own SeriesInstanceUID"):
        read_t1_series(_save(datasets, tmp_path / "uids"))


def test_an_acquisition_clock_is_never_overridden_by_the_shmolli_pattern(tmp_path):
    datasets = _datasets(SHMOLLI_FILES)
    for dataset in datasets:  # a clock saying the images came in TI order (one inversion)
        seconds = 15 * 3600 + 23 * 60 + float(dataset.InversionTime) / 1000
        dataset.AcquisitionTime = f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:09.6f}"
    series = read_t1_series(_save(datasets, tmp_path / "clock"))
    assert series.order_source == "acquisition date and time"
    assert series.acquisition_rank[:, 0].tolist() == list(range(7))
    assert not any("ShMOLLI pattern" in note for note in series.notes)


def test_an_image_without_orientation_beside_placed_images_is_skipped(tmp_path):
    folder = tmp_path / "export"
    (folder / "series").mkdir(parents=True)
    for file in LGE.glob("*.dcm"):
        shutil.copy(file, folder / "series" / file.name)
    screenshot = _object(pydicom.uid.MRImageStorage, Modality="MR", ImageType=["DERIVED", "SECONDARY"], Rows=8,
                         Columns=8, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", BitsAllocated=8,
                         BitsStored=8, HighBit=7, PixelRepresentation=0, PixelData=bytes(64))
    screenshot.save_as(folder / "screenshot.dcm")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, read_volume(LGE).array)
    assert any("without ImageOrientationPatient" in line and "screenshot.dcm" in line
               for line in volume.metadata["skipped"])
    with pytest.raises(InputError, match=r"screenshot\.dcm: ImageOrientationPatient \(0020,0037\) is missing"):
        read_volume(folder / "screenshot.dcm")  # alone, it cannot be placed: said as such


def test_a_series_member_that_lost_its_orientation_is_refused_not_skipped(tmp_path):
    datasets = _datasets(sorted(LGE.glob("*.dcm")))
    del datasets[1].ImageOrientationPatient
    with pytest.raises(InputError, match=r"IM_0002\.dcm: ImageOrientationPatient \(0020,0037\) is missing"):
        read_volume(_save(datasets, tmp_path / "lge"))
