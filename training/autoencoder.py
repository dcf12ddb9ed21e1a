"""Training of the latent autoencoder of a latent diffusion method (MONAI `AutoencoderKL`), shared by every latent
method's recipe (virtual LGE, multi-sequence synthesis).

Loss, as in LDM (Rombach et al. 2022, sec. 3 and appendix G) without its perceptual term (LPIPS needs pretrained
weights that cannot be downloaded here; see DESIGN):

    L = |x - D(E(x))|_1 + kl_weight KL(q(z | x) || N(0, I)) + adversarial_weight L_adv (from adversarial_start on)

with KL averaged over latent elements and L_adv the non-saturating loss of a PatchGAN (MONAI PatchDiscriminator,
binary cross-entropy on logits) that the discriminator learns against. Images are (N, C, S, S) in [-1, 1]. The
product is the EMA autoencoder and its LDM scale factor (1 / std of the posterior-mean latents of up to
SCALE_IMAGES training images drawn at random with the training seed), which the framework's `LatentCodec` applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from CMRSynthesisLib.diffusion.latent import LatentCodec, estimate_scale_factor
from CMRSynthesisLib.diffusion.networks import build_network

from .adversarial import discriminator_loss, generator_loss, patch_logits
from .dihedral import TRANSFORMS, dihedral
from .distributed import Context
from .loop import Trainer

SCALE_IMAGES = 64  # a seeded random subset of the training images estimates the scale factor
LOSS_KEYS = ("kl_weight", "adversarial_weight", "adversarial_start")


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent element, averaged: 0.5 mean(mu^2 + sigma^2 - log sigma^2 - 1)."""
    return 0.5 * torch.mean(mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1.0)


def train_autoencoder(config: dict[str, Any], out: Path, context: Context, resume: bool, train: np.ndarray,
                      validation: np.ndarray) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train config["autoencoder"] (an AutoencoderKL class config) with config["discriminator"] (PatchDiscriminator)
    on train images (N, C, S, S) float32 in [-1, 1]; validation: the L1 reconstruction error of the validation
    images. Loss weights from config["loss"] (LOSS_KEYS). Returns the EMA autoencoder weights and the checkpoint
    config part {"autoencoder", "scale_factor", "loss", "training_summary"}. ValueError for a missing loss key."""
    loss = config["loss"]
    missing = [key for key in LOSS_KEYS if key not in loss]
    if missing:
        raise ValueError(f"the autoencoder config's 'loss' lacks {', '.join(missing)}")
    kl_weight, adversarial_weight = float(loss["kl_weight"]), float(loss["adversarial_weight"])
    adversarial_start = int(loss["adversarial_start"])
    autoencoder, discriminator = build_network(config["autoencoder"]), build_network(config["discriminator"])
    train_cfg = config["train"]
    batch = int(train_cfg["batch_size"])
    trainer = Trainer.from_config({"autoencoder": autoencoder, "discriminator": discriminator}, context, out, train_cfg)
    images = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))

    def step(nets: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(0, len(images), (batch,), generator=generator, device=generator.device).cpu()
        real = images[index].to(context.device)
        reconstruction, mu, sigma = nets["autoencoder"](real)
        l1, kl = F.l1_loss(reconstruction, real), kl_divergence(mu, sigma)
        total = l1 + kl_weight * kl
        adversarial = trainer.step >= adversarial_start and adversarial_weight > 0
        if adversarial:
            total = total + adversarial_weight * generator_loss(patch_logits(nets["discriminator"], reconstruction))
        trainer.optimise("autoencoder", total)
        logged = {"l1": l1, "kl": kl}
        if adversarial:
            d_loss = discriminator_loss(patch_logits(nets["discriminator"], real),
                                        patch_logits(nets["discriminator"], reconstruction.detach()))
            trainer.optimise("discriminator", d_loss)
            logged["discriminator"] = d_loss
        return logged

    def validate(nets: Any) -> dict[str, float]:
        errors = []
        for start in range(0, len(validation), batch):
            real = torch.from_numpy(np.ascontiguousarray(validation[start:start + batch], dtype=np.float32))
            reconstruction, _, _ = nets["autoencoder"](real.to(context.device))
            errors.append(float(F.l1_loss(reconstruction, real.to(context.device))) * len(real))
        return {"validation_l1": sum(errors) / len(validation)}

    if resume:
        trainer.resume()
    weights = trainer.fit(step, validate)["autoencoder"]
    trained = build_network(config["autoencoder"])
    trained.load_state_dict(weights)
    subset = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(train_cfg["seed"])))
    scale = estimate_scale_factor(trained.eval(), images[subset[:SCALE_IMAGES]])
    return weights, {"autoencoder": config["autoencoder"], "scale_factor": scale, "loss": loss,
                     "training_summary": {"steps": trainer.step, "train_images": len(train),
                                          "validation_images": len(validation), "best": trainer.best,
                                          "world_size": context.world_size, "device": str(context.device)}}


def encode_in_batches(images: np.ndarray, codec: LatentCodec, device: torch.device, batch: int = 32) -> torch.Tensor:
    """The scaled latents (N, C, h, w) of images (N, 1, S, S) in [-1, 1] through a frozen `codec`, `batch` at a time
    on `device`, gathered on the CPU."""
    tensors = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    with torch.no_grad():
        return torch.cat([codec.encode(tensors[start:start + batch].to(device)).cpu()
                          for start in range(0, len(tensors), batch)])


def augmented_latents(crops: np.ndarray, codec: LatentCodec, device: torch.device, augmenting: bool) -> torch.Tensor:
    """(transforms, N, C, h, w) scaled latents of crops (N, 1, S, S) in [-1, 1] under each dihedral transform
    (`dihedral.dihedral`; only the identity when not `augmenting`): the encoder is not equivariant, so each
    transformed crop is encoded itself, once, before training."""
    tensors = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
    return torch.stack([encode_in_batches(dihedral(tensors, transform).numpy(), codec, device)
                        for transform in range(TRANSFORMS if augmenting else 1)])
