"""Training of virtual LGE (CPKDM, paper 000): the LGE latent autoencoder (recipe "virtual_lge_autoencoder"), on which
KMDI's latent diffusion runs, and the latent diffusion models on it (`train_latent_diffusion`: CPKDM and its
ablations without kinematics or relaxation, and the pure data-driven model; variant in the config), all on the
same examples.

LGE crops: every slice with an LV at ED of the phantom subjects of a split, its LGE on the LV crop (`LVCrop`,
centred on the true LV blood pool at ED; `crop_size` pixels of `pixel_mm`), scaled to [-1, 1] by the slice's
0.5th / 99.5th percentiles. Subjects vary in acquisition (field strength, matrix, noise, shading, LGE nulling), so
the autoencoder learns LGE of every contrast it will see.

Examples (`phantom_examples`): per such slice, the method's inputs on the same crop (`virtual_lge_inputs`) from the
subject's cine drawn without infarct contrast (the infarct visible only by its motion, and in its native T1) and its
native MOLLI, the clustering mask of the recovery curves (`curve_clustering`, the MR-ESMP supervision), the LGE
target, and the myocardium and scar masks for the metrics. ED masks are the phantom's true labels.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from CMRSynthesisLib import phantom, preprocess
from CMRSynthesisLib.analysis import curve_clustering, kinematic_maps, relaxation, strain, t1fit
from CMRSynthesisLib.analysis.curve_clustering import cluster_curves
from CMRSynthesisLib.analysis.kinematic_maps import KINEMATIC_CHANNELS
from CMRSynthesisLib.analysis.relaxation import recovery_curves
from CMRSynthesisLib.diffusion.conditioning import Condition
from CMRSynthesisLib.diffusion.latent import load_codec
from CMRSynthesisLib.diffusion.model import DiffusionModel
from CMRSynthesisLib.diffusion.networks import build_network
from CMRSynthesisLib.diffusion.training import denoising_step, diffusion_loss
from CMRSynthesisLib.methods import virtual_lge_inputs
from CMRSynthesisLib.methods.cpkdm_networks import (
    CPKDMNetwork,
    build_cpkdm,
    condition_values,
    conditions_of,
    edge_weights,
)
from CMRSynthesisLib.methods.virtual_lge import LGE_PERCENTILES, lge_on_crop, lv_crop
from CMRSynthesisLib.methods.virtual_lge_inputs import slice_inputs
from CMRSynthesisLib.phantom import anatomy as phantom_anatomy
from CMRSynthesisLib.phantom import contrast as phantom_contrast
from CMRSynthesisLib.phantom import motion as phantom_motion
from CMRSynthesisLib.phantom import study as phantom_study

from .. import pix2pix
from ..adversarial import discriminator_loss, generator_loss, patch_logits
from ..autoencoder import augmented_latents, encode_in_batches, train_autoencoder
from ..datasets import cached_arrays, render_workers, subject_examples
from ..dihedral import dihedral_requested, mirror_signs, random_transforms, transform_batch
from ..distributed import Context
from ..loop import Trainer

METHOD = "virtual_lge"
# The modules whose code makes the examples (with this module's example functions, added below): their source is
# part of the cache key, so a change to any of them renders the examples anew.
EXAMPLE_MODULES = (virtual_lge_inputs, kinematic_maps, relaxation, curve_clustering, strain, t1fit, phantom_anatomy, phantom_motion,
                   phantom_contrast, phantom_study, preprocess)


def lge_crop_rows(subject_id: int, config: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """One phantom subject's rows for `lge_crops`: "lge", the (1, S, S) crop of each slice with LV blood."""
    study = phantom.lge_study(subject_id)
    lge, blood = study["lge"], study["masks"]["blood"]
    spacing_yx = (lge.spacing[1], lge.spacing[0])
    return {"lge": [lge_on_crop(lge.array[z], lv_crop(blood[z], spacing_yx, config))
                    for z in range(lge.spatial_shape[0]) if blood[z].any()]}


