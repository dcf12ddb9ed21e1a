"""Training of multi-sequence synthesis (CMRDiff, paper 001): the autoencoder shared by bSSFP, T2w and LGE (recipe
"multi_sequence_autoencoder"), the latent diffusion model on it ("multi_sequence", with or without the heat-map
loss: config loss.heatmap) and the pix2pix comparison ("multi_sequence_pix2pix"), all on the same examples.

Examples: every slice with an LV blood pool and myocardium of the training cases, its three sequences on one square
crop centred on the true LV blood pool (`crop_size` pixels of `pixel_mm`), each scaled to [-1, 1] by its crop's
percentiles (`multi_sequence.crop_in_unit_range`), with the wall (myocardium, scar and oedema), scar and oedema masks
on the crop. Sources (config data.source):
- "phantom": `phantom.multi_sequence_study` (the cine's ED frame, T2w with oedema around acute infarcts, LGE; subjects
  vary in acquisition: field strength, matrix, noise, shading, contrast);
- "myops": the MyoPS 2020 challenge layout (`myops_cases`) for users who have it.
Each training draw takes a random target sequence per example (one model for the three directions). With
config["augmentation"]["dihedral"] (`dihedral.dihedral_requested`; not in the paper, a choice of ours) every drawn
example is turned / mirrored by one of the crop's eight symmetries, its three sequences and wall mask alike (all
scalar maps).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from CMRSynthesisLib import phantom, preprocess
from CMRSynthesisLib.diffusion.latent import LatentCodec, downsample_mask, load_codec
from CMRSynthesisLib.diffusion.model import DiffusionModel
from CMRSynthesisLib.diffusion.training import denoising_step, diffusion_loss
from CMRSynthesisLib.io import read_volume
from CMRSynthesisLib.methods.cmrdiff_network import CONTRASTS, build_cmrdiff, roles_of, roles_tensor
from CMRSynthesisLib.methods.multi_sequence import CONDITIONS, PERCENTILES, crop_in_unit_range, one_hot_target
from CMRSynthesisLib.phantom import anatomy as phantom_anatomy
from CMRSynthesisLib.phantom import contrast as phantom_contrast
from CMRSynthesisLib.phantom import motion as phantom_motion
from CMRSynthesisLib.phantom import study as phantom_study
from CMRSynthesisLib.volume import Volume

from .. import pix2pix
from ..autoencoder import augmented_latents, train_autoencoder
from ..datasets import cached_arrays, render_workers, split_cases, subject_examples
from ..dihedral import dihedral_requested, random_transforms, transform_batch
from ..distributed import Context
from ..loop import Trainer

METHOD = "multi_sequence"
EXAMPLE_MODULES = (phantom_anatomy, phantom_motion, phantom_contrast, phantom_study, preprocess)
MASKS = ("wall", "scar", "oedema")
MYOPS_FILES = {"bssfp": "C0", "t2w": "T2", "lge": "DE", "labels": "gd"}
MYOPS_LABELS = {"myocardium": 200, "lv_blood": 500, "rv_blood": 600, "oedema": 1220, "scar": 2221}
"""MyoPS 2020 (Zhuang et al.; Qiu et al. 2023, MyoPS-Net): per case <name>_C0 (bSSFP at ED), <name>_T2, <name>_DE
(LGE) and <name>_gd (labels) NIfTI files on one grid; label values of the ground truth."""


def slice_examples(images: dict[str, Volume], masks: dict[str, np.ndarray], blood: np.ndarray,
                   config: dict[str, Any], rows: dict[str, list[np.ndarray]], case: int) -> None:
    """Append the examples of one stack (module docstring) to `rows`: images by sequence name (3D Volumes on one
    grid), masks by MASKS name and the LV blood pool (z, y, x) bool; every slice with blood and wall."""
    reference = images["bssfp"]
    for name, image in images.items():
        reference.require_same_geometry(image, f"case {case}: the bSSFP and the {name}")
    spacing_yx = (reference.spacing[1], reference.spacing[0])
    for z in range(reference.spatial_shape[0]):
        if not (blood[z].any() and masks["wall"][z].any()):
            continue
        crop = preprocess.LVCrop(np.argwhere(blood[z]).mean(axis=0), spacing_yx, int(config["crop_size"]),
                                 float(config["pixel_mm"]))
        for name in CONTRASTS:
            rows[name].append(crop_in_unit_range(images[name].array[z], crop))
        for name in MASKS:
            rows[name].append(crop.extract(masks[name][z].astype(np.float32)) > 0.5)
        rows["case"].append(np.asarray(case))


def subject_rows(subject_id: int, config: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """One phantom subject's rows for `phantom_examples` (`slice_examples` of its study)."""
    rows: dict[str, list[np.ndarray]] = {key: [] for key in (*CONTRASTS, *MASKS, "case")}
    study = phantom.multi_sequence_study(subject_id)
    masks = study["masks"]
    wall = {"wall": masks["myocardium"] | masks["scar"], "scar": masks["scar"], "oedema": masks["oedema"]}
    slice_examples({name: study[name] for name in CONTRASTS}, wall, masks["blood"], config, rows, subject_id)
    return rows


