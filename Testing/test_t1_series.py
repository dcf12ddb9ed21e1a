"""T1-mapping series input: series recognition, inversion times from every source, and bad input, on the real
Philips MOLLI and Siemens ShMOLLI files in Testing/Data (copied into temporary folders when a test edits them)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import write_volume
from CMRSynthesisLib.io.t1_series import parse_inversion_times, read_t1_series
from CMRSynthesisLib.volume import Volume

DATA = Path(__file__).parent / "Data"
NATIVE = DATA / "molli_patient_philips" / "native"
SHMOLLI = DATA / "shmolli_phantom_siemens"
# Inversion times of the native slices (README), keyed by SliceLocation, in file (= TI) order.
NATIVE_TIMES = {
    23.39: [231, 350, 1184, 1243, 2128, 2150, 3007, 3110, 4063, 5017],
    7.39: [231, 350, 1124, 1159, 1963, 2046, 2750, 2963, 3878, 4804],
    -8.61: [231, 350, 1185, 1239, 2088, 2122, 2985, 3036, 3987, 4931],
}
FIRST_SLICE = [NATIVE / f"IM_{number:04d}.dcm" for number in range(1, 11)]  # SliceLocation 23.39


def _copy(files: list[Path], folder: Path, edit=None) -> Path:
    """Copy DICOM files into `folder`, applying edit(dataset) to each when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        if edit is None:
            shutil.copy(file, folder / file.name)
        else:
            dataset = pydicom.dcmread(file)
            edit(dataset)
            dataset.save_as(folder / file.name)
    return folder


def _drop_private_time(dataset: pydicom.Dataset) -> None:
    del dataset[dataset.private_block(0x2005, "Philips MR Imaging DD 006").get_tag(0x72)]


def test_philips_native_series_times_from_private_tag_and_maps_skipped():
    series = read_t1_series(NATIVE)
    assert series.images.array.shape == (10, 3, 256, 256)
    assert series.images.array.dtype == np.float32
    assert series.time_source == "Philips private (2005,1572)"
    files = series.images.metadata["source_files"]
    for z in range(3):
        location = float(pydicom.dcmread(files[z], stop_before_pixels=True).SliceLocation)
        assert series.inversion_times_ms[:, z].tolist() == NATIVE_TIMES[round(location, 2)]
    skipped = " ".join(series.skipped)
    assert "6 image(s)" in skipped and "scanner map" in skipped and "IM_0031" in skipped
    assert not any(Path(file).name in {"IM_0031.dcm", "IM_0032.dcm"} for file in files)
    # rescale slope applied, as documented: stored value x 2.29548
    stored = pydicom.dcmread(NATIVE / "IM_0001.dcm").pixel_array
    z = [round(float(pydicom.dcmread(f, stop_before_pixels=True).SliceLocation), 2) for f in files[:3]].index(23.39)
    np.testing.assert_allclose(series.images.array[0, z], stored * 2.29548229548229, rtol=1e-6)


def test_shmolli_phantom_series_order_and_skipped_maps():
    series = read_t1_series(SHMOLLI)
    assert series.images.array.shape == (7, 1, 288, 384)
    assert series.time_source.startswith("InversionTime")
    assert series.inversion_times_ms[:, 0].tolist() == [100, 180, 260, 1100, 2100, 3100, 4100]
    # acquisition (instance) order 100, 1100, 2100, 3100, 4100, 180, 260
    assert series.acquisition_rank[:, 0].tolist() == [0, 5, 6, 1, 2, 3, 4]
    skipped = " ".join(series.skipped)
    assert "T1MAP" in skipped and "FITPARAMS" in skipped


def test_missing_times_are_named_then_taken_from_the_user(tmp_path):
    folder = _copy(FIRST_SLICE, tmp_path / "no_times", _drop_private_time)
    with pytest.raises(InputError, match=r"no inversion times in .*IM_0001.*--ti"):
        read_t1_series(folder)
    given = [231, 350, 1184, 1243, 2128, 2150, 3007, 3110, 4063, 5017]
    series = read_t1_series(folder, given)
    assert series.time_source == "given by the user"
    assert series.inversion_times_ms[:, 0].tolist() == given
    with pytest.raises(InputError, match="10 images per slice .* have 3 values"):
        read_t1_series(folder, [100, 200, 300])


def test_look_locker_times_from_trigger_time(tmp_path):
    times = iter(range(100, 1100, 100))

    def edit(dataset):
        _drop_private_time(dataset)
        dataset.TriggerTime = next(times)

    series = read_t1_series(_copy(FIRST_SLICE, tmp_path / "look_locker", edit))
    assert series.time_source.startswith("TriggerTime")
    assert series.inversion_times_ms[:, 0].tolist() == list(range(100, 1100, 100))


def test_user_times_that_contradict_the_files_are_refused():
    with pytest.raises(InputError, match="differ from those in the files"):
        read_t1_series(NATIVE, [100 + 10 * k for k in range(10)])


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_bad_folders_and_files(tmp_path):
    with pytest.raises(InputError, match="fewer|only 2 inversion time"):
        read_t1_series(_copy(FIRST_SLICE[:2], tmp_path / "two"))
    with pytest.raises(InputError, match="no T1-mapping series.*one image per slice position"):
        read_t1_series(DATA / "lge_patient_philips")
    with pytest.raises(InputError, match="no T1-mapping series.*scanner map"):
        read_t1_series(_copy([NATIVE / "IM_0031.dcm", NATIVE / "IM_0041.dcm"], tmp_path / "maps"))
    mixed = _copy(FIRST_SLICE, tmp_path / "mixed")
    _copy(sorted((SHMOLLI / "magnitude_series12").glob("*.dcm")), mixed / "other")
    with pytest.raises(InputError, match="holds 2 T1-mapping series.*T1_native.*ShMOLLI"):
        read_t1_series(mixed)
    corrupt = _copy(FIRST_SLICE, tmp_path / "corrupt")
    data = (corrupt / "IM_0005.dcm").read_bytes()
    (corrupt / "IM_0005.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="IM_0005.dcm"):
        read_t1_series(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.txt: not a T1-mapping input"):
        read_t1_series(text)
    with pytest.raises(InputError, match="holds no DICOM image"):
        read_t1_series(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")
    return folder


def test_4d_file_with_times_and_sidecar(tmp_path):
    rng = np.random.default_rng(0)
    images = Volume(rng.uniform(0, 100, (4, 2, 5, 6)).astype(np.float32), spacing=(1.5, 1.5, 8.0))
    path = write_volume(images, tmp_path / "molli.nrrd")
    with pytest.raises(InputError, match="holds no inversion times"):
        read_t1_series(path)
    sidecar = tmp_path / "molli.json"
    sidecar.write_text(json.dumps({"inversion_times_ms": [300, 100, 400, 200]}))
    series = read_t1_series(path, parse_inversion_times(str(sidecar)))
    assert series.inversion_times_ms[:, 1].tolist() == [100, 200, 300, 400]
    np.testing.assert_array_equal(series.images.array[0], images.array[1])  # sorted by TI, acquisition rank kept
    assert series.acquisition_rank[:, 0].tolist() == [1, 3, 0, 2]
    assert parse_inversion_times("100, 180,260") == [100.0, 180.0, 260.0]
    with pytest.raises(InputError, match="numbers in ms"):
        parse_inversion_times("100,abc")
    with pytest.raises(InputError, match="positive"):
        parse_inversion_times("100,-5,300")
    with pytest.raises(InputError, match="3D image"):
        read_t1_series(write_volume(images.with_array(images.array[0]), tmp_path / "one.nrrd"), [1, 2, 3])
