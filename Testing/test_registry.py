"""The method registry: declarations found in the method modules, validated, and a toy method added through the
registry alone gets a working `cmrsynth` sub-command (the Slicer task table is checked in test_module_ui.py)."""

import json
import sys

import numpy as np
import pytest
from conftest import toy_spec

from CMRSynthesisLib.cli import build_parser, main
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import read_volume, write_volume
from CMRSynthesisLib.methods import get_spec, load_method, method_specs, register
from CMRSynthesisLib.methods.registry import (
    CheckpointRole,
    InputRole,
    Option,
    OutputRole,
    unavailable_methods,
)
from CMRSynthesisLib.volume import Volume


def test_the_method_modules_declare_themselves():
    specs = method_specs()
    assert {"scar_enhancement", "cine_segmentation"} <= set(specs)
    assert specs["scar_enhancement"].command == "enhance" and specs["cine_segmentation"].command == "segment"
    assert get_spec("cine_segmentation").main_output.name == "labels"
    assert specs["scar_enhancement"].option_defaults() == {"roi_label": None, "steps": 250, "samples": 5,
                                                           "sampler": "ddpm", "ddim_steps": 20, "ddim_eta": 0.0,
                                                           "seed": 0}


def test_unknown_method_names_the_known_ones():
    with pytest.raises(InputError, match="unknown method 'nope'.*cine_segmentation"):
        load_method("nope")


@pytest.mark.parametrize("changes, message", [
    (lambda: {"inputs": (InputRole("image", "xray", "?"),)}, "unknown kind 'xray'"),
    (lambda: {"outputs": (OutputRole("negated", "image", "?", grid="lge"),)}, "unknown input 'lge'"),
    (lambda: {"checkpoints": (CheckpointRole("weights", "?", "none"),)}, "first checkpoint role must be"),
    (lambda: {"options": (Option("image", float, 1.0, "clashes with the input"),)}, "declares image twice"),
    (lambda: {"options": (Option("scale", float, 1, "an int default"),)}, "is not a float"),
    (lambda: {"options": (Option("mode", str, "c", "?", choices=("a", "b")),)}, "is not one of"),
    (lambda: {"name": "Toy Negate"}, "lower-case identifier"),
])
def test_bad_declarations_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        toy_spec(**changes())


def test_a_method_registers_once(toy):
    with pytest.raises(ValueError, match="already registered"):
        register(toy_spec())
    with pytest.raises(ValueError, match="already registered"):
        register(toy_spec(name="other", command="segment"))  # the cine segmenter's command


