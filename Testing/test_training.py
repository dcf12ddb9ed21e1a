"""The training package on tiny configs: checkpoints that load, exact resume, the recorded command, torchrun DDP;
the shared framework on toy networks: recipe discovery, several optimisers (a toy GAN), LR schedules, gradient
clipping, EMA of buffers, mixed-precision settings, exact resume of every state."""

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import training.recipes
from CMRSynthesisLib import phantom
from CMRSynthesisLib.checkpoints import load_checkpoint, write_manifest
from CMRSynthesisLib.methods import load_method
from training.__main__ import main as train
from training.distributed import Context
from training.loop import Trainer, lr_factor, parse_lr_schedule, training_options
from training.recipes import discover

TINY_DATA = {"source": "phantom", "train_subjects": 2, "validation_subjects": 1}
TINY = {
    "scar_enhancement_segmenter": {
        "description": "test", "data": TINY_DATA, "target_spacing_mm": 3.0, "threshold": 0.5, "dilation_mm": 0.0,
        "network": {"class": "UNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1,
                                              "channels": [4, 8], "strides": [2], "num_res_units": 0}},
        "train": {"steps": 4, "batch_size": 2, "patch_size": 64, "lr": 0.001, "ema_decay": 0.9, "seed": 0,
                  "validate_every": 2}},
    "scar_enhancement": {
        "description": "test", "data": TINY_DATA, "crop_size": 32, "roi_margin_px": 2,
        "network": {"class": "DiffusionModelUNet", "args": {"spatial_dims": 2, "in_channels": 2, "out_channels": 1,
                                                            "channels": [8, 8], "attention_levels": [False, False],
                                                            "num_res_blocks": 1, "norm_num_groups": 8}},
        "schedule": {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02},
        "train": {"steps": 4, "batch_size": 2, "lr": 0.001, "ema_decay": 0.9, "max_timestep": 300,
                  "scar_fraction": 0.5, "seed": 0, "validate_every": 2}},
}


@pytest.fixture
def configs(tmp_path):
    paths = {}
    for recipe, config in TINY.items():
        paths[recipe] = tmp_path / f"{recipe}.json"
        paths[recipe].write_text(json.dumps(config))
    return paths


def test_trained_checkpoints_record_their_command_and_run_the_method(tmp_path, configs):
    for recipe in TINY:
        assert train([recipe, "--config", str(configs[recipe]), "--out", str(tmp_path / recipe)]) == 0
    _, config = load_checkpoint(tmp_path / "scar_enhancement", expected_method="scar_enhancement")
    assert config["command"].startswith("python -m training scar_enhancement --config")
    assert 0 < config["blood_reference"] < 1 and config["training_summary"]["steps"] == 4
    assert len(config["training_summary"]["best"]["metrics"]) > 0
    _, seg_config = load_checkpoint(tmp_path / "scar_enhancement_segmenter", expected_method="heart_segmentation")
    assert 0 <= seg_config["training_summary"]["best"]["score"] <= 1
    write_manifest(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["checkpoints"]) == set(TINY)
    method = load_method("scar_enhancement", tmp_path / "scar_enhancement", device="cpu",
                         segmenter=tmp_path / "scar_enhancement_segmenter")
    assert method.config["crop_size"] == 32