def phantom_examples(split: str, subjects: int, config: dict[str, Any], workers: int = 1) -> dict[str, np.ndarray]:
    """The examples of the first `subjects` phantom subjects of `split` (`subject_rows` in `workers` processes:
    `datasets.subject_examples`): bssfp, t2w, lge (N, 1, S, S) in [-1, 1], wall, scar, oedema (N, S, S) bool, case
    (N,) the subject ids."""
    return subject_examples(phantom.subject_ids(split, subjects), functools.partial(subject_rows, config=config),
                            workers)


def myops_cases(root: Path) -> dict[str, dict[str, Path]]:
    """The labelled MyoPS cases under `root` (searched recursively): {case name: {"bssfp", "t2w", "lge", "labels":
    path}} for every case with all four files (`MYOPS_FILES`, .nii.gz or .nii); cases lacking one are left out."""
    found: dict[str, dict[str, Path]] = {}
    pattern = re.compile(r"^(?P<case>.+)_(?P<part>C0|T2|DE|gd)\.nii(\.gz)?$")
    parts = {part: name for name, part in MYOPS_FILES.items()}
    for path in sorted(Path(root).rglob("*.nii*")):
        match = pattern.match(path.name)
        if match:
            found.setdefault(match["case"], {})[parts[match["part"]]] = path
    return {case: files for case, files in found.items() if set(files) == set(MYOPS_FILES)}


def myops_examples(root: Path, split: str, validation_fraction: float, config: dict[str, Any]
                   ) -> dict[str, np.ndarray]:
    """The examples of the MyoPS cases of `split` ("train" or "validation", `datasets.split_cases` by case name);
    case (N,) the case's index in sorted order. ValueError when `root` holds fewer than two labelled cases."""
    cases = myops_cases(root)
    chosen = {path.name for path in split_cases([Path(name) for name in cases], split, validation_fraction)}
    rows: dict[str, list[np.ndarray]] = {key: [] for key in (*CONTRASTS, *MASKS, "case")}
    for index, name in enumerate(sorted(cases)):
        if name not in chosen:
            continue
        files = cases[name]
        labels = read_volume(files["labels"]).array
        masks = {"wall": np.isin(labels, [MYOPS_LABELS[key] for key in ("myocardium", "oedema", "scar")]),
                 "scar": labels == MYOPS_LABELS["scar"], "oedema": labels == MYOPS_LABELS["oedema"]}
        slice_examples({contrast: read_volume(files[contrast]) for contrast in CONTRASTS}, masks,
                       labels == MYOPS_LABELS["lv_blood"], config, rows, index)
    if not rows["case"]:
        raise ValueError(f"no MyoPS slice with LV blood pool and myocardium in the {split} cases under {root}")
    return {key: np.stack(value) for key, value in rows.items()}


