"""The adversarial losses every recipe with a discriminator uses: a PatchGAN (Isola et al. 2017; MONAI
`PatchDiscriminator`) scoring image patches as real or generated, trained with binary cross-entropy on its logits,
and the non-saturating generator loss (Goodfellow et al. 2014, sec. 3: maximise log D(G(z)) instead of minimising
log(1 - D(G(z)))). Shared by the latent autoencoder, the pix2pix baselines and virtual LGE's adversarial term on the
decoded x0."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_logits(discriminator: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The patch logits (B, 1, h, w) of a MONAI PatchDiscriminator for images (B, C, H, W) (its last output)."""
    return discriminator(image)[-1]


def generator_loss(fooled: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: BCE of the generated images' logits against "real"."""
    return F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss: half the BCE of real images' logits against "real" plus generated images' logits
    (from detached images) against "fake"."""
    return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
