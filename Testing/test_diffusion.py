"""The shared diffusion core on tiny networks: schedule, DDPM / DDIM steps against their closed forms and MONAI's
schedulers, parameterisations, partial and pure-noise starts, the inpainting constraint, guidance with one scale per
condition, condition dropout, per-image generators, the training loss and the latent codec."""

import math

import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from CMRSynthesisLib.diffusion.conditioning import Condition, drop_conditions
from CMRSynthesisLib.diffusion.latent import LatentCodec, downsample_mask, estimate_scale_factor
from CMRSynthesisLib.diffusion.model import DiffusionModel
from CMRSynthesisLib.diffusion.prediction import PREDICTION_TYPES, prediction_target, x0_and_noise
from CMRSynthesisLib.diffusion.samplers import (
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    ddpm_timesteps,
    sample,
    timestep_pairs,
)
from CMRSynthesisLib.diffusion.schedule import CLEAN, NoiseSchedule
from CMRSynthesisLib.diffusion.training import diffusion_loss
from CMRSynthesisLib.errors import Cancelled, CheckpointError, InputError

SCHEDULE = NoiseSchedule()
IMAGE = (Condition("image", "concat"),)


class Recorder(torch.nn.Module):
    """Wraps a network and records the inputs, timesteps and context it is called with."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.calls = network, []

    def forward(self, x, timesteps, **kwargs):
        self.calls.append((x.detach().clone(), timesteps.detach().clone(), kwargs.get("context")))
        return self.network(x, timesteps, **kwargs)


class Constant(torch.nn.Module):
    """Outputs a constant image of x_t's first channel's shape."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, timesteps, context=None):
        return torch.full_like(x[:, :1], self.value)


class ThreeChannel(torch.nn.Module):
    """Predicts the noise of a 3-channel latent as 3 times its concatenated latent condition."""

    def forward(self, x, timesteps, context=None):
        return 3.0 * x[:, 3:]


class Elementwise(torch.nn.Module):
    """A voxel-wise "network": each image's output depends on its own voxels (and context) only, bit for bit, at any
    batch size."""

    def forward(self, x, timesteps, context=None):
        out = 0.1 * torch.tanh(x[:, :1] + x[:, 1:].sum(dim=1, keepdim=True))
        return out if context is None else out + 0.05 * context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def small_unet(in_channels: int = 2, context_dim: int | None = None) -> DiffusionModelUNet:
    """A tiny UNet with random weights (MONAI zero-initialises its output layers, which would hide its inputs)."""
    torch.manual_seed(0)
    attention = {} if context_dim is None else {"with_conditioning": True, "cross_attention_dim": context_dim,
                                                "num_head_channels": 8}
    network = DiffusionModelUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=(8, 8),
                                 norm_num_groups=8, attention_levels=(False, context_dim is not None),
                                 num_res_blocks=1, **attention)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.2)
    return network.eval()


def model_of(network, prediction_type="sample", conditions=IMAGE, clip=True) -> DiffusionModel:
    return DiffusionModel(network, NoiseSchedule(), prediction_type, clip, conditions)


def generators(*seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand((2, 1, 16, 16), generator=generator) * 2 - 1
    roi = torch.zeros_like(image)
    roi[:, :, 4:12, 5:11] = 1
    return image, roi


# --------------------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("config", [{}, {"schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 0.02},
                                    {"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195},
                                    {"schedule": "cosine", "num_train_timesteps": 500},
                                    {"schedule": "sigmoid_beta", "num_train_timesteps": 200}])
def test_schedule_equals_monai_exactly(config):
    ours, monai = NoiseSchedule(**config), DDPMScheduler(**config)
    for name in ("betas", "alphas", "alphas_cumprod"):
        assert torch.equal(getattr(ours, name), getattr(monai, name)), name
    assert ours.alpha_bar(CLEAN) == 1.0 and torch.equal(ours.alpha_bar(7), monai.alphas_cumprod[7])
    assert torch.equal(ours.alpha_bar(torch.tensor([-1, 0, 5])),
                       torch.stack([torch.tensor(1.0), monai.alphas_cumprod[0], monai.alphas_cumprod[5]]))