def examples(split: str, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """The examples of a split for the config's data source, cached in data.cache (if set) under their settings and
    the code that makes them."""
    data = config["data"]
    settings = {key: config[key] for key in ("crop_size", "pixel_mm")}
    cache = Path(data["cache"]) if data.get("cache") else None
    if data["source"] == "phantom":
        subjects = int(data[f"{split}_subjects"])
        return cached_arrays(cache, f"multi_sequence_{split}_{subjects}", [split, subjects, settings],
                             lambda: phantom_examples(split, subjects, config, render_workers(config)),
                             code=(*EXAMPLE_MODULES, subject_rows, slice_examples, crop_in_unit_range))
    if data["source"] == "myops":
        return myops_examples(Path(data["root"]), split, float(data.get("validation_fraction", 0.15)), config)
    raise ValueError(f"unknown data source {data['source']!r} for multi-sequence synthesis; use 'phantom' or 'myops'")


def train_multi_sequence_autoencoder(config: dict[str, Any], out: Path, context: Context, resume: bool
                                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The AutoencoderKL shared by bSSFP, T2w and LGE (`training.autoencoder`), on every example's three crops."""
    train, validation = examples("train", config), examples("validation", config)
    weights, product = train_autoencoder(config, out, context, resume,
                                         np.concatenate([train[name] for name in CONTRASTS]),
                                         np.concatenate([validation[name] for name in CONTRASTS]))
    return weights, {"method": METHOD, "part": "autoencoder", "crop_size": int(config["crop_size"]),
                     "pixel_mm": float(config["pixel_mm"]), "percentiles": list(PERCENTILES), **product}


def encode_all(arrays: dict[str, np.ndarray], codec: LatentCodec, device: torch.device, augmenting: bool = False
               ) -> torch.Tensor:
    """The scaled latents (transforms, N, 3, C, h, w) of the examples' three sequences, in CONTRASTS order, under
    each dihedral transform (one, the identity, when not `augmenting`: `autoencoder.augmented_latents`)."""
    return torch.stack([augmented_latents(arrays[name], codec, device, augmenting) for name in CONTRASTS], dim=2)


def heatmap_loss(error: torch.Tensor, wall: torch.Tensor, myocardium_weight: float, error_weight: float
                 ) -> torch.Tensor:
    """CMRDiff's heat-map weighted denoising loss (paper 001, Fig. 3: "focus more on the generation of myocardial
    regions, especially for poorly performing regions"; the abstract gives no formula, so this one is chosen):

        L = sum(w (out - target)^2) / sum(w),  w = 1 + myocardium_weight m + error_weight h / mean(h),

    over every latent element, with m the wall mask on the latent grid (a latent pixel covering any wall pixel) and
    h the squared error averaged over channels, detached (not a path for gradients), normalised by its mean per
    example: poorly predicted pixels count more. error: (B, C, h, w); wall: (B, 1, H, W) float 0/1."""
    squared = error.pow(2)
    heat = squared.detach().mean(dim=1, keepdim=True)
    heat = heat / heat.mean(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    weight = 1.0 + myocardium_weight * downsample_mask(wall, error.shape[2:]) + error_weight * heat
    weight = weight.expand_as(squared)
    return (weight * squared).sum() / weight.sum()


def _direction_batch(latents: torch.Tensor, targets: list[str], device: torch.device
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The target latents (B, C, h, w) and the condition values of examples with latents (B, 3, C, h, w) (CONTRASTS
    order) and their `targets`."""
    order = [[CONTRASTS.index(name) for name in (target, *roles_of(target))] for target in targets]
    picked = [[example[row[slot]] for row, example in zip(order, latents, strict=True)] for slot in range(3)]
    x0, first, second = (torch.stack(rows).to(device) for rows in picked)
    return x0, {"first": first, "second": second, "roles": roles_tensor(targets, device)}


def train_latent_diffusion(config: dict[str, Any], out: Path, context: Context, resume: bool
                           ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """CMRDiff's latent DDPM (`cmrdiff_network`) on the latents of the frozen autoencoder
    config["autoencoder_checkpoint"]: per draw a random target per example, condition dropout per given sequence
    (config loss.condition_dropout), and the heat-map weighted epsilon loss (`heatmap_loss`, weights from config
    loss) or, with loss.heatmap false, the plain one (the ablation); with the dihedral augmentation (module
    docstring) each example's latents are those of its transformed crops and its wall mask is transformed alike.
    Validation: the plain epsilon loss of the validation examples in all three directions at fixed draws."""
    train, validation = examples("train", config), examples("validation", config)
    checkpoint = Path(config["autoencoder_checkpoint"])
    codec, autoencoder = load_codec(checkpoint, METHOD, context.device)
    augmenting = dihedral_requested(config)
    train_latents = encode_all(train, codec, context.device, augmenting)
    validation_latents = encode_all(validation, codec, context.device)[0]
    network = build_cmrdiff(config)
    model = DiffusionModel.from_config(network, {**config["schedule"], "clip_sample": False}, CONDITIONS)
    loss_cfg = config["loss"]
    heatmap = bool(loss_cfg["heatmap"])
    dropout = {name: float(loss_cfg["condition_dropout"]) for name in ("first", "second")}
    walls = torch.from_numpy(train["wall"][:, None].astype(np.float32))
    train_cfg = config["train"]
    batch = int(train_cfg["batch_size"])

    def step(nets: dict[str, torch.nn.Module], generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(0, train_latents.shape[1], (batch,), generator=generator,
                              device=generator.device).cpu()
        drawn = torch.randint(0, len(CONTRASTS), (batch,), generator=generator, device=generator.device).tolist()
        transforms = random_transforms(batch, generator) if augmenting else [0] * batch
        x0, values = _direction_batch(train_latents[torch.tensor(transforms), index], [CONTRASTS[i] for i in drawn],
                                      context.device)
        step_model = DiffusionModel(nets["model"], model.schedule, model.prediction_type, model.clip_x0,
                                    model.conditions)
        result = denoising_step(step_model, x0, conditions=values, condition_dropout=dropout, generator=generator)
        wall = transform_batch(walls[index], transforms).to(context.device)
        loss = (heatmap_loss(result.error, wall, float(loss_cfg["myocardium_weight"]), float(loss_cfg["error_weight"]))
                if heatmap else result.loss)
        trainer.optimise("model", loss)
        return {"loss": loss, "denoising": result.loss}

    def validate(nets: dict[str, torch.nn.Module]) -> dict[str, float]:
        generator = torch.Generator(device=context.device).manual_seed(1234)
        eval_model = DiffusionModel(nets["model"], model.schedule, model.prediction_type, model.clip_x0,
                                    model.conditions)
        total, count = 0.0, 0
        for target in CONTRASTS:
            for start in range(0, len(validation_latents), batch):
                chunk = validation_latents[start:start + batch]
                x0, values = _direction_batch(chunk, [target] * len(chunk), context.device)
                total += float(diffusion_loss(eval_model, x0, conditions=values, generator=generator)) * len(chunk)
                count += len(chunk)
        return {"validation_loss": total / count}

    trainer = Trainer.from_config({"model": network}, context, out, train_cfg)
    if resume:
        trainer.resume()
    weights = trainer.fit(step, validate)["model"]
    keys = ("variant", "crop_size", "pixel_mm", "factor", "latent_channels", "token_dim", "schedule", "denoiser",
            "loss", "augmentation", "inference")
    return weights, {"method": METHOD, "part": "diffusion", **{key: config[key] for key in keys if key in config},
                     "autoencoder": {"checkpoint": str(checkpoint), "scale_factor": autoencoder["scale_factor"],
                                     "weights_sha256": autoencoder.get("weights_sha256")},
                     "training_summary": _summary(trainer, train, validation, context)}


def _summary(trainer: Trainer, train: dict[str, np.ndarray], validation: dict[str, np.ndarray], context: Context
             ) -> dict[str, Any]:
    return {"steps": trainer.step, "train_slices": len(train["case"]), "validation_slices": len(validation["case"]),
            "best": trainer.best, "world_size": context.world_size, "device": str(context.device)}


def pix2pix_pairs(arrays: dict[str, np.ndarray], index: np.ndarray, targets: list[str]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """pix2pix's (condition (B, 5, S, S): the two given crops and the target's one-hot channels, target (B, 1, S, S))
    of examples `index` with their `targets`."""
    size = arrays["bssfp"].shape[-1]
    conditions, wanted = [], []
    for example, target in zip(index, targets, strict=True):
        first, second = roles_of(target)
        conditions.append(np.concatenate([arrays[first][example], arrays[second][example],
                                          one_hot_target(target, size)]))
        wanted.append(arrays[target][example])
    return torch.from_numpy(np.stack(conditions)), torch.from_numpy(np.stack(wanted))


def train_multi_sequence_pix2pix(config: dict[str, Any], out: Path, context: Context, resume: bool
                                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The pix2pix comparison (`training.pix2pix`): a U-Net from the two given crops and the target's one-hot
    channels to the target crop in [-1, 1], a random target per example, on the same examples as CMRDiff;
    validation over all three directions."""
    train, validation = examples("train", config), examples("validation", config)
    batch = int(config["train"]["batch_size"])
    count = len(train["case"])
    augmenting = dihedral_requested(config)

    def batches(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, count, (batch,), generator=generator, device=generator.device).cpu().numpy()
        drawn = torch.randint(0, len(CONTRASTS), (batch,), generator=generator, device=generator.device).tolist()
        condition, target = pix2pix_pairs(train, index, [CONTRASTS[i] for i in drawn])
        if augmenting:  # the crops are scalar maps and the target's one-hot channels are constant: no sign changes
            transforms = random_transforms(batch, generator)
            condition, target = transform_batch(condition, transforms), transform_batch(target, transforms)
        return condition.to(context.device), target.to(context.device)

    every = np.arange(len(validation["case"]))
    pairs = [pix2pix_pairs(validation, every, [target] * len(every)) for target in CONTRASTS]
    held_out = (torch.cat([pair[0] for pair in pairs]), torch.cat([pair[1] for pair in pairs]))
    weights, trainer = pix2pix.train_pix2pix(config, out, context, resume, batches, held_out)
    keys = ("variant", "crop_size", "pixel_mm", "generator", "l1_weight", "augmentation")
    return weights, {"method": METHOD, "part": "pix2pix", **{key: config[key] for key in keys if key in config},
                     "training_summary": _summary(trainer, train, validation, context)}


RECIPES = {"multi_sequence_autoencoder": train_multi_sequence_autoencoder, "multi_sequence": train_latent_diffusion,
           "multi_sequence_pix2pix": train_multi_sequence_pix2pix}
