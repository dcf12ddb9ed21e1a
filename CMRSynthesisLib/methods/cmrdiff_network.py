"""The denoiser of CMRDiff (paper 001, "CMRDiff: Multi-sequence CMR synthesis", Fig. 1): one network for the three
directions (any two of bSSFP, T2w and LGE to the third).

Its input is the noisy latent of the target concatenated with the latents of the two given sequences (in CONTRASTS
order: "first" and "second"), as the paper concatenates the encoded bSSFP and T2 with the noised LGE latent. The two
given sequences also reach it by cross-attention, as the paper's CLIP features do: CLIP cannot be had offline, so a
trainable encoder (`ConditionEncoder`, a small strided CNN over each condition's latent) turns each into tokens, each
set marked with a learnt embedding of its sequence. A last token names the target sequence (one model for the three
directions: all of the CPU budget trains one denoiser on every example, instead of a third of it each; decided here,
the abstract shows one direction). A condition nulled for classifier-free guidance (its latent all 0) gives the
encoder's tokens of an all-zero latent, which condition dropout in training teaches to mean "not given".

Shapes: x (B, 3 C, h, w) = [x_t, first, second], C latent channels; roles (B, 1, 3): the indices into CONTRASTS of
the target, first and second sequence (floats, as a context condition is carried); output (B, C, h, w).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..diffusion.networks import build_network

CONTRASTS = ("bssfp", "t2w", "lge")


class ConditionEncoder(nn.Module):
    """A condition's latent (B, C, h, w) -> tokens (B, (h / 4) (w / 4), dim): two strided 3 x 3 convolutions (SiLU
    between), flattened, plus a learnt position embedding per token. h and w: `grid` (divisible by 4)."""

    def __init__(self, latent_channels: int, dim: int, grid: int) -> None:
        super().__init__()
        if grid % 4:
            raise ValueError(f"the latent grid ({grid}) must be divisible by 4")
        self.layers = nn.Sequential(nn.Conv2d(latent_channels, dim, 3, stride=2, padding=1), nn.SiLU(),
                                    nn.Conv2d(dim, dim, 3, stride=2, padding=1))
        self.position = nn.Parameter(torch.zeros(1, (grid // 4) ** 2, dim))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.layers(latent).flatten(2).transpose(1, 2) + self.position


class CMRDiffNetwork(nn.Module):
    """CMRDiff's denoiser (module docstring): `denoiser` a MONAI DiffusionModelUNet class config with
    with_conditioning and cross_attention_dim = token_dim, in_channels 3 C and out_channels C; `latent_channels` C;
    `grid` the latent's side."""

    def __init__(self, denoiser: dict[str, Any], latent_channels: int, token_dim: int, grid: int) -> None:
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.denoiser = build_network(denoiser)
        self.encoder = ConditionEncoder(self.latent_channels, token_dim, grid)
        self.sequence = nn.Embedding(len(CONTRASTS), token_dim)  # which sequence a token set encodes
        self.target = nn.Embedding(len(CONTRASTS), token_dim)  # which sequence to synthesise

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        channels = self.latent_channels
        if x.shape[1] != 3 * channels or context.shape[1:] != (1, 3):
            raise ValueError(f"CMRDiff takes x (B, {3 * channels}, h, w) and roles (B, 1, 3); got {tuple(x.shape)} "
                             f"and {tuple(context.shape)}")
        roles = context[:, 0].round().long()
        first = self.encoder(x[:, channels:2 * channels]) + self.sequence(roles[:, 1])[:, None]
        second = self.encoder(x[:, 2 * channels:]) + self.sequence(roles[:, 2])[:, None]
        tokens = torch.cat([first, second, self.target(roles[:, 0])[:, None]], dim=1)
        return self.denoiser(x, timesteps, context=tokens)


def build_cmrdiff(config: dict[str, Any]) -> CMRDiffNetwork:
    """The network of a CMRDiff checkpoint config: keys denoiser, latent_channels, token_dim, crop_size, factor."""
    return CMRDiffNetwork(config["denoiser"], int(config["latent_channels"]), int(config["token_dim"]),
                          int(config["crop_size"]) // int(config["factor"]))


def roles_of(target: str) -> tuple[str, str]:
    """The two given sequences of a target, in CONTRASTS order (first, second). ValueError for an unknown target."""
    if target not in CONTRASTS:
        raise ValueError(f"unknown target sequence {target!r}; choose one of {CONTRASTS}")
    first, second = (name for name in CONTRASTS if name != target)
    return first, second


def roles_tensor(targets: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """The roles context (B, 1, 3) float of each example's target: indices of target, first and second."""
    rows = [[CONTRASTS.index(name) for name in (target, *roles_of(target))] for target in targets]
    return torch.tensor(rows, dtype=torch.float32, device=device)[:, None]