def test_unknown_schedule_or_setting_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="unknown noise schedule"):
        NoiseSchedule(schedule="quadratic")
    with pytest.raises(CheckpointError, match="does not take"):
        DiffusionModel.from_config(Constant(0.0), {"schedule": "linear_beta", "beta_begin": 1e-4})
    with pytest.raises(CheckpointError, match="prediction_type"):
        DiffusionModel.from_config(Constant(0.0), {"prediction_type": "v"})
    model = DiffusionModel.from_config(Constant(0.0), {"prediction_type": "v_prediction", "clip_sample": False,
                                                       "num_train_timesteps": 300})
    assert (model.prediction_type, model.clip_x0, model.schedule.num_train_timesteps) == ("v_prediction", False, 300)


def test_forward_noise_with_a_masked_noise_is_exactly_zero_outside_the_roi(images):
    image, roi = images
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([250, 900])
    x_t = SCHEDULE.add_noise(image, roi * noise, t)
    abar = SCHEDULE.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    outside = roi == 0
    assert torch.equal(x_t[outside], (abar.sqrt() * image)[outside])
    assert torch.allclose((x_t - abar.sqrt() * image)[~outside], ((1 - abar).sqrt() * noise)[~outside])


# --------------------------------------------------------------------------------------------------- steps
def float64_schedule() -> NoiseSchedule:
    """The default schedule recomputed in float64, so closed forms can be checked without float32 rounding."""
    schedule = NoiseSchedule()
    schedule.betas = schedule.betas.double()
    schedule.alphas = 1 - schedule.betas
    schedule.alphas_cumprod = torch.cumprod(schedule.alphas, dim=0)
    return schedule


def _gaussian_posterior(schedule: NoiseSchedule, t: int, s: int, x0: torch.Tensor, x_t: torch.Tensor
                        ) -> tuple[torch.Tensor, float]:
    """Mean and variance of x_s given x_t and x0 by conditioning the joint Gaussian of (x_s, x_t):
    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) e1, x_t = sqrt(abar_t / abar_s) x_s + sqrt(1 - abar_t / abar_s) e2."""
    abar_t, abar_s = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(s))
    covariance = math.sqrt(abar_t / abar_s) * (1 - abar_s)
    mean = math.sqrt(abar_s) * x0 + covariance / (1 - abar_t) * (x_t - math.sqrt(abar_t) * x0)
    return mean, (1 - abar_s) - covariance**2 / (1 - abar_t)


@pytest.mark.parametrize(("t", "s"), [(100, 99), (1, 0), (0, CLEAN), (300, 240), (40, CLEAN)])
def test_ddpm_step_is_the_posterior_mean_plus_sigma_noise(t, s):
    schedule = float64_schedule()
    generator = torch.Generator().manual_seed(t)
    x0, x_t, noise = (torch.randn((3, 1, 8, 8), generator=generator, dtype=torch.float64) for _ in range(3))
    mean, variance = _gaussian_posterior(schedule, t, s, x0, x_t)
    assert torch.allclose(ddpm_step(schedule, x_t, x0, t, s, None), mean, rtol=1e-9, atol=1e-9)
    expected = mean + math.sqrt(max(variance, 0.0)) * noise
    assert torch.allclose(ddpm_step(schedule, x_t, x0, t, s, noise), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [250, 17, 1])
def test_ddpm_step_matches_monai_bit_for_bit(t):
    generator = torch.Generator().manual_seed(t)
    x0 = torch.rand((2, 1, 8, 8), generator=generator) * 2 - 1
    x_t = torch.randn((2, 1, 8, 8), generator=generator)
    monai = DDPMScheduler(prediction_type="sample")
    expected, _ = monai.step(x0, t, x_t, generator=torch.Generator().manual_seed(9))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    assert torch.equal(ddpm_step(SCHEDULE, x_t, x0, t, t - 1, noise), expected)