def test_a_registered_toy_method_gets_a_working_command(toy, tmp_path, capsys):
    assert "toy-negate" in build_parser().format_help()
    image = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), spacing=(1.0, 1.5, 4.0), origin=(5.0, 0.0, 1.0))
    mask = image.with_array((image.array % 2 == 0).astype(np.uint8))
    image_path, mask_path = write_volume(image, tmp_path / "image.nrrd"), write_volume(mask, tmp_path / "mask.nrrd")
    before = image_path.read_bytes()
    out, changed = tmp_path / "negated.nii.gz", tmp_path / "changed.nrrd"
    code = main(["toy-negate", "--image", str(image_path), "--mask", str(mask_path), "--scale", "2", "--out", str(out),
                 "--changed-out", str(changed), "--progress", "json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    result = lines[-1]
    assert result["type"] == "result" and result["summary"]["changed_voxels"] == 12
    assert any(line["type"] == "progress" and line["message"] == "negating" for line in lines)
    negated = read_volume(out)
    assert negated.same_geometry(image)
    np.testing.assert_array_equal(negated.array, np.where(mask.array > 0, -2 * image.array, 2 * image.array))
    np.testing.assert_array_equal(read_volume(changed).array, mask.array)
    assert image_path.read_bytes() == before


def test_a_toy_command_refuses_to_write_onto_its_input(toy, tmp_path, capsys):
    image = Volume(np.ones((1, 2, 2), np.float32))
    path = write_volume(image, tmp_path / "image.nrrd")
    before = path.read_bytes()
    assert main(["toy-negate", "--image", str(path), "--out", str(path), "--progress", "none"]) == 1
    assert "input" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_method_module_without_its_packages_is_left_out_when_not_strict(monkeypatch):
    monkeypatch.setitem(sys.modules, "CMRSynthesisLib.methods.cine_segmentation", None)  # as if torch were missing
    assert "cine_segmentation" not in method_specs(strict=False)
    assert "scar_enhancement" in method_specs(strict=False)
    assert "cine_segmentation" in unavailable_methods()
    with pytest.raises(ModuleNotFoundError):
        method_specs()


def test_a_method_writes_dicom_series_in_the_source_study(toy, tmp_path, capsys):
    import pydicom

    from CMRSynthesisLib.io.dicom_export import write_dicom_series

    image = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 10, spacing=(1.0, 1.5, 4.0))
    source = tmp_path / "source"
    files = write_dicom_series(image, source, description="scanner series", image_type=("ORIGINAL", "PRIMARY"))
    study = pydicom.dcmread(files[0]).StudyInstanceUID
    out, changed = tmp_path / "negated_dicom", tmp_path / "changed_dicom"
    assert main(["toy-negate", "--image", str(source), "--out", str(out), "--changed-out", str(changed),
                 "--format", "dicom", "--progress", "none"]) == 0
    negated = pydicom.dcmread(min(out.iterdir()))
    mask = pydicom.dcmread(min(changed.iterdir()))
    assert "SYNTHETIC" in negated.ImageType and negated.SeriesDescription.startswith("SYNTHETIC")
    assert "SYNTHETIC" not in mask.ImageType and "DERIVED" in mask.ImageType
    assert negated.StudyInstanceUID == study and "toy_negate" in negated.DerivationDescription
    assert mask.StudyInstanceUID == study  # an output made without the input's metadata joins the study too
    numbers = int(pydicom.dcmread(files[0]).SeriesNumber), int(negated.SeriesNumber), int(mask.SeriesNumber)
    assert numbers[1:] == (numbers[0] + 1000, numbers[0] + 1001)  # each series listed once in the study
    back = read_volume(out)
    assert back.same_geometry(image)
    np.testing.assert_allclose(back.array, -image.array, atol=0.01)
    assert main(["toy-negate", "--image", str(source), "--out", str(out), "--format", "dicom",
                 "--progress", "none"]) == 1  # the folder is no longer empty
    assert "not empty" in capsys.readouterr().err


def test_the_dicom_outputs_of_a_nifti_input_share_one_new_study_and_need_folder_names(toy, tmp_path, capsys):
    import pydicom

    source = tmp_path / "image.nii.gz"
    write_volume(Volume(np.ones((2, 3, 4), np.float32), spacing=(1.0, 1.5, 4.0)), source)
    out, changed = tmp_path / "negated_dicom", tmp_path / "changed_dicom"
    assert main(["toy-negate", "--image", str(source), "--out", str(out), "--changed-out", str(changed),
                 "--format", "dicom", "--progress", "none"]) == 0
    negated, mask = pydicom.dcmread(min(out.iterdir())), pydicom.dcmread(min(changed.iterdir()))
    assert negated.StudyInstanceUID == mask.StudyInstanceUID
    assert negated.SeriesInstanceUID != mask.SeriesInstanceUID
    assert (int(negated.SeriesNumber), int(mask.SeriesNumber)) == (1001, 1002)
    named_as_file = tmp_path / "negated.nrrd"
    assert main(["toy-negate", "--image", str(source), "--out", str(named_as_file), "--format", "dicom",
                 "--progress", "none"]) == 1
    assert not named_as_file.exists() and "give a folder name, not an image file name" in capsys.readouterr().err
