"""Reverse-diffusion samplers over explicit (t, t_prev) pairs: DDPM ancestral steps and DDIM steps with eta.

A chain is a list of pairs [(t_0, t_1), (t_1, t_2), ..., (t_n-1, t_n)] with t_0 > t_1 > ... and t_n >= CLEAN (-1).
It starts either from pure noise, or partially: from the given image noised to t_0 (partial diffusion, paper 002's
start at lambda = 250; CMRDiff's guided synthesis from a partially noised structure image). An optional inpainting
mask restricts generation to a region: the forward noise is applied inside the mask only (paper 002, eq. 3), every
intermediate x_t outside it is set to its known forward value sqrt(abar_t) x0, and the result outside it is the given
image bit for bit. The result is the last step's prediction of x0 (x_CLEAN itself for a chain that ends at CLEAN, up
to rounding; the best estimate when a coarse grid ends above 0).

The k samples of each image run as one batch and come back as their mean and per-voxel SD. Each image may have its
own random generator: its start noise and every step's noise are drawn from it alone, so an image's result does not
depend on the other images of the batch (the network still sees the whole batch, whose float rounding may depend on
the batch size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError
from ..progress import Progress, report
from .model import DiffusionModel
from .schedule import CLEAN, NoiseSchedule

SAMPLERS = ("ddpm", "ddim")
STARTS = ("image", "noise")
DEFAULT_DDIM_STEPS = 20


@dataclasses.dataclass(frozen=True)
class SampleStats:
    """The mean (B, C, *spatial) of each image's k samples and their per-voxel standard deviation (population SD,
    same shape), in the data's units."""

    mean: torch.Tensor
    sd: torch.Tensor


def ddpm_timesteps(start: int) -> list[tuple[int, int]]:
    """Every step from `start` down: (start, start - 1), ..., (0, CLEAN); start + 1 network calls."""
    return [(t, t - 1) for t in range(start, -1, -1)]


def ddim_timesteps(start: int, steps: int, num_train_timesteps: int) -> list[tuple[int, int]]:
    """At most `steps` pairs from `start` on a regular grid: t_i = start - i s while t_i >= 0, each paired with
    t_i - s (CLEAN when below 0).

    The stride s = T // (T // ((start + 1) // steps)) (at least 1; start + 1 timesteps 0..start are to be covered)
    is T / n for an integer n: the spacing of an n-step DDIM over the whole chain (Song et al. 2021, sec. 4.2), as
    MONAI's DDIMScheduler steps. A chain from pure noise (start T - 1) with n dividing T so reaches the clean image:
    T = 1000, 50 steps: s = 20, t = 999, 979, ..., 19, then clean. A partial chain may stop above t = 0 when start is
    not a multiple of s: e.g. start 250, 20 steps: s = 12, t = 250, 238, ..., 22, ending at 10.
    """
    wanted = max(1, (start + 1) // steps)
    stride = num_train_timesteps // (num_train_timesteps // wanted)
    return [(t, max(t - stride, CLEAN)) for t in range(start, -1, -stride)[:steps]]


def timestep_pairs(sampler: str, start: int, num_train_timesteps: int, ddim_steps: int = DEFAULT_DDIM_STEPS
                   ) -> list[tuple[int, int]]:
    """The (t, t_prev) pairs of `sampler` from `start` (`ddpm_timesteps` or `ddim_timesteps`). InputError for an
    unknown sampler, a start outside 0..T-1 or fewer than 1 DDIM step."""
    if not 0 <= start < num_train_timesteps:
        raise InputError(f"the start step must be in 0..{num_train_timesteps - 1}; got {start}")
    if sampler == "ddpm":
        return ddpm_timesteps(start)
    if sampler == "ddim":
        if ddim_steps < 1:
            raise InputError(f"the number of DDIM steps must be at least 1; got {ddim_steps}")
        return ddim_timesteps(start, ddim_steps, num_train_timesteps)
    raise InputError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def ddpm_step(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One ancestral step: a draw of the posterior q(x_t_prev | x_t, x0) (Ho et al. 2020, eq. 6-7),

        mean = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_prev) / (1 - abar_t) x_t,
        var = (1 - abar_prev) / (1 - abar_t) beta,

    with (alpha, beta) the transition from t_prev to t (`NoiseSchedule.transition`). x_t, x0, noise: (B, C, ...);
    noise None returns the mean (the step to CLEAN has zero variance).
    """
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    alpha, beta = schedule.transition(t, t_prev)
    x0_coefficient = abar_prev.sqrt() * beta / (1 - abar_t)
    x_t_coefficient = alpha.sqrt() * (1 - abar_prev) / (1 - abar_t)
    mean = x0_coefficient * x0 + x_t_coefficient * x_t
    if noise is None:
        return mean
    variance = (1 - abar_prev) / (1 - abar_t) * beta
    return mean + variance.sqrt() * noise


def ddim_step(schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, eq. 12 with sigma of eq. 16):

        x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise,
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).

    eta 0 is deterministic (noise unused, may be None); eta 1 has the DDPM posterior's variance. x0, eps, noise:
    (B, C, ...).
    """
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    sigma = eta * variance.sqrt()
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).sqrt() * eps
    return x_prev + sigma * noise if eta > 0 and noise is not None else x_prev