@pytest.mark.parametrize(("t", "stride", "eta"), [(250, 12, 0.0), (22, 12, 0.0), (10, 12, 0.0), (500, 50, 0.5)])
def test_ddim_step_matches_its_closed_form_and_monai(t, stride, eta):
    generator = torch.Generator().manual_seed(t)
    x0 = torch.rand((2, 1, 8, 8), generator=generator) * 2 - 1
    x_t = torch.randn((2, 1, 8, 8), generator=generator)
    s = max(t - stride, CLEAN)
    _, eps = x0_and_noise(x0, x_t, SCHEDULE.alpha_bar(t), "sample")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    exact = float64_schedule()  # the closed form in float64
    eps64 = x0_and_noise(x0.double(), x_t.double(), exact.alpha_bar(t), "sample")[1]
    abar_t, abar_s = float(exact.alpha_bar(t)), float(exact.alpha_bar(s))
    sigma = eta * math.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
    expected = math.sqrt(abar_s) * x0.double() + math.sqrt(1 - abar_s - sigma**2) * eps64 + sigma * noise.double()
    assert torch.allclose(ddim_step(exact, x0.double(), eps64, t, s, eta, noise.double()), expected, rtol=1e-9,
                          atol=1e-9)
    monai = DDIMScheduler(prediction_type="sample")  # and MONAI's float32 step bit for bit
    monai.set_timesteps(1000 // stride)  # MONAI steps from t to t - 1000 // n
    step, _ = monai.step(x0, t, x_t, eta=eta, generator=torch.Generator().manual_seed(9))
    assert torch.equal(ddim_step(SCHEDULE, x0, eps, t, s, eta, noise), step)


def test_ddim_with_the_true_noise_stays_on_the_forward_trajectory():
    generator = torch.Generator().manual_seed(3)
    x0, eps = torch.rand((2, 1, 8, 8), generator=generator), torch.randn((2, 1, 8, 8), generator=generator)
    for t, s in [(900, 860), (250, 238), (30, CLEAN)]:
        assert torch.allclose(ddim_step(SCHEDULE, x0, eps, t, s, 0.0, None), SCHEDULE.add_noise(x0, eps, s), atol=1e-5)


def test_ddim_eta_one_has_the_ddpm_posterior_variance():
    schedule, zeros, noise = float64_schedule(), torch.zeros((1, 1, 2, 2), dtype=torch.float64), torch.ones(
        (1, 1, 2, 2), dtype=torch.float64)
    for t, s in [(5, 4), (300, 299), (999, 998), (500, 400)]:
        ddpm = ddpm_step(schedule, zeros, zeros, t, s, noise)  # mean 0: the step is sigma itself
        ddim = ddim_step(schedule, zeros, zeros, t, s, 1.0, noise)
        assert torch.allclose(ddpm, ddim, rtol=1e-9) and float(ddpm[0, 0, 0, 0]) > 0


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_epsilon_x0_and_v_round_trip(prediction_type):
    generator = torch.Generator().manual_seed(4)
    x0, eps = torch.randn((4, 2, 8, 8), generator=generator), torch.randn((4, 2, 8, 8), generator=generator)
    abar = SCHEDULE.alpha_bar(torch.tensor([3, 200, 600, 990])).reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    target = prediction_target(x0, eps, abar, prediction_type)
    x0_back, eps_back = x0_and_noise(target, x_t, abar, prediction_type)
    assert torch.allclose(x0_back, x0, atol=2e-3) and torch.allclose(eps_back, eps, atol=2e-3)
    if prediction_type == "v_prediction":
        assert torch.allclose(target, abar.sqrt() * eps - (1 - abar).sqrt() * x0)


# --------------------------------------------------------------------------------------------------- chains
def test_timestep_grids():
    assert ddpm_timesteps(3) == [(3, 2), (2, 1), (1, 0), (0, CLEAN)]
    assert ddim_timesteps(250, 20, 1000) == [(250 - 12 * i, 238 - 12 * i) for i in range(20)]  # ends above 0
    assert ddim_timesteps(999, 25, 1000)[-1] == (39, CLEAN) and len(ddim_timesteps(999, 25, 1000)) == 25
    for steps in (50, 100):  # from pure noise with steps dividing T: the chain reaches the clean image
        pairs = ddim_timesteps(999, steps, 1000)
        assert len(pairs) == steps and pairs[-1] == (1000 // steps - 1, CLEAN)
    assert ddim_timesteps(7, 3, 1000) == [(7, 5), (5, 3), (3, 1)]
    assert ddim_timesteps(30, 50, 1000) == ddpm_timesteps(30)
    with pytest.raises(InputError, match="start step"):
        timestep_pairs("ddpm", 1000, 1000)
    with pytest.raises(InputError, match="sampler"):
        timestep_pairs("euler", 10, 1000)
    with pytest.raises(InputError, match="DDIM steps"):
        timestep_pairs("ddim", 10, 1000, 0)


def test_partial_start_noises_the_image_to_t0_and_runs_k_samples_as_one_batch(images):
    image, roi = images
    recorder = Recorder(small_unet())
    pairs = ddpm_timesteps(40)
    sample(model_of(recorder), pairs, image=image, mask=roi, conditions={"image": image}, samples=3,
           generator=generators(5, 6))
    assert [int(t[0]) for _, t, _ in recorder.calls] == list(range(40, -1, -1))
    first = recorder.calls[0][0]
    assert first.shape == (6, 2, 16, 16)  # 2 images x 3 samples; x_t and the condition
    noise = torch.cat([torch.randn((3, 1, 16, 16), generator=g) for g in generators(5, 6)])
    repeated, region = image.repeat_interleave(3, dim=0), roi.repeat_interleave(3, dim=0)
    assert torch.equal(first[:, :1], SCHEDULE.add_noise(repeated, region * noise, 40))
    assert torch.equal(first[:, 1:], repeated)
    # without a mask the whole image is noised
    recorder.calls.clear()
    sample(model_of(recorder), pairs, image=image, conditions={"image": image}, samples=3, generator=generators(5, 6))
    assert torch.equal(recorder.calls[0][0][:, :1], SCHEDULE.add_noise(repeated, noise, 40))


@pytest.mark.parametrize(("sampler", "start"), [("ddpm", "image"), ("ddim", "image"), ("ddim", "noise")])
def test_inpainting_keeps_every_intermediate_and_the_result_exact_outside_the_mask(images, sampler, start):
    image, roi = images
    recorder = Recorder(small_unet())
    pairs = timestep_pairs(sampler, 60 if start == "image" else 999, 1000, 8)
    result = sample(model_of(recorder), pairs, image=image, mask=roi, conditions={"image": image}, sampler=sampler,
                    start=start, samples=2, generator=generators(1, 2))
    outside = roi.repeat_interleave(2, dim=0) == 0
    known = image.repeat_interleave(2, dim=0)
    for x, t, _ in recorder.calls:
        assert torch.equal(x[:, :1][outside], (SCHEDULE.alpha_bar(int(t[0])).sqrt() * known)[outside])
    t0 = pairs[0][0]
    residual = (recorder.calls[0][0][:, :1] - SCHEDULE.alpha_bar(t0).sqrt() * known)[~outside]
    assert residual.std() > 0.5 * (1 - SCHEDULE.alpha_bar(t0)).sqrt()  # noised inside
    assert torch.equal(result.mean[roi == 0], image[roi == 0])
    assert torch.all(result.sd[roi == 0] == 0) and result.sd[roi == 1].mean() > 0


def test_pure_noise_start_and_ddim_eta_zero_is_deterministic():
    recorder = Recorder(small_unet(in_channels=1))
    model = model_of(recorder, "epsilon", conditions=())
    pairs = timestep_pairs("ddim", 999, 1000, 5)
    generator = torch.Generator().manual_seed(8)
    first = sample(model, pairs, shape=(1, 1, 16, 16), start="noise", sampler="ddim", samples=2, generator=generator)
    replay = torch.Generator().manual_seed(8)
    start = torch.randn((2, 1, 16, 16), generator=replay)
    assert torch.equal(recorder.calls[0][0], start)  # pure noise
    assert torch.equal(generator.get_state(), replay.get_state())  # eta 0 draws nothing after the start
    again = sample(model, pairs, shape=(1, 1, 16, 16), start="noise", sampler="ddim", samples=2,
                   generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.mean, again.mean) and torch.equal(first.sd, again.sd)
    noisy = sample(model, pairs, shape=(1, 1, 16, 16), start="noise", sampler="ddim", eta=1.0, samples=2,
                   generator=torch.Generator().manual_seed(8))
    assert not torch.equal(first.mean, noisy.mean)
    assert [int(t[0]) for _, t, _ in recorder.calls[:5]] == [t for t, _ in pairs]


def test_x0_is_clipped_only_when_the_data_live_in_minus_one_to_one():
    pairs = ddpm_timesteps(5)
    clipped = sample(model_of(Constant(3.0), conditions=()), pairs, shape=(1, 1, 4, 4), start="noise")
    latent = sample(model_of(Constant(3.0), conditions=(), clip=False), pairs, shape=(1, 1, 4, 4), start="noise")
    assert torch.all(clipped.mean == 1.0) and torch.all(latent.mean == 3.0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_per_image_generators_make_each_image_independent_of_the_batch(images, sampler):
    image, roi = images
    model = model_of(Elementwise())
    pairs = timestep_pairs(sampler, 20, 1000, 5)

    def run(batch, seeds):
        return sample(model, pairs, image=image[batch], mask=roi[batch], conditions={"image": image[batch]},
                      sampler=sampler, eta=0.5 if sampler == "ddim" else 0.0, samples=3, generator=generators(*seeds))

    both, alone, swapped = run([0, 1], [7, 8]), run([1], [8]), run([1, 0], [8, 7])
    assert torch.equal(both.mean[1], alone.mean[0]) and torch.equal(both.sd[1], alone.sd[0])
    assert torch.equal(both.mean, swapped.mean.flip(0))
    assert both.sd[roi == 1].mean() > 0  # the k samples of one image differ
    assert not torch.equal(run([1], [9]).mean, alone.mean)
    with pytest.raises(InputError, match="generators"):
        run([0, 1], [7])


def test_progress_counts_steps_and_can_cancel(images):
    image, roi = images
    model, pairs = model_of(Elementwise()), ddpm_timesteps(9)
    fractions = []
    sample(model, pairs, image=image, mask=roi, conditions={"image": image},
           progress=lambda fraction, message: fractions.append(fraction))
    assert fractions == [index / 10 for index in range(10)] + [1.0]
    with pytest.raises(Cancelled):
        sample(model, pairs, image=image, conditions={"image": image}, progress=lambda fraction, message: fraction < 0.5)


def test_bad_sampling_arguments(images):
    image, roi = images
    model = model_of(Elementwise())
    conditions = {"image": image}
    cases = [({"pairs": [(10, 5), (4, CLEAN)]}, "broken"), ({"pairs": [(10, 12)]}, "go down"),
             ({"pairs": [(1000, 5)]}, "go down"), ({"pairs": []}, "at least one"),
             ({"sampler": "euler"}, "sampler"), ({"eta": 0.5}, "eta"), ({"samples": 0}, "samples"),
             ({"image": None}, "needs the image"), ({"start": "middle"}, "start"),
             ({"conditions": {}}, "conditions"), ({"conditions": {"image": image, "other": image}}, "conditions")]
    for change, message in cases:
        arguments = {"pairs": ddpm_timesteps(3), "image": image, "mask": roi, "conditions": conditions, **change}
        with pytest.raises(InputError, match=message):
            sample(model, arguments.pop("pairs"), **arguments)


# --------------------------------------------------------------------------------------------------- guidance
GUIDED = (Condition("image", "concat", null=0.0), Condition("tokens", "context", null=0.0))


def _guided_inputs(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((2, 1, 16, 16), generator=generator) * 2 - 1,
            {"image": torch.rand((2, 1, 16, 16), generator=generator),
             "tokens": torch.randn((2, 3, 4), generator=generator)})


@pytest.mark.parametrize("zeroed", ["image", "tokens"])
def test_a_condition_at_guidance_scale_zero_has_no_influence(zeroed):
    image, values = _guided_inputs(0)
    _, other = _guided_inputs(1)
    model = model_of(small_unet(in_channels=2, context_dim=4), "epsilon", GUIDED)
    kept = "tokens" if zeroed == "image" else "image"

    def run(changed, scale):
        conditions = {**values, zeroed: changed}
        return sample(model, timestep_pairs("ddim", 999, 1000, 4), shape=image.shape, start="noise",
                      conditions=conditions, guidance={kept: 2.0, zeroed: scale}, sampler="ddim", samples=2,
                      generator=generators(3, 4))

    first, changed = run(values[zeroed], 0.0), run(other[zeroed], 0.0)
    assert torch.equal(first.mean, changed.mean) and torch.equal(first.sd, changed.sd)
    assert not torch.equal(run(values[zeroed], 1.5).mean, run(other[zeroed], 1.5).mean)  # the test can fail


def test_guided_output_is_the_compositional_formula_in_one_batched_forward():
    image, values = _guided_inputs(2)
    recorder = Recorder(Elementwise())
    model = model_of(recorder, "epsilon", GUIDED)
    t = torch.tensor([500, 500])
    guided = model.output(image, t, values, {"image": 1.5, "tokens": 3.0})
    assert len(recorder.calls) == 1 and recorder.calls[0][0].shape[0] == 6  # null pass + one per condition
    null = {"image": torch.zeros_like(values["image"]), "tokens": torch.zeros_like(values["tokens"])}
    out_null = model.output(image, t, null)
    out_image = model.output(image, t, {**null, "image": values["image"]})
    out_tokens = model.output(image, t, {**null, "tokens": values["tokens"]})
    expected = out_null + 1.5 * (out_image - out_null) + 3.0 * (out_tokens - out_null)
    assert torch.allclose(guided, expected, atol=1e-6)
    recorder.calls.clear()
    model.output(image, t, values, {"image": 1.5, "tokens": 0.0})
    assert recorder.calls[0][0].shape[0] == 4  # a zero scale costs no pass
    assert torch.equal(model.output(image, t, values), recorder.network(*_assembled(image, t, values)))


def _assembled(image, t, values):
    return torch.cat([image, values["image"]], dim=1), t, values["tokens"]


def test_guidance_scales_must_match_the_guided_conditions():
    image, values = _guided_inputs(3)
    model = model_of(Elementwise(), "epsilon", GUIDED)
    t = torch.tensor([5, 5])
    for guidance in ({"image": 1.0}, {"image": 1.0, "tokens": 1.0, "other": 1.0}, {"image": 1.0, "tokens": math.nan}):
        with pytest.raises(InputError, match="guidance"):
            model.output(image, t, values, guidance)
    with pytest.raises(InputError, match="guidance"):  # a condition without a null value cannot be guided
        model_of(Elementwise()).output(image, t, {"image": values["image"]}, {"image": 2.0})


def test_condition_dropout_is_per_sample_and_per_condition():
    values = {"image": torch.ones((1000, 1, 4, 4)), "tokens": torch.ones((1000, 3, 4))}
    generator = torch.Generator().manual_seed(0)
    dropped = drop_conditions(GUIDED, values, {"image": 0.3}, generator)
    assert dropped["tokens"] is values["tokens"]
    per_sample = dropped["image"].flatten(1)
    assert torch.all((per_sample == 0).all(dim=1) | (per_sample == 1).all(dim=1))  # whole images dropped
    assert 0.25 < float((per_sample[:, 0] == 0).float().mean()) < 0.35
    both = drop_conditions(GUIDED, values, {"image": 1.0, "tokens": 0.0}, generator)
    assert torch.all(both["image"] == 0) and torch.equal(both["tokens"], values["tokens"])
    with pytest.raises(InputError, match="no null"):
        drop_conditions(IMAGE, {"image": values["image"]}, {"image": 0.1}, generator)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        drop_conditions(GUIDED, values, {"image": 1.5}, generator)
    with pytest.raises(InputError, match="unknown"):
        drop_conditions(GUIDED, values, {"label": 0.5}, generator)


# --------------------------------------------------------------------------------------------------- training loss
def _replay(seed, batch, shape, high=1000):
    replay = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (batch,), generator=replay), torch.randn(shape, generator=replay)


def test_training_loss_counts_roi_voxels_only(images):
    image, roi = images
    loss = diffusion_loss(model_of(Constant(0.0), "epsilon"), image, conditions={"image": image}, mask=roi,
                          generator=torch.Generator().manual_seed(3))
    _, noise = _replay(3, 2, image.shape)
    assert torch.allclose(loss, (noise[roi == 1] ** 2).mean())
    assert not torch.allclose(loss, (noise**2).mean())
    unmasked = diffusion_loss(model_of(Constant(0.0), "epsilon"), image, conditions={"image": image},
                              generator=torch.Generator().manual_seed(3))
    assert torch.allclose(unmasked, (noise**2).mean())


def test_training_targets_for_x0_and_v(images):
    image, roi = images
    loss = diffusion_loss(model_of(Constant(0.0), "sample"), image, conditions={"image": image}, mask=roi,
                          generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loss, (image[roi == 1] ** 2).mean())
    loss = diffusion_loss(model_of(Constant(0.0), "v_prediction"), image, conditions={"image": image},
                          generator=torch.Generator().manual_seed(4))
    t, noise = _replay(4, 2, image.shape)
    abar = SCHEDULE.alpha_bar(t).reshape(-1, 1, 1, 1)
    assert torch.allclose(loss, ((abar.sqrt() * noise - (1 - abar).sqrt() * image) ** 2).mean())


def test_training_timesteps_source_and_condition_dropout(images):
    image, roi = images
    recorder = Recorder(Constant(0.0))
    model = model_of(recorder, "sample", GUIDED[:1])
    for seed in range(5):
        diffusion_loss(model, image, conditions={"image": image}, mask=roi, max_timestep=30,
                       generator=torch.Generator().manual_seed(seed))
    assert all(int(t.max()) < 30 for _, t, _ in recorder.calls)
    recorder.calls.clear()
    target = image + roi * 0.5
    diffusion_loss(model, target, conditions={"image": image}, mask=roi, source=image,
                   generator=torch.Generator().manual_seed(4))
    t, noise = _replay(4, 2, image.shape)
    x_t = recorder.calls[0][0][:, :1]
    assert torch.equal(x_t, SCHEDULE.add_noise(image, roi * noise, t))  # noised from the source, not the target
    diffusion_loss(model, target, conditions={"image": image}, condition_dropout={"image": 1.0},
                   generator=torch.Generator().manual_seed(4))
    assert torch.all(recorder.calls[-1][0][:, 1:] == 0)  # the condition replaced by its null value
    with pytest.raises(InputError, match="sample"):
        diffusion_loss(model_of(Constant(0.0), "epsilon"), target, conditions={"image": image}, source=image)


# --------------------------------------------------------------------------------------------------- latent codec
@pytest.fixture(scope="module")
def autoencoder():
    torch.manual_seed(0)
    return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), latent_channels=3,
                         num_res_blocks=1, norm_num_groups=4, attention_levels=(False, False),
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False).eval()


