"""A diffusion model: its denoising network with the noise schedule it was trained on, what the network predicts,
the conditions it takes, and whether its data live in [-1, 1] (pixel data: predicted x0 is clipped there) or not
(latents: never clipped)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import CheckpointError
from .conditioning import Condition, check_conditions, combine_guided, guidance_passes, network_inputs
from .prediction import check_prediction_type, x0_and_noise
from .schedule import NoiseSchedule

CLIP_RANGE = (-1.0, 1.0)


@dataclasses.dataclass
class DiffusionModel:
    """network(x_t with the concat conditions, timesteps (B,) long[, context=...]) -> output shaped like x_t, in the
    parameterisation `prediction_type` ("epsilon", "sample" or "v_prediction", see `prediction`).

    clip_x0: clip predicted x0 to CLIP_RANGE while sampling; true only for data scaled to [-1, 1].
    conditions: what the network is conditioned on, in the order their values are assembled (`conditioning`).
    """

    network: torch.nn.Module
    schedule: NoiseSchedule
    prediction_type: str = "epsilon"
    clip_x0: bool = True
    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction_type)
        self.conditions = tuple(self.conditions)
        names = [condition.name for condition in self.conditions]
        if len(set(names)) != len(names):
            raise CheckpointError(f"condition names must be unique; got {names}")

    @classmethod
    def from_config(cls, network: torch.nn.Module, config: Mapping[str, Any],
                    conditions: Sequence[Condition] = ()) -> DiffusionModel:
        """The model of a checkpoint's "schedule" config: the noise schedule's keys (num_train_timesteps, schedule and
        that schedule function's arguments such as beta_start, beta_end; MONAI's defaults when absent),
        "prediction_type" (default "epsilon") and "clip_sample" (default true: pixel data in [-1, 1]; set false for
        latents). Any other key is a CheckpointError (from the schedule function)."""
        settings = dict(config)
        prediction_type = settings.pop("prediction_type", "epsilon")
        clip_x0 = settings.pop("clip_sample", True)
        if not isinstance(clip_x0, bool):
            raise CheckpointError(f"clip_sample must be true or false; got {clip_x0!r}")
        return cls(network, NoiseSchedule(**settings), prediction_type, clip_x0, tuple(conditions))

    def output(self, x_t: torch.Tensor, timesteps: torch.Tensor, values: Mapping[str, torch.Tensor],
               guidance: Mapping[str, float] | None = None) -> torch.Tensor:
        """The network's output for x_t (B, C, *spatial) at timesteps (B,) given the condition values (B, ...) by
        name; with `guidance` (a scale per condition that has a null value), the classifier-free guided output, all
        passes in one batched forward (`conditioning.guidance_passes`)."""
        check_conditions(self.conditions, values)
        passes, scales = guidance_passes(self.conditions, values, guidance)
        batched = {name: torch.cat([chosen[name] for chosen in passes]) for name in values}
        inputs, context = network_inputs(self.conditions, torch.cat([x_t] * len(passes)), batched)
        steps = torch.cat([timesteps] * len(passes))
        output = self.network(inputs, steps) if context is None else self.network(inputs, steps, context=context)
        return combine_guided(output.chunk(len(passes)), scales)

    def predict(self, x_t: torch.Tensor, t: int, values: Mapping[str, torch.Tensor],
                guidance: Mapping[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) the (guided) network output implies at x_t, every image at timestep t; x0 clipped to
        CLIP_RANGE when clip_x0."""
        timesteps = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
        output = self.output(x_t, timesteps, values, guidance)
        x0, noise = x0_and_noise(output, x_t, self.schedule.alpha_bar(t), self.prediction_type)
        return (x0.clamp(*CLIP_RANGE) if self.clip_x0 else x0), noise
