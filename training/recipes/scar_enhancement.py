"""Training recipes of the localized scar enhancement (paper 002): the heart-ROI segmenter and the ROI diffusion model.

Segmenter: MONAI U-Net, Dice + cross-entropy on the heart ROI (scar + myocardium + blood pool), weights of the best
validation Dice kept (paper 3.2). Enhancer: conditional DDPM on (scar-enhanced target | original image) crops around
the ROI, noise and loss restricted to the ROI (paper eq. 3, 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric

from CMRSynthesisLib.diffusion.model import DiffusionModel
from CMRSynthesisLib.diffusion.networks import build_network
from CMRSynthesisLib.diffusion.training import diffusion_loss
from CMRSynthesisLib.methods.scar_enhancement import (
    CONDITIONS,
    METHOD,
    SEGMENTER_METHOD,
    HeartSegmenter,
    enhancement_target,
    slice_frame,
)
from CMRSynthesisLib.preprocess import resample_to_spacing

from ..datasets import LabelledSlices, load_slices
from ..distributed import Context
from ..loop import Trainer


def _random_flips(*batches: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random flip / transpose (one of 8 orientations) applied to every batch tensor (B, C, y, x)."""
    flip_y, flip_x, transpose = torch.randint(0, 2, (3,), generator=generator, device=generator.device).tolist()
    out = []
    for batch in batches:
        batch = batch.flip(-2) if flip_y else batch
        batch = batch.flip(-1) if flip_x else batch
        out.append(batch.transpose(-1, -2) if transpose else batch)
    return out


