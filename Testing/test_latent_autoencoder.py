"""The shared latent-autoencoder training (training/autoencoder.py) and the virtual-LGE autoencoder recipe: the KL
term in closed form, a tiny AutoencoderKL that learns to reconstruct (validation L1 falls) with its adversarial
phase, exact resume, and the recipe's phantom LGE crops and checkpoint through `python -m training`."""

import json

import numpy as np
import pytest
import torch

from CMRSynthesisLib.checkpoints import load_checkpoint
from CMRSynthesisLib.diffusion.latent import LatentCodec
from CMRSynthesisLib.diffusion.networks import build_network, load_weights
from training.__main__ import main as train
from training.autoencoder import kl_divergence, train_autoencoder
from training.distributed import Context
from training.recipes.virtual_lge import lge_crops

TINY = {
    "description": "test", "data": {"source": "phantom", "train_subjects": 1, "validation_subjects": 1},
    "crop_size": 16, "pixel_mm": 6.0,
    "autoencoder": {"class": "AutoencoderKL", "args": {
        "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [8, 8], "latent_channels": 2,
        "num_res_blocks": 1, "norm_num_groups": 4, "attention_levels": [False, False],
        "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}},
    "discriminator": {"class": "PatchDiscriminator", "args": {
        "spatial_dims": 2, "num_layers_d": 1, "channels": 8, "in_channels": 1, "out_channels": 1}},
    "loss": {"kl_weight": 1e-6, "adversarial_weight": 0.01, "adversarial_start": 30},
    "train": {"steps": 60, "batch_size": 8, "lr": 0.003, "ema_decay": 0.8, "seed": 0, "validate_every": 30},
}


def _blobs(count: int, seed: int) -> np.ndarray:
    """(count, 1, 16, 16) smooth random discs in [-1, 1]: something an autoencoder can learn quickly."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:16, :16]
    centres = rng.uniform(4, 12, (count, 2))
    radius = rng.uniform(2, 5, count)
    inside = np.hypot(rows - centres[:, 0, None, None], cols - centres[:, 1, None, None]) < radius[:, None, None]
    return (np.where(inside, 0.8, -0.6)[:, None]).astype(np.float32)


def test_kl_divergence_in_closed_form():
    assert float(kl_divergence(torch.zeros(3), torch.ones(3))) == pytest.approx(0.0, abs=1e-6)
    mu, sigma = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0])
    expected = 0.5 * np.mean([1.0, 4.0 - np.log(4.0) - 1.0])
    assert float(kl_divergence(mu, sigma)) == pytest.approx(expected, rel=1e-5)


def test_a_tiny_autoencoder_learns_to_reconstruct_and_resumes_exactly(tmp_path):
    context = Context(0, 1, torch.device("cpu"))
    train_images, validation = _blobs(64, 0), _blobs(16, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = float(torch.nn.functional.l1_loss(build_network(TINY["autoencoder"])(torch.from_numpy(validation))[0],
                                                      torch.from_numpy(validation)))
    torch.manual_seed(0)
    weights, product = train_autoencoder(TINY, tmp_path / "full", context, False, train_images, validation)
    history = json.loads((tmp_path / "full" / "training_state" / "state.json").read_text())["history"]
    assert history[-1]["validation_l1"] < 0.3 * untrained, (untrained, history)
    assert "train_loss_discriminator" in history[-1]  # the adversarial phase ran
    assert product["scale_factor"] > 0 and product["autoencoder"] == TINY["autoencoder"]
    codec = LatentCodec(load_weights(build_network(TINY["autoencoder"]), weights).eval(), product["scale_factor"])
    with torch.no_grad():
        latents = codec.encode(torch.from_numpy(train_images[:8]))
    assert latents.shape == (8, 2, 8, 8) and 0.5 < float(latents.std()) < 2.0  # scaled to about unit variance

    torch.manual_seed(0)
    half = {**TINY, "train": {**TINY["train"], "steps": 30}}
    train_autoencoder(half, tmp_path / "split", context, False, train_images, validation)
    resumed, _ = train_autoencoder(TINY, tmp_path / "split", context, True, train_images, validation)
    for key, value in weights.items():
        assert torch.equal(value, resumed[key]), key


def test_missing_loss_settings_are_named(tmp_path):
    config = {**TINY, "loss": {"kl_weight": 1e-6}}
    with pytest.raises(ValueError, match="adversarial_weight, adversarial_start"):
        train_autoencoder(config, tmp_path, Context(0, 1, torch.device("cpu")), False, _blobs(8, 0), _blobs(4, 1))


def test_the_recipe_trains_on_phantom_lge_crops_into_a_checkpoint(tmp_path):
    crops = lge_crops("validation", 1, TINY)
    assert crops.ndim == 4 and crops.shape[1:] == (1, 16, 16) and len(crops) >= 5
    assert crops.min() >= -1.0 and crops.max() <= 1.0 and crops.std() > 0.2
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, "train": {**TINY["train"], "steps": 4, "validate_every": 2}}))
    assert train(["virtual_lge_autoencoder", "--config", str(config), "--out", str(tmp_path / "ae")]) == 0
    weights, saved = load_checkpoint(tmp_path / "ae", expected_method="virtual_lge")
    assert saved["part"] == "autoencoder" and saved["scale_factor"] > 0 and "virtual_lge_autoencoder" in saved["command"]
    load_weights(build_network(saved["autoencoder"]), weights)
    # a second training seed of the same config: recorded in the checkpoint and its command, other weights
    assert train(["virtual_lge_autoencoder", "--config", str(config), "--out", str(tmp_path / "ae1"), "--seed",
                  "1"]) == 0
    other, again = load_checkpoint(tmp_path / "ae1", expected_method="virtual_lge")
    assert saved["train"]["seed"] == 0 and again["train"]["seed"] == 1 and again["command"].endswith("--seed 1")
    assert not all(torch.equal(weights[key], other[key]) for key in weights)


def test_virtual_lge_examples_of_a_phantom_subject():
    from training.recipes.virtual_lge import phantom_examples

    config = {"crop_size": 32, "pixel_mm": 3.0, "frames": 4, "clusters": 3}
    examples = phantom_examples("train", 1, config)
    count = len(examples["lge"])
    assert count >= 5 and examples["cine"].shape == (count, 4, 32, 32)
    assert examples["kinematics"].shape == (count, 4, 4, 32, 32) and examples["curves"].shape == (count, 8, 32, 32)
    assert examples["lge"].shape == (count, 1, 32, 32) and -1.0 <= examples["lge"].min() < examples["lge"].max() <= 1.0
    assert set(np.unique(examples["clusters"][examples["covered"]])) == {1, 2, 3}
    assert np.all(examples["clusters"][~examples["covered"]] == 0)
    assert examples["myocardium"].any(axis=(1, 2)).all()


def _tiny_diffusion(variant: str, autoencoder: str, cache: str) -> dict:
    kinematics, relaxation = variant in ("cpkdm", "no_relaxation"), variant in ("cpkdm", "no_kinematics")
    return {
        "description": "test", "variant": variant,
        "data": {"source": "phantom", "train_subjects": 1, "validation_subjects": 1, "cache": cache},
        "autoencoder_checkpoint": autoencoder, "crop_size": 16, "pixel_mm": 6.0, "frames": 4, "clusters": 3,
        "factor": 2, "latent_channels": 2, "curves": 8,
        "kinematic_encoder": {"channels": 8}, "morphology": {"channels": 4, "clusters": 3},
        "denoiser": {"class": "DiffusionModelUNet", "args": {
            "spatial_dims": 2, "out_channels": 2, "channels": [8, 8], "attention_levels": [False, kinematics],
            "num_res_blocks": 1, "norm_num_groups": 4, "num_head_channels": 8, "with_conditioning": kinematics,
            "cross_attention_dim": 8 if kinematics else None,
            "in_channels": 2 + (4 if relaxation else 0) + (4 * 4 + 8 * 4 if variant == "pure_data_driven" else 0)}},
        "schedule": {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02},
        "loss": {"morphology_weight": 0.5, "edge_weight": 4.0, "adversarial_weight": 0.1, "adversarial_start": 1,
                 "adversarial_max_timestep": 1000},
        "discriminator": {"class": "PatchDiscriminator", "args": {
            "spatial_dims": 2, "num_layers_d": 1, "channels": 8, "in_channels": 1, "out_channels": 1}},
        "train": {"steps": 3, "batch_size": 2, "lr": 0.001, "ema_decay": 0.9, "seed": 0, "validate_every": 3}}


def test_virtual_lge_latent_diffusion_variants_train_on_the_same_examples(tmp_path):
    from CMRSynthesisLib.methods.cpkdm_networks import build_cpkdm

    config = tmp_path / "ae.json"
    config.write_text(json.dumps({**TINY, "train": {**TINY["train"], "steps": 2, "validate_every": 2}}))
    assert train(["virtual_lge_autoencoder", "--config", str(config), "--out", str(tmp_path / "ae")]) == 0
    for variant in ("cpkdm", "pure_data_driven"):
        config = tmp_path / f"{variant}.json"
        settings = _tiny_diffusion(variant, str(tmp_path / "ae"), str(tmp_path / "cache"))
        if variant == "cpkdm":
            settings["augmentation"] = {"dihedral": True}
        config.write_text(json.dumps(settings))
        assert train(["virtual_lge", "--config", str(config), "--out", str(tmp_path / variant)]) == 0
        weights, saved = load_checkpoint(tmp_path / variant, expected_method="virtual_lge")
        assert saved["part"] == "diffusion" and saved["variant"] == variant
        assert saved.get("augmentation") == ({"dihedral": True} if variant == "cpkdm" else None)
        load_weights(build_cpkdm(saved), weights)  # the checkpoint rebuilds its network from its own config
        assert saved["autoencoder"]["scale_factor"] > 0 and saved["training_summary"]["steps"] == 3
        state = json.loads((tmp_path / variant / "training_state" / "state.json").read_text())
        assert np.isfinite(state["history"][-1]["validation_loss"])
        logged = {key for row in state["history"] for key in row}
        assert {f"train_loss_{key}" for key in ("denoising", "adversarial", "discriminator")} <= logged, logged
    pix2pix = {key: value for key, value in _tiny_diffusion("cpkdm", "", str(tmp_path / "cache")).items()
               if key in ("description", "data", "crop_size", "pixel_mm", "frames", "clusters", "curves", "train")}
    pix2pix.update(variant="pix2pix", l1_weight=100.0, augmentation={"dihedral": True}, generator={"class": "UNet", "args": {
        "spatial_dims": 2, "in_channels": 4 + 8, "out_channels": 1, "channels": [8, 8], "strides": [2]}},
        discriminator={"class": "PatchDiscriminator", "args": {
            "spatial_dims": 2, "num_layers_d": 1, "channels": 8, "in_channels": 4 + 8 + 1, "out_channels": 1}})
    config = tmp_path / "pix2pix.json"
    config.write_text(json.dumps(pix2pix))
    assert train(["virtual_lge_pix2pix", "--config", str(config), "--out", str(tmp_path / "pix2pix")]) == 0
    _, saved = load_checkpoint(tmp_path / "pix2pix", expected_method="virtual_lge")
    assert saved["part"] == "pix2pix" and saved["generator"]["args"]["in_channels"] == 12
    assert saved["augmentation"] == {"dihedral": True}
    assert len(list((tmp_path / "cache").glob("virtual_lge_train_1_*.npz"))) == 1  # rendered once, shared


def test_morphology_loss_counts_covered_pixels_only_and_falls_as_the_mask_is_learnt():
    from CMRSynthesisLib.methods.cpkdm_networks import CPKDMNetwork, MorphologyAutoencoder
    from training.recipes.virtual_lge import morphology_loss

    torch.manual_seed(0)
    network = CPKDMNetwork(torch.nn.Identity(), latent_channels=2, factor=2, frames=4, curves=8,
                           kinematic_encoder=None, morphology=MorphologyAutoencoder(8, 2, 8, 2))
    curves = torch.randn(4, 8, 8, 8)
    clusters = (curves[:, :1].mean(1) > 0).long() + 1  # two clusters the curves tell apart
    covered = torch.ones(4, 8, 8, dtype=torch.bool)
    assert float(morphology_loss(network, curves, clusters, torch.zeros_like(covered), 4.0)) == 0.0
    first = float(morphology_loss(network, curves, clusters, covered, 4.0))
    optimiser = torch.optim.Adam(network.parameters(), lr=0.01)
    for _ in range(40):
        loss = morphology_loss(network, curves, clusters, covered, 4.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss) < 0.5 * first


def test_augmented_examples_keep_the_kinematic_signs_and_each_latent_is_encoded_turned():
    from training.autoencoder import augmented_latents
    from training.recipes.virtual_lge import augment

    batch = {"kinematics": torch.randn(2, 3, 4, 8, 8), "cine": torch.randn(2, 3, 8, 8),
             "clusters": torch.randint(0, 4, (2, 8, 8), dtype=torch.uint8), "covered": torch.rand(2, 8, 8) > 0.5}
    out = augment(batch, [0, 4])
    assert all(torch.equal(out[key][0], batch[key][0]) for key in batch)
    assert torch.equal(out["clusters"][1], batch["clusters"][1].flip(-1)) and out["covered"].dtype == torch.bool
    assert torch.equal(out["kinematics"][1, :, 3], -batch["kinematics"][1, :, 3].flip(-1))  # circumferential displacement
    assert torch.equal(out["kinematics"][1, :, :3], batch["kinematics"][1, :, :3].flip(-1))

    class Codec:  # a stand-in encoder: every other pixel
        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return images[:, :, ::2, ::2]

    crops = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    latents = augmented_latents(crops, Codec(), torch.device("cpu"), True)
    assert latents.shape == (8, 3, 1, 4, 4)
    assert torch.equal(latents[1], torch.rot90(torch.from_numpy(crops), 1, dims=(-2, -1))[:, :, ::2, ::2])
    assert augmented_latents(crops, Codec(), torch.device("cpu"), False).shape == (1, 3, 1, 4, 4)
