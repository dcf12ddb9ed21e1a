"""T1 from cine (T1Diff): crop geometry, the three variants end to end on CPU with tiny untrained networks (shapes,
grid, seeds, bad input), the recipes training a few steps, and the command line."""

import json

import numpy as np
import pytest
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.checkpoints import save_checkpoint
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.errors import CheckpointError, InputError
from CMRSynthesisLib.io import read_volume, write_cine
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.methods.cine_segmentation import phantom_labels
from CMRSynthesisLib.methods.t1_from_cine import (
    ANATOMY_CHANNELS,
    T1FromCine,
    build_model,
    lv_centre,
    morphokinetic_condition,
    to_ms,
    to_unit,
)
from CMRSynthesisLib.preprocess import LVCrop, cycle_frames
from CMRSynthesisLib.volume import Volume

SCHEDULE = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02,
            "prediction_type": "epsilon"}
FRAMES = 4


def tiny_config(variant: str) -> dict:
    denoiser = lambda channels: {"class": "DiffusionModelUNet", "args": {
        "spatial_dims": 2, "in_channels": channels, "out_channels": 1, "channels": [8, 8],
        "attention_levels": [False, False], "num_res_blocks": 1, "norm_num_groups": 8}}
    config = {"method": "t1_from_cine", "variant": variant, "frames": FRAMES, "crop_size": 32, "pixel_mm": 3.0,
              "description": f"tiny untrained {variant} for tests"}
    if variant == "t1diff":
        config.update(schedule=SCHEDULE, denoiser=denoiser(1 + 8 + ANATOMY_CHANNELS + 1), modality_encoder={
            "class": "BasicUNet", "args": {"spatial_dims": 2, "in_channels": FRAMES, "out_channels": 8,
                                           "features": [8, 8, 8, 8, 8, 8]}})
        config["denoiser"]["args"]["in_channels"] = 1 + 8 + ANATOMY_CHANNELS + 1
    elif variant == "raw_ddpm":
        config.update(schedule=SCHEDULE, denoiser=denoiser(1 + FRAMES + 1))
    else:
        config["generator"] = {"class": "BasicUNet", "args": {"spatial_dims": 2, "in_channels": FRAMES + 1,
                                                              "out_channels": 1, "features": [8, 8, 8, 8, 8, 8]}}
    return config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("t1_checkpoints")
    folders = {}
    for variant in ("t1diff", "raw_ddpm", "pix2pix"):
        config = tiny_config(variant)
        if variant == "t1diff":
            config["modality_encoder"]["args"]["out_channels"] = 8
        network = build_model(config)
        folders[variant] = save_checkpoint(root / variant, network.state_dict(), config)
    return folders


@pytest.fixture(scope="module")
def cine():
    """Three slices of phantom test subject 3 (24 frames are kept of its cine), with its field strength."""
    subject = phantom.make_subject(phantom.subject_ids("test", 4)[3])
    full, _ = phantom.render_cine(subject)
    middle = full.spatial_shape[0] // 2
    array = full.array[:, middle - 1:middle + 2]
    origin = np.asarray(full.origin) + np.reshape(full.direction, (3, 3))[:, 2] * full.spacing[2] * (middle - 1)
    return Volume(array, full.spacing, tuple(origin), full.direction, dict(full.metadata))


def test_a_crop_pasted_back_lands_where_it_was_taken():
    image = np.zeros((60, 80), np.float32)
    image[20:40, 30:50] = 1.0
    crop = LVCrop((30.0, 40.0), (1.2, 0.8), 24, 1.5)
    pasted = crop.paste(crop.extract(image), image.shape)
    assert crop.extract(image).shape == (24, 24)
    inside = pasted > 0.5
    assert abs(inside.sum() - 400) < 60 and inside[20:40, 30:50].mean() > 0.85