# ----------------------------------------------------------------------------------------------- segmenter
def _segmenter_arrays(slices: LabelledSlices, segmenter: HeartSegmenter, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices as the segmenter sees them, centre-padded / cropped to size x size: images and ROI masks (N, 1, s, s)."""
    images, masks = [], []
    for image, roi, spacing in zip(slices.images, slices.masks["heart_roi"], slices.spacing_yx):
        prepared = segmenter.prepare(image, spacing)
        mask = resample_to_spacing(roi.astype(np.float32), spacing, segmenter.config["target_spacing_mm"], order=0)
        images.append(_centre_fit(prepared, size))
        masks.append(_centre_fit(mask.astype(np.float32), size))
    return np.stack(images)[:, None], np.stack(masks)[:, None]


def _centre_fit(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad or crop a 2D array symmetrically to size x size."""
    out = np.zeros((size, size), dtype=np.float32)
    h, w = image.shape
    sy, sx = max((h - size) // 2, 0), max((w - size) // 2, 0)
    dy, dx = max((size - h) // 2, 0), max((size - w) // 2, 0)
    ch, cw = min(h, size), min(w, size)
    out[dy:dy + ch, dx:dx + cw] = image[sy:sy + ch, sx:sx + cw]
    return out


def train_segmenter(config: dict[str, Any], out: Path, context: Context, resume: bool) -> tuple[dict, dict]:
    """Train the heart-ROI U-Net; returns (weights, checkpoint config)."""
    train_cfg = config["train"]
    network = build_network(config["network"])
    helper = HeartSegmenter(network, config, torch.device("cpu"))
    size = int(train_cfg["patch_size"])
    x, y = (torch.from_numpy(a).to(context.device) for a in _segmenter_arrays(load_slices(config["data"], "train"),
                                                                              helper, size))
    val = load_slices(config["data"], "validation")
    val_x, val_y = (torch.from_numpy(a).to(context.device) for a in _segmenter_arrays(val, helper, size))
    loss_function = DiceCELoss(sigmoid=True)
    batch = int(train_cfg["batch_size"])

    def loss_fn(model: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, len(x), (batch,), generator=generator, device=generator.device)
        images, masks = _random_flips(x[index], y[index], generator=generator)
        return loss_function(model(images), masks)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        metric = DiceMetric(include_background=True)
        for start in range(0, len(val_x), batch):
            metric((torch.sigmoid(model(val_x[start:start + batch])) > 0.5).float(), val_y[start:start + batch])
        return {"dice": float(metric.aggregate().item())}

    trainer = Trainer(network, context, out, steps=_steps(train_cfg, len(x)), lr=train_cfg["lr"],
                      ema_decay=train_cfg["ema_decay"], seed=train_cfg["seed"],
                      validate_every=train_cfg["validate_every"], select="dice")
    if resume:
        trainer.resume()
    weights = trainer.fit(loss_fn, validate)
    product = {key: config[key] for key in ("network", "target_spacing_mm", "threshold", "dilation_mm")}
    return weights, {"method": SEGMENTER_METHOD, **product, **_record(trainer, len(x), len(val))}


# ----------------------------------------------------------------------------------------------- enhancer
def enhancer_examples(slices: LabelledSlices, crop_size: int, margin: int, blood_reference: float
                      ) -> dict[str, np.ndarray]:
    """Training crops (N, 1, s, s) in [-1, 1]: "condition" (original), "target" (scar-enhanced), "roi" (0/1), and
    "has_scar" (N,) — each slice framed and scaled exactly as ScarEnhancement frames it at inference."""
    condition, target, roi_crops, has_scar = [], [], [], []
    for index, image in enumerate(slices.images):
        roi, scar, blood = (slices.masks[name][index] for name in ("heart_roi", "scar", "blood"))
        enhanced, _ = enhancement_target(image, scar, blood, roi, crop_size, margin, blood_reference)
        crop, scale = slice_frame(image, roi, crop_size, margin)
        condition.append(scale.forward(crop.extract(image)))
        target.append(np.clip(scale.forward(crop.extract(enhanced)), -1, 1))
        roi_crops.append((crop.extract(roi, order=0) > 0.5).astype(np.float32))
        has_scar.append(bool(scar.any()))
    return {"condition": np.stack(condition)[:, None], "target": np.stack(target)[:, None],
            "roi": np.stack(roi_crops)[:, None], "has_scar": np.asarray(has_scar)}


def blood_reference(slices: LabelledSlices, crop_size: int, margin: int) -> float:
    """Mean blood-pool brightness over a data set, on each slice's model scale [0, 1] (paper 2.1's "average")."""
    means = []
    for image, roi, blood in zip(slices.images, slices.masks["heart_roi"], slices.masks["blood"]):
        if blood.any():
            _, scale = slice_frame(image, roi, crop_size, margin)
            means.append((image[blood].mean() - scale.low) / (scale.high - scale.low))
    return float(np.mean(means))


def enhancer_validation(model: DiffusionModel, examples: dict[str, torch.Tensor], batch: int, max_timestep: int,
                        from_input: float) -> dict[str, float]:
    """The enhancer's ROI losses over validation crops (examples "target", "condition", "roi": (N, 1, y, x)), in
    mini-batches of `batch`, with fixed timesteps below `max_timestep`, noise and choices (generator seeded 0):

    - "validation_loss": as trained: the fraction `from_input` of the crops noised from the original image, the rest
      from the target (`noise_from_input_fraction`; the same choice for every call);
    - "validation_loss_from_input": as used: every crop noised from the original image, where partial diffusion
      starts at inference (prediction_type "sample" only; absent otherwise, where training never does it).
    Both are weighted by ROI voxels.
    """
    ways = {"validation_loss": from_input}
    if model.prediction_type == "sample":
        ways["validation_loss_from_input"] = 1.0
    losses = {}
    for name, fraction in ways.items():
        fixed = torch.Generator(device=examples["roi"].device).manual_seed(0)
        total = voxels = 0.0
        for start in range(0, len(examples["roi"]), batch):
            part = {key: value[start:start + batch] for key, value in examples.items()}
            pick = torch.rand((len(part["roi"]), 1, 1, 1), generator=fixed, device=fixed.device) < fraction
            source = torch.where(pick, part["condition"], part["target"]) if fraction > 0 else None
            loss = diffusion_loss(model, part["target"], conditions={"image": part["condition"]}, mask=part["roi"],
                                  source=source, max_timestep=max_timestep, generator=fixed)
            count = float(part["roi"].sum())
            total, voxels = total + float(loss) * count, voxels + count
        losses[name] = total / max(voxels, 1.0)
    return losses


def train_enhancer(config: dict[str, Any], out: Path, context: Context, resume: bool) -> tuple[dict, dict]:
    """Train the conditional ROI DDPM; returns (weights, checkpoint config)."""
    train_cfg = config["train"]
    size, margin = int(config["crop_size"]), int(config["roi_margin_px"])
    train = load_slices(config["data"], "train")
    reference = blood_reference(train, size, margin)
    data = {k: torch.from_numpy(v).to(context.device) for k, v in enhancer_examples(train, size, margin, reference).items()}
    val = {k: torch.from_numpy(v).to(context.device)
           for k, v in enhancer_examples(load_slices(config["data"], "validation"), size, margin, reference).items()}
    weights = torch.where(data["has_scar"], train_cfg["scar_fraction"] / max(int(data["has_scar"].sum()), 1),
                          (1 - train_cfg["scar_fraction"]) / max(int((~data["has_scar"]).sum()), 1)).double()
    network = build_network(config["network"])
    trainer = Trainer(network, context, out, steps=_steps(train_cfg, len(weights)), lr=train_cfg["lr"],
                      ema_decay=train_cfg["ema_decay"], seed=train_cfg["seed"],
                      validate_every=train_cfg["validate_every"])
    diffusion = DiffusionModel.from_config(trainer.trained, config["schedule"], CONDITIONS)
    batch, max_t = int(train_cfg["batch_size"]), train_cfg["max_timestep"]

    from_input = float(train_cfg.get("noise_from_input_fraction", 0.0))

    def loss_fn(model: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        index = torch.multinomial(weights, batch, replacement=True, generator=generator)
        target, condition, roi = _random_flips(data["target"][index], data["condition"][index], data["roi"][index],
                                               generator=generator)
        source = None
        if from_input > 0:  # part of the batch starts, as partial diffusion does, from the noised original image
            pick = torch.rand((batch, 1, 1, 1), generator=generator, device=generator.device) < from_input
            source = torch.where(pick, condition, target)
        return diffusion_loss(diffusion, target, conditions={"image": condition}, mask=roi, source=source,
                              max_timestep=max_t, generator=generator)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        checker = DiffusionModel.from_config(model, config["schedule"], CONDITIONS)
        return enhancer_validation(checker, val, batch, max_t, from_input)

    if resume:
        trainer.resume()
    weights_out = trainer.fit(loss_fn, validate)
    product = {key: config[key] for key in ("network", "schedule", "crop_size", "roi_margin_px")}
    return weights_out, {"method": METHOD, **product, "blood_reference": reference,
                         **_record(trainer, len(weights), len(val["roi"]))}


def _steps(train_cfg: dict[str, Any], examples: int) -> int:
    """Optimiser steps: given directly, or epochs x ceil(examples / batch size) as in the papers' recipes."""
    if ("steps" in train_cfg) == ("epochs" in train_cfg):
        raise ValueError("the train config needs exactly one of 'steps' and 'epochs'")
    if "steps" in train_cfg:
        return int(train_cfg["steps"])
    return int(train_cfg["epochs"]) * -(-examples // int(train_cfg["batch_size"]))


def _record(trainer: Trainer, train_examples: int, validation_examples: int) -> dict[str, Any]:
    """What the checkpoint says about its own training."""
    return {"training_summary": {"steps": trainer.step, "train_slices": train_examples,
                                 "validation_slices": validation_examples, "best": trainer.best,
                                 "elapsed_s": round(getattr(trainer, "elapsed_s", 0.0), 1),
                                 "world_size": trainer.context.world_size, "device": str(trainer.context.device)}}


RECIPES = {"scar_enhancement_segmenter": train_segmenter, "scar_enhancement": train_enhancer}
