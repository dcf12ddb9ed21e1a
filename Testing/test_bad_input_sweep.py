"""Every bad or awkward input of the commands `enhance`, `t1map`, `ecv` and `aha`, built small in a temporary folder.

For each case the command must exit 1 with one line naming what is at fault (the file, tag, option or shape), print
no traceback, leave no output behind and leave every input byte-identical (sha256 of every file in the folder before
and after). The good inputs the cases start from run through first, so a refusal is the fault's doing. A few cases
also run as the installed `cmrsynth` program, in the default progress mode and in the JSON mode the Slicer module
reads.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_objects import new_dicom
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from CMRSynthesisLib.cli import main
from CMRSynthesisLib.io import file_sha256, read_volume, write_volume
from CMRSynthesisLib.volume import Volume

SHAPE = (8, 64, 64)  # (z, y, x): a heart of real size in a field the enhancer's crop sees as an image
SPACING = (1.5, 1.5, 8.0)  # mm along x, y, z
TIMES = [100.0, 1100.0, 2100.0, 3100.0, 4100.0, 180.0, 1180.0, 2180.0]  # MOLLI 5(3)3, acquisition order
TI_TEXT = ",".join(f"{time:g}" for time in TIMES)
# Fast sampling (the bad inputs should fail before it anyway).
FAST_ENHANCE = {"--sampler": "ddim", "--ddim-steps": 2, "--samples": 1, "--steps": 20, "--device": "cpu"}
# An output place nobody may write, root included (sysfs refuses new files).
UNWRITABLE = Path("/sys/cmrsynthesis-bad-input-sweep")


@dataclasses.dataclass
class Inputs:
    """Good inputs for every command, and the folder they lie in (outputs go to its `out` sub-folder)."""

    folder: Path
    lge: Path
    roi: Path
    molli: Path  # 4D NRRD (inversion time, z, y, x), with TI_TEXT
    molli_dicom: Path  # folder: 2 slices x 8 inversion times, InversionTime in every file
    mask: Path
    native: Path
    post: Path
    blood: Path
    myocardium: Path
    rv: Path

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def volume(self, array: np.ndarray, name: str, origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Path:
        """`array` written on the inputs' grid (or moved to `origin`) as `name` in the folder."""
        return write_volume(Volume(array, SPACING, origin), self.folder / name)

    def text_file(self, name: str = "notes.txt") -> Path:
        path = self.folder / name
        path.write_text("not an image\n")
        return path


def _anatomy() -> dict[str, np.ndarray]:
    """Boolean (z, y, x) masks of an LV (blood pool in a myocardial ring) with the RV on its septal side."""
    y, x = np.mgrid[:SHAPE[1], :SHAPE[2]] - (SHAPE[1] - 1) / 2
    radius, angle = np.hypot(x, y), np.degrees(np.arctan2(-y, x))
    blood = radius < 10.0
    myocardium = (radius >= 10.0) & (radius < 16.0)
    rv = (radius >= 16.0) & (radius < 24.0) & (np.abs(angle) > 120.0)
    return {name: np.repeat(mask[None], SHAPE[0], axis=0) for name, mask in
            (("blood", blood), ("myocardium", myocardium), ("rv", rv))}


def _molli_images(t1: np.ndarray) -> np.ndarray:
    """(8, z, y, x) magnitude MOLLI images of the T1 map `t1` (ms), in TI_TEXT order."""
    t1_star = t1 / 2.0
    times = np.asarray(TIMES)[:, None, None, None]
    return (1000.0 * np.abs(1.0 - 2.0 * np.exp(-times / t1_star))).astype(np.float32)


def _dicom_image(pixels: np.ndarray, z: int, inversion_time: float, instance: int, series_uid: str) -> Dataset:
    """One MR image of the small grid: slice z, 16-bit pixels, InversionTime and InstanceNumber."""
    dataset = new_dicom(MRImageStorage, Modality="MR", SeriesDescription="MOLLI", SeriesInstanceUID=series_uid)
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    dataset.InstanceNumber, dataset.InversionTime = instance, inversion_time
    dataset.ImagePositionPatient = [0.0, 0.0, z * SPACING[2]]
    dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    dataset.PixelSpacing, dataset.SliceThickness = [SPACING[1], SPACING[0]], SPACING[2]
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.PixelData = np.rint(pixels).astype("<u2").tobytes()
    return dataset


