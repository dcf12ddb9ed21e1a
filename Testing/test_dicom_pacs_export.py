"""DICOM export for PACS: a synthetic or derived image written as a DICOM series that says what it is, keeps the
source study, references its source images, and reads back through our readers and pydicom."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config

from CMRSynthesisLib.errors import InputError, OutputError
from CMRSynthesisLib.io import (
    file_sha256,
    read_cine,
    read_volume,
    write_derived_series,
    write_output,
    write_volume,
)
from CMRSynthesisLib.io.derived_series import PATIENT_STUDY_KEYWORDS, is_synthetic
from CMRSynthesisLib.io.dicom_export import write_dicom_series
from CMRSynthesisLib.io.t1_series import read_t1_series
from CMRSynthesisLib.volume import Volume

OBLIQUE = tuple(np.linalg.qr(np.array([[0.9, 0.3, 0.1], [-0.2, 0.8, 0.4], [0.1, -0.3, 0.9]]))[0].ravel())
SPACING, ORIGIN = (1.25, 1.5, 8.0), (10.0, -20.0, 30.0)
TRIGGERS = [0.0, 45.0, 90.0, 135.0]
PATIENT = {"PatientName": "Müller^Jürgen", "PatientID": "P-0042", "IssuerOfPatientID": "HOSP", "PatientBirthDate":
           "19580312", "PatientSex": "M", "PatientAge": "066Y", "StudyDate": "20240105", "StudyTime": "093000",
           "StudyID": "17", "AccessionNumber": "ACC123", "ReferringPhysicianName": "Heart^Anna",
           "StudyDescription": "CMR native T1"}
ACQUISITION = {"ScanningSequence": "GR", "SequenceVariant": "SS", "RepetitionTime": 3.1, "EchoTime": 1.4,
               "MagneticFieldStrength": 1.5, "PatientPosition": "HFS", "SeriesNumber": 7}

# Attributes the MR Image Storage IOD (PS3.3 A.4) requires in every file: Type 1 (present, not empty) and Type 2
# (present, may be empty), by module: Patient C.7.1.1, General Study C.7.2.1, General Series C.7.3.1 (PatientPosition
# is 2C, required for MR), Frame of Reference C.7.4.1, General Equipment C.7.5.1, General Image C.7.6.1, Image Plane
# C.7.6.2, Image Pixel C.7.6.3, MR Image C.8.3.1 (RepetitionTime 2C: required unless EP / SK), SOP Common C.12.1.
TYPE_1 = ("StudyInstanceUID", "Modality", "SeriesInstanceUID", "FrameOfReferenceUID", "PixelSpacing",
          "ImageOrientationPatient", "ImagePositionPatient", "SamplesPerPixel", "PhotometricInterpretation", "Rows",
          "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData", "ImageType",
          "ScanningSequence", "SequenceVariant", "SOPClassUID", "SOPInstanceUID")
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "PatientPosition",
          "PositionReferenceIndicator", "Manufacturer", "InstanceNumber", "SliceThickness", "ScanOptions",
          "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength")
# Type 1 attributes of the sequence items written (C.12.1 Contributing Equipment, C.12.2 Referenced Series, C.12.4
# Source Image, C.7.6.16.2.11 Real World Value Mapping item).
ITEM_TYPE_1 = {"ContributingEquipmentSequence": ("PurposeOfReferenceCodeSequence", "Manufacturer"),
               "ReferencedSeriesSequence": ("SeriesInstanceUID", "ReferencedInstanceSequence"),
               "SourceImageSequence": ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"),
               "RealWorldValueMappingSequence": ("RealWorldValueFirstValueMapped", "RealWorldValueLastValueMapped",
                                                 "LUTExplanation", "LUTLabel", "MeasurementUnitsCodeSequence",
                                                 "RealWorldValueIntercept", "RealWorldValueSlope")}


def _volume(array: np.ndarray, **metadata) -> Volume:
    return Volume(array, SPACING, ORIGIN, OBLIQUE, metadata)


def _source_series(folder: Path, array: np.ndarray, *, description: str = "cine", frame_elements=()) -> list[Path]:
    """A scanner-like series of one study (patient and study attributes of PATIENT, Latin-1 character set)."""
    paths = write_dicom_series(_volume(array), folder, description=description, frame_elements=frame_elements,
                               image_type=("ORIGINAL", "PRIMARY", "M"))
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.SpecificCharacterSet = "ISO_IR 100"
        for keyword, value in {**PATIENT, **ACQUISITION}.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path)
    return paths


def _cine_source(folder: Path) -> tuple[list[Path], Volume]:
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 900, size=(len(TRIGGERS), 3, 10, 12)).astype(np.int16)
    paths = _source_series(folder, stored, frame_elements=[{"TriggerTime": time} for time in TRIGGERS])
    return paths, read_cine(folder)


def _t1_map(like: Volume) -> Volume:
    values = np.random.default_rng(2).uniform(250.0, 1900.0, like.spatial_shape).astype(np.float32)
    return Volume(values, like.spacing, like.origin, like.direction,
                  {**like.metadata, "quantity": "t1", "units": "ms"})


def _datasets(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in paths]


def _assert_geometry_equal(back: Volume, expected: Volume) -> None:
    np.testing.assert_allclose(back.spacing, expected.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, expected.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, expected.direction, atol=1e-4)


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(path): file_sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_synthetic_t1_map_reads_back_on_its_grid_with_its_values_and_units(tmp_path):
    _, cine = _cine_source(tmp_path / "cine")
    t1 = _t1_map(cine)
    written = write_derived_series(t1, tmp_path / "t1", method="t1_from_cine", checkpoint="t1diff_demo",
                                   description="T1 map from cine")
    back = read_volume(tmp_path / "t1")
    _assert_geometry_equal(back, cine)
    slope = float(_datasets(written.paths[:1])[0].RescaleSlope)
    np.testing.assert_allclose(back.array, t1.array, atol=slope / 2 + 1e-3)
    assert back.metadata["units"] == "ms"
    assert back.metadata["series_description"] == "SYNTHETIC T1 map from cine"
    assert written.on_source_geometry and not written.new_study


def test_a_synthetic_cine_reads_back_with_its_frames_times_and_geometry(tmp_path):
    _, cine = _cine_source(tmp_path / "cine")
    synthetic = cine.with_array(cine.array.astype(np.float32) * 1.5 + 0.25)
    written = write_derived_series(synthetic, tmp_path / "out", method="cine_generation", description="cine")
    back = read_cine(tmp_path / "out")
    assert back.array.shape == synthetic.array.shape
    _assert_geometry_equal(back, cine)
    assert back.metadata["trigger_times_ms"] == TRIGGERS
    slope = float(_datasets(written.paths[:1])[0].RescaleSlope)
    np.testing.assert_allclose(back.array, synthetic.array, atol=slope / 2 + 1e-3)
    first = _datasets(written.paths[:1])[0]
    assert int(first.CardiacNumberOfImages) == len(TRIGGERS)


def test_the_series_is_marked_synthetic_or_derived(tmp_path):
    _, cine = _cine_source(tmp_path / "cine")
    synthetic = write_derived_series(_t1_map(cine), tmp_path / "syn", method="t1_from_cine", checkpoint="demo",
                                     description="T1 map from cine")
    derived = write_derived_series(_t1_map(cine), tmp_path / "fit", method="t1_fit", synthetic=False,
                                   description="T1 map (MOLLI fit)")
    named = write_derived_series(_t1_map(cine), tmp_path / "named", method="m", description="synthetic LGE")
    assert _datasets(named.paths[:1])[0].SeriesDescription == "SYNTHETIC LGE"
    for dataset in _datasets(synthetic.paths):
        assert list(dataset.ImageType) == ["DERIVED", "SECONDARY", "T1 MAP", "SYNTHETIC"] and is_synthetic(
            dataset.ImageType)
        assert dataset.SeriesDescription.startswith("SYNTHETIC ") and dataset.BurnedInAnnotation == "NO"
        assert "t1_from_cine" in dataset.DerivationDescription and "demo" in dataset.DerivationDescription
        assert "SYNTHETIC" in dataset.ImageComments
        equipment = dataset.ContributingEquipmentSequence[0]
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109100"  # Synthesizing Equipment
        assert "checkpoint demo" in equipment.ContributionDescription and dataset.Manufacturer == "CMRSynthesis"
        assert dataset.ScanningSequence == "RM"  # not acquired: research mode, no acquisition parameters
        mapping = dataset.RealWorldValueMappingSequence[0]
        assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "ms"
        assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "113063"  # T1
    for dataset in _datasets(derived.paths):
        assert list(dataset.ImageType) == ["DERIVED", "SECONDARY", "T1 MAP"] and not is_synthetic(dataset.ImageType)
        assert dataset.SeriesDescription == "DERIVED T1 map (MOLLI fit)"
        assert dataset.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        assert dataset.ScanningSequence == "GR" and float(dataset.RepetitionTime) == 3.1  # the source's acquisition


def test_patient_and_study_are_kept_and_the_identifiers_are_new(tmp_path):
    paths, cine = _cine_source(tmp_path / "cine")
    source = pydicom.dcmread(paths[0])
    written = write_derived_series(_t1_map(cine), tmp_path / "t1", method="t1_from_cine", description="T1")
    datasets = _datasets(written.paths)
    for dataset in datasets:
        for keyword in PATIENT_STUDY_KEYWORDS:
            if keyword in source:
                assert str(dataset[keyword].value) == str(source[keyword].value), keyword
            else:
                assert keyword not in dataset, keyword
        assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID  # on the source's geometry
        assert dataset.PatientPosition == "HFS" and float(dataset.MagneticFieldStrength) == 1.5
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID and int(dataset.SeriesNumber) == 1007
    assert str(datasets[0].PatientName) == "Müller^Jürgen" and datasets[0].SpecificCharacterSet == "ISO_IR 192"
    source_uids = {pydicom.dcmread(path).SOPInstanceUID for path in paths}
    written_uids = {dataset.SOPInstanceUID for dataset in datasets}
    assert len(written_uids) == len(datasets) and not written_uids & source_uids
    assert written.study_instance_uid == source.StudyInstanceUID and written.source_series == [source.SeriesInstanceUID]


def test_the_source_series_and_each_slices_source_images_are_referenced(tmp_path):
    paths, cine = _cine_source(tmp_path / "cine")
    sources = _datasets(paths)
    by_slice: dict[float, set[str]] = {}
    for source in sources:
        by_slice.setdefault(round(float(source.SliceLocation), 3), set()).add(source.SOPInstanceUID)
    t1 = write_derived_series(_t1_map(cine), tmp_path / "t1", method="t1_from_cine", description="T1")
    for dataset in _datasets(t1.paths):
        (series,) = dataset.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID
        assert {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence} == {
            source.SOPInstanceUID for source in sources}
        referenced = {item.ReferencedSOPInstanceUID for item in dataset.SourceImageSequence}
        assert referenced == by_slice[round(float(dataset.SliceLocation), 3)]  # every frame of its slice
        assert dataset.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    synthetic = write_derived_series(cine.with_array(cine.array * 2), tmp_path / "cine2", method="cine_generation",
                                     description="cine")
    source_of = {source.SOPInstanceUID: source for source in sources}
    for dataset in _datasets(synthetic.paths):  # a cine from a cine: each image references its own frame
        (item,) = dataset.SourceImageSequence
        source = source_of[item.ReferencedSOPInstanceUID]
        assert float(source.TriggerTime) == float(dataset.TriggerTime)
        assert float(source.SliceLocation) == pytest.approx(float(dataset.SliceLocation), abs=1e-4)


def test_an_image_off_the_source_geometry_gets_a_new_frame_of_reference(tmp_path):
    paths, cine = _cine_source(tmp_path / "cine")
    tilted = Volume(_t1_map(cine).array, cine.spacing, cine.origin, (1, 0, 0, 0, 1, 0, 0, 0, 1),
                    {"source_files": cine.metadata["source_files"], "units": "ms"})
    written = write_derived_series(tilted, tmp_path / "t1", method="t1_from_cine", description="T1")
    dataset = _datasets(written.paths[:1])[0]
    assert not written.on_source_geometry and "SourceImageSequence" not in dataset
    assert dataset.FrameOfReferenceUID != pydicom.dcmread(paths[0]).FrameOfReferenceUID
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(paths[0]).SeriesInstanceUID


def test_a_nifti_sourced_volume_gets_a_new_study_that_says_so(tmp_path):
    nifti = write_volume(_volume(np.random.default_rng(3).uniform(0, 100, (2, 6, 7)).astype(np.float32)),
                         tmp_path / "lge.nii.gz")
    volume = read_volume(nifti)
    written = write_derived_series(volume, tmp_path / "out", method="scar_enhancement", description="LGE enhanced",
                                   new_study={"PatientID": "X7", "PatientName": "Doe^Jane"})
    first, second = _datasets(written.paths)
    assert written.new_study and written.source_series == [] and first.StudyInstanceUID == second.StudyInstanceUID
    assert "without DICOM source" in first.DerivationDescription and "lge.nii.gz" in first.DerivationDescription
    assert first.PatientID == "X7" and str(first.PatientName) == "Doe^Jane" and first.StudyDate
    assert "ReferencedSeriesSequence" not in first and "SourceImageSequence" not in first
    other = write_derived_series(volume, tmp_path / "again", method="scar_enhancement", description="LGE enhanced")
    assert other.study_instance_uid != written.study_instance_uid  # each export without source is a study of its own
    _assert_geometry_equal(read_volume(tmp_path / "out"), volume)


def test_every_file_holds_the_required_attributes_with_valid_values(tmp_path, monkeypatch):
    _, cine = _cine_source(tmp_path / "cine")
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)  # any invalid value raises
    outputs = [write_derived_series(_t1_map(cine), tmp_path / "t1", method="t1_from_cine", description="T1 " * 40),
               write_derived_series(cine.with_array(cine.array * 2), tmp_path / "c", method="cine_generation",
                                    description="cine", checkpoint="C:\\models\\cine")]
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    for written in outputs:
        for path in written.paths:
            dataset = pydicom.dcmread(path)
            for element in dataset.iterall():
                _ = element.value  # decoded and validated
            missing = [keyword for keyword in TYPE_1 if dataset.get(keyword) in (None, "")]
            missing += [keyword for keyword in TYPE_2 if keyword not in dataset]
            for sequence, keywords in ITEM_TYPE_1.items():
                for item in dataset.get(sequence) or []:
                    missing += [f"{sequence} > {keyword}" for keyword in keywords if item.get(keyword) in (None, "")]
            assert not missing, f"{path.name}: {missing}"
            assert dataset.SOPClassUID == pydicom.uid.MRImageStorage == dataset.file_meta.MediaStorageSOPClassUID
            assert len(dataset.SeriesDescription) <= 64 and "\\" not in dataset.ContributingEquipmentSequence[
                0].ManufacturerModelName


def test_the_t1_series_reader_leaves_a_synthetic_t1_map_beside_the_molli_images_out(tmp_path):
    rng = np.random.default_rng(4)
    times = [100.0, 180.0, 260.0, 1100.0, 1180.0, 2100.0, 3100.0, 4100.0]
    molli = rng.uniform(10, 500, (len(times), 2, 6, 7)).astype(np.float32)
    folder = tmp_path / "study"
    _source_series(folder / "molli", molli, description="MOLLI", frame_elements=[{"InversionTime": ti}
                                                                                    for ti in times])
    series = read_t1_series(folder / "molli")
    write_derived_series(_t1_map(series.reference()), folder / "t1", method="t1_from_cine", description="T1 map")
    again = read_t1_series(folder)
    assert again.images.array.shape == series.images.array.shape
    assert any("SYNTHETIC T1 map" in line for line in again.skipped)


def test_the_cine_reader_prefers_the_acquired_cine_to_a_synthetic_one_in_the_same_study_folder(tmp_path):
    _, cine = _cine_source(tmp_path / "study" / "cine")
    write_derived_series(cine.with_array(cine.array * 2), tmp_path / "study" / "synthetic", method="cine_generation",
                         description="cine")
    assert read_cine(tmp_path / "study").metadata["series_description"] == "cine"


def test_a_used_folder_is_refused_with_nothing_written_and_the_inputs_untouched(tmp_path):
    paths, cine = _cine_source(tmp_path / "cine")
    before = _tree_hashes(tmp_path / "cine")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_derived_series(_t1_map(cine), used, method="t1_from_cine", description="T1")
    with pytest.raises(OutputError, match="is a file"):
        write_derived_series(_t1_map(cine), paths[0], method="t1_from_cine", description="T1")
    assert [path.name for path in used.iterdir()] == ["keep.txt"]
    write_derived_series(_t1_map(cine), tmp_path / "t1", method="t1_from_cine", description="T1")
    write_output(cine.with_array(cine.array * 2), tmp_path / "c", fmt="dicom", method="cine_generation",
                 protected=paths)
    assert _tree_hashes(tmp_path / "cine") == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c", "cine", "t1", "used"]  # no partial folders


def test_bad_values_and_sources_are_refused_with_nothing_written(tmp_path):
    _, cine = _cine_source(tmp_path / "cine")
    bad = _t1_map(cine)
    bad.array[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        write_derived_series(bad, tmp_path / "nan", method="t1_from_cine", description="T1")
    timeless = Volume(cine.array, cine.spacing, cine.origin, cine.direction, {})
    with pytest.raises(InputError, match="trigger times"):
        write_derived_series(timeless, tmp_path / "timeless", method="cine_generation", description="cine")
    with pytest.raises(InputError, match="method"):
        write_derived_series(_t1_map(cine), tmp_path / "anonymous", method=" ", description="T1")
    with pytest.raises(InputError, match="new_study"):
        write_derived_series(_t1_map(cine), tmp_path / "both", method="m", description="T1",
                             new_study={"PatientID": "X"})
    with pytest.raises(InputError, match="StudyInstanceUID '1.02.x' is not a valid DICOM UID"):
        write_derived_series(_t1_map(cine), tmp_path / "uid", method="m", description="T1", source=(),
                             new_study={"StudyInstanceUID": "1.02.x"})
    other = _source_series(tmp_path / "other", np.zeros((3, 10, 12), np.int16))  # same patient, another study
    study = pydicom.uid.generate_uid()
    for path in other:
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID = study
        dataset.save_as(path)
    with pytest.raises(InputError, match="2 studies"):
        write_derived_series(_t1_map(cine), tmp_path / "mixed", method="m", description="T1",
                             source=[*cine.metadata["source_files"], *other])
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="not a DICOM file"):
        write_derived_series(_t1_map(cine), tmp_path / "text", method="m", description="T1",
                             source=[tmp_path / "notes.txt"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cine", "notes.txt", "other"]


def test_write_output_writes_the_format_asked_for(tmp_path):
    paths, cine = _cine_source(tmp_path / "cine")
    t1 = _t1_map(cine)
    (nifti,) = write_output(t1, tmp_path / "t1.nii.gz", method="t1_from_cine")
    _assert_geometry_equal(read_volume(nifti), cine)
    (cine_file,) = write_output(cine, tmp_path / "cine.nrrd", fmt="nrrd", method="cine_generation")
    assert read_cine(cine_file).metadata["trigger_times_ms"] == TRIGGERS and (tmp_path / "cine.json").is_file()
    written = write_output(t1, tmp_path / "dicom", fmt="dicom", method="t1_from_cine", checkpoint="demo")
    first = pydicom.dcmread(written[0])
    assert first.SeriesDescription == "SYNTHETIC t1_from_cine t1 (ms)" and len(written) == 3
    with pytest.raises(OutputError, match="suffix"):
        write_output(t1, tmp_path / "t1_out", method="t1_from_cine")
    with pytest.raises(OutputError, match="ends in"):
        write_output(t1, tmp_path / "t1.nrrd", fmt="nifti", method="t1_from_cine")
    with pytest.raises(OutputError, match="unknown output format"):
        write_output(t1, tmp_path / "t1.png", fmt="png", method="t1_from_cine")
    with pytest.raises(OutputError, match="input"):
        write_output(t1, nifti, method="t1_from_cine", protected=[nifti])
    with pytest.raises(OutputError):
        write_output(t1, paths[0], fmt="dicom", method="t1_from_cine", protected=paths)