def test_cycle_frames_resample_one_heartbeat_from_ed():
    frames = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    resampled = cycle_frames(frames, ed_frame=2, count=4)
    np.testing.assert_allclose(resampled[:, 0, 0], [2.0, 4.5, 7.0, 4.5])  # 9.5 wraps: half way from frame 9 (9) to 0 (0)
    np.testing.assert_allclose(to_ms(to_unit(np.array([0.0, 1250.0, 9000.0]))), [0.0, 1250.0, 2500.0])


def test_the_morphokinetic_condition_shows_an_infarct_as_a_wall_that_does_not_thicken():
    """c_mor's strain channels, from ED to ES inside the ED myocardium: the infarct of a held-out phantom subject
    hardly thickens (radial strain near 0) while the remote wall does; 0 outside the myocardium."""
    subject = phantom.make_subject(phantom.subject_ids("test", 4)[0])
    cine, labels = phantom.render_cine(subject)
    es = int(np.argmin((labels.array == phantom.LABELS["lv_blood"]).sum(axis=(1, 2, 3))))
    z = int(np.argmax((labels.array[0] == phantom.LABELS["scar"]).sum(axis=(1, 2))))
    truth = phantom_labels(labels.array[:, z])
    one_hot = lambda frame: np.stack([truth[frame] == value for value in range(4)]).astype(np.float32)
    spacing_yx = (cine.spacing[1], cine.spacing[0])
    crop = LVCrop(lv_centre(truth[0]), spacing_yx, 48, 2.5)
    condition = morphokinetic_condition(cine.array[:, z], one_hot(0), one_hot(es), spacing_yx, crop, 0, es)
    assert condition.shape == (ANATOMY_CHANNELS, 48, 48)
    radial = condition[8]
    scar = crop.extract((labels.array[0, z] == phantom.LABELS["scar"]).astype(np.float32)) > 0.5
    wall = crop.extract((truth[0] == 2).astype(np.float32)) > 0.5
    remote = wall & ~scar
    assert scar.sum() > 10 and remote.sum() > 50
    assert np.median(radial[scar]) < 0.1 and np.median(radial[remote]) > np.median(radial[scar]) + 0.15
    outside = crop.extract((truth[0] == 0).astype(np.float32)) > 0.99
    assert np.all(condition[8:, outside] == 0.0)


@pytest.mark.parametrize("variant", ["t1diff", "raw_ddpm", "pix2pix"])
def test_each_variant_maps_the_cine_on_its_grid(checkpoints, cine, variant):
    method = load_method("t1_from_cine", checkpoints[variant], device="cpu")
    outputs = method.run({"cine": cine}, samples=2, seed=3, sampler="ddim", ddim_steps=3)
    t1, sd = outputs["t1"], outputs["t1_sd"]
    assert t1.array.shape == cine.spatial_shape and t1.same_geometry(sd)
    assert t1.spacing == cine.spacing and t1.origin == cine.origin
    assert t1.metadata["units"] == "ms" and t1.metadata["synthesis"]["variant"] == variant
    assert np.all((t1.array >= 0) & (t1.array <= 2500)) and (t1.array > 0).any()
    assert t1.array[:, 0, 0].max() == 0.0  # outside the LV crops: no value
    if variant == "pix2pix":  # one pass: no uncertainty, and the result says so rather than show a 0 SD as such
        assert sd.array.max() == 0.0
        assert any("no uncertainty, its SD map is 0" in note for note in t1.metadata["synthesis"]["notes"])
        assert "sampler" not in t1.metadata["synthesis"]
    else:
        assert sd.array.max() > 0.0


def test_same_seed_same_result_per_slice(checkpoints, cine):
    method = T1FromCine.load(checkpoints["t1diff"], "cpu")
    whole = method.run({"cine": cine}, samples=2, seed=5, sampler="ddim", ddim_steps=3)["t1"].array
    again = method.run({"cine": cine}, samples=2, seed=5, sampler="ddim", ddim_steps=3)["t1"].array
    np.testing.assert_array_equal(whole, again)
    other = method.run({"cine": cine}, samples=2, seed=6, sampler="ddim", ddim_steps=3)["t1"].array
    assert not np.array_equal(whole, other)