def test_resume_continues_exactly_where_training_stopped(tmp_path, configs):
    """A run cut short by --steps and resumed to the config's steps equals the straight run; --steps and --batch-size
    override the config and are recorded in the checkpoint (its train section and its command); a count below 1 for
    any of them (or for --render-workers) is refused before anything is written."""
    config = ["scar_enhancement", "--config", str(configs["scar_enhancement"]), "--batch-size", "3"]
    straight = tmp_path / "straight"
    assert train([*config, "--out", str(straight)]) == 0
    halves = tmp_path / "halves"
    assert train([*config, "--out", str(halves), "--steps", "2"]) == 0
    _, half = load_checkpoint(halves, expected_method="scar_enhancement")
    assert half["train"]["steps"] == 2 and half["train"]["batch_size"] == 3 and half["training_summary"]["steps"] == 2
    assert half["command"].endswith("--batch-size 3 --out " + str(halves) + " --steps 2")
    assert train([*config, "--out", str(halves), "--resume"]) == 0
    first, second = load_file(str(straight / "model.safetensors")), load_file(str(halves / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all((first[k] - second[k]).abs().max() < 1e-6 for k in first)
    for option in ("--steps", "--batch-size", "--render-workers"):
        with pytest.raises(SystemExit):
            train([*config, "--out", str(tmp_path / "bad"), option, "0"])
    assert not (tmp_path / "bad").exists()


def test_torchrun_ddp_on_cpu_processes(tmp_path, configs):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "training", "scar_enhancement", "--config", str(configs["scar_enhancement"]),
               "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    _, config = load_checkpoint(tmp_path / "ddp", expected_method="scar_enhancement")
    assert config["training_summary"]["world_size"] == 2
    assert config["command"].startswith("torchrun --nnodes 1 --nproc_per_node 2 -m training scar_enhancement")
    state = load_file(str(tmp_path / "ddp" / "training_state" / "state.safetensors"))
    assert not torch.equal(state["rng.0"], state["rng.1"])  # each rank keeps its own random stream for --resume


def test_resume_without_state_is_an_error(tmp_path, configs):
    with pytest.raises(FileNotFoundError, match="no training state"):
        train(["scar_enhancement", "--config", str(configs["scar_enhancement"]), "--out", str(tmp_path / "x"),
               "--resume"])


# ----------------------------------------------------------------------------------------------- the framework
# A recipe module as a method's author would write it: a toy GAN (generator + discriminator, one optimiser each),
# with BatchNorm buffers and dropout (torch's global random stream), declared with @recipe. The tests drop it into
# the training.recipes package at run time; nothing else registers it.
TOY_RECIPE = textwrap.dedent('''
    """Toy GAN recipe (tests only): a generator maps noise to 8x8 images, a discriminator tells them from real ones."""

    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from training.loop import Trainer
    from training.recipes import recipe


    def networks():
        generator = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.2), torch.nn.Conv2d(4, 1, 3, padding=1))
        discriminator = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4),
                                            torch.nn.LeakyReLU(0.2), torch.nn.Flatten(), torch.nn.Linear(64, 1))
        return {"generator": generator, "discriminator": discriminator}


    def make_step(trainer):
        """Generator step, then discriminator step on the detached fakes (the order the framework documents)."""
        def step(nets, generator):
            device = generator.device
            real = 0.5 + 0.1 * torch.randn(4, 1, 8, 8, generator=generator, device=device)
            fake = nets["generator"](torch.randn(4, 1, 8, 8, generator=generator, device=device))
            g_loss = F.softplus(-nets["discriminator"](fake)).mean() + F.l1_loss(fake, real)
            trainer.optimise("generator", g_loss)
            d_loss = (F.softplus(nets["discriminator"](fake.detach())).mean()
                      + F.softplus(-nets["discriminator"](real)).mean())
            trainer.optimise("discriminator", d_loss)
            return {"generator": g_loss, "discriminator": d_loss}
        return step


    def validate(nets):
        fixed = torch.Generator().manual_seed(0)
        fake = nets["generator"](torch.randn(4, 1, 8, 8, generator=fixed).to(next(nets.parameters()).device))
        return {"score": -float((fake - 0.5).abs().mean())}


    @recipe("toy_gan")
    def train_toy_gan(config, out, context, resume):
        """Toy GAN for the tests."""
        trainer = Trainer.from_config(networks(), context, out, config["train"], select="score")
        if resume:
            trainer.resume()
        weights = trainer.fit(make_step(trainer), validate)
        if config.get("dump_ranks"):  # every rank's trained parameters, to check that DDP kept them equal
            save_file({k: v.detach().contiguous().cpu() for k, v in trainer.model.named_parameters()},
                      str(out / f"rank{context.rank}.safetensors"))
        return weights["generator"], {"method": "toy_gan", "training_summary": {
            "steps": trainer.step, "world_size": context.world_size, "best": trainer.best}}
''')
TOY_TRAIN = {"steps": 6, "lr": 0.01, "ema_decay": 0.5, "seed": 0, "validate_every": 3,
             "lr_schedule": {"name": "cosine", "warmup_steps": 2, "final_fraction": 0.1}, "clip_grad_norm": 1.0,
             "optimisers": {"discriminator": {"lr": 0.02, "betas": [0.5, 0.9]}}}
CPU = Context(0, 1, torch.device("cpu"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy recipe module, found by discovery in an extra folder (tmp_path / "more_recipes") of the
    training.recipes package; call it to import the module."""
    folder = tmp_path / "more_recipes"
    folder.mkdir()
    (folder / "toy_gan_recipe.py").write_text(TOY_RECIPE)
    monkeypatch.setattr(training.recipes, "__path__", [*training.recipes.__path__, str(folder)])
    monkeypatch.setattr(training.recipes, "_DECORATED", dict(training.recipes._DECORATED))
    yield lambda: importlib.import_module("training.recipes.toy_gan_recipe")
    sys.modules.pop("training.recipes.toy_gan_recipe", None)


def _parameters(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_recipes_are_discovered_and_listed(capsys):
    recipes = discover()
    assert {"scar_enhancement", "scar_enhancement_segmenter", "cine_segmentation"} <= set(recipes)
    assert train(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in recipes)


def test_a_recipe_module_added_at_run_time_is_found_and_trains(toy, tmp_path, capsys):
    assert "toy_gan" not in training.recipes._DECORATED  # not imported yet: discovery finds the module
    assert "toy_gan" in discover()
    assert train(["list"]) == 0 and "toy_gan\tToy GAN for the tests." in capsys.readouterr().out
    config = tmp_path / "toy.json"
    config.write_text(json.dumps({"data": {"source": "random"}, "train": TOY_TRAIN}))
    assert train(["toy_gan", "--config", str(config), "--out", str(tmp_path / "toy")]) == 0
    weights, saved = load_checkpoint(tmp_path / "toy", expected_method="toy_gan")
    assert saved["command"].startswith("python -m training toy_gan") and saved["training_summary"]["steps"] == 6
    assert set(weights) == set(toy().networks()["generator"].state_dict())  # the generator's EMA weights


def test_recipe_names_must_be_unique_and_not_reserved(monkeypatch):
    monkeypatch.setattr(training.recipes, "_DECORATED", dict(training.recipes._DECORATED))

    def impostor(config, out, context, resume):
        raise AssertionError("never run")

    training.recipes.recipe("scar_enhancement")(impostor)
    with pytest.raises(ValueError, match="declared twice"):
        discover()
    with pytest.raises(ValueError, match="sub-command"):
        training.recipes.recipe("manifest")(impostor)


def test_several_optimisers_update_both_networks_in_order(toy, tmp_path):
    module = toy()
    torch.manual_seed(0)
    trainer = Trainer.from_config(module.networks(), CPU, tmp_path, {**TOY_TRAIN, "steps": 2})
    before = {name: _parameters(network) for name, network in trainer.networks.items()}
    weights = trainer.fit(module.make_step(trainer), module.validate)
    assert set(weights) == {"generator", "discriminator"}
    for name, network in trainer.networks.items():
        assert all(not torch.equal(before[name][k], v) for k, v in _parameters(network).items()), name
        assert len(trainer.optimizers[name].state) == len(before[name])  # Adam moments for every parameter
    assert trainer.optimizers["discriminator"].param_groups[0]["betas"] == (0.5, 0.9)
    assert trainer.base_lr == {"generator": 0.01, "discriminator": 0.02}
    assert {"train_loss_generator", "train_loss_discriminator", "lr_generator", "score"} <= set(trainer.history[-1])

    with pytest.raises(RuntimeError, match="must return a dict"):  # several networks: a bare loss is ambiguous
        Trainer.from_config(module.networks(), CPU, tmp_path, TOY_TRAIN).fit(lambda nets, g: torch.zeros(()))
    with pytest.raises(RuntimeError, match="nothing was trained"):
        Trainer.from_config(module.networks(), CPU, tmp_path, TOY_TRAIN).fit(lambda nets, g: {"loss": 0.0})


def test_lr_schedule_values():
    cosine = parse_lr_schedule({"name": "cosine", "warmup_steps": 4, "final_fraction": 0.1})
    assert [lr_factor(cosine, step, 14) for step in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert lr_factor(cosine, 4, 14) == 1.0 and lr_factor(cosine, 13, 14) == pytest.approx(0.1)
    assert lr_factor(cosine, 8, 14) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))
    linear = parse_lr_schedule({"name": "linear", "final_fraction": 0.0})
    assert [lr_factor(linear, step, 5) for step in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert all(lr_factor(parse_lr_schedule("constant"), step, 10) == 1.0 for step in range(10))
    assert parse_lr_schedule(None) == parse_lr_schedule("constant")
    for bad in ("exponential", {"name": "cosine", "warmup": 3}, {"name": "linear", "final_fraction": 2.0},
                {"name": "cosine", "warmup_steps": -1}):
        with pytest.raises(ValueError):
            parse_lr_schedule(bad)

    # the Trainer applies it: the LR of each step's update, recorded inside the step
    torch.manual_seed(0)
    trainer = Trainer(torch.nn.Linear(2, 1), CPU, "unused", steps=6, lr=0.1, ema_decay=0.9, seed=0,
                      validate_every=100, lr_schedule={"name": "linear", "warmup_steps": 2})
    seen = []

    def loss_fn(model, generator):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return model(torch.ones(1, 2)).sum()

    trainer._save_state = lambda: None  # nothing on disk for this check
    trainer.fit(loss_fn)
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.1 * 2 / 3, 0.1 / 3, 0.0])


def test_gradient_clipping_bounds_the_norm(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(torch.nn.Linear(8, 4), CPU, tmp_path, steps=3, lr=0.01, ema_decay=0.9, seed=0,
                      validate_every=10, clip_grad_norm=0.5)
    norms = []

    def step(model, generator):
        loss = 1000.0 * model(torch.randn(16, 8, generator=generator)).pow(2).sum()
        before = trainer.optimise("model", loss)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        norms.append((float(before), float(after)))
        return {"loss": loss}

    trainer.fit(step)
    assert all(before > 10.0 and after <= 0.5 * (1 + 1e-5) for before, after in norms)
    assert Trainer(torch.nn.Linear(2, 1), CPU, tmp_path, steps=1, lr=0.1, ema_decay=0.9, seed=0,
                   validate_every=1).clip_grad_norm is None  # off by default


def test_ema_averages_buffers(tmp_path):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    trainer = Trainer(network, CPU, tmp_path, steps=5, lr=0.01, ema_decay=0.5, seed=0, validate_every=10)
    def loss_fn(model, generator):
        return model(3.0 + torch.randn(8, 3, generator=generator)).pow(2).mean()

    expected = None
    for _ in range(5):  # one step at a time, reading the network's running mean after each
        trainer.steps = trainer.step + 1
        trainer.fit(loss_fn)
        current = network[1].running_mean.clone()
        expected = current if expected is None else 0.5 * expected + 0.5 * current
    averaged = trainer.ema.module[1]
    assert torch.allclose(averaged.running_mean, expected, atol=1e-6)
    assert not torch.allclose(averaged.running_mean, network[1].running_mean)  # averaged, not copied
    assert int(averaged.num_batches_tracked) == int(network[1].num_batches_tracked) == 5  # integers: copied


class ScaledTrainer(Trainer):
    """A Trainer whose loss scalers are on although it runs on CPU, to check that their state resumes (fp32
    gradients scaled by powers of two: the scale itself does not change the weights)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scalers = {name: torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=3)
                        for name in self.networks}


def _toy_trainer(module, out):
    torch.manual_seed(0)
    return ScaledTrainer.from_config(module.networks(), CPU, out, {**TOY_TRAIN, "steps": 8, "validate_every": 4})


def test_resume_of_an_interrupted_run_is_exact(toy, tmp_path):
    module = toy()
    straight = _toy_trainer(module, tmp_path / "straight")
    straight_weights = straight.fit(module.make_step(straight), module.validate)

    interrupted = _toy_trainer(module, tmp_path / "interrupted")
    step = module.make_step(interrupted)

    def crash_after_four(nets, generator):
        if interrupted.step == 5:
            raise KeyboardInterrupt  # after the state of step 4 was saved
        return step(nets, generator)

    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(crash_after_four, module.validate)
    resumed = _toy_trainer(module, tmp_path / "interrupted")
    resumed.resume()
    assert resumed.step == 4
    resumed_weights = resumed.fit(module.make_step(resumed), module.validate)

    for name in ("generator", "discriminator"):
        assert resumed_weights[name].keys() == straight_weights[name].keys()
        assert all(torch.equal(resumed_weights[name][k], v) for k, v in straight_weights[name].items()), name
        assert all(torch.equal(a, b) for a, b in zip(resumed.networks[name].state_dict().values(),
                                                     straight.networks[name].state_dict().values(), strict=True))
        assert resumed.scalers[name].state_dict() == straight.scalers[name].state_dict()
        assert resumed.scalers[name].get_scale() == 1024.0  # grew at steps 3 and 6
        moments, reference = resumed.optimizers[name].state_dict(), straight.optimizers[name].state_dict()
        assert all(torch.equal(moments["state"][i][key], value) for i, entry in reference["state"].items()
                   for key, value in entry.items())
    assert resumed.history == straight.history and resumed.best == straight.best
    assert torch.equal(resumed.generator.get_state(), straight.generator.get_state())


def test_resume_reads_a_single_optimiser_state_of_the_previous_format(tmp_path):
    def trainer():
        torch.manual_seed(0)
        return Trainer(torch.nn.Linear(4, 2), CPU, tmp_path, steps=4, lr=0.1, ema_decay=0.9, seed=0,
                       validate_every=2)

    def loss_fn(model, generator):
        return model(torch.randn(3, 4, generator=generator)).pow(2).sum()

    first = trainer()
    first.steps = 2
    first.fit(loss_fn)
    state_file, meta_file = tmp_path / "training_state" / "state.safetensors", tmp_path / "training_state" / "state.json"
    tensors, meta = load_file(str(state_file)), json.loads(meta_file.read_text())
    old = {k.replace("optimizer.model.", "optimizer."): v for k, v in tensors.items() if "torch_rng" not in k}
    meta["optimizer"] = meta.pop("optimizers")["model"]
    from safetensors.torch import save_file
    save_file(old, str(state_file))
    meta_file.write_text(json.dumps(meta))
    resumed = trainer()
    resumed.resume()
    assert resumed.step == 2 and len(resumed.optimizer.state) == 2
    assert torch.equal(resumed.optimizer.state_dict()["state"][0]["exp_avg"], tensors["optimizer.model.0.exp_avg"])


def test_mixed_precision_settings_are_checked_and_off_on_cpu(tmp_path):
    options = training_options({"precision": "fp16", "clip_grad_norm": 2, "lr_schedule": "cosine"})
    assert options["precision"] == "fp16" and options["clip_grad_norm"] == 2.0
    assert training_options({}) == {"lr_schedule": parse_lr_schedule("constant"), "clip_grad_norm": None,
                                    "precision": "fp32", "optimisers": {}}
    for bad in ({"precision": "fp8"}, {"precision": "half"}, {"clip_grad_norm": 0}, {"clip_grad_norm": "1"},
                {"optimisers": {"model": {"momentum": 0.9}}}, {"optimisers": ["model"]}):
        with pytest.raises((ValueError, TypeError)):
            training_options(bad)
    with pytest.raises(ValueError, match="unknown network"):
        Trainer(torch.nn.Linear(2, 1), CPU, tmp_path, steps=1, lr=0.1, ema_decay=0.9, seed=0, validate_every=1,
                optimisers={"discriminator": {"lr": 0.1}})
    trainer = Trainer(torch.nn.Linear(2, 1), CPU, tmp_path, steps=1, lr=0.1, ema_decay=0.9, seed=0,
                      validate_every=1, precision="fp16")
    assert trainer.precision == "fp32" and trainer.autocast_dtype is None
    assert not any(scaler.is_enabled() for scaler in trainer.scalers.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision runs on CUDA only")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_trains_and_resumes(toy, tmp_path, monkeypatch, precision):
    module = toy()
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    cuda = Context(0, 1, torch.device("cuda"))
    config = {**TOY_TRAIN, "steps": 8, "validate_every": 4, "precision": precision, "lr_schedule": "constant"}

    def run(out, steps, resume=False):
        torch.manual_seed(0)
        trainer = Trainer.from_config(module.networks(), cuda, out, {**config, "steps": steps})
        if resume:
            trainer.resume()
        dtypes = []
        trainer.networks["generator"][0].register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
        return trainer, trainer.fit(module.make_step(trainer), module.validate), dtypes

    trainer, straight, dtypes = run(tmp_path / "straight", 8)
    assert trainer.precision == precision and dtypes[0] == PRECISION_TYPES[precision]  # the convolution ran in 16 bits
    assert trainer.scalers["generator"].is_enabled() == (precision == "fp16")
    assert all(torch.isfinite(v).all() for v in straight["generator"].values())
    run(tmp_path / "halves", 4)  # a constant LR: the half run's shorter total does not change its schedule
    _, resumed, _ = run(tmp_path / "halves", 8, resume=True)
    assert all(torch.allclose(resumed["generator"][k].float(), v.float(), rtol=1e-4, atol=1e-6)
               for k, v in straight["generator"].items())


PRECISION_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


DDP_LAUNCHER = textwrap.dedent('''
    import sys

    import training.recipes

    training.recipes.__path__.append(sys.argv[1])  # the toy recipe's folder joins the package, as in the tests
    from training.__main__ import main

    raise SystemExit(main(sys.argv[2:]))
''')


def test_torchrun_ddp_trains_several_networks(toy, tmp_path):
    folder = tmp_path / "more_recipes"
    (tmp_path / "launch.py").write_text(DDP_LAUNCHER)
    config = tmp_path / "toy.json"
    config.write_text(json.dumps({"data": {"source": "random"}, "train": TOY_TRAIN, "dump_ranks": True}))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
               str(tmp_path / "launch.py"), str(folder), "toy_gan", "--config", str(config),
               "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    _, saved = load_checkpoint(tmp_path / "ddp", expected_method="toy_gan")
    assert saved["training_summary"]["world_size"] == 2
    ranks = [load_file(str(tmp_path / "ddp" / f"rank{rank}.safetensors")) for rank in (0, 1)]
    torch.manual_seed(0)
    initial = torch.nn.ModuleDict(toy().networks()).state_dict()
    for key, value in ranks[0].items():  # both networks: trained, and kept equal across ranks by DDP
        assert torch.equal(value, ranks[1][key]), key
        assert not torch.equal(value, initial[key]), key


class _EchoNoisy(torch.nn.Module):
    """A stand-in x0 predictor that returns its noisy input x_t (channel 0): near t = 0 that is the image the forward
    noise started from."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def test_enhancer_validation_measures_the_start_from_the_original_image():
    from CMRSynthesisLib.diffusion.model import DiffusionModel
    from CMRSynthesisLib.methods.scar_enhancement import CONDITIONS
    from training.recipes.scar_enhancement import enhancer_validation

    generator = torch.Generator().manual_seed(3)
    target = torch.rand((6, 1, 16, 16), generator=generator) * 2 - 1
    condition = (target + 0.5 * torch.rand((6, 1, 16, 16), generator=generator)).clamp(-1, 1)
    roi = torch.zeros((6, 1, 16, 16))
    roi[..., 4:12, 4:12] = 1.0
    examples = {"target": target, "condition": condition, "roi": roi}
    schedule = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02,
                "prediction_type": "sample"}
    model = DiffusionModel.from_config(_EchoNoisy(), schedule, CONDITIONS)
    gap = float(((condition - target) ** 2 * roi).sum() / roi.sum())  # what starting from the input costs here
    as_target = enhancer_validation(model, examples, batch=4, max_timestep=1, from_input=0.0)
    assert set(as_target) == {"validation_loss", "validation_loss_from_input"}
    assert as_target["validation_loss"] < 0.01 * gap  # noised from the target, the echo is nearly right
    assert as_target["validation_loss_from_input"] == pytest.approx(gap, rel=0.05)  # from the input: it is not
    mixed = enhancer_validation(model, examples, batch=4, max_timestep=1, from_input=0.5)
    assert 0.1 * gap < mixed["validation_loss"] < 0.9 * gap
    assert mixed == enhancer_validation(model, examples, batch=4, max_timestep=1, from_input=0.5)  # fixed draws
    epsilon = DiffusionModel.from_config(_EchoNoisy(), {**schedule, "prediction_type": "epsilon"}, CONDITIONS)
    assert set(enhancer_validation(epsilon, examples, 4, 1, 0.0)) == {"validation_loss"}


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "training" / "configs").glob("*.json")),
                         ids=lambda path: path.stem)
def test_every_shipped_config_builds_its_networks(path):
    """Each recipe config in training/configs names networks MONAI builds, and a T1-from-cine, virtual-LGE or
    multi-sequence config's denoiser takes exactly the channels its variant feeds it."""
    from CMRSynthesisLib.diffusion.networks import build_network
    from CMRSynthesisLib.methods.cpkdm_networks import VARIANTS as CPKDM_VARIANTS
    from CMRSynthesisLib.methods.cpkdm_networks import build_cpkdm
    from CMRSynthesisLib.methods.t1_from_cine import ANATOMY_CHANNELS, build_model

    config = json.loads(path.read_text())
    assert config["description"] and config["train"]["batch_size"] >= 1
    for key in ("network", "denoiser", "modality_encoder", "generator", "discriminator", "autoencoder"):
        if key in config:
            assert isinstance(build_network(config[key]), torch.nn.Module), key
    if config.get("variant") in CPKDM_VARIANTS:
        network = build_cpkdm(config)
        morphology = config["morphology"]["channels"] if config["variant"] in ("cpkdm", "no_kinematics") else 0
        raw = ((config["frames"] + config["curves"]) * config["factor"] ** 2
               if config["variant"] == "pure_data_driven" else 0)  # raw phases and curves, pixel-unshuffled
        assert config["denoiser"]["args"]["in_channels"] == config["latent_channels"] + morphology + raw
        assert isinstance(network, torch.nn.Module)
    elif path.name.startswith("virtual_lge_pix2pix"):
        assert config["generator"]["args"]["in_channels"] == config["frames"] + config["curves"]
        assert config["discriminator"]["args"]["in_channels"] == config["frames"] + config["curves"] + 1
    elif path.name.startswith("multi_sequence") and "variant" in config:
        from CMRSynthesisLib.methods import multi_sequence

        assert isinstance(multi_sequence.build_model(config), torch.nn.Module)
        if config["variant"] == "cmrdiff":  # [x_t, first, second] latents; tokens of token_dim
            assert config["denoiser"]["args"]["in_channels"] == 3 * config["latent_channels"]
            assert config["denoiser"]["args"]["cross_attention_dim"] == config["token_dim"]
        else:  # the two given crops and the target's 3 one-hot channels; the discriminator also sees the target
            assert config["generator"]["args"]["in_channels"] == 5
            assert config["discriminator"]["args"]["in_channels"] == 6
    elif "variant" in config:
        build_model(config)
        if config["variant"] in ("t1diff", "raw_ddpm"):
            features = (config["modality_encoder"]["args"]["out_channels"] + ANATOMY_CHANNELS
                        if config["variant"] == "t1diff" else config["frames"])
            assert config["denoiser"]["args"]["in_channels"] == 1 + features + 1


def test_cached_arrays_are_made_once_and_again_when_their_code_changes(tmp_path):
    from training.datasets import cached_arrays

    calls = []

    def make():
        calls.append(1)
        return {"a": np.arange(3)}

    def one_way():
        return 1

    def another_way():
        return 2

    first = cached_arrays(tmp_path, "x", {"size": 4}, make, code=(one_way,))
    again = cached_arrays(tmp_path, "x", {"size": 4}, make, code=(one_way,))
    assert len(calls) == 1 and np.array_equal(first["a"], again["a"])  # read back, not made again
    cached_arrays(tmp_path, "x", {"size": 4}, make, code=(another_way,))  # other code: made anew
    cached_arrays(tmp_path, "x", {"size": 5}, make, code=(one_way,))  # other settings: made anew
    assert len(calls) == 3 and len(list(tmp_path.glob("x_*.npz"))) == 3


def test_phantom_examples_rendered_by_several_processes_equal_the_serial_ones():
    """`datasets.subject_examples` keeps the subjects' order and their arrays whatever the number of workers (here the
    multi-sequence recipe's examples of two subjects, serial and in two spawned processes); bad worker counts and
    subjects without examples are refused."""
    from training.datasets import subject_examples
    from training.recipes.multi_sequence import phantom_examples

    config = {"crop_size": 32, "pixel_mm": 4.0}
    serial = phantom_examples("validation", 2, config)
    parallel = phantom_examples("validation", 2, config, workers=2)
    assert list(dict.fromkeys(serial["case"])) == list(phantom.subject_ids("validation", 2))
    assert serial.keys() == parallel.keys()
    assert all(np.array_equal(serial[name], parallel[name]) for name in serial)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        subject_examples([1, 2], dict, workers=0)
    with pytest.raises(ValueError, match="no examples in phantom subjects"):
        subject_examples([7], lambda _: {"image": []})
