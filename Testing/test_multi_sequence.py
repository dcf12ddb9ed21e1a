"""Multi-sequence synthesis (CMRDiff): the phantom's oedema, the MyoPS reader, the three directions end to end on CPU
with tiny untrained networks (grid, outputs, inputs untouched), guidance (a scale of 0 removes that sequence's
influence), the heat-map loss, the recipes on a tiny phantom, and bad input: a clear error and nothing written."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from CMRSynthesisLib import phantom
from CMRSynthesisLib.checkpoints import save_checkpoint
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.diffusion.networks import build_network
from CMRSynthesisLib.errors import GeometryError, InputError
from CMRSynthesisLib.io import write_cine, write_volume
from CMRSynthesisLib.methods import load_method
from CMRSynthesisLib.methods.cmrdiff_network import CONTRASTS
from CMRSynthesisLib.methods.multi_sequence import build_model, parse_guidance
from CMRSynthesisLib.volume import Volume

CROP, FACTOR, LATENT = 32, 2, 2
AUTOENCODER = {"class": "AutoencoderKL", "args": {
    "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [8, 8], "latent_channels": LATENT,
    "num_res_blocks": 1, "norm_num_groups": 4, "attention_levels": [False, False],
    "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}}
SCHEDULE = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02,
            "prediction_type": "epsilon"}
FAST = {"samples": 2, "ddim_steps": 3}
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def tiny_config(variant: str, autoencoder_sha: str) -> dict:
    config = {"method": "multi_sequence", "variant": variant, "crop_size": CROP, "pixel_mm": 4.0,
              "description": f"tiny untrained {variant} for tests"}
    if variant == "pix2pix":
        return {**config, "part": "pix2pix", "generator": {"class": "BasicUNet", "args": {
            "spatial_dims": 2, "in_channels": 5, "out_channels": 1, "features": [8, 8, 8, 8, 8, 8]}}}
    return {**config, "part": "diffusion", "factor": FACTOR, "latent_channels": LATENT, "token_dim": 8,
            "schedule": SCHEDULE, "autoencoder": {"weights_sha256": autoencoder_sha},
            "denoiser": {"class": "DiffusionModelUNet", "args": {
                "spatial_dims": 2, "in_channels": 3 * LATENT, "out_channels": LATENT, "channels": [8, 8],
                "attention_levels": [False, True], "num_res_blocks": 1, "norm_num_groups": 4,
                "num_head_channels": 8, "with_conditioning": True, "cross_attention_dim": 8}}}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("multi_sequence_checkpoints")
    autoencoder = save_checkpoint(root / "autoencoder", build_network(AUTOENCODER).state_dict(),
                                  {"method": "multi_sequence", "part": "autoencoder", "autoencoder": AUTOENCODER,
                                   "scale_factor": 1.0, "crop_size": CROP, "pixel_mm": 4.0})
    sha = json.loads((autoencoder / "config.json").read_text())["weights_sha256"]
    folders = {"autoencoder": autoencoder}
    for variant in ("cmrdiff", "pix2pix"):
        config = tiny_config(variant, sha)
        weights = build_model(config).state_dict()
        for name, tensor in weights.items():  # MONAI zero-initialises the denoiser's last layer: untrained, it
            if tensor.is_floating_point() and not tensor.any():  # would ignore every input
                weights[name] = 0.05 * torch.randn(tensor.shape)
        folders[variant] = save_checkpoint(root / variant, weights, config)
    return folders


def _slab(volume: Volume, first: int, count: int) -> Volume:
    origin = np.asarray(volume.origin) + np.reshape(volume.direction, (3, 3))[:, 2] * volume.spacing[2] * first
    return Volume(volume.array[first:first + count], volume.spacing, tuple(origin), volume.direction,
                  dict(volume.metadata))


def _acute_subject(split: str = "train") -> int:
    return next(sid for sid in phantom.subject_ids(split, 60)
                if (subject := phantom.make_subject(sid)).scar is not None and subject.scar.acute)


@pytest.fixture(scope="module")
def study():
    """Three mid-ventricular slices of the three sequences of a phantom test subject."""
    whole = phantom.multi_sequence_study(phantom.subject_ids("test", 1)[0])
    middle = whole["bssfp"].spatial_shape[0] // 2 - 1
    return {name: _slab(whole[name], middle, 3) for name in CONTRASTS}


def test_the_phantom_oedema_surrounds_an_acute_infarct_and_brightens_only_the_t2w():
    sid = _acute_subject()
    study = phantom.multi_sequence_study(sid)
    masks, t2w = study["masks"], study["t2w"].array.astype(float)
    assert masks["oedema"].any() and not (masks["oedema"] & masks["scar"]).any()
    assert not (masks["oedema"] & ~masks["myocardium"]).any()
    assert masks["oedema"].sum() > 0.3 * masks["scar"].sum()  # it reaches beyond the infarct
    remote = masks["myocardium"] & ~masks["oedema"]
    assert t2w[masks["oedema"]].mean() > 1.2 * t2w[remote].mean()
    lge = study["lge"].array.astype(float)  # LGE does not enhance the oedema like the scar
    assert lge[masks["scar"]].mean() > 1.5 * lge[masks["oedema"]].mean()
    chronic = next(s for s in phantom.subject_ids("train", 60)
                   if (subject := phantom.make_subject(s)).scar is not None and not subject.scar.acute)
    assert not phantom.oedema_mask(phantom.make_subject(chronic)).any()
    assert study["bssfp"].array.ndim == 3 and "trigger_times_ms" not in study["bssfp"].metadata
    study["bssfp"].require_same_geometry(study["lge"], "bSSFP and LGE")


@pytest.mark.parametrize("target", CONTRASTS)
def test_each_direction_synthesises_on_the_first_inputs_grid(checkpoints, study, target):
    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    inputs = {name: study[name] for name in CONTRASTS if name != target}
    before = {name: volume.array.copy() for name, volume in inputs.items()}
    out = method.run(inputs, target=target, **FAST)
    first = next(name for name in CONTRASTS if name != target)
    out["image"].require_same_geometry(study[first], "result and first input")
    image, sd = out["image"].array, out["image_sd"].array
    assert image.min() >= 0.0 and image.max() <= 1.0 and sd.min() >= 0.0 and sd.max() > 0.0
    synthesis = out["image"].metadata["synthesis"]
    assert synthesis["target"] == target and synthesis["grid"] == first and synthesis["slices"]
    assert synthesis["start"] == {"lge": "bssfp", "t2w": "bssfp", "bssfp": "lge"}[target]
    assert all(np.array_equal(before[name], inputs[name].array) for name in inputs)
    assert (image == 0).mean() > 0.1  # outside the heart crops
    again = method.run(inputs, target=target, **FAST)
    assert np.array_equal(again["image"].array, image)  # same seed, same result


def test_pix2pix_and_a_start_from_pure_noise_run_too(checkpoints, study):
    pix2pix = load_method("multi_sequence", checkpoints["pix2pix"], device="cpu")
    out = pix2pix.run({"bssfp": study["bssfp"], "t2w": study["t2w"]}, target="lge")
    assert out["image"].array.max() > 0 and out["image_sd"].array.max() == 0
    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    noise = method.run({"bssfp": study["bssfp"], "t2w": study["t2w"]}, target="lge", strength=1.0, **FAST)
    assert noise["image"].metadata["synthesis"]["start"] == "noise"


def test_a_guidance_scale_of_zero_removes_that_sequences_influence(checkpoints, study):
    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    rng = np.random.default_rng(0)
    crops = {name: rng.uniform(-1, 1, (1, CROP, CROP)).astype(np.float32) for name in CONTRASTS}
    other = {**crops, "t2w": rng.uniform(-1, 1, (1, CROP, CROP)).astype(np.float32)}
    pairs = [(999, 600), (600, 200), (200, -1)]

    def run(given, scales):
        generator = torch.Generator().manual_seed(3)
        return method._slice(given, "lge", scales, True, 2, generator, pairs, "ddim", 1.0, None)[0]

    assert np.array_equal(run(crops, (2.0, 0.0)), run(other, (2.0, 0.0)))  # T2w (second) at 0: no influence
    assert not np.allclose(run(crops, (2.0, 3.0)), run(other, (2.0, 3.0)))
    assert parse_guidance("2,3") == (2.0, 3.0)
    for bad in ("2", "2,3,4", "a,b", "-1,2", "nan,1"):
        with pytest.raises(InputError, match="guidance"):
            parse_guidance(bad)


def test_bad_input_is_refused_with_a_clear_message(checkpoints, study):
    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    with pytest.raises(InputError, match="also given as an input"):
        method.run(dict(study), target="lge")
    with pytest.raises(InputError, match="needs both bSSFP and T2w; missing: T2w"):
        method.run({"bssfp": study["bssfp"]}, target="lge")
    cine_like = Volume(np.stack([study["t2w"].array] * 5), study["t2w"].spacing, study["t2w"].origin,
                       study["t2w"].direction)
    with pytest.raises(InputError, match="is it a cine"):
        method.run({"bssfp": study["bssfp"], "t2w": cine_like}, target="lge")
    far = Volume(study["t2w"].array, study["t2w"].spacing,
                 tuple(np.asarray(study["t2w"].origin) + 200 * np.reshape(study["t2w"].direction, (3, 3))[:, 2]),
                 study["t2w"].direction)
    with pytest.raises(GeometryError, match="different parts of the heart"):
        method.run({"bssfp": study["bssfp"], "t2w": far}, target="lge")
    with pytest.raises(InputError, match="unknown input.*'T2w'"):
        method.run({"bssfp": study["bssfp"], "T2w": study["t2w"]}, target="lge")
    with pytest.raises(InputError, match="the bSSFP has 3 slices"):
        method.run({"bssfp": study["bssfp"], "t2w": study["t2w"]}, target="lge", slices="9")
    for setting, match in (({"strength": 0.0}, "strength"), ({"target": "t1"}, "unknown target")):
        with pytest.raises(InputError, match=match):
            method.run({"bssfp": study["bssfp"], "t2w": study["t2w"]}, **setting)


def test_a_bssfp_cine_gives_its_end_diastolic_frame(checkpoints):
    whole = phantom.multi_sequence_study(phantom.subject_ids("test", 1)[0])
    cine, _ = phantom.render_cine(phantom.make_subject(phantom.subject_ids("test", 1)[0]))
    middle = cine.spatial_shape[0] // 2
    cine = Volume(cine.array[:6, middle:middle + 2], cine.spacing, _slab(whole["t2w"], middle, 2).origin,
                  cine.direction, {"trigger_times_ms": cine.metadata["trigger_times_ms"][:6]})
    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    out = method.run({"bssfp": cine, "t2w": _slab(whole["t2w"], middle, 2)}, target="lge", **FAST)
    assert out["image"].array.shape == cine.array.shape[1:]
    assert any("ED frame" in note for note in out["image"].metadata["synthesis"]["notes"])


def test_the_command_writes_the_synthesis_and_nothing_on_bad_input(checkpoints, study, tmp_path):
    paths = {}
    for name in CONTRASTS:
        paths[name] = tmp_path / f"{name}.nrrd"
        write_volume(study[name], paths[name])
    common = ["--checkpoint", str(checkpoints["cmrdiff"]), "--autoencoder", str(checkpoints["autoencoder"]),
              "--device", "cpu", "--samples", "2", "--ddim-steps", "3"]
    out = tmp_path / "lge_synthetic.nrrd"
    assert main(["multiseq", "--target", "lge", "--bssfp", str(paths["bssfp"]), "--t2w", str(paths["t2w"]),
                 "--out", str(out), "--guidance", "2,3", *common]) == 0
    assert out.is_file()
    bad = tmp_path / "bad.nrrd"
    assert main(["multiseq", "--target", "lge", "--bssfp", str(paths["bssfp"]), "--lge", str(paths["lge"]),
                 "--t2w", str(paths["t2w"]), "--out", str(bad), *common]) != 0
    assert main(["multiseq", "--target", "t2w", "--bssfp", str(paths["bssfp"]), "--out", str(bad), *common]) != 0
    assert main(["multiseq", "--target", "lge", "--bssfp", str(paths["bssfp"]), "--t2w", str(paths["t2w"]),
                 "--out", str(bad), "--format", "nifti", *common]) != 0  # a .nrrd name with --format nifti
    cine_path = tmp_path / "t2w_cine.nii.gz"
    cine = Volume(np.stack([study["t2w"].array] * 4), study["t2w"].spacing, study["t2w"].origin,
                  study["t2w"].direction, {"trigger_times_ms": [0.0, 100.0, 200.0, 300.0]})
    write_cine(cine, cine_path)
    assert main(["multiseq", "--target", "lge", "--bssfp", str(paths["bssfp"]), "--t2w", str(cine_path),
                 "--out", str(bad), *common]) != 0
    assert not bad.exists()


def test_the_heatmap_loss_weights_the_myocardium_and_poorly_predicted_pixels():
    from training.recipes.multi_sequence import heatmap_loss

    error = torch.ones(2, 3, 8, 8)
    no_wall = torch.zeros(2, 1, 16, 16)
    assert heatmap_loss(error, no_wall, 2.0, 1.0).item() == pytest.approx(1.0)  # uniform error: the plain MSE
    wall = no_wall.clone()
    wall[:, :, :4, :4] = 1.0
    error[:, :, :2, :2] = 3.0  # badly predicted inside the wall
    plain = error.pow(2).mean().item()
    assert heatmap_loss(error, wall, 2.0, 1.0).item() > heatmap_loss(error, wall, 0.0, 0.0).item() == pytest.approx(
        plain)


def test_the_myops_reader_finds_labelled_cases_and_maps_their_labels(tmp_path):
    from training.recipes.multi_sequence import MYOPS_LABELS, myops_cases, myops_examples

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:48, :48]
    radius = np.hypot(yy - 24, xx - 24)
    labels = np.zeros((2, 48, 48), np.int16)
    labels[:, radius < 14] = MYOPS_LABELS["myocardium"]
    labels[:, radius < 8] = MYOPS_LABELS["lv_blood"]
    labels[:, (radius >= 8) & (radius < 14) & (xx > 24)] = MYOPS_LABELS["oedema"]
    labels[:, (radius >= 8) & (radius < 13) & (xx > 30)] = MYOPS_LABELS["scar"]
    for case in ("myops_training_101", "myops_training_102", "myops_training_103"):
        for part in ("C0", "T2", "DE", "gd"):
            if case.endswith("103") and part == "gd":
                continue  # unlabelled: left out
            array = labels if part == "gd" else rng.uniform(0, 500, labels.shape).astype(np.float32)
            folder = tmp_path / ("train25_myops_gd" if part == "gd" else "train25")
            write_volume(Volume(array, (1.2, 1.2, 8.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())),
                         folder / f"{case}_{part}.nii.gz")
    cases = myops_cases(tmp_path)
    assert sorted(cases) == ["myops_training_101", "myops_training_102"]
    config = {"crop_size": 32, "pixel_mm": 2.0}
    train = myops_examples(tmp_path, "train", 0.5, config)
    assert train["lge"].shape == (2, 1, 32, 32) and train["lge"].min() >= -1 and train["lge"].max() <= 1
    assert train["scar"].any() and train["oedema"].any() and not (train["scar"] & train["oedema"]).any()
    assert (train["wall"] >= train["scar"]).all()
    assert set(myops_examples(tmp_path, "validation", 0.5, config)["case"]) == {1}


def test_the_recipes_train_on_a_tiny_phantom(tmp_path):
    from training.__main__ import main as train

    def config(name, **changes):
        data = json.loads((CONFIGS / f"{name}.json").read_text())
        data.update(data=({"source": "phantom", "train_subjects": 2, "validation_subjects": 1,
                           "cache": str(tmp_path / "cache")}), **changes)
        data["train"].update(steps=2, validate_every=2, batch_size=2)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        return str(path)

    ae = tmp_path / "ae"
    assert train(["multi_sequence_autoencoder", "--config", config("multi_sequence_autoencoder_demo"),
                  "--out", str(ae)]) == 0
    assert train(["multi_sequence", "--config", config("multi_sequence_demo", autoencoder_checkpoint=str(ae)),
                  "--out", str(tmp_path / "cmrdiff")]) == 0
    turned = {"augmentation": {"dihedral": True}}
    assert train(["multi_sequence", "--config", config("multi_sequence_demo", autoencoder_checkpoint=str(ae), **turned),
                  "--out", str(tmp_path / "cmrdiff_dihedral")]) == 0
    assert train(["multi_sequence_pix2pix", "--config", config("multi_sequence_pix2pix_demo", **turned),
                  "--out", str(tmp_path / "pix2pix")]) == 0
    written = json.loads((tmp_path / "cmrdiff" / "config.json").read_text())
    assert written["loss"]["heatmap"] is True and written["training_summary"]["train_slices"] > 5
    assert "augmentation" not in written
    for name in ("cmrdiff_dihedral", "pix2pix"):
        assert json.loads((tmp_path / name / "config.json").read_text())["augmentation"] == turned["augmentation"]
    assert list((tmp_path / "cache").glob("multi_sequence_train_2_*.npz"))


def test_the_evaluation_scores_every_direction_and_reports_missing_baselines(checkpoints, tmp_path):
    import dataclasses

    from CMRSynthesisLib.evaluation import evaluate
    from CMRSynthesisLib.methods.multi_sequence import EVALUATION, SPEC

    def two_slices(split, subjects, method):
        cases = EVALUATION.cases(split, subjects, method)
        middle = sorted({case.slice for case in cases})[len({case.slice for case in cases}) // 2]
        return [case for case in cases if case.slice == middle]

    result = evaluate(SPEC, tmp_path / "evaluation", splits=["test"], subjects=1, options=FAST,
                      checkpoint=checkpoints["cmrdiff"], checkpoints={"autoencoder": checkpoints["autoencoder"]},
                      device="cpu", evaluation=dataclasses.replace(EVALUATION, cases=two_slices),
                      baselines_from=tmp_path / "no_baselines_here")
    document = result["documents"]["test"]
    method = document["models"]["multi_sequence"]
    for target in CONTRASTS:
        assert method[f"psnr_{target}"]["n"] == 1 and np.isfinite(method[f"ssim_{target}"]["mean"])
    assert "unavailable" in str(document["models"]["pix2pix"]).lower()  # no checkpoint in baselines_from
    assert document["models"]["pure_noise"]["psnr_lge"]["n"] == 1
    assert (tmp_path / "evaluation" / "test" / "metrics.json").is_file()


def test_the_slicer_task_asks_for_exactly_the_two_other_sequences(tmp_path):
    from CMRSynthesisLib import method_tasks
    from CMRSynthesisLib.methods import get_spec

    spec = get_spec("multi_sequence")
    node = object()
    texts = {"target": "t2w"}
    assert "needs both bSSFP and LGE; missing: LGE" in method_tasks.missing_input(spec, {"bssfp": node}, texts)
    assert "also given" in method_tasks.missing_input(spec, {"bssfp": node, "t2w": node, "lge": node}, texts)
    assert method_tasks.missing_input(spec, {"bssfp": node, "lge": node}, texts) == ""
    files = {"bssfp": tmp_path / "b.nrrd", "lge": tmp_path / "l.nrrd"}
    subcommand, options = method_tasks.method_command(spec, tmp_path, files, {**texts, "guidance": "1,3"})
    assert subcommand == "multiseq" and options["target"] == "t2w" and options["guidance"] == "1,3"
    assert options["bssfp"] == files["bssfp"] and options["lge"] == files["lge"] and options["t2w"] is None


def test_the_dicom_export_is_marked_synthetic(checkpoints, study, tmp_path):
    import pydicom

    paths = {}
    for name in ("bssfp", "t2w"):
        paths[name] = tmp_path / f"{name}.nrrd"
        write_volume(study[name], paths[name])
    out = tmp_path / "pacs"
    assert main(["multiseq", "--target", "lge", "--bssfp", str(paths["bssfp"]), "--t2w", str(paths["t2w"]),
                 "--out", str(out), "--format", "dicom", "--checkpoint", str(checkpoints["cmrdiff"]),
                 "--autoencoder", str(checkpoints["autoencoder"]), "--device", "cpu", "--samples", "2",
                 "--ddim-steps", "3"]) == 0
    first = pydicom.dcmread(min(out.rglob("*.dcm")))
    assert first.SeriesDescription.startswith("SYNTHETIC") and "DERIVED" in first.ImageType


def test_a_checkpoint_brings_its_own_guidance_and_strength_per_target(checkpoints, study, tmp_path):
    from CMRSynthesisLib.checkpoints import load_checkpoint

    weights, config = load_checkpoint(checkpoints["cmrdiff"], expected_method="multi_sequence")
    config = {key: value for key, value in config.items() if key != "weights_sha256"}
    tuned = save_checkpoint(tmp_path / "tuned", weights, {**config, "inference": {
        "guidance": {"lge": "1,3"}, "strength": {"lge": 1.0}}})
    method = load_method("multi_sequence", tuned, autoencoder=checkpoints["autoencoder"], device="cpu")
    inputs = {"bssfp": study["bssfp"], "t2w": study["t2w"]}
    synthesis = method.run(inputs, target="lge", slices="2", **FAST)["image"].metadata["synthesis"]
    assert synthesis["guidance"] == {"bssfp": 1.0, "t2w": 3.0} and synthesis["start"] == "noise"
    given = method.run(inputs, target="lge", slices="2", guidance="2,0", strength=0.4,
                       **FAST)["image"].metadata["synthesis"]
    assert given["guidance"] == {"bssfp": 2.0, "t2w": 0.0} and given["start"] == "bssfp"
    other = method.run({"bssfp": study["bssfp"], "lge": study["lge"]}, target="t2w", slices="2", **FAST)
    assert other["image"].metadata["synthesis"]["guidance"] == {"bssfp": 2.0, "lge": 2.0}  # not tuned: the default


def test_a_saved_guidance_search_writes_a_tuned_copy_and_leaves_the_checkpoint_alone(checkpoints, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from multiseq import write_tuned_checkpoint

    source = checkpoints["cmrdiff"]
    before = {path.name: path.read_bytes() for path in source.iterdir()}
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"split": "validation", "subjects": 1, "middle_slices_per_subject": 2, "chosen": {
        "bssfp": {"guidance": "1,1", "strength": 0.3, "psnr": 20.0}, "t2w": {"guidance": "3,2", "strength": 0.7},
        "lge": {"guidance": "5,1", "strength": 1.0}}}))
    write_tuned_checkpoint(source, search, tmp_path / "tuned")
    method = load_method("multi_sequence", tmp_path / "tuned", autoencoder=checkpoints["autoencoder"], device="cpu")
    assert [method.defaults(target) for target in CONTRASTS] == [("1,1", 0.3), ("3,2", 0.7), ("5,1", 1.0)]
    assert "search.json" in method.config["inference"]["chosen"]
    assert {path.name: path.read_bytes() for path in source.iterdir()} == before


def test_a_slice_gets_the_same_result_alone_as_in_the_stack(checkpoints, study):
    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    inputs = {"bssfp": study["bssfp"], "t2w": study["t2w"]}
    stack = method.run(inputs, target="lge", **FAST)["image"].array
    alone = method.run(inputs, target="lge", slices="2", **FAST)["image"].array
    np.testing.assert_allclose(alone[1], stack[1], atol=1e-5)
    assert not alone[0].any() and not alone[2].any()


def test_the_autoencoder_ceiling_scores_a_reconstruction_as_the_evaluation_scores_a_synthesis(checkpoints):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from multiseq_autoencoder_ceiling import Lossless, ceiling

    from CMRSynthesisLib.methods.multi_sequence import evaluation_cases

    method = load_method("multi_sequence", checkpoints["cmrdiff"], autoencoder=checkpoints["autoencoder"],
                         device="cpu")
    cases = evaluation_cases("test", 1, method)
    middle = sorted({case.slice for case in cases})[len({case.slice for case in cases}) // 2]
    cases = [case for case in cases if case.slice == middle]
    crop = ceiling(cases, method, Lossless(), torch.device("cpu"))["mean"]
    untrained = ceiling(cases, method, method.codec, torch.device("cpu"))["mean"]
    for target in CONTRASTS:  # the crop's resampling alone loses far less than an untrained autoencoder
        assert crop[target]["slices"] == 1 and crop[target]["psnr"] > untrained[target]["psnr"] + 8.0
        assert crop[target]["ssim"] > 0.5 > untrained[target]["ssim"]