def _write_molli_dicom(folder: Path, images: np.ndarray) -> Path:
    """The first two slices of `images` (8, z, y, x) as one DICOM series, files IM_<z><acquisition>.dcm."""
    folder.mkdir()
    series_uid = generate_uid()
    for z in range(2):
        for index, time in enumerate(TIMES):
            _dicom_image(images[index, z], z, time, z * 10 + index + 1, series_uid).save_as(
                folder / f"IM_{z}{index}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    anatomy = _anatomy()
    heart = (anatomy["blood"] | anatomy["myocardium"]).astype(np.uint8)
    rng = np.random.default_rng(0)
    lge = np.where(anatomy["blood"], 600, np.where(anatomy["myocardium"], 150, 300)) + rng.normal(0, 20, SHAPE)
    t1 = np.where(anatomy["blood"], 1550.0, np.where(anatomy["myocardium"], 1000.0, 1200.0))
    native = np.where(anatomy["blood"], 1550.0, np.where(anatomy["myocardium"], 1000.0, 0.0)).astype(np.float32)
    post = np.where(anatomy["blood"], 300.0, np.where(anatomy["myocardium"], 450.0, 0.0)).astype(np.float32)
    images = _molli_images(t1)

    def save(array: np.ndarray, name: str) -> Path:
        return write_volume(Volume(array, SPACING), tmp_path / name)

    return Inputs(
        folder=tmp_path, lge=save(np.clip(lge, 0, None).astype(np.int16), "lge.nrrd"), roi=save(heart, "roi.nrrd"),
        molli=save(images, "molli.nrrd"), molli_dicom=_write_molli_dicom(tmp_path / "molli_dicom", images),
        mask=save(heart, "mask.nrrd"), native=save(native, "native.nrrd"), post=save(post, "post.nrrd"),
        blood=save(anatomy["blood"].astype(np.uint8), "blood.nrrd"),
        myocardium=save(anatomy["myocardium"].astype(np.uint8), "myocardium.nrrd"),
        rv=save(anatomy["rv"].astype(np.uint8), "rv.nrrd"))


def good_options(command: str, inputs: Inputs) -> dict[str, object]:
    """The options of a successful run of `command` on the good inputs (a value None: the option is left out)."""
    if command == "enhance":
        return {"--lge": inputs.lge, "--roi": inputs.roi, "--out": inputs.out / "enhanced.nrrd", **FAST_ENHANCE}
    if command == "t1map":
        return {"--molli": inputs.molli, "--ti": TI_TEXT, "--mask": inputs.mask, "--out": inputs.out / "T1.nrrd"}
    if command == "ecv":
        return {"--native": inputs.native, "--post": inputs.post, "--hct": 0.42, "--blood": inputs.blood,
                "--myocardium": inputs.myocardium, "--out": inputs.out / "ecv.nrrd"}
    return {"--myocardium": inputs.myocardium, "--map": inputs.native, "--blood": inputs.blood, "--rv": inputs.rv,
            "--out-dir": inputs.out / "aha"}


def argv(command: str, options: dict[str, object]) -> list[str]:
    """The command line; every value joined to its option with '=' so that values starting with '-' stay values."""
    return [command, *(f"{key}={value}" for key, value in options.items() if value is not None)]


# --- the bad inputs ---------------------------------------------------------------------------------------------
# A case builds its bad input among the good ones and returns (options that replace the good ones, the strings the
# message must contain).
BadInput = tuple[dict[str, object], list[str]]
Build = Callable[[Inputs], BadInput]
MAIN_INPUT = {"enhance": "--lge", "t1map": "--molli", "ecv": "--native", "aha": "--map"}
MASK_INPUT = {"enhance": "--roi", "t1map": "--mask", "ecv": "--blood", "aha": "--myocardium"}
OUTPUT = {"enhance": "--out", "t1map": "--out", "ecv": "--out", "aha": "--out-dir"}


def _missing(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.folder / "missing.nii.gz"
        return {option: path}, [str(path)]
    return build


def _empty_folder(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.folder / "empty_folder"
        path.mkdir()
        return {option: path}, [str(path)]
    return build


def _not_an_image(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.text_file()
        return {option: path}, [str(path)]
    return build


def _nan_nifti(option: str, shape: tuple[int, ...] = SHAPE) -> Build:
    def build(inputs: Inputs) -> BadInput:
        array = np.full(shape, 500.0, np.float32)
        array[(0,) * (len(shape) - 2) + (3, 4)] = np.nan
        path = inputs.volume(array, "nan.nii.gz")
        return {option: path}, [str(path), "NaN"]
    return build


def _complex_nifti(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        image = sitk.GetImageFromArray(np.full(SHAPE, 3 + 4j, np.complex64))
        image.SetSpacing(SPACING)
        path = inputs.folder / "complex.nii.gz"
        sitk.WriteImage(image, str(path))
        return {option: path}, [str(path), "complex"]
    return build


def _five_d(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.folder / "five_d.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 2, *SHAPE), np.float32), isVector=False), str(path))
        return {option: path}, [str(path), "5D"]
    return build


def _constant(option: str, value: float, name: str, words: list[str], shape: tuple[int, ...] = SHAPE) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.folder / name
        image = sitk.GetImageFromArray(np.full(shape, value, np.float32), isVector=False)
        image.SetSpacing(SPACING[:image.GetDimension()] + (1.0,) * max(0, image.GetDimension() - 3))
        sitk.WriteImage(image, str(path))
        return {option: path}, [str(path), *words]
    return build


def _mask_elsewhere(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.volume(np.ones(SHAPE, np.uint8), "shifted_mask.nrrd", origin=(6.0, 0.0, 0.0))
        return {option: path}, [str(path), "origin"]
    return build


def _mask_other_shape(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.volume(np.ones((8, 12, 12), np.uint8), "small_mask.nrrd")
        return {option: path}, [str(path), "(8, 12, 12)"]
    return build


def _mask_empty(option: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = inputs.volume(np.zeros(SHAPE, np.uint8), "empty_mask.nrrd")
        return {option: path}, [str(path)]
    return build


def _output_onto_input(command: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        if command == "aha":  # the segments file the folder would receive is the myocardium input
            folder = inputs.folder / "aha_inputs"
            folder.mkdir()
            myocardium = inputs.myocardium.replace(folder / "aha_segments.nrrd")
            return {"--myocardium": myocardium, "--out-dir": folder}, [str(myocardium)]
        source = {"enhance": inputs.lge, "t1map": inputs.mask, "ecv": inputs.native}[command]
        return {OUTPUT[command]: source}, [str(source)]
    return build


def _output_under_a_file(command: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        parent = inputs.text_file("not_a_folder.txt")
        return {OUTPUT[command]: parent / ("aha" if command == "aha" else "out.nrrd")}, [str(parent)]
    return build


def _output_unwritable(command: str) -> Build:
    def build(inputs: Inputs) -> BadInput:
        path = UNWRITABLE / ("aha" if command == "aha" else "out.nrrd")
        return {OUTPUT[command]: path}, [str(UNWRITABLE)]
    return build


def _options(options: Callable[[Inputs], dict[str, object]], words: list[str]) -> Build:
    """A case that only changes options (numbers, switches), with the words its message must contain."""
    return lambda inputs: (options(inputs), words)


def _multi_label_roi(inputs: Inputs) -> BadInput:
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, 4:12, 4:12] = 1
    labels[:, 6:10, 6:10] = 2
    path = inputs.volume(labels, "labels.nrrd")
    return {"--roi": path}, [str(path), "--roi-label"]


def _dicom_lge(inputs: Inputs, edit: Callable[[Path], None], words: list[str]) -> BadInput:
    """One file of the DICOM series, damaged by `edit`, as the LGE."""
    path = inputs.molli_dicom / "IM_00.dcm"
    edit(path)
    return {"--lge": path}, [str(path), *words]


def _dicom_molli(inputs: Inputs, edit: Callable[[Path], None], words: list[str]) -> BadInput:
    """The DICOM series, one file damaged by `edit`, as the T1-mapping input (times from the files)."""
    path = inputs.molli_dicom / "IM_13.dcm"
    edit(path)
    return {"--molli": inputs.molli_dicom, "--ti": None, "--mask": None}, [str(path), *words]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _drop_pixel_data(path: Path) -> None:
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)


def _broken_sidecar(inputs: Inputs) -> BadInput:
    path = inputs.folder / "times.json"
    path.write_text('{"inversion_times_ms": [100, 180,')
    return {"--ti": path}, [str(path)]


def _duplicate_time(inputs: Inputs) -> BadInput:
    """Two different images of slice 1 both at TI 1100 ms (the second was 180 ms)."""
    first, second = inputs.molli_dicom / "IM_11.dcm", inputs.molli_dicom / "IM_15.dcm"
    dataset = pydicom.dcmread(second)
    dataset.InversionTime = 1100.0
    dataset.save_as(second)
    return {"--molli": inputs.molli_dicom, "--ti": None, "--mask": None}, [first.name, second.name]


CASES: dict[str, tuple[str, Build]] = {}
for _command in ("enhance", "t1map", "ecv", "aha"):
    _main, _mask = MAIN_INPUT[_command], MASK_INPUT[_command]
    CASES.update({
        f"{_command}: missing file": (_command, _missing(_main)),
        f"{_command}: empty folder": (_command, _empty_folder(_main)),
        f"{_command}: non-image file": (_command, _not_an_image(_main)),
        f"{_command}: complex NIfTI": (_command, _complex_nifti(_main)),
        f"{_command}: 5D image": (_command, _five_d(_main)),
        f"{_command}: missing mask": (_command, _missing(_mask)),
        f"{_command}: mask on another grid": (_command, _mask_elsewhere(_mask)),
        f"{_command}: mask of another shape": (_command, _mask_other_shape(_mask)),
        f"{_command}: empty mask": (_command, _mask_empty(_mask)),
        f"{_command}: output onto an input": (_command, _output_onto_input(_command)),
        f"{_command}: output under a regular file": (_command, _output_under_a_file(_command)),
        f"{_command}: unwritable output": (_command, _output_unwritable(_command)),
    })
for _command in ("enhance", "t1map"):  # images computed from; a map's NaN is a failed fit: see the test below
    CASES[f"{_command}: NaN NIfTI"] = (_command, _nan_nifti(MAIN_INPUT[_command],
                                                            (8, *SHAPE) if _command == "t1map" else SHAPE))
CASES.update({
    "enhance: multi-label ROI": ("enhance", _multi_label_roi),
    "enhance: constant image": ("enhance", _constant("--lge", 300.0, "constant.nrrd", ["constant"])),
    "enhance: all-zero image": ("enhance", _constant("--lge", 0.0, "zeros.nrrd", [])),
    "enhance: truncated DICOM": ("enhance", lambda inputs: _dicom_lge(inputs, _truncate, ["truncated"])),
    "enhance: DICOM without pixel data": ("enhance", lambda inputs: _dicom_lge(inputs, _drop_pixel_data,
                                                                                ["PixelData"])),
    "enhance: 4D image": ("enhance", _constant("--lge", 300.0, "four_d.nrrd", ["(2, 8, 64, 64)"], (2, *SHAPE))),
    "enhance: unknown output type": ("enhance", _options(lambda inputs: {"--out": inputs.out / "enhanced.png"},
                                                         ["enhanced.png"])),
    "enhance: one path for two outputs": ("enhance", _options(
        lambda inputs: {"--roi-out": inputs.out / "enhanced.nrrd"}, ["enhanced.nrrd"])),
    "enhance: no samples": ("enhance", _options(lambda inputs: {"--samples": 0}, ["--samples"])),
    "enhance: start step 0": ("enhance", _options(lambda inputs: {"--steps": 0}, ["--steps"])),
    "enhance: start step past the schedule": ("enhance", _options(lambda inputs: {"--steps": 5000}, ["--steps"])),
    "t1map: 2D image": ("t1map", _constant("--molli", 500.0, "two_d.nrrd", ["4D"], shape=SHAPE[1:])),
    "t1map: 3D image": ("t1map", _constant("--molli", 500.0, "three_d.nrrd", ["4D"])),
    "t1map: constant images": ("t1map", _constant("--molli", 300.0, "constant.nrrd", ["constant"], (8, *SHAPE))),
    "t1map: all-zero images": ("t1map", _constant("--molli", 0.0, "zeros.nrrd", [], (8, *SHAPE))),
    "t1map: 4D file without --ti": ("t1map", _options(lambda inputs: {"--ti": None}, ["--ti"])),
    "t1map: wrong --ti count": ("t1map", _options(lambda inputs: {"--ti": ",".join(TI_TEXT.split(",")[:7])},
                                                  ["--ti", "7"])),
    "t1map: non-numeric --ti": ("t1map", _options(lambda inputs: {"--ti": TI_TEXT.replace("180", "abc")}, ["abc"])),
    "t1map: negative --ti": ("t1map", _options(lambda inputs: {"--ti": TI_TEXT.replace("100,", "-100,", 1)},
                                               ["-100"])),
    "t1map: broken --ti sidecar": ("t1map", _broken_sidecar),
    "t1map: two images at one inversion time": ("t1map", _duplicate_time),
    "t1map: truncated DICOM": ("t1map", lambda inputs: _dicom_molli(inputs, _truncate, ["truncated"])),
    "t1map: DICOM without pixel data": ("t1map", lambda inputs: _dicom_molli(inputs, _drop_pixel_data,
                                                                              ["PixelData"])),
    "ecv: haematocrit above range": ("ecv", _options(lambda inputs: {"--hct": 0.8}, ["0.8"])),
    "ecv: haematocrit in percent": ("ecv", _options(lambda inputs: {"--hct": 42}, ["42"])),
    "ecv: haematocrit NaN": ("ecv", _options(lambda inputs: {"--hct": "nan"}, ["nan"])),
    "ecv: all-zero native map": ("ecv", _constant("--native", 0.0, "zeros.nrrd", [])),
    "ecv: post map elsewhere": ("ecv", _mask_elsewhere("--post")),
    "aha: all-zero map": ("aha", _constant("--map", 0.0, "zeros.nrrd", [])),
    "aha: RV mask elsewhere": ("aha", _mask_elsewhere("--rv")),
    "aha: one insertion point": ("aha", _options(lambda inputs: {"--rv": None, "--insertion-points": "1,2,3"},
                                                 ["1,2,3"])),
})


def _snapshot(folder: Path) -> dict[str, str | None]:
    """Every path under `folder`: sha256 for files, None for folders."""
    return {str(path.relative_to(folder)): file_sha256(path) if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("command", list(MAIN_INPUT))
def test_the_good_inputs_run(command, inputs, capsys):
    assert main(argv(command, good_options(command, inputs))) == 0, capsys.readouterr().err
    assert any(inputs.out.rglob("*.nrrd"))


@pytest.mark.parametrize("command", ["ecv", "aha"])
def test_non_finite_map_voxels_count_as_no_value(command, inputs, capsys):
    """Other tools write NaN (or infinity) where a fit failed: in a map it means no value, as our own 0 does."""
    option = MAIN_INPUT[command]
    results = []
    for name, fill in (("zero", 0.0), ("nan", np.nan), ("inf", np.inf)):
        array = read_volume(inputs.native).array.copy()
        array[array == 0] = fill
        out = inputs.out / name
        options = {**good_options(command, inputs), option: inputs.volume(array, f"map_{name}.nii.gz")}
        options["--out-dir" if command == "aha" else "--out"] = out if command == "aha" else out / "ecv.nrrd"
        assert main(argv(command, options)) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)["summary"]
        results.append(summary["segments"] if command == "aha" else summary)
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_naming_the_fault_and_changes_nothing(case, inputs, capsys):
    command, build = CASES[case]
    overrides, expected = build(inputs)
    before = _snapshot(inputs.folder)
    code = main(argv(command, {**good_options(command, inputs), **overrides}))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 1, f"exit code {code}; stderr: {err}"
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    missing = [word for word in expected if word not in lines[-1]]
    assert not missing, f"the message does not name {missing}: {lines[-1]}"
    assert _snapshot(inputs.folder) == before, "files were written or changed"


@pytest.mark.parametrize("case,progress", [("enhance: non-image file", "bar"), ("t1map: truncated DICOM", "json")])
def test_the_installed_program_refuses_without_a_traceback(case, progress, inputs):
    command, build = CASES[case]
    overrides, expected = build(inputs)
    before = _snapshot(inputs.folder)
    program = Path(sys.executable).with_name("cmrsynth")
    run = subprocess.run([str(program), *argv(command, {**good_options(command, inputs), **overrides}),
                          f"--progress={progress}"], check=False, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in run.stdout + run.stderr
    assert run.returncode == 1, run.stderr
    if progress == "json":
        message = json.loads(run.stdout.strip().splitlines()[-1])
        assert message["type"] == "error", message
        text = message["message"]
    else:
        text = run.stderr.strip().splitlines()[-1]
        assert text.startswith("error: "), run.stderr
    assert all(word in text for word in expected), text
    assert _snapshot(inputs.folder) == before
