"""Scar enhancement refuses what it cannot enhance and says why: images without contrast, implausible automatic
heart ROIs, complex or non-finite voxels, ROI files that are not binary masks; and a slice's result depends only on
the seed, its index and its own pixels (one generator per slice)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.device import slice_generator
from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.io import read_volume, write_volume
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.methods.scar_enhancement import (
    HEART_AREA_MM2,
    MIN_STRUCTURE_CONTRAST,
    HeartSegmenter,
    implausible_heart,
)
from CMRSynthesisLib.preprocess import crop_around, roi_mask, structure_contrast
from CMRSynthesisLib.volume import Volume

DATA = Path(__file__).parent / "Data"
FAST_CLI = ["--steps", "20", "--samples", "1", "--sampler", "ddim", "--ddim-steps", "2", "--device", "cpu",
            "--progress", "none"]
FAST = {"steps": 20, "samples": 1, "sampler": "ddim", "ddim_steps": 2}


@pytest.fixture(scope="module")
def study():
    """Three mid-ventricular slices of a held-out phantom subject (128 x 128, 1.5 mm pixels, int16)."""
    full = phantom.lge_study(phantom.subject_ids("test", 1)[0])
    keep = [3, 4, 5]
    lge = full["lge"]
    origin = lge.index_to_physical() @ np.array([0, 0, keep[0], 1.0])
    return {"lge": Volume(lge.array[keep], lge.spacing, tuple(origin[:3]), lge.direction, lge.metadata),
            "roi": full["masks"]["heart_roi"][keep]}


@pytest.fixture(scope="module")
def method():
    return load_method("scar_enhancement", device="cpu")


def _enhance(argv, capsys):
    """Run `cmrsynth enhance`; returns (exit code, parsed stdout result or None, stderr)."""
    code = main(["enhance", *[str(value) for value in argv], *FAST_CLI])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


# --- 9: images without contrast, implausible automatic ROIs ---------------------------------------------------


@pytest.mark.parametrize("value", [500, 0])
@pytest.mark.parametrize("with_roi", [True, False])
def test_a_constant_or_all_zero_lge_is_refused_with_or_without_a_roi(value, with_roi, study, tmp_path, capsys):
    lge = write_volume(study["lge"].with_array(np.full(study["lge"].spatial_shape, value, np.int16)),
                       tmp_path / "flat.nrrd")
    roi = ["--roi", write_volume(study["lge"].with_array(study["roi"].astype(np.uint8)), tmp_path / "roi.nrrd")]
    code, _, message = _enhance(["--lge", lge, "--out", tmp_path / "out.nrrd", *(roi if with_roi else [])], capsys)
    assert code == 1 and "flat.nrrd" in message and f"same value ({value})" in message
    assert not (tmp_path / "out.nrrd").exists()


def test_without_a_roi_an_image_holding_no_heart_is_refused_naming_the_file(study, tmp_path, capsys):
    rng = np.random.default_rng(0)
    noise = 500 + rng.normal(0, 10, study["lge"].spatial_shape)  # flat tissue with noise: the segmenter "finds" blobs
    lge = write_volume(study["lge"].with_array(noise.astype(np.float32)), tmp_path / "no_heart.nrrd")
    code, _, message = _enhance(["--lge", lge, "--out", tmp_path / "out.nrrd"], capsys)
    assert code == 1 and message.startswith("error: no heart found in ") and "no_heart.nrrd" in message
    assert "slice 1:" in message and "--roi" in message


def test_a_roi_slice_without_image_structure_is_refused_naming_the_slice(study, method):
    array = study["lge"].array.copy()
    array[1] = 300  # a blank slice under the user's ROI
    with pytest.raises(InputError, match=r"no image structure in the ROI crop of slice\(s\) 2 \(0.00\)"):
        method.run({"lge": study["lge"].with_array(array), "roi": study["lge"].with_array(study["roi"])}, **FAST)


def test_implausible_segmenter_slices_are_left_out_with_a_note(study, method):
    array = study["lge"].array.copy()
    array[2] = np.random.default_rng(1).normal(400, 8, array[2].shape)  # no heart in the last slice
    lge = study["lge"].with_array(array)
    outputs = method.run({"lge": lge, "roi": None}, **FAST)
    roi = outputs["roi"].array.astype(bool)
    assert roi[0].any() and roi[1].any() and not roi[2].any()
    assert np.array_equal(outputs["enhanced"].array[2], array[2])
    assert "slice 3:" in outputs["enhanced"].metadata["synthesis"]["notes"][0]
    assert "slice 1:" not in outputs["enhanced"].metadata["synthesis"]["notes"][0]


def test_implausible_heart_checks_area_shape_and_contrast(study):
    image, heart = study["lge"].array[1], study["roi"][1]
    spacing = (study["lge"].spacing[1], study["lge"].spacing[0])
    assert implausible_heart(image, heart, spacing, 64, 4) is None
    yy, xx = np.mgrid[:128, :128]
    tiny = (yy - 64) ** 2 + (xx - 64) ** 2 <= 5**2  # about 180 mm2
    assert "area" in implausible_heart(image, tiny, spacing, 64, 4)
    assert "area" in implausible_heart(image, np.ones_like(heart), spacing, 64, 4)  # 38,000 mm2: the chest
    cross = ((abs(yy - 64) < 4) & (abs(xx - 64) < 40)) | ((abs(xx - 64) < 4) & (abs(yy - 64) < 40))
    assert "solidity" in implausible_heart(image, cross, spacing, 64, 4)
    assert "structure" in implausible_heart(np.full_like(image, 500), heart, spacing, 64, 4)


def test_structure_contrast_separates_a_heart_from_flat_and_noise_only_crops(study):
    image, heart = study["lge"].array[1], study["roi"][1]
    spacing = (study["lge"].spacing[1], study["lge"].spacing[0])
    crop = crop_around(heart, 64, 4)
    rng = np.random.default_rng(2)
    assert structure_contrast(image, crop, spacing) > 2 * MIN_STRUCTURE_CONTRAST
    assert structure_contrast(np.zeros_like(image), crop, spacing) == 0.0
    assert structure_contrast(rng.rayleigh(100, image.shape), crop, spacing) < 0.6 * MIN_STRUCTURE_CONTRAST


def test_the_shipped_segmenter_is_plausible_on_every_real_and_phantom_slice(study):
    segmenter = HeartSegmenter.load(device="cpu")
    for lge in (read_volume(DATA / "lge_patient_philips"), study["lge"]):
        spacing = (lge.spacing[1], lge.spacing[0])
        roi = segmenter.segment(lge)
        for z in range(len(roi)):
            assert implausible_heart(lge.array[z], roi[z], spacing, 64, 4) is None, z
            assert roi[z].sum() * spacing[0] * spacing[1] > 4 * HEART_AREA_MM2[0]  # the bound leaves a margin


# --- 10: complex and non-finite voxels ------------------------------------------------------------------------


def test_complex_lge_and_non_finite_or_complex_roi_are_refused(study, method):
    lge, roi = study["lge"], study["lge"].with_array(study["roi"].astype(np.float32))
    with pytest.raises(InputError, match="the LGE volume .* complex"):
        method.run({"lge": lge.with_array(lge.array.astype(np.complex64) * (1 + 1j)), "roi": roi}, **FAST)
    for bad in (np.nan, np.inf):
        values = roi.array.copy()
        values[0, 0, 0] = bad
        with pytest.raises(InputError, match="the ROI mask .* NaN or infinite"):
            method.run({"lge": lge, "roi": roi.with_array(values)}, **FAST)
    with pytest.raises(InputError, match="the ROI mask .* complex"):
        method.run({"lge": lge, "roi": roi.with_array(roi.array.astype(np.complex64))}, **FAST)


# --- 11: what a ROI file may hold --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [
    lambda m: m.astype(np.uint8), lambda m: m.astype(np.uint8) * 255, lambda m: m.astype(np.int16) * 7,
    lambda m: m, lambda m: m.astype(np.float32), lambda m: m.astype(np.float64) * -2.5,
], ids=["0-1", "0-255", "0-7", "bool", "float 0-1", "float single value"])
def test_binary_masks_are_taken_as_they_are(values, study):
    mask, note = roi_mask(study["lge"].with_array(values(study["roi"])))
    assert np.array_equal(mask, study["roi"]) and note is None


def test_a_probability_map_is_thresholded_at_one_half_with_a_note(study, tmp_path, capsys):
    probability = np.where(study["roi"], 0.9, 0.2).astype(np.float32)
    probability[:, :, :10] = 0.5  # not above one half
    path = write_volume(study["lge"].with_array(probability), tmp_path / "probability.nrrd")
    mask, note = roi_mask(read_volume(path))
    assert np.array_equal(mask, study["roi"]) and "probability map" in note and "probability.nrrd" in note
    lge = write_volume(study["lge"], tmp_path / "lge.nrrd")
    code, result, _ = _enhance(["--lge", lge, "--roi", path, "--out", tmp_path / "out.nrrd",
                                "--roi-out", tmp_path / "roi_used.nrrd"], capsys)
    assert code == 0 and "above 0.5 used" in result["summary"]["notes"][0]
    assert np.array_equal(read_volume(tmp_path / "roi_used.nrrd").array.astype(bool), study["roi"])


@pytest.fixture
def label_map(study, tmp_path):
    """Labels 0..10 in stripes, with the heart ROI as label 3 (a multi-label segmentation file)."""
    slices, rows, cols = study["roi"].shape
    labels = (np.arange(cols)[None, None, :] // 12 % 11 * np.ones((slices, rows, 1))).astype(np.uint8)
    labels[labels == 3] = 4
    labels[study["roi"]] = 3
    return write_volume(study["lge"].with_array(labels), tmp_path / "labels.nrrd"), labels


def test_a_label_map_is_refused_unless_a_label_is_chosen(study, label_map, tmp_path, capsys):
    path, labels = label_map
    lge = write_volume(study["lge"], tmp_path / "lge.nrrd")
    code, _, message = _enhance(["--lge", lge, "--roi", path, "--out", tmp_path / "out.nrrd"], capsys)
    assert code == 1 and "labels.nrrd" in message and "1, 2, 3, 4, 5, 6, 7, 8, 9, 10" in message
    assert "--roi-label" in message and not (tmp_path / "out.nrrd").exists()
    code, result, _ = _enhance(["--lge", lge, "--roi", path, "--roi-label", "3", "--out", tmp_path / "out.nrrd",
                                "--roi-out", tmp_path / "roi_used.nrrd"], capsys)
    assert code == 0 and result["summary"]["roi_label"] == 3 and "label 3 used" in result["summary"]["notes"][0]
    assert np.array_equal(read_volume(tmp_path / "roi_used.nrrd").array.astype(bool), labels == 3)


def test_a_missing_label_or_a_label_without_a_roi_is_refused(study, label_map, tmp_path, capsys):
    path, _ = label_map
    lge = write_volume(study["lge"], tmp_path / "lge.nrrd")
    code, _, message = _enhance(["--lge", lge, "--roi", path, "--roi-label", "12", "--out", tmp_path / "o.nrrd"],
                                capsys)
    assert code == 1 and "no voxel of label 12" in message and "labels present: 1, 2, 3" in message
    code, _, message = _enhance(["--lge", lge, "--roi-label", "3", "--out", tmp_path / "o.nrrd"], capsys)
    assert code == 1 and "no ROI mask was given" in message


# --- 18: same seed, same result, per slice ---------------------------------------------------------------------


def test_slice_generators_depend_on_the_seed_and_the_slice_key_only():
    def draw(seed, key):
        return torch.randn(5, generator=slice_generator(seed, key, torch.device("cpu")))

    assert torch.equal(draw(3, 7), draw(3, 7))
    assert not torch.equal(draw(3, 7), draw(3, 8)) and not torch.equal(draw(3, 7), draw(4, 7))
    assert not torch.equal(draw(0, 1), draw(1, 0)) and not torch.equal(draw(0, 5), draw(0, -5))
    with pytest.raises(InputError, match="non-negative"):
        slice_generator(-1, 0, torch.device("cpu"))


def test_a_slice_comes_out_the_same_alone_in_a_stack_and_in_any_order(study, method):
    settings = {"steps": 6, "samples": 2, "sampler": "ddpm", "seed": 11}  # DDPM: start noise and step noise
    lge, roi = study["lge"], study["roi"]
    stack = method.run({"lge": lge, "roi": lge.with_array(roi)}, **settings)["enhanced"].array
    assert not np.array_equal(stack[1], lge.array[1])
    only_middle = roi.copy()
    only_middle[[0, 2]] = False  # the other slices' ROIs removed
    alone = method.run({"lge": lge, "roi": lge.with_array(only_middle)}, **settings)["enhanced"].array
    assert np.array_equal(alone[1], stack[1])
    assert np.array_equal(alone[[0, 2]], lge.array[[0, 2]])
    # the middle slice as a volume of its own (as read from its own file): same position, same result
    origin = np.asarray(lge.origin) + lge.spacing[2] * np.reshape(lge.direction, (3, 3))[:, 2]
    single = Volume(lge.array[1:2], lge.spacing, origin, lge.direction)
    assert single.slice_keys() == [lge.slice_keys()[1]]
    one = method.run({"lge": single, "roi": single.with_array(roi[1:2])}, **settings)["enhanced"].array
    assert np.array_equal(one[0], stack[1])
    keys = lge.slice_keys()
    for order in ([1], [2, 1, 0], [1, 0]):
        enhanced, _ = method.enhance_slices(lge.array[order], roi[order], slice_keys=[keys[z] for z in order],
                                            **settings)
        assert np.array_equal(enhanced, stack[order]), order
    shifted, _ = method.enhance_slices(lge.array[[1]], roi[[1]], slice_keys=[keys[0]], **settings)
    assert not np.array_equal(shifted[0], stack[1])  # the slice's position is part of the seed