def lge_crops(split: str, subjects: int, config: dict[str, Any], workers: int = 1) -> np.ndarray:
    """(N, 1, S, S) float32 LGE crops in [-1, 1] of every LV slice of the first `subjects` phantom subjects of
    `split` (module docstring; `lge_crop_rows` in `workers` processes: `datasets.subject_examples`)."""
    return subject_examples(phantom.subject_ids(split, subjects), functools.partial(lge_crop_rows, config=config),
                            workers)["lge"]


def subject_rows(subject_id: int, config: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """One phantom subject's rows for `phantom_examples`: per LV slice, cine (F, S, S), kinematics (F, 4, S, S), curves
    (n, S, S), covered (S, S) bool, clusters (S, S) uint8, lge (1, S, S), myocardium and scar (S, S) bool, subject."""
    frames = int(config["frames"])
    rows: dict[str, list[np.ndarray]] = {key: [] for key in ("cine", "kinematics", "curves", "covered", "clusters",
                                                              "lge", "myocardium", "scar", "subject")}
    study = phantom.lge_study(subject_id)
    cine, _ = phantom.render_cine(study["subject"], infarct_contrast=False)
    relaxation = recovery_curves(phantom.render_molli(study["subject"], study["labels"]))
    masks, lge = study["masks"], study["lge"]
    lge.require_same_geometry(cine, "the phantom's LGE and cine")  # the arrays below are indexed alike
    lge.require_same_geometry(relaxation.curves, "the phantom's LGE and MOLLI")
    spacing_yx = (lge.spacing[1], lge.spacing[0])
    for z in range(lge.spatial_shape[0]):
        myocardium = masks["myocardium"][z] | masks["scar"][z]
        if not masks["blood"][z].any() or not myocardium.any():
            continue
        crop = lv_crop(masks["blood"][z], spacing_yx, config)
        inputs = slice_inputs(cine.array[:, z], myocardium, masks["blood"][z], relaxation.curves.array[:, z],
                              relaxation.fitted[z], spacing_yx, crop, 0, frames)
        for name in ("cine", "kinematics", "curves", "covered"):
            rows[name].append(inputs[name])
        rows["clusters"].append(cluster_curves(inputs["curves"], inputs["covered"], clusters=int(config["clusters"])))
        rows["lge"].append(lge_on_crop(lge.array[z], crop))
        rows["myocardium"].append(crop.extract(myocardium.astype(np.float32)) > 0.5)
        rows["scar"].append(crop.extract(masks["scar"][z].astype(np.float32)) > 0.5)
        rows["subject"].append(np.asarray(subject_id))
    return rows


def phantom_examples(split: str, subjects: int, config: dict[str, Any], workers: int = 1) -> dict[str, np.ndarray]:
    """Arrays of every LV slice of the first `subjects` phantom subjects of `split` (module docstring; `subject_rows`
    in `workers` processes: `datasets.subject_examples`): cine (N, F, S, S), kinematics (N, F, 4, S, S), curves
    (N, n, S, S), covered (N, S, S) bool, clusters (N, S, S) uint8 (0 where not covered), lge (N, 1, S, S) in
    [-1, 1], myocardium and scar (N, S, S) bool, subject (N,). config: crop_size, pixel_mm, frames (cine phases) and
    "clusters" (number of curve clusters)."""
    return subject_examples(phantom.subject_ids(split, subjects), functools.partial(subject_rows, config=config),
                            workers)


def train_lge_autoencoder(config: dict[str, Any], out: Path, context: Context, resume: bool
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The LGE AutoencoderKL of virtual LGE (training.autoencoder) on phantom LGE crops."""
    data = config["data"]
    if data.get("source") != "phantom":
        raise ValueError(f"the virtual-LGE autoencoder trains on the phantom (data source 'phantom'); got "
                         f"{data.get('source')!r}")
    train = lge_crops("train", int(data["train_subjects"]), config, render_workers(config))
    validation = lge_crops("validation", int(data["validation_subjects"]), config, render_workers(config))
    weights, product = train_autoencoder(config, out, context, resume, train, validation)
    return weights, {"method": METHOD, "part": "autoencoder", "crop_size": int(config["crop_size"]),
                     "pixel_mm": float(config["pixel_mm"]), "lge_percentiles": list(LGE_PERCENTILES), **product}


def cached_phantom_examples(split: str, subjects: int, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """`phantom_examples`, cached in config["data"]["cache"] (if set) under their settings and the code that makes
    them (EXAMPLE_MODULES and this module's example functions), so every variant trains on the very same examples and a change to that code renders anew."""
    settings = {key: config[key] for key in ("crop_size", "pixel_mm", "frames", "clusters")}
    cache = Path(config["data"]["cache"]) if config["data"].get("cache") else None
    return cached_arrays(cache, f"virtual_lge_{split}_{subjects}", [split, subjects, settings],
                         lambda: phantom_examples(split, subjects, config, render_workers(config)),
                         code=(*EXAMPLE_MODULES, subject_rows, lge_on_crop, lv_crop))


def augment(arrays: dict[str, torch.Tensor], transforms: list[int]) -> dict[str, torch.Tensor]:
    """A batch of examples (`phantom_examples` keys, N first) with example b under dihedral transform transforms[b],
    the kinematic maps' circumferential displacement negated where it is mirrored (`dihedral.mirror_signs`)."""
    signs = mirror_signs(KINEMATIC_CHANNELS)
    return {key: transform_batch(value, transforms, signs if key == "kinematics" else None, channel_axis=2)
            for key, value in arrays.items()}


def morphology_loss(network: torch.nn.Module, curves: torch.Tensor, clusters: torch.Tensor, covered: torch.Tensor,
                    edge_weight: float) -> torch.Tensor:
    """MR-ESMP's supervision: the morphology decoder's cross-entropy against the clustering mask (clusters 1..K, 0
    where not covered: left out), weighted up on cluster edges (`edge_weights`)."""
    _, logits = network.morphology(curves)
    target = (clusters.long() - 1).clamp(min=0)
    weights = edge_weights(clusters.long(), edge_weight) * covered.float()
    return (F.cross_entropy(logits, target, reduction="none") * weights).sum() / weights.sum().clamp(min=1.0)


def train_latent_diffusion(config: dict[str, Any], out: Path, context: Context, resume: bool
                           ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """KMDI's latent diffusion for config["variant"] (`cpkdm_networks.VARIANTS`) on the LGE latents of the frozen
    autoencoder config["autoencoder_checkpoint"]. Loss, per step (config["loss"]):

        L = L_denoising + morphology_weight L_morp (with the relaxation branch: `morphology_loss`)
            + adversarial_weight L_adv (from step adversarial_start on)

    With config["augmentation"]["dihedral"] (`dihedral.dihedral_requested`), every drawn example is turned / mirrored by
    one of the crop's eight symmetries, its conditions, clusters and LGE latent alike (`augment`,
    `autoencoder.augmented_latents`).
    L_adv: the paper's discriminator on the generated images ("KMDI introduces a discriminator, aiming to distinguish
    the final generated images from real images"): the predicted x0 of the draws with t < adversarial_max_timestep
    (where x0 is an image, not noise) is decoded by the frozen decoder and scored by a PatchGAN (config
    "discriminator") against the real LGE crops (`training.adversarial`); the gradient reaches the denoiser through
    the decoder. L_denoising: the squared error of what the denoiser predicts (schedule.prediction_type: the paper's
    epsilon, eq. 4, or x0 or v). Validation: that loss on the validation examples at fixed draws."""
    data = config["data"]
    if data.get("source") != "phantom":
        raise ValueError(f"virtual LGE trains on the phantom (data source 'phantom'); got {data.get('source')!r}")
    train = cached_phantom_examples("train", int(data["train_subjects"]), config)
    validation = cached_phantom_examples("validation", int(data["validation_subjects"]), config)
    checkpoint = Path(config["autoencoder_checkpoint"])
    codec, autoencoder = load_codec(checkpoint, METHOD, context.device)
    augmenting = dihedral_requested(config)
    train_latents = augmented_latents(train["lge"], codec, context.device, augmenting)
    validation_latents = encode_in_batches(validation["lge"], codec, context.device)
    variant, factor = config["variant"], int(config["factor"])
    network = build_cpkdm(config)
    names = conditions_of(variant)
    model = DiffusionModel.from_config(network, {**config["schedule"], "clip_sample": False},
                                       tuple(Condition(name, "concat") for name in names))
    loss_cfg = config.get("loss", {})
    morphology_weight = float(loss_cfg.get("morphology_weight", 0.0))
    adversarial_weight = float(loss_cfg.get("adversarial_weight", 0.0))
    adversarial_start = int(loss_cfg.get("adversarial_start", 0))
    adversarial_max_t = int(loss_cfg.get("adversarial_max_timestep", model.schedule.num_train_timesteps))
    train_cfg = config["train"]
    batch = int(train_cfg["batch_size"])
    networks = {"model": network}
    if adversarial_weight > 0:
        networks["discriminator"] = build_network(config["discriminator"])

    def tensors(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, torch.Tensor]:
        return {key: torch.from_numpy(np.ascontiguousarray(arrays[key][index])).to(context.device)
                for key in ("cine", "kinematics", "curves", "clusters", "covered", "lge")}

    def step(nets: dict[str, torch.nn.Module], generator: torch.Generator) -> dict[str, torch.Tensor]:
        net = nets["model"]
        index = torch.randint(0, train_latents.shape[1], (batch,), generator=generator,
                              device=generator.device).cpu().numpy()
        arrays = tensors(train, index)
        transforms = random_transforms(batch, generator) if augmenting else [0] * batch
        if augmenting:
            arrays = augment(arrays, transforms)
        values = condition_values(variant, arrays["cine"], arrays["kinematics"], arrays["curves"], factor)
        step_model = DiffusionModel(net, model.schedule, model.prediction_type, model.clip_x0, model.conditions)
        latents = train_latents[torch.tensor(transforms), torch.from_numpy(index)].to(context.device)
        drawn = denoising_step(step_model, latents, conditions=values, generator=generator)
        loss, logged = drawn.loss, {"denoising": drawn.loss}
        module = getattr(net, "module", net)  # DDP wraps the network
        if morphology_weight > 0 and isinstance(module, CPKDMNetwork) and module.morphology is not None:
            morphology = morphology_loss(module, arrays["curves"], arrays["clusters"], arrays["covered"],
                                         float(loss_cfg.get("edge_weight", 4.0)))
            loss, logged["morphology"] = loss + morphology_weight * morphology, morphology
        near = drawn.timesteps < adversarial_max_t
        adversarial = "discriminator" in nets and trainer.step >= adversarial_start and bool(near.any())
        if adversarial:
            fake = codec.decode(drawn.x0[near])
            fooled = generator_loss(patch_logits(nets["discriminator"], fake))
            loss, logged["adversarial"] = loss + adversarial_weight * fooled, fooled
        trainer.optimise("model", loss)
        if adversarial:
            logged["discriminator"] = discriminator_loss(patch_logits(nets["discriminator"], arrays["lge"][near]),
                                                         patch_logits(nets["discriminator"], fake.detach()))
            trainer.optimise("discriminator", logged["discriminator"])
        return logged

    def validate(nets: dict[str, torch.nn.Module]) -> dict[str, float]:
        generator = torch.Generator(device=context.device).manual_seed(1234)
        eval_model = DiffusionModel(nets["model"], model.schedule, model.prediction_type, model.clip_x0,
                                    model.conditions)
        total = 0.0
        for start in range(0, len(validation_latents), batch):
            index = np.arange(start, min(start + batch, len(validation_latents)))
            arrays = tensors(validation, index)
            values = condition_values(variant, arrays["cine"], arrays["kinematics"], arrays["curves"], factor)
            total += float(diffusion_loss(eval_model, validation_latents[index].to(context.device), conditions=values,
                                          generator=generator)) * len(index)
        return {"validation_loss": total / len(validation_latents)}

    trainer = Trainer.from_config(networks, context, out, train_cfg)
    if resume:
        trainer.resume()
    weights = trainer.fit(step, validate)["model"]
    keys = ("variant", "crop_size", "pixel_mm", "frames", "clusters", "factor", "latent_channels", "curves",
            "schedule", "denoiser", "kinematic_encoder", "morphology", "loss", "augmentation")
    return weights, {"method": METHOD, "part": "diffusion", **{key: config[key] for key in keys if key in config},
                     "autoencoder": {"checkpoint": str(checkpoint), "scale_factor": autoencoder["scale_factor"],
                                     "weights_sha256": autoencoder.get("weights_sha256")},
                     "training_summary": {"steps": trainer.step, "train_slices": train_latents.shape[1],
                                          "validation_slices": len(validation_latents), "best": trainer.best,
                                          "world_size": context.world_size, "device": str(context.device)}}


PIX2PIX_INPUTS = ("cine", "curves")


def pix2pix_condition(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The pix2pix baseline's input (N, phases + curves, S, S): the raw cine phases and the recovery curves, as the
    pure data-driven model reads them (no kinematic or morphological encoder)."""
    return np.concatenate([arrays[name] for name in PIX2PIX_INPUTS], axis=1).astype(np.float32)


def train_virtual_lge_pix2pix(config: dict[str, Any], out: Path, context: Context, resume: bool
                              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The pix2pix baseline of virtual LGE (`training.pix2pix`): a U-Net from the raw cine phases and recovery curves
    on the crop straight to the LGE crop in [-1, 1], on the same examples as the diffusion variants (with the same
    dihedral augmentation when the config asks for it: `dihedral.dihedral_requested`)."""
    data = config["data"]
    if data.get("source") != "phantom":
        raise ValueError(f"virtual LGE trains on the phantom (data source 'phantom'); got {data.get('source')!r}")
    train = cached_phantom_examples("train", int(data["train_subjects"]), config)
    validation = cached_phantom_examples("validation", int(data["validation_subjects"]), config)
    conditions, targets = torch.from_numpy(pix2pix_condition(train)), torch.from_numpy(train["lge"])
    batch = int(config["train"]["batch_size"])
    augmenting = dihedral_requested(config)

    def batches(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(targets), (batch,), generator=generator, device=generator.device).cpu()
        condition, target = conditions[index], targets[index]
        if augmenting:  # cine phases and curves are scalar maps: no sign changes
            transforms = random_transforms(batch, generator)
            condition, target = transform_batch(condition, transforms), transform_batch(target, transforms)
        return condition.to(context.device), target.to(context.device)

    held_out = (torch.from_numpy(pix2pix_condition(validation)), torch.from_numpy(validation["lge"]))
    weights, trainer = pix2pix.train_pix2pix(config, out, context, resume, batches, held_out)
    keys = ("variant", "crop_size", "pixel_mm", "frames", "clusters", "curves", "generator", "l1_weight",
            "augmentation")
    return weights, {"method": METHOD, "part": "pix2pix", **{key: config[key] for key in keys if key in config},
                     "training_summary": {"steps": trainer.step, "train_slices": len(targets),
                                          "validation_slices": len(held_out[1]), "best": trainer.best,
                                          "world_size": context.world_size, "device": str(context.device)}}


RECIPES = {"virtual_lge_autoencoder": train_lge_autoencoder, "virtual_lge": train_latent_diffusion,
           "virtual_lge_pix2pix": train_virtual_lge_pix2pix}
