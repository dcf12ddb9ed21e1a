"""Virtual LGE (CPKDM): every variant end to end on CPU on a small phantom with tiny untrained networks (grid, outputs,
the MOLLI scheme read, seeds per slice), the command line with a DICOM MOLLI, and bad input (other positions or
frames of reference, too few frames, a MOLLI whose fit fails, a foreign autoencoder): a clear error and nothing
written. The transmurality grades readers use."""

import dataclasses
import json
import types

import numpy as np
import pydicom
import pytest
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.transmurality import GRADE_LABELS, transmurality_grade
from CMRSynthesisLib.checkpoints import save_checkpoint
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.diffusion.networks import build_network
from CMRSynthesisLib.errors import CheckpointError, GeometryError, InputError
from CMRSynthesisLib.io import read_volume, write_cine
from CMRSynthesisLib.io.cine import read_cine
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.methods.virtual_lge import VirtualLGE, build_model
from CMRSynthesisLib.slice_runner import parse_slices
from CMRSynthesisLib.volume import Volume

FRAMES, CROP, FACTOR, LATENT = 4, 32, 2, 2
SCHEDULE = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02,
            "prediction_type": "epsilon"}
AUTOENCODER = {"class": "AutoencoderKL", "args": {
    "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [8, 8], "latent_channels": LATENT,
    "num_res_blocks": 1, "norm_num_groups": 4, "attention_levels": [False, False],
    "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}}
VARIANTS = ("cpkdm", "no_kinematics", "no_relaxation", "pure_data_driven", "pix2pix")


def tiny_config(variant: str, autoencoder_sha: str) -> dict:
    config = {"method": "virtual_lge", "variant": variant, "frames": FRAMES, "crop_size": CROP, "pixel_mm": 3.0,
              "curves": 8, "clusters": 3, "description": f"tiny untrained {variant} for tests"}
    if variant == "pix2pix":
        return {**config, "part": "pix2pix", "generator": {"class": "BasicUNet", "args": {
            "spatial_dims": 2, "in_channels": FRAMES + 8, "out_channels": 1, "features": [8, 8, 8, 8, 8, 8]}}}
    kinematics, relaxation = variant in ("cpkdm", "no_relaxation"), variant in ("cpkdm", "no_kinematics")
    extra = (4 if relaxation else 0) + ((FRAMES + 8) * FACTOR ** 2 if variant == "pure_data_driven" else 0)
    return {**config, "part": "diffusion", "factor": FACTOR, "latent_channels": LATENT, "schedule": SCHEDULE,
            "kinematic_encoder": {"channels": 8}, "morphology": {"channels": 4, "clusters": 3},
            "autoencoder": {"weights_sha256": autoencoder_sha},
            "denoiser": {"class": "DiffusionModelUNet", "args": {
                "spatial_dims": 2, "in_channels": LATENT + extra, "out_channels": LATENT, "channels": [8, 8],
                "attention_levels": [False, kinematics], "num_res_blocks": 1, "norm_num_groups": 4,
                "num_head_channels": 8, "with_conditioning": kinematics,
                "cross_attention_dim": 8 if kinematics else None}}}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("virtual_lge_checkpoints")
    autoencoder = save_checkpoint(root / "autoencoder", build_network(AUTOENCODER).state_dict(),
                                  {"method": "virtual_lge", "part": "autoencoder", "autoencoder": AUTOENCODER,
                                   "scale_factor": 1.0, "crop_size": CROP, "pixel_mm": 3.0})
    sha = json.loads((autoencoder / "config.json").read_text())["weights_sha256"]
    folders = {"autoencoder": autoencoder}
    for variant in VARIANTS:
        config = tiny_config(variant, sha)
        folders[variant] = save_checkpoint(root / variant, build_model(config).state_dict(), config)
    return folders


def _slab(volume: Volume, first: int, count: int) -> Volume:
    """`count` slices from `first` of a (z, y, x) or (t, z, y, x) Volume, with the origin moved to the first."""
    array = volume.array[..., first:first + count, :, :]
    origin = np.asarray(volume.origin) + np.reshape(volume.direction, (3, 3))[:, 2] * volume.spacing[2] * first
    return Volume(array, volume.spacing, tuple(origin), volume.direction, dict(volume.metadata))


@pytest.fixture(scope="module")
def study():
    """Three mid-ventricular slices of phantom test subject 0 (12 of its cine frames, no infarct contrast in the cine)
    and its native MOLLI at the same positions."""
    subject = phantom.make_subject(phantom.subject_ids("test", 1)[0])
    labels = phantom.render_labels(subject)
    cine, _ = phantom.render_cine(subject, infarct_contrast=False)
    molli = phantom.render_molli(subject, labels)
    middle = cine.spatial_shape[0] // 2
    cine = _slab(cine, middle - 1, 3)
    cine = cine.with_array(cine.array[::2][:12].copy())
    molli = dataclasses.replace(molli, images=_slab(molli.images, middle - 1, 3),
                                inversion_times_ms=molli.inversion_times_ms[:, middle - 1:middle + 2],
                                acquisition_rank=molli.acquisition_rank[:, middle - 1:middle + 2])
    return {"cine": cine, "molli": molli}


def _load(checkpoints, variant):
    return VirtualLGE.load(checkpoints[variant], "cpu", autoencoder=checkpoints["autoencoder"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_synthesises_on_the_cine_grid(checkpoints, study, variant):
    outputs = _load(checkpoints, variant).run(study, samples=2, seed=1, ddim_steps=3)
    cine = study["cine"]
    lge, sd, scar = outputs["lge"], outputs["lge_sd"], outputs["scar"]
    for volume in outputs.values():
        assert volume.array.shape == cine.spatial_shape and volume.spacing == cine.spacing
        assert volume.origin == cine.origin
    assert np.all((lge.array >= 0) & (lge.array <= 1)) and (lge.array > 0).any()
    assert lge.array[:, 0, 0].max() == 0.0  # outside the crops: no value
    settings = lge.metadata["synthesis"]
    assert settings["variant"] == variant and settings["slices"] == [1, 2, 3]  # counted from 1, as --slices
    assert "8 images per slice" in settings["molli_scheme"]
    assert set(settings["crops"]) == {"1", "2", "3"}
    assert (sd.array.max() > 0.0) == (variant != "pix2pix")
    assert set(np.unique(scar.array)) <= {0, 1}
    assert np.all(lge.array[scar.array > 0] > settings["scar_threshold"])
    radial = outputs["radial_strain"].array
    assert radial.max() > 0.05  # the wall thickens towards ES
    assert outputs["circumferential_strain"].array.min() < -0.05  # and shortens


def test_a_slice_gets_the_same_result_alone_as_in_the_stack(checkpoints, study):
    method = _load(checkpoints, "cpkdm")
    whole = method.run(study, samples=2, seed=5, ddim_steps=3)["lge"].array
    alone = method.run(study, samples=2, seed=5, ddim_steps=3, slices="2")["lge"].array
    np.testing.assert_array_equal(alone[1], whole[1])
    assert not alone[0].any() and not alone[2].any()
    other = method.run(study, samples=2, seed=6, ddim_steps=3, slices="2")["lge"].array
    assert not np.array_equal(other[1], alone[1])


def test_slice_selections_are_parsed_and_refused_when_out_of_range():
    assert parse_slices("3-5,1", 6) == [0, 2, 3, 4] and parse_slices(None, 3) is None and parse_slices(" ", 3) is None
    with pytest.raises(InputError, match="not within 1-3"):
        parse_slices("2-4", 3)
    with pytest.raises(InputError, match="comma-separated"):
        parse_slices("two", 3)
    with pytest.raises(InputError, match="from low to high"):
        parse_slices("3-2", 3)


def _moved(volume: Volume, millimetres: float) -> Volume:
    normal = np.reshape(volume.direction, (3, 3))[:, 2]
    return Volume(volume.array, volume.spacing, tuple(np.asarray(volume.origin) + millimetres * normal),
                  volume.direction, dict(volume.metadata))


def test_a_molli_at_other_positions_or_from_another_frame_of_reference_is_refused(checkpoints, study):
    method = _load(checkpoints, "cpkdm")
    elsewhere = dataclasses.replace(study["molli"], images=_moved(study["molli"].images, 60.0))
    with pytest.raises(GeometryError, match="image different parts of the heart"):
        method.run({**study, "molli": elsewhere}, samples=1, ddim_steps=2)
    cine = study["cine"].with_array(study["cine"].array, frame_of_reference_uid="1.2.3")
    images = study["molli"].images.with_array(study["molli"].images.array, frame_of_reference_uid="1.2.4")
    with pytest.raises(GeometryError, match="frame"):
        method.run({"cine": cine, "molli": dataclasses.replace(study["molli"], images=images)}, samples=1,
                   ddim_steps=2)


def test_a_molli_covering_part_of_the_stack_synthesises_the_covered_slices_and_says_so(checkpoints, study):
    shifted = dataclasses.replace(study["molli"], images=_moved(study["molli"].images, study["cine"].spacing[2]))
    lge = _load(checkpoints, "cpkdm").run({**study, "molli": shifted}, samples=1, ddim_steps=2)["lge"]
    assert lge.metadata["synthesis"]["slices"] == [2, 3] and not lge.array[0].any()
    assert any("have no slice of the MOLLI images" in note for note in lge.metadata["synthesis"]["notes"])


def test_a_molli_on_another_in_plane_grid_is_resampled_onto_the_cine(checkpoints, study):
    images = study["molli"].images
    coarse = Volume(images.array[:, :, ::2, ::2].copy(), (images.spacing[0] * 2, images.spacing[1] * 2,
                                                         images.spacing[2]), images.origin, images.direction,
                    dict(images.metadata))
    molli = dataclasses.replace(study["molli"], images=coarse)
    lge = _load(checkpoints, "no_kinematics").run({**study, "molli": molli}, samples=1, ddim_steps=2)["lge"]
    assert lge.metadata["synthesis"]["slices"] == [1, 2, 3]
    assert any("resampled in-plane" in note for note in lge.metadata["synthesis"]["notes"])


def test_too_few_cine_frames_and_a_failing_molli_fit_are_refused(checkpoints, study):
    method = _load(checkpoints, "cpkdm")
    short = study["cine"].with_array(study["cine"].array[:4].copy())
    with pytest.raises(InputError, match="holds 4 frame"):
        method.run({**study, "cine": short})
    seconds = dataclasses.replace(study["molli"], inversion_times_ms=study["molli"].inversion_times_ms / 1000.0)
    with pytest.raises(InputError, match="fit failed in"):  # inversion times in s read as ms: no fit anywhere
        method.run({**study, "molli": seconds}, samples=1, ddim_steps=2)
    images = study["molli"].images.array.copy()
    rows, cols = images.shape[-2:]
    images[..., rows // 4:3 * rows // 4, cols // 4:3 * cols // 4] = 0.0  # no signal over the heart, the body fits
    dark = dataclasses.replace(study["molli"], images=study["molli"].images.with_array(images))
    with pytest.raises(InputError, match=r"cover 0% of the myocardium"):
        method.run({**study, "molli": dark}, samples=1, ddim_steps=2)
    with pytest.raises(InputError, match="MOLLI"):
        method.run({"cine": study["cine"]})


def test_a_foreign_autoencoder_is_refused(checkpoints, tmp_path):
    other = save_checkpoint(tmp_path / "other", build_network(AUTOENCODER).state_dict(),
                            {"method": "virtual_lge", "part": "autoencoder", "autoencoder": AUTOENCODER,
                             "scale_factor": 1.0})
    with pytest.raises(CheckpointError, match="another autoencoder"):
        VirtualLGE.load(checkpoints["cpkdm"], "cpu", autoencoder=other)
    with pytest.raises(CheckpointError, match="not a synthesis model"):
        VirtualLGE.load(checkpoints["autoencoder"], "cpu")


def test_transmurality_grades_as_readers_grade_lge():
    assert [transmurality_grade(value) for value in (0.0, 0.4, 25.0, 25.1, 50.0, 74.9, 75.1, 100.0)] == \
        [0, 1, 1, 2, 2, 3, 4, 4]
    assert GRADE_LABELS[4] == "76-100%"


def test_the_command_reads_a_dicom_molli_and_writes_nothing_on_bad_input(checkpoints, tmp_path, capsys):
    subject = tmp_path / "subject"
    phantom.write_subject(phantom.subject_ids("test", 1)[0], subject)
    cine_path, molli_dir = subject / phantom.SUBJECT_FILES["cine"], subject / phantom.SUBJECT_FILES["molli"]
    out = tmp_path / "virtual_lge.nii.gz"
    common = ["--checkpoint", str(checkpoints["cpkdm"]), "--autoencoder", str(checkpoints["autoencoder"]),
              "--samples", "2", "--ddim-steps", "3", "--device", "cpu", "--progress", "none"]
    assert main(["virtual-lge", "--cine", str(cine_path), "--molli", str(molli_dir), "--out", str(out),
                 "--scar-out", str(tmp_path / "scar.nii.gz"), "--slices", "5", *common]) == 0
    written, cine = read_volume(out), read_cine(cine_path)
    assert written.array.shape == cine.array.shape[1:] and (tmp_path / "scar.nii.gz").exists()
    assert written.array[4].any() and not written.array[3].any()
    summary = capsys.readouterr().out
    assert "MOLLI" in summary and "transmurality_by_segment" in summary
    pacs = tmp_path / "pacs"
    assert main(["virtual-lge", "--cine", str(cine_path), "--molli", str(molli_dir), "--out", str(pacs / "lge"),
                 "--scar-out", str(pacs / "scar"), "--radial-strain-out", str(pacs / "strain"), "--format", "dicom",
                 "--slices", "5", *common]) == 0
    series = {name: [pydicom.dcmread(path) for path in sorted((pacs / name).rglob("*.dcm"))]
              for name in ("lge", "scar", "strain")}
    assert len(series["lge"]) == cine.spatial_shape[0]
    for name, synthetic in (("lge", True), ("scar", True), ("strain", False)):  # strain is tracked, not synthesised
        assert all(("SYNTHETIC" in dataset.ImageType) == synthetic
                   and dataset.SeriesDescription.startswith("SYNTHETIC") == synthetic for dataset in series[name])
    assert all("virtual_lge" in dataset.DerivationDescription for dataset in series["lge"])
    capsys.readouterr()
    short = write_cine(cine.with_array(cine.array[:3].copy(), trigger_times_ms=cine.metadata["trigger_times_ms"][:3]),
                       tmp_path / "short.nii.gz")
    bad_out = tmp_path / "bad.nii.gz"
    assert main(["virtual-lge", "--cine", str(short), "--molli", str(molli_dir), "--out", str(bad_out), *common]) != 0
    assert not bad_out.exists() and "holds 3 frame" in capsys.readouterr().err


def test_the_registry_knows_the_method_and_its_shipped_models():
    method = load_method.__module__  # the registry module is importable
    from CMRSynthesisLib.methods.registry import get_spec

    spec = get_spec("virtual_lge")
    assert method and spec.command == "virtual-lge" and [role.kind for role in spec.inputs] == ["cine", "molli"]
    assert {role.shipped for role in spec.checkpoints} == {"virtual_lge", "virtual_lge_autoencoder", "cine_segmenter"}


def test_the_metrics_score_a_perfect_synthesis_perfectly_and_a_flat_one_poorly():
    """image_metrics on the cine's grid: the true LGE scaled as the targets are, placed in the crop, scores SSIM 1,
    MSE 0 and the threshold rule's own Dice (the case's ceiling); a flat grey image scores far lower. On a slice
    without scar there is no Dice; an image bright all over calls the whole myocardium scar there."""
    from CMRSynthesisLib.methods.virtual_lge import (
        crop_box,
        evaluation_cases,
        image_metrics,
        scaled_by_crop,
    )

    method = types.SimpleNamespace(config={"crop_size": 64, "pixel_mm": 1.8})
    cases = evaluation_cases("test", 1, method)

    def true_lge_in_crop(case):
        cine, crop = case.inputs["cine"], case.context["crop"]
        array = np.zeros(cine.spatial_shape, np.float32)
        box = crop_box(crop, case.reference.shape)
        array[case.slice][box] = scaled_by_crop(case.reference, crop)[box]
        settings = {"crops": {str(case.slice + 1): crop.record()}, "scar_threshold": 0.5}
        return Volume(array, cine.spacing, cine.origin, cine.direction, {"synthesis": settings})

    case = next(c for c in cases if c.facts["scar_pixels"] > 20)
    output = true_lge_in_crop(case)
    perfect = image_metrics(output, case.reference, case)
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["mse"] == pytest.approx(0.0)
    assert perfect["region_ssim"] == pytest.approx(1.0)
    assert perfect["scar_dice"] == pytest.approx(case.facts["threshold_rule_dice"]) and perfect["scar_dice"] > 0.6
    assert perfect["false_scar_pct"] is None
    flat = output.with_array(np.where(output.array > 0, 0.5, 0.0).astype(np.float32))
    poor = image_metrics(flat, case.reference, case)
    assert poor["ssim"] < 0.5 and poor["mse"] > 0.01 and poor["psnr"] < perfect["psnr"]

    # a slice without scar scores no Dice, but the share of its myocardium a synthesis calls scar
    clear = next(c for c in cases if c.facts["scar_pixels"] == 0)
    assert "threshold_rule_dice" not in clear.facts
    output = true_lge_in_crop(clear)
    perfect = image_metrics(output, clear.reference, clear)
    assert perfect["scar_dice"] is None and perfect["false_scar_pct"] < 10.0
    bright = image_metrics(output.with_array(np.where(output.array > 0, 0.9, 0.0).astype(np.float32)),
                           clear.reference, clear)
    assert bright["false_scar_pct"] == pytest.approx(100.0)