def test_ddim_eta_sets_the_noise_of_the_coarse_chain(checkpoints, cine):
    """eta 1 (the default) draws fresh noise at every DDIM step, eta 0 none: the results differ, each repeatable,
    and the settings record eta; eta outside [0, 1] is refused naming its option."""
    method = T1FromCine.load(checkpoints["t1diff"], "cpu")
    runs = {eta: method.run({"cine": cine}, samples=1, seed=5, sampler="ddim", ddim_steps=3, ddim_eta=eta)["t1"]
            for eta in (0.0, 1.0)}
    assert not np.array_equal(runs[0.0].array, runs[1.0].array)
    assert runs[1.0].metadata["synthesis"]["ddim_eta"] == 1.0
    default = method.run({"cine": cine}, samples=1, seed=5, sampler="ddim", ddim_steps=3)["t1"].array
    np.testing.assert_array_equal(default, runs[1.0].array)
    with pytest.raises(InputError, match=r"--ddim-eta\) must be in \[0, 1\]; got 1.5"):
        method.run({"cine": cine}, sampler="ddim", ddim_steps=3, ddim_eta=1.5)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.with_array(c.array[:1]), "at least 2 frames"),
    (lambda c: Volume(c.array, c.spacing, c.origin, c.direction, {}), "field strength"),
])
def test_bad_cines_are_refused(checkpoints, cine, change, message):
    with pytest.raises(InputError, match=message):
        T1FromCine.load(checkpoints["raw_ddpm"], "cpu").run({"cine": change(cine)}, sampler="ddim", ddim_steps=2)


def test_ed_equal_to_es_and_frames_out_of_range_are_refused(checkpoints, cine):
    method = T1FromCine.load(checkpoints["raw_ddpm"], "cpu")
    with pytest.raises(InputError, match="same frame"):
        method.run({"cine": cine}, ed=3, es=3, sampler="ddim", ddim_steps=2)
    with pytest.raises(InputError, match="out of range"):
        method.run({"cine": cine}, ed=99, sampler="ddim", ddim_steps=2)


def test_another_methods_checkpoint_is_refused(tmp_path):
    folder = save_checkpoint(tmp_path / "other", {"w": torch.zeros(1)}, {"method": "scar_enhancement"})
    with pytest.raises(CheckpointError, match="scar_enhancement"):
        T1FromCine.load(folder, "cpu")