DETERMINISTIC_NOTE = ("a deterministic model (one pass, no sampling): no uncertainty, its SD map is 0; a diffusion "
                      "checkpoint gives one")
ONE_SAMPLE_NOTE = "one sample (--samples 1): no uncertainty (the SD of one sample is 0); take k of 2 or more for one"


def sampler_eta(sampler: str, eta: float) -> float:
    """The eta `sample` takes for a user's setting: `eta` for "ddim" (InputError, naming --ddim-eta, unless
    0 <= eta <= 1), 0 for "ddpm" (its steps have their own variance; the setting does not apply)."""
    if sampler != "ddim":
        return 0.0
    if not 0.0 <= float(eta) <= 1.0:
        raise InputError(f"the DDIM noise level eta (--ddim-eta) must be in [0, 1]; got {eta}")
    return float(eta)


def checked_sampling(samples: int, sampler: str, ddim_eta: float) -> float:
    """A method's sampling settings checked before any work: InputError, naming the command-line option, for fewer
    than 1 sample (--samples), an unknown sampler (--sampler) or a DDIM eta outside [0, 1] (--ddim-eta). Returns the
    eta `sample` takes (`sampler_eta`)."""
    if samples < 1:
        raise InputError(f"the number of samples k (--samples) must be at least 1; got {samples}")
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r} (--sampler); choose one of {SAMPLERS}")
    return sampler_eta(sampler, ddim_eta)


def sampling_record(diffusion: bool, samples: int, seed: int, sampler: str, ddim_steps: int, ddim_eta: float
                    ) -> tuple[dict[str, Any], list[str]]:
    """The sampling settings a result records, and its notes: for a diffusion model samples k, seed, sampler (with
    ddim_steps and ddim_eta for DDIM) and ONE_SAMPLE_NOTE when k is 1; for a deterministic model (a pix2pix
    baseline) that it made one pass, none of those settings applied and its SD map is 0 (DETERMINISTIC_NOTE)."""
    if not diffusion:
        return {"sampling": "none: a deterministic model, one pass (samples, seed and sampler do not apply)"}, [
            DETERMINISTIC_NOTE]
    record: dict[str, Any] = {"samples": samples, "seed": seed, "sampler": sampler}
    if sampler == "ddim":
        record.update(ddim_steps=ddim_steps, ddim_eta=ddim_eta)
    return record, [ONE_SAMPLE_NOTE] if samples == 1 else []


def check_chain(pairs: Sequence[tuple[int, int]], num_train_timesteps: int) -> None:
    """InputError unless `pairs` is a non-empty chain (t, t_prev), each t_prev < t and the next pair's t, from a t
    below T down to t_prev >= CLEAN."""
    if not pairs:
        raise InputError("a sampling chain needs at least one (t, t_prev) step")
    for index, (t, t_prev) in enumerate(pairs):
        if not CLEAN <= t_prev < t < num_train_timesteps:
            raise InputError(f"step {index + 1} of the sampling chain goes from t={t} to t={t_prev}: it must go down, "
                             f"within {CLEAN}..{num_train_timesteps - 1}")
        if index + 1 < len(pairs) and pairs[index + 1][0] != t_prev:
            raise InputError(f"the sampling chain is broken after step {index + 1}: t={t_prev} is followed by "
                             f"t={pairs[index + 1][0]}")


