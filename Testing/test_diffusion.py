"""The shared ROI diffusion core: masked forward noise, ROI loss, partial diffusion start, mean of k, seeding."""

import itertools

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from CMRSynthesisLib.diffusion.roi_diffusion import RoiDiffusion
from CMRSynthesisLib.errors import Cancelled, InputError


class Recorder(torch.nn.Module):
    """Wraps a real network and records the timesteps and inputs it is called with."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.calls = network, []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.detach().clone(), timesteps.detach().clone()))
        return self.network(x, timesteps)


class ZeroNoise(torch.nn.Module):
    """Predicts zero noise, so the ROI loss must equal the mean squared drawn noise over the ROI."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1])


class Elementwise(torch.nn.Module):
    """A voxel-wise "network": each image's output depends on its own voxels only, bit for bit, at any batch size."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return 0.1 * torch.tanh(x[:, :1] + x[:, 1:])


def small_unet() -> DiffusionModelUNet:
    torch.manual_seed(0)
    return DiffusionModelUNet(spatial_dims=2, in_channels=2, out_channels=1, channels=(8, 8), norm_num_groups=8,
                              attention_levels=(False, False), num_res_blocks=1)


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand((2, 1, 16, 16), generator=generator) * 2 - 1
    roi = torch.zeros_like(image)
    roi[:, :, 4:12, 5:11] = 1
    return image, roi


def test_forward_noise_is_exactly_zero_outside_the_roi(images):
    image, roi = images
    diffusion = RoiDiffusion(ZeroNoise())
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([250, 900])
    x_t = diffusion.add_noise(image, noise, roi, t)
    abar = diffusion.ddpm.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    outside = roi == 0
    assert torch.equal(x_t[outside], (abar.sqrt() * image)[outside])
    inside = (x_t - abar.sqrt() * image)[roi == 1]
    assert torch.allclose(inside, ((1 - abar).sqrt() * noise)[roi == 1])
    assert inside.abs().min() > 0


def test_training_loss_counts_roi_voxels_only(images):
    image, roi = images
    diffusion = RoiDiffusion(ZeroNoise())
    loss = diffusion.training_loss(image, image, roi, generator=torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    torch.randint(0, 1000, (2,), generator=replay)
    noise = torch.randn(image.shape, generator=replay)
    expected = (noise[roi == 1] ** 2).mean()
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, (noise**2).mean())


def test_training_timesteps_respect_max_timestep(images):
    image, roi = images
    recorder = Recorder(small_unet())
    diffusion = RoiDiffusion(recorder)
    for seed in range(5):
        diffusion.training_loss(image, image, roi, generator=torch.Generator().manual_seed(seed), max_timestep=30)
    assert all(int(t.max()) < 30 for _, t in recorder.calls)


def test_partial_diffusion_starts_at_t0_and_runs_k_samples_as_one_batch(images):
    image, roi = images
    recorder = Recorder(small_unet())
    diffusion = RoiDiffusion(recorder)
    diffusion.sample(image, image, roi, t0=40, samples=3, generator=torch.Generator().manual_seed(0))
    steps = [int(t[0]) for _, t in recorder.calls]
    assert steps == list(range(40, -1, -1))
    first_input = recorder.calls[0][0]
    assert first_input.shape == (6, 2, 16, 16)  # 2 images x 3 samples, x_t and the condition
    abar = diffusion.ddpm.alphas_cumprod[40]
    x_t, condition = first_input[:, :1], first_input[:, 1:]
    assert torch.equal(condition, image.repeat_interleave(3, dim=0))
    outside = roi.repeat_interleave(3, dim=0) == 0
    assert torch.allclose(x_t[outside], (abar.sqrt() * condition)[outside])
    # inside the ROI the start is noised to the level of step t0
    residual = (x_t - abar.sqrt() * condition)[~outside] / (1 - abar).sqrt()
    assert 0.8 < float(residual.std()) < 1.2


def test_ddim_grid_below_t0_and_scheduler_stride(images):
    image, roi = images
    recorder = Recorder(small_unet())
    diffusion = RoiDiffusion(recorder)
    grid = diffusion.timesteps("ddim", 250, 20)
    assert grid.tolist() == list(range(250, 250 - 20 * 12, -12))  # 20 network calls, stride 12
    diffusion.sample(image, image, roi, t0=250, samples=2, sampler="ddim", ddim_steps=20)
    assert [int(t[0]) for _, t in recorder.calls] == grid.tolist()


@pytest.mark.parametrize(("t0", "steps"), [(250, 20), (240, 5), (900, 25), (999, 25), (720, 20), (30, 50), (7, 3)])
def test_ddim_scheduler_steps_land_on_the_grid(t0, steps):
    diffusion = RoiDiffusion(ZeroNoise())
    grid = diffusion.timesteps("ddim", t0, steps)
    scheduler = diffusion._scheduler("ddim", grid)
    assert grid[0] == t0 and 1 <= len(grid) <= steps and grid.min() >= 0
    taken = diffusion.num_train_timesteps // scheduler.num_inference_steps  # MONAI DDIM: prev = t - T // n
    assert all(int(a) - taken == int(b) for a, b in itertools.pairwise(grid))


def test_sample_keeps_outside_roi_and_is_seeded(images):
    image, roi = images
    diffusion = RoiDiffusion(small_unet())

    def run(seed):
        return diffusion.sample(image, image, roi, t0=20, samples=2, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first.mean, again.mean) and torch.equal(first.std, again.std)
    assert not torch.equal(first.mean, other.mean)
    outside = roi == 0
    assert torch.equal(first.mean[outside], image[outside])
    assert torch.all(first.std[outside] < 1e-6)
    assert first.std[roi == 1].mean() > 0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_per_image_generators_make_each_image_independent_of_the_batch(images, sampler):
    image, roi = images
    diffusion = RoiDiffusion(Elementwise())

    def run(batch, seeds):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        return diffusion.sample(image[batch], image[batch], roi[batch], t0=20, samples=3, sampler=sampler,
                                ddim_steps=5, generator=generators)

    both, alone, swapped = run([0, 1], [7, 8]), run([1], [8]), run([1, 0], [8, 7])
    assert torch.equal(both.mean[1], alone.mean[0]) and torch.equal(both.std[1], alone.std[0])
    assert torch.equal(both.mean, swapped.mean.flip(0))
    assert both.std[roi == 1].mean() > 0  # the k samples of one image differ
    assert not torch.equal(run([1], [9]).mean, alone.mean)
    with pytest.raises(InputError, match="generators"):
        run([0, 1], [7])


def test_cancel_and_bad_arguments(images):
    image, roi = images
    diffusion = RoiDiffusion(small_unet())
    with pytest.raises(Cancelled):
        diffusion.sample(image, image, roi, t0=10, progress=lambda fraction, message: fraction < 0.5)
    with pytest.raises(InputError, match="start step"):
        diffusion.sample(image, image, roi, t0=1000)
    with pytest.raises(InputError, match="sampler"):
        diffusion.sample(image, image, roi, t0=10, sampler="euler")
    with pytest.raises(InputError, match="samples"):
        diffusion.sample(image, image, roi, t0=10, samples=0)


def test_sample_prediction_loss_is_the_x0_error_on_the_roi(images):
    image, roi = images
    diffusion = RoiDiffusion(ZeroNoise(), {"prediction_type": "sample"})
    loss = diffusion.training_loss(image, image, roi, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loss, (image[roi == 1] ** 2).mean())
    assert diffusion.ddpm.prediction_type == "sample"
    with pytest.raises(InputError, match="prediction_type"):
        RoiDiffusion(ZeroNoise(), {"prediction_type": "v"})


def test_training_can_noise_the_input_instead_of_the_target(images):
    image, roi = images
    recorder = Recorder(ZeroNoise())
    diffusion = RoiDiffusion(recorder, {"prediction_type": "sample"})
    target = image + roi * 0.5
    diffusion.training_loss(target, image, roi, generator=torch.Generator().manual_seed(4), source=image)
    x_t, t = recorder.calls[0][0][:, :1], recorder.calls[0][1]
    replay = torch.Generator().manual_seed(4)
    torch.randint(0, 1000, (2,), generator=replay)
    noise = torch.randn(image.shape, generator=replay)
    assert torch.allclose(x_t, diffusion.add_noise(image, noise, roi, t))  # noised from the source
    assert not torch.allclose(x_t, diffusion.add_noise(target, noise, roi, t))
    with pytest.raises(InputError, match="sample"):
        RoiDiffusion(ZeroNoise()).training_loss(target, image, roi, source=image)