def test_command_line_writes_the_map_and_its_sd(checkpoints, cine, tmp_path, capsys):
    path = write_cine(cine, tmp_path / "cine.nii.gz")
    out, sd = tmp_path / "t1.nrrd", tmp_path / "t1_sd.nrrd"
    code = main(["t1-from-cine", "--cine", str(path), "--out", str(out), "--t1-sd-out", str(sd), "--checkpoint",
                 str(checkpoints["raw_ddpm"]), "--sampler", "ddim", "--ddim-steps", "2", "--samples", "2",
                 "--device", "cpu", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["summary"]["field_strength_t"] == cine.metadata["field_strength_t"]  # from the cine's sidecar
    t1 = read_volume(out)
    assert t1.array.shape == cine.spatial_shape and np.allclose(t1.origin, cine.origin)
    assert read_volume(sd).array.max() > 0


def test_the_recipes_train_each_variant_from_one_example_cache(tmp_path):
    from training.distributed import Context
    from training.recipes.t1_from_cine import RECIPES

    for variant, recipe in (("t1diff", "t1_from_cine"), ("raw_ddpm", "t1_from_cine_raw_ddpm"),
                            ("pix2pix", "t1_from_cine_pix2pix")):
        config = {**tiny_config(variant), "data": {"source": "phantom", "train_subjects": 1,
                                                   "validation_subjects": 1, "cache": str(tmp_path / "cache")},
                  "train": {"steps": 2, "batch_size": 2, "lr": 0.001, "ema_decay": 0.9, "seed": 0,
                            "validate_every": 2}}
        if variant == "pix2pix":
            config.update(l1_weight=100.0, discriminator={"class": "PatchDiscriminator", "args": {
                "spatial_dims": 2, "num_layers_d": 2, "channels": 8, "in_channels": FRAMES + 2, "out_channels": 1}})
        weights, product = RECIPES[recipe](config, tmp_path / variant, Context(0, 1, torch.device("cpu")), False)
        assert product["variant"] == variant and product["training_summary"]["steps"] == 2
        network = build_model(product)
        network.load_state_dict(weights)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # train and validation, rendered once


def test_the_evaluation_compares_the_map_with_the_fitted_molli_t1(checkpoints, tmp_path, capsys):
    """`cmrsynth evaluate t1_from_cine` on one test subject with the tiny T1Diff: image metrics over the LV crops,
    AHA-segment agreement, the infarct rise of the reference, and both baselines as rows (run or unavailable)."""
    out = tmp_path / "evaluation"
    code = main(["evaluate", "t1_from_cine", "--out-dir", str(out), "--split", "test", "--subjects", "1",
                 "--checkpoint", str(checkpoints["t1diff"]), "--sampler", "ddim", "--ddim-steps", "2",
                 "--samples", "1", "--device", "cpu", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    method = next(name for name, row in metrics["models"].items() if "psnr" in row and name not in (
        "pix2pix", "raw_ddpm"))
    row = metrics["models"][method]
    assert row["psnr"]["n"] == 1 and np.isfinite(row["psnr"]["mean"]) and 0 < row["ssim"]["mean"] <= 1
    assert set(metrics["models"]) >= {"pix2pix", "raw_ddpm"}
    assert metrics["agreement"][method]["segment_t1"]["n"] >= 6
    table = (out / "test" / "table.md").read_text()
    assert "| T1Diff (this run) |" in table and "*Paper T1Diff" in table and "AHA segment R" in table


def test_the_modality_features_are_reused_through_a_chain_with_the_same_numbers(checkpoints):
    """Inside one sampling chain c_mod is reused while the cine phases stay the same, and the denoiser gets the same
    input as with c_mod computed afresh; new phases compute it again; outside a chain (training, validation of
    weights that change in place between calls) it is always computed."""
    network = T1FromCine.load(checkpoints["t1diff"], "cpu").network
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1 + network.frames + ANATOMY_CHANNELS + 1, 32, 32), generator=generator)
    steps = torch.tensor([500, 20])
    calls, seen = [], []
    network.modality_encoder.register_forward_hook(lambda *_: calls.append(1))
    network.denoiser.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    moved = x.clone()
    moved[:, :1] += 1.0  # another x_t, the same phases
    other = x.clone()
    other[:, 1:1 + network.frames] *= 0.5  # new phases
    with network.one_chain():
        network(x, steps)
        network(moved, steps)  # reuses c_mod
        network(other, steps)  # computes it
    assert len(calls) == 2 and not torch.equal(seen[0], seen[1])
    with torch.no_grad():
        network(moved, steps)  # outside a chain: computed afresh, the same numbers
        assert len(calls) == 3 and torch.equal(seen[1], seen[3])
        for parameter in network.modality_encoder.parameters():
            parameter.mul_(0.5)  # weights changed in place (an EMA update, a reload)
        network(moved, steps)
    assert len(calls) == 4 and not torch.equal(seen[3], seen[4])


def test_a_field_strength_against_the_cines_and_a_single_sample_are_noted(checkpoints, cine):
    method = T1FromCine.load(checkpoints["t1diff"], "cpu")
    stated = cine.metadata["field_strength_t"]
    other = 3.0 if stated < 2 else 1.5
    t1 = method.run({"cine": cine}, samples=1, sampler="ddim", ddim_steps=2, field_strength=other)["t1"]
    notes = t1.metadata["synthesis"]["notes"]
    assert any(f"field strength {other:g} T as given, although the cine states {stated:g} T" in n for n in notes)
    assert any("no uncertainty (the SD of one sample is 0)" in note for note in notes)
    quiet = method.run({"cine": cine}, samples=2, sampler="ddim", ddim_steps=2, field_strength=stated)["t1"]
    assert "notes" not in quiet.metadata["synthesis"]
    with pytest.raises(InputError, match=r"holds 1 frame \(shape .*at least 2 frames"):
        method.run({"cine": cine.with_array(cine.array[0])}, sampler="ddim", ddim_steps=2)
    phases = method.config["frames"]
    short = method.run({"cine": cine.with_array(cine.array[:phases - 1])}, samples=2, sampler="ddim", ddim_steps=2)
    assert any(f"holds {phases - 1} frames, fewer than the {phases} phases" in note
               for note in short["t1"].metadata["synthesis"]["notes"])


def test_real_cases_laid_out_as_folders_give_training_examples(tmp_path):
    """The "folders" data source: case folders naming their files by role (a phantom subject.json, or a case.json
    with a T1 map on another grid, resampled onto the cine's by position); the last case by name validates."""
    from CMRSynthesisLib.io import read_volume, write_volume
    from CMRSynthesisLib.methods.cine_segmentation import CineSegmenter
    from training.recipes.t1_from_cine import folder_examples

    first, second = phantom.subject_ids("test", 2)
    phantom.write_subject(first, tmp_path / "a_case")
    summary = phantom.write_subject(second, tmp_path / "b_case")
    t1 = read_volume(tmp_path / "b_case" / summary["t1_native"])
    coarse = Volume(t1.array[:, ::2, ::2], (t1.spacing[0] * 2, t1.spacing[1] * 2, t1.spacing[2]), t1.origin,
                    t1.direction)  # the map at half the in-plane resolution, as a scanner's MOLLI map may be
    write_volume(coarse, tmp_path / "b_case" / "scanner_t1.nrrd")
    (tmp_path / "b_case" / "case.json").write_text(json.dumps({"cine": summary["cine"],
                                                                "t1_native": "scanner_t1.nrrd"}))
    config = {**tiny_config("t1diff"), "crop_size": 32, "pixel_mm": 3.0}
    data = {"source": "folders", "root": str(tmp_path), "validation_fraction": 0.5}
    segmenter = CineSegmenter.load(None, "cpu")
    train = folder_examples("train", data, config, segmenter)
    validation = folder_examples("validation", data, config, segmenter)
    assert train["phases"].shape[1:] == (FRAMES, 32, 32) and train["anatomy"].shape[1:] == (ANATOMY_CHANNELS, 32, 32)
    assert len(train["target"]) >= 5 and len(validation["target"]) >= 5
    for examples in (train, validation):  # crops centred on the LV: blood (~1500-1900 ms) in the middle
        centre_ms = to_ms(examples["target"][:, 0, 14:18, 14:18]).mean(axis=(1, 2))
        assert np.median(centre_ms) > 1300
    corner = Volume(t1.array[:, :20, :20], t1.spacing, t1.origin, t1.direction)  # a map that misses the heart
    write_volume(corner, tmp_path / "b_case" / "corner_t1.nrrd")
    (tmp_path / "b_case" / "case.json").write_text(json.dumps({"cine": summary["cine"], "t1_native": "corner_t1.nrrd"}))
    with pytest.raises(ValueError, match="b_case: the T1 map covers no whole LV crop"):
        folder_examples("validation", data, config, segmenter)
    (tmp_path / "b_case" / "case.json").write_text(json.dumps({"cine": summary["cine"]}))
    with pytest.raises(ValueError, match="case.json: names no t1_native"):
        folder_examples("validation", data, config, segmenter)