def test_latent_codec_shapes_scale_factor_and_sampling(autoencoder):
    images = torch.rand((4, 1, 16, 16), generator=torch.Generator().manual_seed(0)) * 2 - 1
    factor = estimate_scale_factor(autoencoder, images)
    codec = LatentCodec(autoencoder, factor)
    with torch.no_grad():
        latents = codec.encode(images)
        assert latents.shape == (4, 3, 8, 8)
        assert float(latents.std()) == pytest.approx(1.0, abs=1e-5)  # unit variance by construction
        mu, _ = autoencoder.encode(images)
        assert torch.allclose(latents, factor * mu)
        drawn = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(drawn, latents)
        assert torch.equal(drawn, codec.encode(images, sample=True, generator=torch.Generator().manual_seed(1)))
        decoded = codec.decode(latents)
        assert decoded.shape == images.shape
        assert torch.allclose(decoded, autoencoder.decode(mu), atol=1e-5)
    with pytest.raises(InputError, match="positive"):
        LatentCodec(autoencoder, 0.0)


def test_masks_are_downsampled_to_the_latent_grid_conservatively():
    mask = torch.zeros((1, 1, 16, 16))
    mask[0, 0, 5, 9] = 1  # one pixel: its latent voxel (2, 4) is in the mask
    small = downsample_mask(mask, (8, 8))
    assert small.shape == (1, 1, 8, 8) and small.sum() == 1 and small[0, 0, 2, 4] == 1
    assert downsample_mask(torch.ones((2, 1, 8, 8, 8)), (2, 2, 2)).shape == (2, 1, 2, 2, 2)
    with pytest.raises(InputError, match="multiple"):
        downsample_mask(mask, (5, 5))


def test_latent_diffusion_samples_unclipped_latents_and_decodes(autoencoder):
    codec = LatentCodec(autoencoder, 0.5)
    model = DiffusionModel.from_config(ThreeChannel(), {"clip_sample": False}, (Condition("z", "concat"),))
    with torch.no_grad():
        condition = codec.encode(torch.rand((1, 1, 16, 16), generator=torch.Generator().manual_seed(2)))
        result = sample(model, timestep_pairs("ddim", 999, 1000, 3), shape=condition.shape, start="noise",
                        conditions={"z": condition}, sampler="ddim", samples=2, generator=generators(0))
        assert result.mean.shape == (1, 3, 8, 8) and float(result.mean.abs().max()) > 1.0  # not clipped
        assert codec.decode(result.mean).shape == (1, 1, 16, 16)