@torch.no_grad()
def sample(
    model: DiffusionModel,
    pairs: Sequence[tuple[int, int]],
    *,
    image: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
    start: str = "image",
    mask: torch.Tensor | None = None,
    conditions: Mapping[str, torch.Tensor] | None = None,
    guidance: Mapping[str, float] | None = None,
    sampler: str = "ddpm",
    eta: float = 0.0,
    samples: int = 1,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    progress: Progress | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SampleStats:
    """Run the reverse chain `pairs` for k = `samples` samples of each image, as one batch.

    image: (B, C, *spatial) data (in [-1, 1] when model.clip_x0): the start of a partial chain and/or the known values
    for inpainting. shape: (B, C, *spatial) when there is no image. start: "image" (noise `image` to the first t:
    partial diffusion) or "noise" (pure Gaussian noise; with a mask, the known forward values outside it).
    mask: (B, 1, *spatial), 1 where the image is generated, 0 where it is kept (inpainting constraint; needs `image`).
    conditions: the model's condition values (B, ...) by name, each repeated for the k samples; guidance: one scale
    per condition with a null value (`DiffusionModel.output`), None for no guidance.
    sampler: "ddpm" (ancestral; eta must be 0) or "ddim" (eta >= 0). generator: one shared generator (None: torch's
    global one) or one per image. progress: called before every step with the fraction of steps done.
    decode: maps the final x0 of all k samples (B k, C, *spatial) to what the statistics are taken over (latent
    diffusion: `LatentCodec.decode`, so mean and SD are of the k decoded images, in image units); not with a mask.

    Returns SampleStats of the k samples' x0 (decoded, with `decode`); outside the mask the mean equals `image`
    exactly and the SD is 0. InputError for inconsistent arguments; Cancelled when progress returns False.
    """
    schedule = model.schedule
    check_chain(pairs, schedule.num_train_timesteps)
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if eta < 0 or (sampler == "ddpm" and eta != 0):
        raise InputError(f"eta must be 0 for the DDPM sampler and at least 0 for DDIM; got {eta}")
    if start not in STARTS:
        raise InputError(f"start must be one of {STARTS}; got {start!r}")
    if image is None and (start == "image" or mask is not None):
        raise InputError("a partial start or an inpainting mask needs the image")
    if (image is None) == (shape is None):
        raise InputError("give exactly one of the image and the shape of the images to sample")
    if samples < 1:
        raise InputError(f"the number of samples must be at least 1; got {samples}")
    if decode is not None and mask is not None:
        raise InputError("decoded samples cannot be combined with an inpainting mask (the mask is in the chain's space)")
    like = image if image is not None else next(model.network.parameters(), torch.empty(0))  # device and dtype
    batch, *per_image = image.shape if image is not None else [int(size) for size in shape]
    generators = list(generator) if isinstance(generator, Sequence) else [generator] * batch
    if len(generators) != batch:
        raise InputError(f"got {len(generators)} random generators for a batch of {batch} images")

    def draw() -> torch.Tensor:
        return torch.cat([torch.randn((samples, *per_image), generator=g, device=like.device, dtype=like.dtype)
                          for g in generators])

    def repeat(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.repeat_interleave(samples, dim=0)

    known, region = repeat(image), repeat(mask)
    values = {name: repeat(value) for name, value in (conditions or {}).items()}
    noise = draw()
    first = pairs[0][0]
    if start == "image":
        x = schedule.add_noise(known, noise if region is None else region * noise, first)
    else:
        x = noise if region is None else region * noise + (1 - region) * (schedule.alpha_bar(first).sqrt() * known)
    for index, (t, t_prev) in enumerate(pairs):
        report(progress, index / len(pairs), f"denoising step {index + 1}/{len(pairs)} (t={t})")
        x0, eps = model.predict(x, t, values, guidance)
        step_noise = draw() if t_prev != CLEAN and (sampler == "ddpm" or eta > 0) else None
        if sampler == "ddpm":
            x = ddpm_step(schedule, x, x0, t, t_prev, step_noise)
        else:
            x = ddim_step(schedule, x0, eps, t, t_prev, eta, step_noise)
        if region is not None:
            x = region * x + (1 - region) * (schedule.alpha_bar(t_prev).sqrt() * known)
    report(progress, 1.0, "denoising done")
    result = x0 if region is None else region * x0 + (1 - region) * known
    if decode is not None:
        result = decode(result)
    result = result.reshape(batch, samples, *result.shape[1:])
    mean = result.mean(dim=1)
    if mask is not None:  # a mean of k equal floats can be 1 ulp off
        mean = torch.where(mask > 0, mean, image)
    return SampleStats(mean=mean, sd=result.std(dim=1, correction=0))
