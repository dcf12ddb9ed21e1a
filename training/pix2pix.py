"""The pix2pix baseline (Isola et al. 2017) shared by every method that compares with it: a generator (U-Net) from
the condition images to the target image, tanh-scaled to [-1, 1], trained with

    L_G = l1_weight |G(c) - y|_1 + L_adv(D(c, G(c)))        (pix2pix: l1_weight 100)

against a conditional PatchGAN D that sees the condition and the image concatenated (`adversarial`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from CMRSynthesisLib.diffusion.networks import build_network

from .adversarial import discriminator_loss, generator_loss, patch_logits
from .distributed import Context
from .loop import Trainer

Batches = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""batches(generator) -> (condition (B, C, H, W), target (B, 1, H, W) in [-1, 1]) on the training device."""


def train_pix2pix(config: dict[str, Any], out: Path, context: Context, resume: bool, batches: Batches,
                  validation: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Trainer]:
    """Train config["generator"] with config["discriminator"] (MONAI class configs; the discriminator's in_channels
    are the condition's plus the target's) under config["train"], l1_weight = config["l1_weight"]; validation: the
    L1 error of the tanh-scaled generator on the validation (condition, target) pair (CPU tensors, N first), in
    batches of the training batch size. Returns the EMA generator weights and the trainer (step, best)."""
    l1_weight = float(config["l1_weight"])
    batch = int(config["train"]["batch_size"])
    trainer = Trainer.from_config({"generator": build_network(config["generator"]),
                                   "discriminator": build_network(config["discriminator"])}, context, out,
                                  config["train"])

    def step(nets: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        condition, target = batches(generator)
        fake = torch.tanh(nets["generator"](condition))
        fooled = patch_logits(nets["discriminator"], torch.cat([condition, fake], dim=1))
        g_loss = l1_weight * F.l1_loss(fake, target) + generator_loss(fooled)
        trainer.optimise("generator", g_loss)
        d_loss = discriminator_loss(patch_logits(nets["discriminator"], torch.cat([condition, target], dim=1)),
                                    patch_logits(nets["discriminator"], torch.cat([condition, fake.detach()], dim=1)))
        trainer.optimise("discriminator", d_loss)
        return {"generator": g_loss, "discriminator": d_loss}

    def validate(nets: Any) -> dict[str, float]:
        conditions, targets = validation
        total = 0.0
        for start in range(0, len(targets), batch):
            condition = conditions[start:start + batch].to(context.device)
            target = targets[start:start + batch].to(context.device)
            total += float(F.l1_loss(torch.tanh(nets["generator"](condition)), target)) * len(target)
        return {"validation_l1": total / len(targets)}

    if resume:
        trainer.resume()
    return trainer.fit(step, validate)["generator"], trainer
