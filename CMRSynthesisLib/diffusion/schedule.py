"""The noise schedule of a diffusion process: betas, alphas, their cumulative products, and the forward process.

Ho et al. 2020 (DDPM), eq. 4: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t = prod_{s <= t} (1 - beta_s).
Timesteps are 0-based as in MONAI: t = 0 .. T-1 index the schedule, and t = CLEAN (-1) is the noise-free end of every
reverse chain (abar = 1).

The betas come from MONAI's named schedule functions (`monai.networks.schedulers.scheduler.NoiseSchedules`:
linear_beta, scaled_linear_beta, sigmoid_beta, cosine) and alphas / alphas_cumprod are derived from them exactly as
MONAI's schedulers derive them (float32), so a model trained with MONAI's DDPMScheduler sees the same numbers here.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers.scheduler import NoiseSchedules

from ..errors import CheckpointError

CLEAN = -1
"""The timestep of noise-free data: the t_prev of a reverse chain's last step (abar = 1)."""


class NoiseSchedule:
    """betas, alphas = 1 - betas and alphas_cumprod (abar) of a T-step process: float32 tensors (T,) on the CPU.

    num_train_timesteps: T. schedule: a name in MONAI's NoiseSchedules. schedule_args: that function's own arguments
    (e.g. beta_start, beta_end for linear_beta; s for cosine). CheckpointError for an unknown schedule or argument.
    """

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta", **schedule_args: float) -> None:
        if schedule not in NoiseSchedules.names:
            raise CheckpointError(f"unknown noise schedule {schedule!r}; known: {sorted(NoiseSchedules.names)}")
        if int(num_train_timesteps) < 1:
            raise CheckpointError(f"num_train_timesteps must be at least 1; got {num_train_timesteps}")
        try:
            values = NoiseSchedules[schedule](int(num_train_timesteps), **schedule_args)
        except TypeError as error:
            raise CheckpointError(f"the {schedule} noise schedule does not take these arguments: {error}") from error
        if isinstance(values, tuple):  # the cosine schedule returns (betas, alphas, alphas_cumprod)
            self.betas, self.alphas, self.alphas_cumprod = values
        else:
            self.betas = values
            self.alphas = 1.0 - self.betas
            self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_train_timesteps = int(num_train_timesteps)

    def alpha_bar(self, t: int | torch.Tensor) -> torch.Tensor:
        """abar_t: a 0-dim float32 tensor for an int t, or a tensor shaped like t (long) for a tensor of timesteps.
        CLEAN (or any negative t) gives 1. IndexError for t >= T."""
        if isinstance(t, int):
            return torch.tensor(1.0) if t < 0 else self.alphas_cumprod[t]
        table = self.alphas_cumprod.to(t.device)
        return torch.where(t >= 0, table[t.clamp(min=0)], torch.ones((), device=t.device))

    def transition(self, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, beta) of the one-step forward transition q(x_t | x_t_prev) = N(sqrt(alpha) x_t_prev, beta I), 0-dim.

        For consecutive steps (t_prev = t - 1) these are the schedule's own alphas[t], betas[t]; for a longer jump
        alpha = abar_t / abar_t_prev, beta = 1 - alpha (the respaced schedule of Nichol & Dhariwal 2021, sec. 4).
        """
        if t_prev == t - 1:
            return self.alphas[t], self.betas[t]
        alpha = self.alpha_bar(t) / self.alpha_bar(t_prev)
        return alpha, 1 - alpha

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (DDPM eq. 4), x0 and noise (B, C, *spatial).

        t: one timestep for the whole batch, or a tensor (B,) of per-image timesteps. Pass a masked noise (m * eps)
        to noise a region only (paper 002, eq. 3).
        """
        abar = self.alpha_bar(t)
        if abar.ndim:
            abar = abar.reshape(-1, *([1] * (x0.ndim - 1)))
        abar = abar.to(x0.device, x0.dtype)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
