"""Conditional diffusion restricted to a region of interest (ROI), with partial diffusion and mean of k samples.

Forward process (paper 002, eq. 3): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) (m * eps), so voxels outside the
binary ROI m carry no noise at any step; the training loss is the noise error on the ROI only (eq. 5). The
network sees [x_t, condition] concatenated on the channel axis. Sampling starts from the input noised to t0
(partial diffusion) and runs the reverse chain with MONAI's DDPM scheduler (every step) or DDIM scheduler (a
coarse grid below t0); outside the ROI every intermediate image is set to its known forward value
sqrt(abar_t) x_0. The k samples of each image run as one batch; their mean and per-voxel SD come back together.
Each image may have its own random generator, so its noise does not depend on the other images of the batch.

Tensors are (batch, channels, y, x) and image values are scaled to [-1, 1] (the schedulers clip predicted x0 there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from ..errors import InputError
from ..progress import Progress, report

DEFAULT_SCHEDULE = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 0.02,
                    "prediction_type": "epsilon"}
PREDICTION_TYPES = ("epsilon", "sample")
SAMPLERS = ("ddpm", "ddim")
DEFAULT_DDIM_STEPS = 20


@dataclasses.dataclass
class SampleResult:
    """Mean of the k samples (B, 1, y, x) and their per-voxel standard deviation (B, 1, y, x)."""

    mean: torch.Tensor
    std: torch.Tensor


class RoiDiffusion:
    """A noise-prediction network wrapped with ROI-restricted DDPM training and partial-diffusion sampling.

    network: maps (x_t concatenated with the condition, timesteps) to predicted noise of x_t's shape.
    schedule: DDPM schedule arguments (num_train_timesteps, schedule, beta_start, beta_end) and prediction_type:
    "epsilon" (the network predicts the noise, as in the paper) or "sample" (it predicts x0 directly).
    """

    def __init__(self, network: torch.nn.Module, schedule: dict[str, Any] | None = None) -> None:
        self.network = network
        self.schedule = {**DEFAULT_SCHEDULE, **(schedule or {})}
        if self.schedule["prediction_type"] not in PREDICTION_TYPES:
            raise InputError(f"prediction_type must be one of {PREDICTION_TYPES}; got {self.schedule['prediction_type']!r}")
        self.ddpm = DDPMScheduler(**self.schedule, clip_sample=True)
        self.num_train_timesteps = int(self.schedule["num_train_timesteps"])

    def _abar(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Cumulative alpha products for timesteps (negative means "clean": 1), shaped to broadcast over `like`."""
        table = self.ddpm.alphas_cumprod.to(like.device, like.dtype)
        values = torch.where(timesteps >= 0, table[timesteps.clamp(min=0)], torch.ones_like(timesteps, dtype=like.dtype))
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, roi: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) (roi * noise); exactly sqrt(abar_t) x0 outside the ROI."""
        abar = self._abar(timesteps, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * (roi * noise)

    def predict(self, x_t: torch.Tensor, condition: torch.Tensor | None, timesteps: torch.Tensor) -> torch.Tensor:
        """The network's output for x_t, conditioned by channel concatenation: the noise or x0 (prediction_type)."""
        inputs = x_t if condition is None else torch.cat([x_t, condition], dim=1)
        return self.network(inputs, timesteps)

    def training_loss(
        self,
        target: torch.Tensor,
        condition: torch.Tensor | None,
        roi: torch.Tensor,
        generator: torch.Generator | None = None,
        max_timestep: int | None = None,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error over ROI voxels (paper eq. 5) of the noise, or of x0 for prediction_type "sample", at
        uniformly drawn timesteps < max_timestep.

        source: the image the forward noise starts from, when it is not the target (prediction_type "sample" only):
        partial diffusion starts from the noised *input*, so a model can be taught that start directly.
        """
        if source is not None and self.schedule["prediction_type"] != "sample":
            raise InputError("noising another image than the target needs prediction_type 'sample'")
        high = min(max_timestep or self.num_train_timesteps, self.num_train_timesteps)
        timesteps = torch.randint(0, high, (target.shape[0],), device=target.device, generator=generator)
        noise = torch.randn(target.shape, device=target.device, generator=generator)
        x_t = self.add_noise(target if source is None else source, noise, roi, timesteps)
        wanted = noise if self.schedule["prediction_type"] == "epsilon" else target
        error = (self.predict(x_t, condition, timesteps) - wanted) * roi
        return error.pow(2).sum() / roi.sum().clamp(min=1)

    def ddim_stride(self, t0: int, ddim_steps: int) -> int:
        """The DDIM step size for about `ddim_steps` steps below t0 that MONAI's DDIMScheduler can take: its step()
        goes from t to t - T // num_inference_steps, so the stride must be of that form."""
        wanted = max(1, t0 // max(1, ddim_steps))
        return self.num_train_timesteps // (self.num_train_timesteps // wanted)

    def timesteps(self, sampler: str, t0: int, ddim_steps: int = DEFAULT_DDIM_STEPS) -> torch.Tensor:
        """Reverse-chain timesteps from t0: every step down to 0 (DDPM, t0 + 1 network calls), or `ddim_steps`
        steps t0, t0 - s, t0 - 2s, ... of the DDIM stride s (DDIM, at most ddim_steps network calls)."""
        if not 1 <= t0 < self.num_train_timesteps:
            raise InputError(f"the partial-diffusion start step t0 (--steps) must be in 1..{self.num_train_timesteps - 1}; "
                             f"got {t0}")
        if sampler == "ddpm":
            return torch.arange(t0, -1, -1)
        if sampler == "ddim":
            if ddim_steps < 1:
                raise InputError(f"the number of DDIM steps (--ddim-steps) must be at least 1; got {ddim_steps}")
            stride = self.ddim_stride(t0, ddim_steps)
            return torch.arange(t0, -1, -stride)[:ddim_steps]
        raise InputError(f"unknown sampler {sampler!r} (--sampler); choose one of {SAMPLERS}")

    def check_settings(self, t0: int, samples: int, sampler: str, ddim_steps: int = DEFAULT_DDIM_STEPS) -> torch.Tensor:
        """Validate sampling settings (InputError naming the setting and its command-line option) before any work;
        returns the reverse-chain timesteps (`timesteps`)."""
        if samples < 1:
            raise InputError(f"the number of samples k (--samples) must be at least 1; got {samples}")
        return self.timesteps(sampler, t0, ddim_steps)

    def _scheduler(self, sampler: str, grid: torch.Tensor) -> DDPMScheduler | DDIMScheduler:
        if sampler == "ddpm":
            return self.ddpm
        stride = int(grid[0] - grid[1]) if len(grid) > 1 else self.num_train_timesteps
        ddim = DDIMScheduler(**self.schedule, clip_sample=True)
        ddim.set_timesteps(self.num_train_timesteps // stride)  # step() now goes from t to t - stride
        ddim.timesteps = grid
        return ddim

    @torch.no_grad()
    def sample(
        self,
        image: torch.Tensor,
        condition: torch.Tensor | None,
        roi: torch.Tensor,
        *,
        t0: int = 250,
        samples: int = 5,
        sampler: str = "ddpm",
        ddim_steps: int = DEFAULT_DDIM_STEPS,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        progress: Progress | None = None,
    ) -> SampleResult:
        """Partial diffusion of `image` (B, 1, y, x) inside `roi` (B, 1, y, x), k = `samples` runs as one batch.

        The image is noised to step t0 inside the ROI, then denoised conditioned on `condition` (B, C, y, x); the
        result is the x0 prediction of the last step. Returns the mean and SD over the k samples; voxels outside the
        ROI equal `image` exactly.

        generator: one generator shared by the batch (None: torch's global one), or a sequence of B generators, one
        per image: then image b's start noise and every step's noise for its k samples come from generator b only.
        (The network still sees the whole batch, whose float rounding may depend on the batch size.)
        """
        grid = self.check_settings(t0, samples, sampler, ddim_steps)
        generators = list(generator) if isinstance(generator, Sequence) else [generator] * len(image)
        if len(generators) != len(image):
            raise InputError(f"got {len(generators)} random generators for a batch of {len(image)} images")
        scheduler = self._scheduler(sampler, grid)
        step_size = self.num_train_timesteps // scheduler.num_inference_steps if sampler == "ddim" else 1
        options = {"eta": 0.0} if sampler == "ddim" else {}
        repeat = lambda tensor: None if tensor is None else tensor.repeat_interleave(samples, dim=0)
        x_start, cond, mask = repeat(image), repeat(condition), repeat(roi)
        noise = torch.cat([torch.randn((samples, *image.shape[1:]), device=image.device, generator=g)
                           for g in generators])
        batch = x_start.shape[0]
        x_t = self.add_noise(x_start, noise, mask, torch.full((batch,), int(grid[0]), device=x_start.device))
        result = x_t
        for index, t in enumerate(grid.tolist()):
            report(progress, index / len(grid), f"denoising step {index + 1}/{len(grid)} (t={t})")
            output = self.predict(x_t, cond, torch.full((batch,), t, device=x_t.device, dtype=torch.long))
            # one scheduler step per image, so the DDPM variance noise of its k samples comes from its own generator
            steps = [scheduler.step(part, t, current, generator=g, **options)
                     for part, current, g in zip(output.split(samples), x_t.split(samples), generators)]
            x_prev, x0_hat = (torch.cat(parts) for parts in zip(*steps))
            t_prev = torch.full((batch,), t - step_size, device=x_t.device)
            outside = self._abar(t_prev, x_start).sqrt() * x_start
            x_t = mask * x_prev + (1 - mask) * outside
            result = mask * x0_hat + (1 - mask) * x_start
        report(progress, 1.0, "denoising done")
        result = result.reshape(-1, samples, *result.shape[1:])
        mean = torch.where(roi > 0, result.mean(dim=1), image)  # a mean of k equal floats can be 1 ulp off
        return SampleResult(mean=mean, std=result.std(dim=1, unbiased=False))
