"""A latent codec around MONAI's `AutoencoderKL`: images to scaled latents and back, and masks at latent size.

Latent diffusion (Rombach et al. 2022, LDM) runs the diffusion process on the autoencoder's latents z, multiplied by
a scale factor so that they have about unit variance, as the noise schedule assumes; the LDM authors estimate it as
1 / std of the latents of a batch of training images (`estimate_scale_factor`). Latents are not bounded, so a latent
DiffusionModel must not clip predicted x0 (clip_sample false).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL

from ..errors import CheckpointError, InputError

POOLS = {2: F.max_pool2d, 3: F.max_pool3d}


class LatentCodec:
    """Encode images (B, C, *spatial) to scaled latents (B, latent_channels, *spatial / f) and decode them back;
    f is the autoencoder's downsampling factor (2 per level after the first). scale_factor > 0."""

    def __init__(self, autoencoder: AutoencoderKL, scale_factor: float) -> None:
        if not scale_factor > 0:
            raise InputError(f"the latent scale factor must be positive; got {scale_factor}")
        self.autoencoder = autoencoder
        self.scale_factor = float(scale_factor)

    def encode(self, images: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """scale_factor * z, where z is the posterior mean mu of each image, or with sample=True a draw
        mu + sigma * N(0, I) from `generator` (the KL autoencoder's reparameterisation)."""
        mu, sigma = self.autoencoder.encode(images)
        if sample:
            mu = mu + sigma * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.scale_factor * mu

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, out_channels, *spatial * f) from scaled latents (B, latent_channels, *latent spatial)."""
        return self.autoencoder.decode(latents / self.scale_factor)


def estimate_scale_factor(autoencoder: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of the posterior-mean latents of `images` (B, C, *spatial), a batch of training images (LDM's
    estimate, so scaled latents have unit variance). InputError when the latents are constant."""
    with torch.no_grad():
        mu, _ = autoencoder.encode(images)
    spread = float(mu.std())
    if not spread > 0:
        raise InputError("the latents of these images are constant: cannot estimate a scale factor from them")
    return 1.0 / spread


def downsample_mask(mask: torch.Tensor, latent_shape: Sequence[int]) -> torch.Tensor:
    """A 2D or 3D mask (B, 1, *spatial) at the latent grid's spatial size `latent_shape`: float 0/1 (B, 1, *latent_shape).
    A latent voxel is in the mask when any pixel it covers is, so a latent inpainting mask covers the whole region.

    Every spatial size must be an integer multiple of the latent one (InputError otherwise).
    """
    spatial, latent = tuple(mask.shape[2:]), tuple(int(size) for size in latent_shape)
    divisible = len(spatial) == len(latent) and not any(size % small for size, small in zip(spatial, latent))
    if len(spatial) not in POOLS or not divisible:
        raise InputError(f"a mask of spatial size {spatial} cannot be reduced to the latent size {latent}: each must "
                         "be an integer multiple of it")
    factor = tuple(size // small for size, small in zip(spatial, latent))
    return POOLS[len(spatial)]((mask > 0).to(torch.float32), kernel_size=factor)


def load_codec(folder: Path, method: str, device: torch.device,
               trained_with: tuple[Path, dict[str, Any]] | None = None) -> tuple[LatentCodec, dict[str, Any]]:
    """The frozen codec of an autoencoder checkpoint folder of `method` (hash-checked; its config "part" must be
    "autoencoder"), on `device`, and the checkpoint's config. trained_with: (folder, config) of the latent diffusion
    model that will use it: its config's autoencoder.weights_sha256, when recorded, must be this autoencoder's (a
    model decodes only the latents it was trained on). CheckpointError otherwise."""
    from ..checkpoints import load_checkpoint
    from .networks import build_network, load_weights

    weights, config = load_checkpoint(folder, expected_method=method)
    if config.get("part") != "autoencoder":
        raise CheckpointError(f"{folder} is not a {method} autoencoder (part {config.get('part')!r})")
    if trained_with is not None:
        model_folder, model_config = trained_with
        expected = model_config.get("autoencoder", {}).get("weights_sha256")
        if expected and config.get("weights_sha256") != expected:
            raise CheckpointError(f"{model_folder} was trained on the latents of another autoencoder (weights sha256 "
                                  f"{expected[:12]}...) than {folder} ({str(config.get('weights_sha256'))[:12]}...): "
                                  "give the autoencoder it was trained with")
    network = load_weights(build_network(config["autoencoder"]), weights).to(device).eval().requires_grad_(False)
    return LatentCodec(network, float(config["scale_factor"])), config


def load_synthesis_model(folder: Path, autoencoder: Path | None, shipped_autoencoder: str, method: str, label: str,
                         device: torch.device, build: Callable[[dict[str, Any]], torch.nn.Module]
                         ) -> tuple[torch.nn.Module, dict[str, Any], LatentCodec | None]:
    """A latent method's synthesis checkpoint (hash-checked): a "diffusion" part with the codec of the autoencoder
    folder it was trained on (`load_codec`; None: the shipped checkpoint `shipped_autoencoder`), or a "pix2pix" part
    (no codec, no autoencoder needed). Returns the network built by `build(config)` with its weights, the config and
    the codec (None for pix2pix). CheckpointError for a missing, tampered or foreign checkpoint, another part (e.g.
    the autoencoder given as the model: `label` names the method in that message) or another autoencoder than the
    model's."""
    from ..checkpoints import load_checkpoint, shipped_checkpoint
    from .networks import load_weights

    weights, config = load_checkpoint(folder, expected_method=method)
    if config.get("part") not in ("diffusion", "pix2pix"):
        raise CheckpointError(f"{folder} is a {label} {config.get('part')!r} checkpoint, not a synthesis model (give "
                              "it as --autoencoder)")
    codec = None
    if config["part"] == "diffusion":
        codec, _ = load_codec(autoencoder or shipped_checkpoint(shipped_autoencoder), method, device,
                              trained_with=(folder, config))
    return load_weights(build(config), weights), config, codec
