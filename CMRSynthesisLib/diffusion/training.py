"""The denoising training loss of a DiffusionModel: noise a clean image to a random timestep, and compare the
network's output with what it should predict (noise, x0 or v), optionally on a region only, with condition dropout.

Ho et al. 2020, algorithm 1 and eq. 14 (the "simple" loss); restricted to a ROI m as paper 002, eq. 3 and 5:
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) (m eps) and L = |(out - target) m|^2 averaged over the ROI's voxels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from ..errors import InputError
from .conditioning import drop_conditions
from .model import DiffusionModel
from .prediction import prediction_target, x0_and_noise


@dataclasses.dataclass(frozen=True)
class DenoisingStep:
    """One training draw of `denoising_step`: the loss (0-dim), the clean image the network's output implies
    (B, C, *spatial; unclipped, carrying gradients), the timesteps drawn (B,) and the error of the network's output
    against its target (B, C, *spatial; times the mask when there is one), for losses weighted otherwise (e.g. a
    heat map)."""

    loss: torch.Tensor
    x0: torch.Tensor
    timesteps: torch.Tensor
    error: torch.Tensor


def diffusion_loss(
    model: DiffusionModel,
    x0: torch.Tensor,
    *,
    conditions: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
    max_timestep: int | None = None,
    condition_dropout: Mapping[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean squared error between the network's output and its target for a batch x0 (B, C, *spatial).

    Draws, in this order from `generator`: timesteps (B,) uniform in [0, min(max_timestep, T)), the noise (shaped
    like x0), then the condition dropout (`conditioning.drop_conditions`, one draw per condition with a non-zero
    probability). mask: (B, 1, *spatial) in [0, 1]: the noise is multiplied by it and the loss is the squared error
    weighted by mask^2 summed over voxels and channels, divided by the mask's sum over them (its voxel count for a
    binary mask; at least 1). source: the image the forward noise starts from when it is not x0 (partial diffusion
    starts from the noised *input*, so a model can be taught that start directly): prediction_type "sample" only.
    Returns a 0-dim tensor. InputError for a source with another prediction type.
    """
    return denoising_step(model, x0, conditions=conditions, mask=mask, source=source, max_timestep=max_timestep,
                          condition_dropout=condition_dropout, generator=generator).loss


def denoising_step(
    model: DiffusionModel,
    x0: torch.Tensor,
    *,
    conditions: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
    max_timestep: int | None = None,
    condition_dropout: Mapping[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> DenoisingStep:
    """`diffusion_loss` (same arguments, same draws) with the predicted x0 and the timesteps, for losses on the
    prediction itself (e.g. an adversarial term on the decoded x0)."""
    if source is not None and model.prediction_type != "sample":
        raise InputError("noising another image than the target (source) needs prediction_type 'sample'")
    steps = model.schedule.num_train_timesteps
    high = min(max_timestep or steps, steps)
    timesteps = torch.randint(0, high, (len(x0),), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    values = drop_conditions(model.conditions, conditions or {}, condition_dropout or {}, generator)
    start = x0 if source is None else source
    x_t = model.schedule.add_noise(start, noise if mask is None else mask * noise, timesteps)
    abar = model.schedule.alpha_bar(timesteps).reshape(-1, *([1] * (x0.ndim - 1)))
    output = model.output(x_t, timesteps, values)
    predicted, _ = x0_and_noise(output, x_t, abar, model.prediction_type)
    error = output - prediction_target(x0, noise, abar, model.prediction_type)
    if mask is None:
        return DenoisingStep(error.pow(2).mean(), predicted, timesteps, error)
    error = error * mask
    return DenoisingStep(error.pow(2).sum() / mask.expand_as(error).sum().clamp(min=1), predicted, timesteps, error)
